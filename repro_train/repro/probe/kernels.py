"""Triton kernels for phase 2 of the fused probe: prefix attention, rotary embeddings, RMSNorm, the
SiLU gate and the answer log-probs.

Phase 2 scores probe blocks of `Lb` tokens. Block j of row b sees the phase-1 cache columns
[lo_b, hi_bj) (its prompt + response prefix) and, causally, its own tokens. The SDPA path writes
the blocks after the cache and expresses that with an additive mask over every column, so it
computes each block against the whole cache and reads a mask as large as the scores. Here:

- `PrefixAttention`: each program takes one block's query tile for one KV head (the grouped-query
  heads that share the KV head fold into the tile's rows, so the cache is read once per KV head)
  and one slice of the block's prefix, and walks only the columns that block sees; slice 0 also
  takes the block's own keys, which come from the layer's probe projections, not from the cache.
  The cache is read where phase 1 left it (no copy, no room kept), through a small device table
  of its length, strides and addresses (`KVTable`), so a launch, and a CUDA graph of phase 2,
  holds nothing of a particular cache. Programs take their (tile,
  slice) items largest first from a list sorted on the device once per phase 2, so short prefixes
  fill in behind long ones; a prefix short enough for one slice is written at once, otherwise the
  last slice of a tile to finish merges the slices by their log-sum-exp (an atomic ticket),
  writing (B, L, H * D), the layout the output projection reads: one launch per layer.
- `rope_`: the rotary embedding of q and k in place, in one kernel per layer, rounding each
  product and the sum to the tensors' dtype exactly as the model's `q * cos + rotate_half(q) * sin`.
  (Rotating inside the attention kernel instead saves the launch but costs more GPU time: every
  slice of the prefix would rotate its query tile again; docs/performance.md, section 4.)
- `silu_mul_`, `scale_`, `rms_norm`: the MLP's SiLU gate, RMSNorm's scale by its weight (after
  torch's normalisation), and HF's whole RMSNorm, one kernel each, with the same roundings as the
  torch code they replace (normalise in float32, round, scale, round). The whole-RMSNorm kernel
  is off by default (`Kernels.fused_rms_norm`): its float32 sums run in another order than torch's.

Phase 2 pushes only a few hundred tokens through each layer, so every kernel saved is a launch
saved as well as a pass over memory. For the same reason the launches themselves skip Triton's
launcher after a kernel's first call (`Launcher`).

The same kernels run under Triton's interpreter on the CPU (TRITON_INTERPRET=1, set before triton
is imported; float32 and float16, as the interpreter has no bfloat16), which is how the CPU test
suite checks them against the reference implementations here.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from dataclasses import dataclass

import torch

BLOCK_N = 64


def unavailable(device: torch.device | str) -> str | None:
    """None when the Triton path can run on `device`; otherwise why not."""
    if torch.device(device).type != "cuda" and not _interpret():
        return f"device {torch.device(device).type!r} (the Triton kernels need CUDA)"
    if not _triton_installed():
        return "triton is not installed"
    return None


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None  # (a path search: once per process)


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def triton_module():
    """The module of Triton kernels, imported on first use (importing triton is slow)."""
    from . import triton_kernels

    return triton_kernels


def launch_opts(dev: torch.device, **kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None} if dev.type == "cuda" else {}


class Launcher:
    """Launches Triton kernels, remembering each compiled kernel under its key (`launch`).

    direct: whether `launch` may skip Triton's launcher after a kernel's first launch under a key
    (off: every launch goes through it; the GPU tests compare the two)."""

    TABLE_SIZE = 256
    """Compiled launches remembered; shapes change between micro-batches, so the table is cleared when full."""

    def __init__(self, direct: bool = True):
        self.direct = direct
        self.table: dict = {}

    def launch(self, kernel, grid: tuple, args: tuple, consts: dict, opts: dict, key: tuple | None) -> None:
        """`kernel[grid](*args, **consts, **opts)`, where `consts` are the kernel's remaining parameters.

        Triton's launcher binds and specialises every argument on every call, a cost of host time
        paid 5 times per layer in phase 2 (docs/performance.md). After the first launch under a key,
        later ones with the same key call the compiled kernel directly. `key` must hold everything in
        `args` that the compiled kernel depends on besides the pointers' addresses: the integers
        (Triton specialises on them), each pointer's 16-byte alignment and dtype, the device; the
        kernel, grid, constants and launch options are added here. Only Tritons whose compiled kernel
        takes every parameter, constants included (3.3 on), launch directly; a launcher that refuses
        the call turns it off for good."""
        if key is not None:
            key = (kernel, grid, key, tuple(consts.items()), tuple(opts.items()))
        run = self.table.get(key) if key is not None and self.direct else None
        if run is not None:
            try:
                run[0](*args, *run[1])
                return
            except TypeError:  # its arguments were refused before any launch
                self.direct = False
        compiled = kernel[grid](*args, **consts, **opts)
        names = list(getattr(kernel, "arg_names", ()))
        if (
            key is not None
            and self.direct
            and not _interpret()
            and names[len(args) :] == list(consts)
            and len(getattr(getattr(compiled, "src", None), "signature", ())) == len(names)
        ):
            if len(self.table) > self.TABLE_SIZE:
                self.table.clear()
            self.table[key] = (compiled[tuple(grid) + (1,) * (3 - len(grid))], tuple(consts.values()))


def aligned(*tensors: torch.Tensor) -> tuple:
    """What Triton specialises a tensor argument on besides its dtype: 16-byte alignment."""
    return tuple((t.data_ptr() % 16 == 0, t.dtype) for t in tensors)


@dataclass(frozen=True)
class KVTable:
    """The phase-1 cache as the attention kernel reads it: an int64 device tensor holding the
    cache length, the keys' and values' batch strides and the prompt width, then (from slot 8)
    every layer's key and value addresses. The kernel takes the layer's addresses from it, so what
    a launch fixes of the cache is only `layout` (rows, heads, head size, dtype, head and token
    strides, the same whatever the cache's length), and a CUDA graph of phase 2
    (`graphs.GraphCache`) can replay over any later cache of that layout: only the table's
    contents change."""

    table: torch.Tensor
    layout: tuple
    """(B, Hkv, D, dtype, (keys' head and token strides, values' head and token strides))."""
    aligned: bool
    """Batch strides that are multiples of 16 elements, addresses of 16 bytes."""


def kv_table(kvs, prompt_width: int = 0) -> KVTable:
    """KVTable of layers' cached (keys, values), each (B, Hkv, T, D) with a contiguous last dim and
    the same shape and strides in every layer, in a new tensor on the keys' device: one pinned
    copy, queued without waiting for the device. `prompt_width` (where the responses start in the
    cache) rides along for phase 2, which reads it from the table (`probe._triton_J`)."""
    k0, v0 = kvs[0]
    B, Hkv, T, D = k0.shape
    for k, v in kvs:
        if (
            k.shape != k0.shape
            or v.shape != k0.shape
            or k.stride() != k0.stride()
            or v.stride() != v0.stride()
            or k.dtype != k0.dtype
            or v.dtype != k0.dtype
        ):
            raise ValueError("kv_table: every layer's keys and values need the same shape, strides and dtype")
        if k.stride(-1) != 1 or v.stride(-1) != 1:
            raise ValueError("kv_table: the cached keys and values need a contiguous last dimension")
    head = [T, k0.stride(0), v0.stride(0), prompt_width, 0, 0, 0, 0]
    addrs = [t.data_ptr() for kv in kvs for t in kv]
    aligned = head[1] % 16 == 0 and head[2] % 16 == 0 and all(a % 16 == 0 for a in addrs)
    host = torch.tensor(head + addrs, dtype=torch.int64)
    if k0.is_cuda:
        host = host.pin_memory()
    heads = (k0.stride(1), v0.stride(1)) if Hkv > 1 else (0, 0)  # (a size-1 dim's stride is arbitrary)
    layout = (B, Hkv, D, k0.dtype, (heads[0], k0.stride(2), heads[1], v0.stride(2)))
    return KVTable(host.to(k0.device, non_blocking=True), layout, aligned)


def _span(T: torch.Tensor, splits: int, block_n: int) -> torch.Tensor:
    """Prefix columns per slice when the whole cache (T columns, a 0-d tensor on the device: no
    sync) is cut into at most `splits` slices of whole key tiles; the kernel computes the same."""
    tiles = (T + block_n - 1) // block_n
    return block_n * ((tiles + splits - 1) // splits).clamp(min=1)


class PrefixAttention:
    """Attention of the probe blocks over exactly their prefixes, for every layer of one phase 2.

    lo (B,): first visible cache column of each row (after its left padding); hi (B, nb): block j
    sees cache columns [lo_b, hi_bj) (none where hi <= lo) and, causally, its own block. `kv`: the
    phase-1 cache (`kv_table`); `layer(i, ...)` attends over layer i of it, and calling the object
    with one layer's keys and values attends over those (tests, benchmarks).

    The work is cut into items: a block's prefix into slices of `span` columns (as many as it
    needs, at most `splits`), times the KV heads. Prefixes run from the prompt to the whole cache,
    so items differ in size; they are ordered largest first (once per phase 2, on the device), and
    programs take them in that order, so the small ones fill in behind the large ones instead of
    the longest prefixes finishing last. The last slice of a block to finish merges the block's
    slices. The work buffers (partial outputs, merge tickets, the output) are made once and reused
    by every layer. `splits` (default: from the number of SMs and blocks) sets the slice length:
    the longest possible prefix, the whole cache, is cut into `splits` slices. Nothing here reads
    the cache's length on the host: the span comes from the table, on the device."""

    def __init__(
        self,
        lo: torch.Tensor,
        hi: torch.Tensor,
        block_len: int,
        kv: KVTable | None = None,
        splits: int | None = None,
        num_warps: int | None = None,
        num_stages: int | None = 3,
        block_n: int = BLOCK_N,
        launcher: Launcher | None = None,
    ):
        self.launcher = launcher if launcher is not None else Launcher()
        self.lo = lo.to(torch.int32).contiguous()
        self.hi = hi.to(torch.int32).contiguous()
        self.block_len, self.kv, self.splits, self.block_n = block_len, kv, splits, block_n
        self.num_warps, self.num_stages = num_warps, num_stages
        self._launch_setup = None
        self._one = None

    def __call__(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        own_keys: torch.Tensor,
        own_values: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """One layer given as tensors: keys/values (B, Hkv, T, D), the phase-1 cache (any strides
        with a contiguous last dim); the rest as in `layer`."""
        src = (keys.data_ptr(), values.data_ptr(), keys.shape, keys.stride(), values.stride(), keys.dtype)
        if self._one is None or self._one[0] != src:
            self._one = (src, kv_table([(keys, values)]))
            self.kv, self._launch_setup = self._one[1], None  # (the work items follow the cache's length)
        return self.layer(0, q, own_keys, own_values, scale)

    def layer(
        self, i: int, q: torch.Tensor, own_keys: torch.Tensor, own_values: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """q (B, L, H, D) and own_keys/own_values (B, L, Hkv, D): the probe tokens' projections
        (L = nb * block_len; block j = tokens [j * block_len, (j + 1) * block_len)), attending
        over layer i of the cache table. Returns (B, L, H * D) in q's dtype."""
        # Every layer of a phase 2 has the same shapes and strides: the launch is set up once.
        kv = self.kv
        key = (
            q.shape,
            q.stride(),
            own_keys.shape,
            own_keys.stride(),
            own_values.stride(),
            q.dtype,
            q.device,
            kv.layout,
            kv.aligned,
        )
        if self._launch_setup is None or self._launch_setup[0] != key:
            self._launch_setup = (key, *self._prepare(q, own_keys, own_values))
        _, grid, bufs, bufs_aligned, ints, consts, opts = self._launch_setup
        # (the layer index i is not in the key: the kernel does not specialise on it)
        self.launcher.launch(
            triton_module().prefix_attention_kernel,
            grid,
            (q, kv.table, i, own_keys, own_values, *bufs, *ints, scale * math.log2(math.e)),
            consts,
            opts,
            (ints, q.device, bufs_aligned, aligned(q, kv.table, own_keys, own_values)),
        )
        return bufs[0].view(q.shape[0], q.shape[1], -1)

    def _check(self, q, own_keys, own_values) -> None:
        """ValueError unless the inputs have the shapes, dtypes and layout the kernel takes."""
        B, L, H, D = q.shape
        kvB, Hkv, kvD, kv_dtype, _ = self.kv.layout
        G, Lb = H // Hkv, self.block_len
        nb = L // Lb
        if (
            nb * Lb != L
            or G * Hkv != H
            or D & (D - 1)
            or D < 16
            or nb != self.hi.shape[1]
            or (kvB, kvD, kv_dtype) != (B, D, q.dtype)
        ):
            raise ValueError(
                f"PrefixAttention: L={L} must be {self.hi.shape[1]} blocks of {Lb}, H={H} a multiple "
                f"of Hkv={Hkv}, head_dim={D} a power of two >= 16, the cache's rows, head size and "
                f"dtype ({kvB}, {kvD}, {kv_dtype}) those of q ({B}, {D}, {q.dtype})"
            )
        if any(x.stride(-1) != 1 for x in (q, own_keys, own_values)):
            raise ValueError("PrefixAttention: every input needs a contiguous last dimension")

    def _prepare(self, q, own_keys, own_values):
        """(grid, work buffers every layer reuses (output, partial outputs, partial LSEs, merge
        tickets, lo, hi, the ordered items) and their alignment, integer arguments, constants,
        launch options)."""
        self._check(q, own_keys, own_values)
        B, L, H, D = q.shape
        Hkv, kv_strides = self.kv.layout[1], self.kv.layout[4]
        G, Lb = H // Hkv, self.block_len
        nb = L // Lb
        rows = Lb * G
        block_m = 128 if rows > 64 else max(16, 1 << (rows - 1).bit_length())
        n_mt = -(-rows // block_m)
        n_prog = B * nb * n_mt
        dev = q.device
        splits = self.splits or max(1, min(16, round(SPLIT_ITEMS_PER_SM * _n_sm(dev) / (n_prog * Hkv))))
        opart = torch.empty(splits * n_prog * Hkv * block_m * D, dtype=torch.float32, device=dev)
        lpart = torch.empty(splits * n_prog * Hkv * block_m, dtype=torch.float32, device=dev)
        tickets = torch.zeros(n_prog * Hkv, dtype=torch.int32, device=dev)  # the last slice to merge resets its ticket
        out = torch.empty(B, L, H, D, dtype=q.dtype, device=dev)
        items = work_items(self.lo, self.hi, n_mt, _span(self.kv.table[0], splits, self.block_n), splits, self.block_n)
        ints = (
            q.stride(0),
            q.stride(1),
            q.stride(2),
            *kv_strides,
            own_keys.stride(0),
            own_keys.stride(2),
            own_keys.stride(1),
            own_values.stride(0),
            own_values.stride(2),
            own_values.stride(1),
            out.stride(0),
            out.stride(1),
            out.stride(2),
            nb,
            n_mt,
            Lb,
            splits,
            n_prog,
            Hkv,
        )
        consts = dict(
            G=G, D=D, BLOCK_M=block_m, BLOCK_N=self.block_n, IEEE=q.dtype == torch.float32, ALIGNED=self.kv.aligned
        )
        opts = launch_opts(dev, num_warps=self.num_warps or (8 if block_m == 128 else 4), num_stages=self.num_stages)
        bufs = (out, opart, lpart, tickets, self.lo, self.hi, items)
        return (n_prog * splits * Hkv,), bufs, aligned(*bufs), ints, consts, opts


SPLIT_ITEMS_PER_SM = 1.5
"""Default slicing: about this many (block, KV head, slice) items per SM if every block saw the
whole cache (on average they see about half of it). Finer slices balance better but cost more
than they gain (docs/performance.md, section 4; `bench/bench_probe_attention.py`)."""


def work_items(lo: torch.Tensor, hi: torch.Tensor, n_mt: int, span: int, splits: int, block_n: int) -> torch.Tensor:
    """The attention's work items, largest first: item = tile * splits + slice for every non-empty
    slice of every block's row tiles (slice 0 always: it also holds the block's own keys), then -1
    up to tiles * splits. Sizes count key tiles. On the device, no sync: a sort of a few hundred
    numbers per phase 2."""
    n = (hi - lo.view(-1, 1)).clamp(min=0).reshape(-1).repeat_interleave(n_mt)  # prefix columns per row tile
    s = torch.arange(splits, device=n.device)
    cols = (n.view(-1, 1) - s * span).clamp(min=0)
    cols = torch.where(cols > span, span, cols)
    size = torch.where((cols > 0) | (s == 0), (cols + block_n - 1) // block_n + (s == 0).long(), -1).view(-1)
    size, order = torch.sort(size, descending=True, stable=True)
    return torch.where(size >= 0, order, -1).to(torch.int32)


def prefix_attention_reference(q, keys, values, own_keys, own_values, lo, hi, block_len, scale) -> torch.Tensor:
    """PrefixAttention's result from an explicit mask and a float32 softmax (slow; tests, benchmark)."""
    B, L, H, D = q.shape
    Hkv, T = keys.shape[1], keys.shape[2]
    nb = L // block_len
    col = torch.arange(T, device=q.device)
    u = torch.arange(L, device=q.device)
    blk = u // block_len
    see_cache = (col.view(1, 1, -1) >= lo.view(B, 1, 1)) & (col.view(1, 1, -1) < hi.view(B, nb, 1)[:, blk])  # (B, L, T)
    see_own = (blk.view(-1, 1) == blk.view(1, -1)) & (u.view(1, -1) <= u.view(-1, 1))  # (L, L)
    see = torch.cat([see_cache, see_own.expand(B, L, L)], dim=-1)
    k = torch.cat([keys, own_keys.transpose(1, 2)], dim=2).float().repeat_interleave(H // Hkv, dim=1)
    v = torch.cat([values, own_values.transpose(1, 2)], dim=2).float().repeat_interleave(H // Hkv, dim=1)
    s = torch.einsum("blhd,bhtd->bhlt", q.float(), k) * scale
    s = s.masked_fill(~see.unsqueeze(1), float("-inf"))
    return torch.einsum("bhlt,bhtd->blhd", s.softmax(-1), v).to(q.dtype).reshape(B, L, H * D)


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


def _n_sm(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4
