"""The fused probe: J at every cut in one extra forward over the phase-1 KV cache.

Each (rollout, cut) gets a block f + q[:-1] placed after the cached sequence, at the positions
that follow the prefix p + y[:c]; the block sees the cached prefix columns and, causally, itself.
Only the |q| positions per block that predict answer tokens go through the LM head. Same numbers
as the reference (`naive.py`), which the tests check.

Three ways to run that forward, chosen by `ProbeSettings` and the model:
- layer by layer (`layers.forward`) with the Triton prefix attention (`triton.attention.PrefixAttention`),
  optionally replayed from a CUDA graph (`graphs.GraphCache`);
- layer by layer with SDPA under an additive mask (`attention.sdpa_attend`);
- the model's own forward with the probe attention swapped in (`attention.probe_attention_on`).
"""

from __future__ import annotations

import functools

import torch

from ...models.forward import Sequences
from . import layers
from .attention import probe_attention_on, probe_mask, sdpa_attend
from .blocks import Blocks, answer_logprobs, block_inputs, probe_layout
from .graphs import GraphCache
from .settings import ATTENTIONS, ProbeSettings
from .triton.attention import KVTable, kv_table
from .triton.launch import unavailable
from .triton.ops import Kernels


def use_triton(attention: str, device) -> bool:
    """Whether phase 2 attends with the Triton kernel; 'triton' where it cannot run is an error."""
    if attention not in ATTENTIONS:
        raise ValueError(f"probe attention must be one of {ATTENTIONS}, got {attention!r}")
    if attention == "sdpa":
        return False
    why = unavailable(device)
    if why is not None and attention == "triton":
        raise ValueError(f"repro.probe.attention 'triton' cannot run here: {why}; use 'auto' or 'sdpa'")
    return why is None


def triton_path(model, device, settings: ProbeSettings, facts: layers.ModelFacts) -> bool:
    """Whether phase 2 runs layer by layer with the Triton kernels (then it appends nothing to the cache)."""
    return settings.forward == "layers" and facts.unsupported(model) is None and use_triton(settings.attention, device)


def probe_fused(
    model,
    seqs: Sequences,
    cache,
    blocks: Blocks,
    settings: ProbeSettings,
    kernels: Kernels,
    graphs: GraphCache,
    facts: layers.ModelFacts,
) -> torch.Tensor:
    """J at every block in one forward over the phase-1 KV cache: (B, nb) float32 on the device
    (0 where the block is not valid). Nothing here waits for the device.

    forward="layers" runs that forward layer by layer (`layers.forward`) where the architecture
    allows; otherwise, or with "model", it is the model's own forward with the probe attention
    swapped in. In the layer-by-layer forward, attention="triton" (or "auto" on a GPU with Triton)
    attends with `triton.attention.PrefixAttention`, which reads only each block's prefix and needs no mask;
    "sdpa" (and "auto" elsewhere) uses SDPA with an additive mask over the whole cache. On the
    Triton path, cuda_graph=True replays phase 2 from a CUDA graph where the model allows
    (`ModelFacts.graph_key`) and no gradient is recorded: the same kernels, issued in one launch.

    Block k of row b holds [lead] + f + q[:-1] at positions plen_b + c - lead + (0, 1, ...) and sees
    cache columns < P + c - lead (its prefix) and, causally, its own earlier tokens; `lead`
    re-feeds the prefix's last token when f is empty, so q_0 is still predicted from the prefix."""
    device = seqs.input_ids.device
    B, P = seqs.input_ids.shape[0], seqs.prompt_width
    C, valid, ans, alen = blocks.cuts, blocks.valid, blocks.answers, blocks.answer_len
    n_forcing = blocks.forcing.numel()
    nb, Q = C.shape[1], ans.shape[1]
    Lb, Lp = probe_layout(nb, Q, n_forcing)
    plen = seqs.prompt_lens.to(device)
    last = None if n_forcing else seqs.input_ids.gather(1, (P + C - 1).clamp(min=0))  # the token before each cut
    by_layers = settings.forward == "layers" and facts.unsupported(model) is None
    if by_layers and use_triton(settings.attention, device):  # as triton_path, without a second model check
        kv = kv_table([(layer.keys, layer.values) for layer in cache.layers], P)
        fn = functools.partial(triton_J, model, kernels, Lb, kv.layout, kv.aligned)
        inputs = (C, valid, ans, alen, blocks.forcing, plen, kv.table) + ((last,) if last is not None else ())
        graphable = settings.cuda_graph and device.type == "cuda" and not torch.is_grad_enabled()
        key = facts.graph_key(model) if graphable else None
        if key is None:
            return fn(*inputs)
        return graphs.run(fn, (key, Lb, kv.layout, kv.aligned, *((t.shape, t.dtype) for t in inputs)), inputs)
    ids, pos, _, limit, keep, targets, tmask = block_inputs(C, valid, ans, alen, blocks.forcing, plen, P, last, Lb)
    mask = probe_mask(model, seqs, cache, limit, Lb, Lp)
    if by_layers:
        logits = layers.forward(model, ids, pos, sdpa_attend(cache, mask), keep)
    else:
        with probe_attention_on(model):
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=keep,
            ).logits
    J = answer_logprobs(logits.reshape(B * nb, Q, -1), targets, tmask).view(B, nb)
    return torch.where(valid, J, torch.zeros_like(J))


def triton_J(
    model,
    kernels: Kernels,
    Lb: int,
    kv_layout: tuple,
    kv_aligned: bool,
    C,
    valid,
    ans,
    alen,
    forcing,
    plen,
    table,
    last=None,
) -> torch.Tensor:
    """Phase 2 on the Triton path, from the blocks to J (B, nb): what a CUDA graph captures. The
    phase-1 cache is `table` with kv_layout and kv_aligned (`triton.attention.KVTable`), which also holds
    the prompt width."""
    ids, pos, lo, limit, keep, targets, tmask = block_inputs(C, valid, ans, alen, forcing, plen, table[3], last, Lb)
    attn = kernels.prefix_attention(lo, limit, Lb, KVTable(table, kv_layout, kv_aligned))
    logits = layers.forward(model, ids, pos, attn.layer, keep, kernels)
    B, nb = valid.shape
    J = answer_logprobs(logits.reshape(B * nb, ans.shape[1], -1), targets, tmask, kernels=kernels).view(B, nb)
    return torch.where(valid, J, torch.zeros_like(J))
