"""The J probe runner: how J (spec 5) is computed fast. Public face: `ProbeRunner` and `ProbeSettings`.

    runner = ProbeRunner(ProbeSettings(impl="fused"), pad_id=tokenizer.pad_token_id)
    out = runner.run(model, seqs, requests, forcing_ids, top_k, temperature)

What J is: `naive.py` (the reference, one teacher-forced forward per cut). How it is made fast:
    runner.py     the pass: phase 1, selection, phase 2, one host sync; owns the caches below
    blocks.py     probe blocks and their layout
    fused.py      phase 2 as one forward over the phase-1 KV cache
    attention.py  SDPA attention of the blocks over the cache, the cache that leaves them room
    layers.py     the forward written out layer by layer (Llama family), `ModelFacts`
    kernels.py    Triton kernels' launchers (`Kernels`, `PrefixAttention`); triton_kernels.py the kernels
    graphs.py     phase 2 replayed from CUDA graphs (`GraphCache`)
"""

from .runner import ProbePass, ProbeRunner
from .settings import ProbeSettings

__all__ = ["ProbeRunner", "ProbePass", "ProbeSettings"]
