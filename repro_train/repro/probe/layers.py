"""Phase 2's forward written out layer by layer for Llama-family decoders (Llama, Mistral, Qwen2, Qwen3): the same
weights and arithmetic as the model's own forward in fewer kernels (docs/performance.md, item 4 of the design).

A few hundred probe tokens leave the stock forward bound by its small kernels. Here RMSNorm is one `F.rms_norm`, the
rotary rotation a `roll`, two products and one in-place add, q, k and v one GEMM (`fused_qkv`), the residual adds ride
in the output projections' GEMMs (`addmm_`), the SiLU gate runs in place, and the final norm and LM head see only the
positions that predict answer tokens. Attention is the caller's `attend(layer, q, k, v, scale)`; with `ops`
(`triton/ops.py` `Kernels`, on a GPU) RMSNorm's scale, the rotary embedding and the SiLU gate are one Triton kernel
each. `ModelFacts.unsupported(model)` says why a model cannot take this path (another architecture, parameters sharded
under ZeRO-3 or FSDP2, sliding-window attention); the probe then runs the model's own forward: the same J, more slowly.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...models.forward import unwrap

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")

Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
"""attend(layer index, q (B, L, H, D), k (B, L, Hkv, D), v (B, L, Hkv, D), scale) -> (B, L, H * D):
the probe tokens' attention over their prefixes in the phase-1 cache and over themselves."""


def _sharded(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id") or type(p).__name__ == "DTensor" or p.numel() == 0


class ModelFacts:
    """What the layer-by-layer path needs to know of a model, remembered per model (weakly): whether
    it can run it (`unsupported`) and what a CUDA graph of it bakes in (`graph_key`). Walking every
    parameter or module costs host time on every pass while the device waits for phase 1
    (docs/performance.md), so each walk is kept and only checked on later calls."""

    def __init__(self):
        self._sharded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._walks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def unsupported(self, model) -> str | None:
        """None when `forward` can run `model`; otherwise the reason it cannot."""
        m = unwrap(model)
        cfg = getattr(m, "config", None)
        kind = getattr(cfg, "model_type", None)
        if kind not in SUPPORTED:
            return f"model_type {kind!r} (the layer-by-layer path covers {', '.join(SUPPORTED)})"
        base = getattr(m, "model", None)
        if (
            base is None
            or not all(hasattr(base, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb"))
            or not hasattr(m, "lm_head")
        ):
            return "not a *ForCausalLM with model.embed_tokens/layers/norm/rotary_emb and lm_head"
        if getattr(cfg, "hidden_act", None) not in ("silu", "swish"):
            return f"hidden_act {getattr(cfg, 'hidden_act', None)!r} (needs silu)"
        if getattr(cfg, "pretraining_tp", 1) != 1:
            return "pretraining_tp != 1"
        if kind == "mistral" and getattr(cfg, "sliding_window", None) is not None:
            return "sliding-window attention"
        if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or ())):
            return "sliding-window attention layers"
        if self._any_sharded(m):
            return "sharded parameters (ZeRO-3 / FSDP2): the model's own forward gathers them"
        return None

    def _any_sharded(self, m: torch.nn.Module) -> bool:
        """Whether any parameter is sharded. The answer is taken again when the first parameter
        changes identity or size (what wrapping the model in ZeRO-3 or FSDP2 does)."""
        first = next(m.parameters(), None)
        key = (id(first), first.numel() if first is not None else -1)
        seen = self._sharded.get(m)
        if seen is None or seen[0] != key:
            seen = (key, any(_sharded(p) for p in m.parameters()))
            self._sharded[m] = seen
        return seen[1]

    def graph_key(self, model) -> tuple | None:
        """What a CUDA graph of `forward` (`graphs.GraphCache`) bakes in besides its inputs' shapes:
        the address of every weight it reads, the norms' epsilons, the dtype and device. None where
        `forward` would run one of the model's own modules, which a graph might not hold (a
        projection that is not `plain`, an embedding that is not `nn.Embedding`, a rotary embedding
        that resizes itself, autocast). A weight that moves gives a new key; one updated in place
        does not need one. The walk over the model (`_walk_for_graph`) is kept per model: a call
        checks that every module on it is still in its place and reads the weights' addresses."""
        m = unwrap(model)
        w = m.model.embed_tokens.weight
        if torch.is_autocast_enabled(w.device.type):
            return None
        walk = self._walks.get(m)
        if (
            walk is None
            or walk.fingerprint != (w.dtype, w.device, len(m.model.layers))
            or not all(d.get(n) is c for d, n, c in walk.links)
        ):
            walk = self._walks[m] = _walk_for_graph(m)
        if walk.fixed is None:
            return None
        return walk.fixed + tuple(d[n].data_ptr() for d, n in walk.tensors)


def _rms(x: torch.Tensor, norm, ops=None) -> torch.Tensor:
    """HF's RMSNorm: normalise in float32, cast back to x's dtype, then scale by the weight."""
    y = ops.rms_norm(x, norm.weight, norm.variance_epsilon) if ops is not None else None
    if y is not None:
        return y
    y = F.rms_norm(x, (x.shape[-1],), eps=norm.variance_epsilon)
    return y if ops is not None and ops.scale_(y, norm.weight) else norm.weight * y


def plain(lin, x: torch.Tensor) -> bool:
    """Whether `lin(h)` is exactly `h @ lin.weight.t() (+ bias)` in x's dtype, so its weight can
    go into a GEMM of our own: a plain `nn.Linear` (a subclass such as a LoRA wrapper computes
    more, and its module must run), weights in x's dtype and on its device, no autocast."""
    return (
        type(lin) is torch.nn.Linear
        and lin.weight.dtype == x.dtype
        and lin.weight.device == x.device
        and not torch.is_autocast_enabled(x.device.type)
    )


def _out_proj(x: torch.Tensor, h: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
    """x + lin(h): one GEMM accumulating into x in place when `lin` allows it (x is the residual
    stream, which nothing else holds), else a new tensor."""
    if plain(lin, x) and lin.bias is None and h.dtype == x.dtype and x.is_contiguous():
        x.view(-1, x.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), lin.weight.t())
        return x
    return x + lin(h)


def fused_qkv(layers, x: torch.Tensor, per_layer: bool = False):
    """Every layer's q, k and v projections as one (layers, Nq + Nk + Nv, hidden) weight and its
    bias (or None), gathered with one multi-tensor copy per phase 2; None where they cannot be
    (a projection that is not `plain`, biases on some only, sizes that differ between layers).
    One GEMM then does a layer's three projections, which at phase 2's few hundred tokens run far
    below the GEMM's peak one by one. The copy is made afresh every call, so it never outlives a
    weight update. per_layer=True returns a function that
    gathers layer i into one layer-sized buffer when called (i -> (weight, bias)), so a CUDA
    graph's memory pool keeps one layer's copy, not all of them."""
    lins = [(la.self_attn.q_proj, la.self_attn.k_proj, la.self_attn.v_proj) for la in layers]
    if not lins:
        return None
    rows = [lin.weight.shape[0] for lin in lins[0]]
    biased = lins[0][0].bias is not None
    for trio in lins:
        if (
            any(not plain(lin, x) or (lin.bias is not None) != biased for lin in trio)
            or [lin.weight.shape[0] for lin in trio] != rows
        ):
            return None
    n = 1 if per_layer else len(lins)
    W = x.new_empty(n, sum(rows), lins[0][0].weight.shape[1])
    b = x.new_empty(n, sum(rows)) if biased else None

    if per_layer:  # (torch.cat writes a layer in one kernel, faster than a multi-tensor copy of three)

        def layer(i):
            torch.cat([lin.weight for lin in lins[i]], out=W[0])
            if biased:
                torch.cat([lin.bias for lin in lins[i]], out=b[0])
            return W[0], b[0] if biased else None

        return layer, rows
    dst = [part for w in W for part in w.split(rows)]
    src = [lin.weight for trio in lins for lin in trio]
    if biased:
        dst += [part for v in b for part in v.split(rows)]
        src += [lin.bias for trio in lins for lin in trio]
    torch._foreach_copy_(dst, src)
    return (lambda i: (W[i], b[i] if biased else None)), rows


class _Walk(NamedTuple):
    """What `graph_key` keeps of one walk over a model."""

    fingerprint: tuple
    """(dtype, device, number of layers) of the model when walked."""
    links: list
    """(parent's module dict, name, module) of every module `forward` uses."""
    fixed: tuple | None
    """The key's fixed part, or None where a graph may not hold `forward`."""
    tensors: list
    """(parameter or buffer dict, name) of every tensor `forward` reads."""


def _walk_for_graph(m) -> _Walk:
    """Walk the modules and tensors `forward` uses (see `_Walk`)."""
    base = m.model
    w = base.embed_tokens.weight
    links, tensors = [], []

    def use(parent, name, params=("weight",)):
        child = parent._modules[name]
        links.append((parent._modules, name, child))
        tensors.extend((child._parameters, p) for p in params if child._parameters.get(p) is not None)
        return child

    for name in ("model", "lm_head"):
        use(m, name, ())
    emb, rope, norm, layers = (
        use(base, "embed_tokens"),
        use(base, "rotary_emb", ()),
        use(base, "norm"),
        use(base, "layers", ()),
    )
    if rope._buffers.get("inv_freq") is not None:
        tensors.append((rope._buffers, "inv_freq"))
    fixed = [w.dtype, w.device, norm.variance_epsilon, getattr(rope, "attention_scaling", None)]
    kind = str(getattr(rope, "rope_type", "default"))
    ok = type(emb) is torch.nn.Embedding and "dynamic" not in kind and "longrope" not in kind
    lins = []
    for i in layers._modules:
        la = use(layers, i, ())
        a, mlp = use(la, "self_attn", ()), use(la, "mlp", ())
        lins += [use(a, n, ("weight", "bias")) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        lins += [use(mlp, n, ("weight", "bias")) for n in ("gate_proj", "up_proj", "down_proj")]
        for parent, n in ((la, "input_layernorm"), (la, "post_attention_layernorm"), (a, "q_norm"), (a, "k_norm")):
            if n in parent._modules:
                fixed.append(use(parent, n).variance_epsilon)
        fixed.append(a.scaling)
    head = m.lm_head
    lins.append(head)
    tensors.append((head._parameters, "weight"))
    ok = (
        ok
        and head.bias is None
        and all(
            type(lin) is torch.nn.Linear and lin.weight.dtype == w.dtype and lin.weight.device == w.device
            for lin in lins
        )
    )
    return _Walk((w.dtype, w.device, len(layers)), links, tuple(fixed) if ok else None, tensors)


def forward(
    model, input_ids: torch.Tensor, position_ids: torch.Tensor, attend: Attend, keep: torch.Tensor, ops=None
) -> torch.Tensor:
    """Logits (B, len(keep), V) at positions `keep` of the probe blocks `input_ids` (B, L).

    `attend` gets each layer's queries, keys and values (and owns the phase-1 cache). `ops`, if
    given, is a namespace with `rms_norm(x, weight, eps) -> Tensor | None`, and, each in place,
    `scale_(y, weight) -> bool`, `rope_(q, k, cos, sin_signed) -> bool` and `silu_mul_(g, u) -> bool`
    (`triton.ops.Kernels`), each with the same rounding as the code below and None/False where it
    does not apply."""
    m = unwrap(model)
    base = m.model
    B, L = input_ids.shape
    x = base.embed_tokens(input_ids)
    cos2, sin2 = base.rotary_emb(x, position_ids)  # (B, L, D)
    half = cos2.shape[-1] // 2
    sin2 = torch.cat([-sin2[..., :half], sin2[..., half:]], dim=-1)  # rotate_half's signs
    cos, sin = cos2.unsqueeze(2), sin2.unsqueeze(2)  # broadcast over heads: q is (B, L, H, D)

    def rope(t):  # t * cos + rotate_half(t) * sin, rotate_half(t) = roll(t) * sign, each product
        # rounded as in HF (an addcmul rounds once: cheaper, but its bf16 J drifts further from the
        # model's own forward; docs/performance.md, section 4)
        return (t * cos).add_(t.roll(half, dims=-1) * sin)

    # under a CUDA graph's capture, q/k/v weights are gathered a layer at a time (see fused_qkv)
    qkv = fused_qkv(base.layers, x, x.is_cuda and torch.cuda.is_current_stream_capturing())
    for i, layer in enumerate(base.layers):
        a = layer.self_attn
        h = _rms(x, layer.input_layernorm, ops)
        if qkv is not None:  # one GEMM; q, k and v are column blocks of its output
            (W, b), rows = qkv[0](i), qkv[1]
            h2 = h.view(-1, h.shape[-1])
            out = torch.addmm(b, h2, W.t()) if b is not None else h2 @ W.t()
            q, k, v = (t.view(B, L, -1, a.head_dim) for t in out.split(rows, dim=-1))
        else:
            q = a.q_proj(h).view(B, L, -1, a.head_dim)
            k = a.k_proj(h).view(B, L, -1, a.head_dim)
            v = a.v_proj(h).view(B, L, -1, a.head_dim)
        if hasattr(a, "q_norm"):  # Qwen3: RMSNorm over each head
            q, k = _rms(q, a.q_norm, ops), _rms(k, a.k_norm, ops)
        if ops is None or not ops.rope_(q, k, cos2, sin2):
            q, k = rope(q), rope(k)
        x = _out_proj(x, attend(i, q, k, v, a.scaling), a.o_proj)
        h = _rms(x, layer.post_attention_layernorm, ops)
        mlp = layer.mlp
        g, u = mlp.gate_proj(h), mlp.up_proj(h)
        if ops is None or not ops.silu_mul_(g, u):
            g = F.silu(g, inplace=True).mul_(u)
        x = _out_proj(x, g, mlp.down_proj)
    return m.lm_head(_rms(x[:, keep], base.norm, ops))
