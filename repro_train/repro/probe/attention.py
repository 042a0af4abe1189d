"""How phase 2 of the fused probe attends, and the phase-1 KV cache it attends to.

Phase 2 (`fused.probe_fused`) scores probe blocks placed after the cached prompt + response; each
block sees its own prefix of the cache and, causally, itself. Two back-ends:

- "triton" (`kernels.PrefixAttention`, on a GPU with triton): each block reads exactly its
  prefix where phase 1 left it; nothing is appended, so phase 1 keeps no room (`probe_cache(0)`).
- "sdpa": the blocks' keys and values are appended to the cache (`probe_cache(room)` leaves the
  room, so no per-layer concatenation) and SDPA attends under an additive mask (`probe_mask`),
  with grouped-query heads folded into the query axis (`folded_sdpa`). It also serves the model's
  own forward (`probe_attention_on`) for architectures the layer-by-layer path does not cover.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from ...models.forward import Sequences, unwrap


def _compute_dtype(cache, model) -> torch.dtype:
    """The dtype attention runs in: that of the cached keys (autocast included), else the weights'."""
    layers = getattr(cache, "layers", None)
    keys = getattr(layers[0], "keys", None) if layers else None
    if isinstance(keys, torch.Tensor):
        return keys.dtype
    return next(unwrap(model).parameters()).dtype


PROBE_ATTENTION = "repro_probe_gqa"


def folded_sdpa(query, key, value, mask, scale):
    """SDPA with grouped-query heads folded into the query axis: query (B, H, Lq, D), key/value
    (B, Hkv, Lk, D) as cached -> (B, H, Lq, D).

    Query head g*r + i uses KV head g (r = H / Hkv), so (B, H, Lq, D) -> (B, Hkv, r*Lq, D) lets
    every KV head be read once, where the stock path copies the whole cache to all H heads in every
    layer. The mask comes folded, (B, 1, r*Lq, Lk), from probe_fused."""
    B, H, Lq, D = query.shape
    Hkv = key.shape[1]
    r = H // Hkv
    out = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(B, Hkv, r * Lq, D), key, value, attn_mask=mask, scale=scale
    )
    return out.reshape(B, H, Lq, D)  # (a view fails on the memory-efficient kernel's strided output)


def _probe_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """`folded_sdpa` as a transformers attention function (the model's own forward in phase 2)."""
    return folded_sdpa(query, key, value, attention_mask, scaling).transpose(1, 2).contiguous(), None


def sdpa_attend(cache, mask):
    """`folded_sdpa` in layers.forward's attend signature: the blocks' keys and values are appended
    to the cache (`cache.update`), then the blocks attend to the whole cache under `mask`."""

    def attend(i, q, k, v, scale):
        B, L, H, D = q.shape
        keys, values = cache.update(k.transpose(1, 2), v.transpose(1, 2), i)
        return folded_sdpa(q.transpose(1, 2), keys, values, mask, scale).transpose(1, 2).reshape(B, L, H * D)

    return attend


@contextlib.contextmanager
def probe_attention_on(model):
    """Route the model's attention through `_probe_attention` for one forward."""
    from transformers import AttentionInterface

    if PROBE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(PROBE_ATTENTION, _probe_attention)
    cfg = unwrap(model).config
    old = cfg._attn_implementation
    cfg._attn_implementation = PROBE_ATTENTION
    try:
        yield
    finally:
        cfg._attn_implementation = old


def probe_cache(room: int):
    """A DynamicCache whose layers keep `room` spare columns after phase 1's keys/values, so the
    probe forward writes its blocks in place instead of concatenating the whole cache per layer.
    `buffers[layer]` holds (keys, values) tokens-major, (B, T + room, H, D); the layers' `keys` and
    `values` are (B, H, T, D) views of them. room=0 keeps phase 1's own tensors, with no copy (for
    the Triton path, which never appends)."""
    return _probe_cache_class()(room)


@functools.cache
def _probe_cache_class():
    """The cache class, defined on first use (it subclasses transformers' DynamicCache)."""
    from transformers import DynamicCache

    class ProbeCache(DynamicCache):
        def __init__(self, room: int):
            super().__init__()
            self.room = room
            self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
            if layer_idx not in self.buffers:  # phase 1
                # Keys in the values' dtype: under bf16 autocast over float32 weights the rotary returns float32 keys
                # beside bf16 values, and attention casts them to bf16 anyway; kept so, they cost half and every
                # reader of the cache (the Triton probe's one table of all layers) sees one dtype.
                key_states = key_states.to(value_states.dtype)
                # (a zero-length update registers the layer without the parent's concatenation)
                super().update(key_states[:, :, :0], value_states[:, :, :0], layer_idx, cache_kwargs)
                if self.room == 0:  # phase 2 appends nothing (Triton path): keep phase 1's tensors
                    layer = self.layers[layer_idx]
                    layer.keys, layer.values = key_states, value_states
                    self.buffers[layer_idx] = None
                    return key_states, value_states
                # one copy of the keys/values into a roomier buffer
                # Tokens-major (B, T, H, D), the layout the projections leave the keys in, so
                # this copy and phase 2's writes are plain block copies; attention gets views.
                B, H, T, D = key_states.shape
                kb = key_states.new_empty(B, T + self.room, H, D)
                vb = value_states.new_empty(B, T + self.room, H, D)
                kb[:, :T], vb[:, :T] = key_states.transpose(1, 2), value_states.transpose(1, 2)
                layer = self.layers[layer_idx]
                layer.keys, layer.values = kb.transpose(1, 2)[:, :, :T], vb.transpose(1, 2)[:, :, :T]
                self.buffers[layer_idx] = (kb, vb)
                return key_states, value_states
            buf = self.buffers[layer_idx]
            if buf is None:
                return super().update(key_states, value_states, layer_idx, cache_kwargs)
            kb, vb = buf
            layer = self.layers[layer_idx]
            T, n = layer.keys.shape[-2], key_states.shape[-2]
            if layer.keys.data_ptr() != kb.data_ptr() or T + n > kb.shape[1]:
                return super().update(key_states, value_states, layer_idx, cache_kwargs)
            kb[:, T : T + n], vb[:, T : T + n] = key_states.transpose(1, 2), value_states.transpose(1, 2)
            layer.keys, layer.values = kb.transpose(1, 2)[:, :, : T + n], vb.transpose(1, 2)[:, :, : T + n]
            return layer.keys, layer.values

    return ProbeCache


def probe_mask(model, seqs: Sequences, cache, limit: torch.Tensor, Lb: int, Lp: int) -> torch.Tensor:
    """The additive mask (B, 1, r * Lp, Kc + Lp) of the probe blocks over the cache and themselves,
    rows in the GQA-folded order of `folded_sdpa`."""
    device = seqs.input_ids.device
    B, Kc = seqs.input_ids.shape
    nb = limit.shape[1]
    cols = torch.arange(Kc, device=device)
    see_cache = seqs.attention_mask.bool().unsqueeze(1) & (cols.view(1, 1, -1) < limit.unsqueeze(-1))  # (B, nb, Kc)
    see_cache = see_cache.unsqueeze(2).expand(B, nb, Lb, Kc).reshape(B, Lp, Kc)
    u = torch.arange(Lp, device=device)
    see_probe = ((u // Lb).view(-1, 1) == (u // Lb).view(1, -1)) & (u.view(1, -1) <= u.view(-1, 1))  # (Lp, Lp)
    allowed = torch.cat([see_cache, see_probe.expand(B, Lp, Lp)], dim=-1).unsqueeze(1)  # (B, 1, Lp, Kc + Lp)
    dtype = _compute_dtype(cache, model)
    cfg = unwrap(model).config
    heads = getattr(cfg, "num_attention_heads", 1)
    r = max(1, heads // (getattr(cfg, "num_key_value_heads", None) or heads))
    # One additive mask in the attention's dtype, built once for all layers.
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)  # no host copy: no sync
    mask = torch.where(allowed, torch.zeros((), dtype=dtype, device=device), blocked)
    if r > 1:  # rows of the GQA-folded queries: rep i of query t is row i * Lp + t (a plain copy)
        mask = mask.repeat(1, 1, r, 1)
    return mask
