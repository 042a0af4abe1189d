"""The prefix attention of phase 2 (`PrefixAttention`): each probe block attends only to the phase-1 cache columns it
sees (its prompt and response prefix) and, causally, to its own tokens, reading the cache where phase 1 left it
through a small device table (`KVTable`). Work items are taken largest first so short prefixes fill in behind long
ones. Design and measurements: docs/performance.md, section 4; the reference is in tests/helpers/references.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .launch import BLOCK_N, Launcher, aligned, launch_opts, n_sm, triton_module


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
        # bf16 autocast over float32 weights: the rotary returns float32 q and keys, the model's own attention casts
        # them to the cache's bf16, and so does the probe
        q, own_keys, own_values = (
            t if t.dtype == kv.layout[3] else t.to(kv.layout[3]) for t in (q, own_keys, own_values)
        )
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
        splits = self.splits or max(1, min(16, round(SPLIT_ITEMS_PER_SM * n_sm(dev) / (n_prog * Hkv))))
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
