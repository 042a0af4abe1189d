"""The small Triton kernels of phase 2 behind one object (`Kernels`): rotary embeddings, RMSNorm (and its scale), the
SiLU gate and the answer log-probs, each with the same roundings as the torch code it replaces; what the
layer-by-layer forward takes as `ops`. docs/performance.md, section 4.
"""

from __future__ import annotations

import torch

from .attention import KVTable, PrefixAttention
from .launch import Launcher, aligned, launch_opts, triton_module


class Kernels:
    """The small Triton kernels of phase 2, launched through one `Launcher`: what the layer-by-layer
    forward takes as `ops`. Each returns False or None, doing nothing, where it does not apply; the
    caller's torch code runs then.

    fused_rms_norm: whether `rms_norm` runs its kernel. Off by default: in 8 seeds of
    bench/dj_seeds.py its bf16 J landed further from float32 J in 2 and closer in none (it differs
    from torch's RMSNorm by one bf16 step in 3-9 elements per million, and J amplifies that);
    docs/performance.md has what it would save. dj_seeds.py turns it on to compare."""

    def __init__(self, launcher: Launcher | None = None, fused_rms_norm: bool = False):
        self.launcher = launcher if launcher is not None else Launcher()
        self.fused_rms_norm = fused_rms_norm

    def prefix_attention(
        self, lo: torch.Tensor, hi: torch.Tensor, block_len: int, kv: KVTable | None = None, **kw
    ) -> PrefixAttention:
        """`PrefixAttention` launching through this object's launcher."""
        return PrefixAttention(lo, hi, block_len, kv, launcher=self.launcher, **kw)

    def target_logprobs(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log_softmax(logits.float())[r, targets[r]] for logits (N, V) (contiguous rows), targets (N,):
        one program per row reads its logits once, in their own dtype; nothing vocabulary-sized is
        written (torch's float32 log-softmax writes N x V floats)."""
        N, V = logits.shape
        if logits.stride(1) != 1:
            logits = logits.contiguous()
        out = torch.empty(N, dtype=torch.float32, device=logits.device)
        if N:  # once per phase 2: through Triton's launcher
            self.launcher.launch(
                triton_module().target_logprob_kernel,
                (N,),
                (logits, targets.contiguous(), out, logits.stride(0), V),
                dict(BLOCK=2048),
                launch_opts(logits.device, num_warps=8),
                None,
            )
        return out

    def rope_(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> bool:
        """Rotary embedding of q (B, L, H, D) and k (B, L, Hkv, D) in place, one kernel; cos and
        sin_signed (B, L, D) with sin_signed = sin with its first half negated (rotate_half's signs).
        Returns False, doing nothing, where the kernel does not apply (mixed dtypes as under autocast,
        float16, strided rows): the caller's torch code does it then."""
        B, L, H, D = q.shape
        Hkv = k.shape[2]
        if (
            not (q.dtype == k.dtype == cos.dtype == sin_signed.dtype)
            or q.dtype not in (torch.bfloat16, torch.float32)
            or D & (D - 1)
            or D < 2
            or q.stride(2) != D
            or k.stride(2) != D
            or q.stride(3) != 1
            or k.stride(3) != 1
            or q.stride(0) != L * q.stride(1)
            or k.stride(0) != L * k.stride(1)
            or not (cos.is_contiguous() and sin_signed.is_contiguous())
        ):
            return False
        ints = (q.stride(1), k.stride(1), D, H, Hkv)
        self.launcher.launch(
            triton_module().rope_kernel,
            (B * L,),
            (q, k, cos, sin_signed, *ints),
            dict(D=D, HALF=D // 2, HP=1 << (H - 1).bit_length(), KP=1 << (Hkv - 1).bit_length()),
            launch_opts(q.device, num_warps=4),
            (ints, q.device, aligned(q, k, cos, sin_signed)),
        )
        return True

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
        """HF's RMSNorm over the last dim, `weight * rms_norm(x).to(x.dtype)`, in one kernel; None
        where it does not run (fused_rms_norm off, dtypes other than matching bfloat16 or float32, a
        last dim over 16384, or rows that are not a view of one (n, N) matrix): the caller's torch
        code does it then."""
        N = x.shape[-1]
        if (
            not self.fused_rms_norm
            or x.dtype != weight.dtype
            or x.dtype not in (torch.bfloat16, torch.float32)
            or N > 16384
            or x.stride(-1) != 1
        ):
            return None
        try:
            x2 = x.view(-1, N)
        except RuntimeError:
            return None
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        n = x2.shape[0]
        block = 1 << (N - 1).bit_length()
        rows = max(1, min(16, 2048 // block))
        if n:
            self.launcher.launch(
                triton_module().rms_norm_kernel,
                (-(-n // rows),),
                (x2, weight, y, n, N, x2.stride(0), eps),
                dict(ROWS=rows, BLOCK=block),
                launch_opts(x.device, num_warps=4 if block <= 2048 else 8),
                (n, N, x2.stride(0), eps, x.device, aligned(x2, weight, y)),
            )
        return y

    def scale_(self, y: torch.Tensor, weight: torch.Tensor) -> bool:
        """y <- weight * y in place (weight over y's last dim), one kernel, rounded as torch's
        `weight * y`: RMSNorm's scale after torch's own normalisation, which broadcasts in a slower
        kernel. Returns False, doing nothing, where it does not apply (other or mixed dtypes,
        non-contiguous y)."""
        if (
            y.dtype != weight.dtype
            or y.dtype not in (torch.bfloat16, torch.float32)
            or not y.is_contiguous()
            or weight.dim() != 1
            or weight.shape[0] != y.shape[-1]
            or not weight.is_contiguous()
        ):
            return False
        n = y.numel()
        if n:
            self.launcher.launch(
                triton_module().scale_kernel,
                (-(-n // 2048),),
                (y, weight, n, y.shape[-1]),
                dict(BLOCK=2048),
                launch_opts(y.device, num_warps=8),
                (n, y.shape[-1], y.device, aligned(y, weight)),
            )
        return True

    def silu_mul_(self, g: torch.Tensor, u: torch.Tensor) -> bool:
        """g <- silu(g) * u in place, one kernel, rounded as `F.silu(g, inplace=True).mul_(u)`. Returns
        False, doing nothing, where the kernel does not apply (other dtypes, non-contiguous tensors)."""
        if (
            g.shape != u.shape
            or g.dtype != u.dtype
            or g.dtype not in (torch.bfloat16, torch.float32)
            or not (g.is_contiguous() and u.is_contiguous())
        ):
            return False
        n = g.numel()
        if n:
            self.launcher.launch(
                triton_module().silu_mul_kernel,
                (-(-n // 2048),),
                (g, u, n),
                dict(BLOCK=2048),
                launch_opts(g.device, num_warps=8),
                (n, g.device, aligned(g, u)),
            )
        return True
