"""The J probe runner: how J (spec 5) is computed fast. Public face: `ProbeRunner` and `ProbeSettings`.

    runner = ProbeRunner(ProbeSettings(impl="fused"), pad_id=tokenizer.pad_token_id)
    out = runner.run(model, seqs, requests, forcing_ids, top_k, temperature)

What J is: `naive.py` (the reference, one teacher-forced forward per cut). How it is made fast:
    runner.py     the pass: phase 1, selection, phase 2, one host sync; owns the caches below
    fused.py      phase 2 as one forward over the phase-1 KV cache, of the probe blocks of blocks.py
    attention.py  SDPA attention of the blocks over the cache, the cache that leaves them room
    layers.py     the forward written out layer by layer (Llama family), `ModelFacts`
    triton/       the Triton path: launch.py (`Launcher`), attention.py (`PrefixAttention`), ops.py (`Kernels`), jit.py
    graphs.py     phase 2 replayed from CUDA graphs (`GraphCache`)
"""

from .runner import ProbePass, ProbeRunner
from .settings import ProbeSettings

__all__ = ["ProbeRunner", "ProbePass", "ProbeSettings"]
