"""Log-probs and entropies of target tokens from the LM head's input, without keeping the logits.

    lp, ent = token_logprobs(hidden, lm_head.weight, targets, temperature=0.7)   # (N,) float32 each
    loss = -(adv * lp).sum() - beta * ent.sum(); loss.backward()   # grads reach hidden and weight

hidden (N, H) is the final norm's output at the positions that predict `targets`, weight the LM head's (V, H)
(an optional bias (V,)). Positions are taken `chunk_tokens` at a time, so logits never exist for more than one
chunk; the backward recomputes them. `impl`: "torch" (the reference), "triton" (`logprobs_triton.py`) or "auto".
The formulas, the memory and the bf16 error against float32 logits: docs/performance.md, section 6.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

IMPLS = ("auto", "torch", "triton")
BLOCK = 2048  # the kernels' vocabulary tile (a power of two; V need not be a multiple)
NUM_WARPS = 8


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = True,
    *,
    bias: torch.Tensor | None = None,
    impl: str = "auto",
    chunk_tokens: int = 1024,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float32 log pi(targets) and entropies of softmax((hidden @ weight.T + bias) / temperature).

    hidden (..., H), targets (...) with values in [0, V), weight (V, H), bias (V,) or None ->
    (lp, ent) shaped like targets, ent None unless `with_entropy`. Differentiable w.r.t. hidden,
    weight and bias, from either output."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}: choose one of {IMPLS}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens}: must be >= 1")
    H = hidden.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != H:
        raise ValueError(f"weight {tuple(weight.shape)} must be (V, {H}) for hidden {tuple(hidden.shape)}")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must be hidden's {tuple(hidden.shape)} without the last dim")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias {tuple(bias.shape)} must be ({weight.shape[0]},)")
    impl = resolve_impl(impl, hidden.device)
    cdt = compute_dtype or _autocast_or_promoted(hidden, weight)
    lp, ent = _HeadLogprobs.apply(
        hidden.reshape(-1, H),
        weight,
        bias,
        targets.reshape(-1).long().contiguous(),
        float(temperature),
        with_entropy,
        chunk_tokens,
        cdt,
        impl,
    )
    return lp.view(targets.shape), (ent.view(targets.shape) if ent is not None else None)


def resolve_impl(impl: str, device: torch.device | str) -> str:
    """ "auto" -> the Triton kernels on CUDA with triton installed (falling back to torch, warned once, where they
    fail to compile or launch: `_auto`), else "torch"; "triton" where it cannot run raises. On the CPU "triton" runs
    under Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported), which is how the CPU tests check
    the kernels; "auto" never picks that."""
    device = torch.device(device)
    if impl == "auto":
        return "auto" if device.type == "cuda" and _triton_installed() else "torch"
    if impl == "triton":
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"impl='triton' on device {device.type!r}: the kernels need CUDA (or TRITON_INTERPRET=1 "
                "set before triton is imported); use impl='torch' or 'auto'"
            )
        if not _triton_installed():
            raise ValueError("impl='triton' but triton is not installed; use impl='torch' or 'auto'")
    return impl


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _autocast_or_promoted(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    dev = hidden.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(hidden.dtype, weight.dtype)


class _HeadLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, with_entropy, chunk, cdt, impl):
        ctx.set_materialize_grads(False)  # a None upstream grad skips that output's term
        N, V = hidden.shape[0], weight.shape[0]
        f32 = dict(dtype=torch.float32, device=hidden.device)
        lp, lse = torch.empty(N, **f32), torch.empty(N, **f32)
        ent = torch.empty(N, **f32) if with_entropy else None
        with torch.autocast(hidden.device.type, enabled=False):  # the casts are explicit here
            h, w = hidden.to(cdt), weight.to(cdt)
            b = bias.to(cdt) if bias is not None else None
            buf = torch.empty(min(chunk, N), V, dtype=cdt, device=hidden.device)
            for s in range(0, N, chunk):
                e = min(s + chunk, N)
                x = _logits_into(buf[: e - s], h[s:e], w, b)
                ROW_STATS[impl](x, targets[s:e], temperature, lp[s:e], lse[s:e], ent[s:e] if with_entropy else None)
        ctx.save_for_backward(h, w, b, targets, lse, ent)
        ctx.args = (temperature, chunk, impl, hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return lp, ent

    @staticmethod
    def backward(ctx, g_lp, g_ent):
        h, w, b, targets, lse, ent = ctx.saved_tensors
        temperature, chunk, impl, h_dtype, w_dtype, b_dtype = ctx.args
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if (g_lp is None and g_ent is None) or not (need_h or need_w or need_b):
            return (None,) * 9
        (N, H), V, dev = h.shape, w.shape[0], h.device
        g_lp = torch.zeros(N, dtype=torch.float32, device=dev) if g_lp is None else g_lp.float().contiguous()
        s_ent = None
        if g_ent is not None:
            g_ent = g_ent.float().contiguous()
            s_ent = lse - ent  # S = sum_j p_j z_j, the entropy gradient's centre
        dh = torch.empty(N, H, dtype=h_dtype, device=dev) if need_h else None
        dw = torch.zeros(V, H, dtype=torch.float32, device=dev) if need_w else None
        db = torch.zeros(V, dtype=torch.float32, device=dev) if need_b else None
        with torch.autocast(dev.type, enabled=False):
            buf = torch.empty(min(chunk, N), V, dtype=h.dtype, device=dev)
            for s in range(0, N, chunk):
                e = min(s + chunk, N)
                x = _logits_into(buf[: e - s], h[s:e], w, b)
                ROW_GRAD[impl](
                    x,
                    targets[s:e],
                    temperature,
                    lse[s:e],
                    None if s_ent is None else s_ent[s:e],
                    g_lp[s:e],
                    None if g_ent is None else g_ent[s:e],
                )  # x now holds d loss / d logits
                if need_h:
                    if dh.dtype == x.dtype:
                        torch.mm(x, w, out=dh[s:e])
                    else:
                        dh[s:e] = x @ w
                if need_w:
                    _add_outer_(dw, x, h[s:e])
                if need_b:
                    db += x.sum(0, dtype=torch.float32)
        dw = dw.to(w_dtype) if need_w else None
        db = db.to(b_dtype) if need_b else None
        return dh, dw, db, None, None, None, None, None, None


def _logits_into(out: torch.Tensor, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if b is None:
        return torch.mm(h, w.t(), out=out)
    return torch.addmm(b, h, w.t(), out=out)


def _add_outer_(acc: torch.Tensor, dx: torch.Tensor, h: torch.Tensor) -> None:
    """acc (V, H) float32 += dx.T @ h, accumulating low-precision products in float32 without a
    (V, H) temporary where cuBLAS can (torch >= 2.8: addmm's out_dtype)."""
    if dx.dtype == acc.dtype:
        acc.addmm_(dx.t(), h)
    elif dx.is_cuda and _addmm_has_out_dtype():
        torch.addmm(acc, dx.t(), h, out_dtype=torch.float32, out=acc)
    else:
        acc += (dx.t() @ h).float()


@functools.cache
def _addmm_has_out_dtype() -> bool:
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 8)


# ---- the row pass: plain torch ---------------------------------------------------------------


def torch_row_stats(x, targets, temperature, lp_out, lse_out, ent_out) -> None:
    """lse, lp and (when ent_out is given) the entropy of softmax(x / T) per row, written to the outputs."""
    z = x.float() / temperature  # (n, V) float32: one chunk
    lse = torch.logsumexp(z, dim=-1)
    lse_out.copy_(lse)
    lp_out.copy_(z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse)
    if ent_out is not None:
        logp = z.sub_(lse.unsqueeze(-1))
        ent_out.copy_(-(logp.exp() * logp).sum(-1))  # sum of p (lse - z) >= 0: no cancellation


def torch_row_grad(x, targets, temperature, lse, s_ent, g_lp, g_ent) -> None:
    """Overwrite x (n, V) with d loss / d x, for upstream g_lp (n,) and g_ent (n,) or None."""
    z = x.float() / temperature
    p = torch.exp(z - lse.unsqueeze(-1))
    dz = p * -g_lp.unsqueeze(-1)  # d lp / d z = onehot - p
    dz.scatter_add_(-1, targets.unsqueeze(-1), g_lp.unsqueeze(-1))
    if g_ent is not None:
        dz += g_ent.unsqueeze(-1) * p * (s_ent.unsqueeze(-1) - z)  # d H / d z_j = p_j (S - z_j)
    x.copy_(dz / temperature)


# ---- the row pass: Triton ----------------------------------------------------------------------


@functools.cache
def _kernels():
    from . import logprobs_triton  # imports triton: only here

    return logprobs_triton


def _launch_opts(x: torch.Tensor) -> dict:
    return dict(num_warps=NUM_WARPS) if x.is_cuda else {}  # the interpreter takes no launch options


def triton_row_stats(x, targets, temperature, lp_out, lse_out, ent_out) -> None:
    n, V = x.shape
    if n:
        with_ent = ent_out is not None
        _kernels().row_stats_kernel[(n,)](
            x,
            targets,
            lp_out,
            lse_out,
            ent_out if with_ent else lse_out,
            x.stride(0),
            V,
            temperature,
            WITH_ENT=with_ent,
            BLOCK=BLOCK,
            **_launch_opts(x),
        )


def triton_row_grad(x, targets, temperature, lse, s_ent, g_lp, g_ent) -> None:
    n, V = x.shape
    if n:
        has_ent = g_ent is not None
        _kernels().row_grad_kernel[(n,)](
            x,
            targets,
            lse,
            s_ent if has_ent else lse,
            g_lp,
            g_ent if has_ent else g_lp,
            x.stride(0),
            V,
            temperature,
            HAS_GENT=has_ent,
            BLOCK=BLOCK,
            **_launch_opts(x),
        )


_TRITON_FAILED: list[str] = []
"""Why the Triton kernels failed here (once per process); "auto" then uses the torch row pass."""


def _auto(kernel, fallback):
    """impl "auto" on CUDA: the Triton kernel, and the torch row pass (warned once) where it cannot compile or
    launch here (an older or newer Triton than tested); impl "triton" raises instead."""

    def run(*args) -> None:
        if not _TRITON_FAILED:
            try:
                return kernel(*args)
            except Exception as e:  # compilation or launch: nothing was written yet
                _TRITON_FAILED.append(f"{type(e).__name__}: {e}")
                warnings.warn(
                    f"the log-prob head's Triton kernel failed ({_TRITON_FAILED[0][:300]}); using torch", stacklevel=3
                )
        return fallback(*args)

    return run


ROW_STATS = {"torch": torch_row_stats, "triton": triton_row_stats, "auto": _auto(triton_row_stats, torch_row_stats)}
ROW_GRAD = {"torch": torch_row_grad, "triton": triton_row_grad, "auto": _auto(triton_row_grad, torch_row_grad)}
