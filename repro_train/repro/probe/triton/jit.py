"""The Triton kernels behind `launch.py`, `attention.py` and `ops.py` (imported on first use: importing
repro_train never needs triton, and TRITON_INTERPRET must be set before triton is imported)."""

import triton
import triton.language as tl


@triton.jit
def round_to(x, dt: tl.constexpr):
    """float32 x rounded to dt (nearest, ties to even), kept in float32. For bfloat16 the
    rounding is integer arithmetic, which no compiler pass folds away (a bf16 round trip
    through casts did not round as torch does)."""
    if dt == tl.bfloat16:
        u = x.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.to(tl.float32, bitcast=True)
    else:
        return x.to(dt).to(tl.float32)


@triton.jit
def _attend_tile(q, k, vbase, svt, kpos, col_ok, see, d, scale_log2e, m_i, l_i, acc, IEEE: tl.constexpr):
    """One key tile of online softmax: keys k (D, BLOCK_N) at columns kpos (valid where col_ok),
    scores kept where `see`."""
    if IEEE:
        qk = tl.dot(q, k, input_precision="ieee")
    else:
        qk = tl.dot(q, k)
    qk = tl.where(see, qk * scale_log2e, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.exp2(qk - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(vbase + kpos[:, None] * svt + d[None, :], mask=col_ok[:, None], other=0.0)
    if IEEE:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit(do_not_specialize=["layer"])
def prefix_attention_kernel(
    Q,
    KV,
    layer,
    KO,
    VO,
    Out,
    Opart,
    Lpart,
    Count,
    LO,
    HI,
    Items,
    sqb,
    sql,
    sqh,
    skh,
    skt,
    svh,
    svt,
    sob,
    soh,
    sot,
    sovb,
    sovh,
    sovt,
    sxb,
    sxl,
    sxh,
    nb,
    n_mt,
    Lb,
    n_split,
    n_prog,
    n_heads_kv,
    scale_log2e,
    G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    # The phase-1 cache from its table (attention.KVTable): its length and batch strides, then
    # each layer's key and value addresses. ALIGNED: the batch strides are multiples of 16 elements
    # and the addresses of 16 bytes, what Triton assumes of tensor arguments that are (and needs
    # to load a tile row in 16-byte pieces).
    T = tl.load(KV).to(tl.int32)  # (32-bit like the rest of the column arithmetic: in 64 bits, every key
    # tile's addresses cost twice the instructions)
    skb, svb = tl.load(KV + 1), tl.load(KV + 2)
    K = tl.load(KV + 8 + 2 * layer).to(tl.pointer_type(Q.dtype.element_ty))
    V = tl.load(KV + 9 + 2 * layer).to(tl.pointer_type(Q.dtype.element_ty))
    if ALIGNED:
        skb, svb = tl.multiple_of(skb, 16), tl.multiple_of(svb, 16)
        K, V = tl.multiple_of(K, 16), tl.multiple_of(V, 16)
    span = BLOCK_N * tl.maximum(1, ((T + BLOCK_N - 1) // BLOCK_N + n_split - 1) // n_split)  # as attention._span
    # program -> work item (block tile, slice of its prefix) from Items, largest first, and a KV
    # head; -1 = nothing to do (the grid is sized for every slice of the longest possible prefix)
    e = tl.load(Items + tl.program_id(0) // n_heads_kv)
    h = tl.program_id(0) % n_heads_kv
    if e >= 0:
        pid = e // n_split
        s = e % n_split
        mt = pid % n_mt
        bj = pid // n_mt
        b = bj // nb
        j = bj % nb
        r = tl.arange(0, BLOCK_M)
        rows = mt * BLOCK_M + r
        t = rows // G  # token of the block
        g = rows % G  # query head within the KV head's group
        row_ok = t < Lb
        d = tl.arange(0, D)
        q = tl.load(
            Q + b * sqb + (j * Lb + t)[:, None] * sql + (h * G + g)[:, None] * sqh + d[None, :],
            mask=row_ok[:, None],
            other=0.0,
        )
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        kbase = K + b * skb + h * skh
        vbase = V + b * svb + h * svh
        cols = tl.arange(0, BLOCK_N)
        # this item's slice of the block's prefix: columns [k_lo, k_hi); the block has `ns` slices
        lo = tl.load(LO + b)
        hi = tl.load(HI + bj)
        ns = tl.maximum(1, (hi - lo + span - 1) // span)
        k_lo = lo + s * span
        k_hi = tl.minimum(k_lo + span, hi)
        for n0 in range(k_lo, k_hi, BLOCK_N):
            kpos = n0 + cols
            col_ok = kpos < k_hi
            k = tl.load(kbase + kpos[None, :] * skt + d[:, None], mask=col_ok[None, :], other=0.0)
            m_i, l_i, acc = _attend_tile(
                q, k, vbase, svt, kpos, col_ok, col_ok[None, :], d, scale_log2e, m_i, l_i, acc, IEEE
            )
        # slice 0 also takes the block's own keys (token u of block j is row j * Lb + u of KO/VO), causally
        own_lo = j * Lb
        own_hi = tl.where(s == 0, own_lo + Lb, own_lo)
        kobase = KO + b * sob + h * soh
        vobase = VO + b * sovb + h * sovh
        for n0 in range(own_lo, own_hi, BLOCK_N):
            kpos = n0 + cols
            col_ok = kpos < own_hi
            k = tl.load(kobase + kpos[None, :] * sot + d[:, None], mask=col_ok[None, :], other=0.0)
            see = col_ok[None, :] & (kpos[None, :] - own_lo <= t[:, None])
            m_i, l_i, acc = _attend_tile(q, k, vobase, sovt, kpos, col_ok, see, d, scale_log2e, m_i, l_i, acc, IEEE)
        has = l_i > 0
        out = acc / tl.where(has, l_i, 1.0)[:, None]
        out_at = Out + b * sxb + (j * Lb + t)[:, None] * sxl + (h * G + g)[:, None] * sxh + d[None, :]
        if ns == 1:
            tl.store(out_at, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
        else:
            # Park this slice's result, then take a ticket: the last of the block's ns slices to
            # finish merges them by log-sum-exp, so no second kernel is launched.
            lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
            part = (s * n_prog + pid) * n_heads_kv + h
            tl.store(Opart + part * BLOCK_M * D + r[:, None] * D + d[None, :], out)
            tl.store(Lpart + part * BLOCK_M + r, lse)
            tl.debug_barrier()  # every thread's partial stored before the (releasing) ticket
            ticket = tl.atomic_add(Count + pid * n_heads_kv + h, 1, sem="acq_rel")
            if ticket == ns - 1:
                m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
                for s2 in range(0, ns):
                    m = tl.maximum(
                        m, tl.load(Lpart + ((s2 * n_prog + pid) * n_heads_kv + h) * BLOCK_M + r, cache_modifier=".cg")
                    )
                w_sum = tl.zeros((BLOCK_M,), tl.float32)
                merged = tl.zeros((BLOCK_M, D), tl.float32)
                for s2 in range(0, ns):  # in slice order, whichever slice merges
                    p2 = (s2 * n_prog + pid) * n_heads_kv + h
                    w = tl.exp2(tl.load(Lpart + p2 * BLOCK_M + r, cache_modifier=".cg") - m)
                    w_sum += w
                    merged += w[:, None] * tl.load(
                        Opart + p2 * BLOCK_M * D + r[:, None] * D + d[None, :], cache_modifier=".cg"
                    )
                tl.store(out_at, (merged / w_sum[:, None]).to(Out.dtype.element_ty), mask=row_ok[:, None])
                tl.store(Count + pid * n_heads_kv + h, 0)  # ready for the next layer's launch


@triton.jit
def rms_norm_kernel(X, W, Y, n_rows, N, sx, eps, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Y = W * round(X * rsqrt(mean(X^2) + eps)) rounded to X's dtype: HF's RMSNorm (normalise in
    float32, cast back, scale by the weight), ROWS rows of width N per program."""
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = (rows < n_rows)[:, None] & (cols < N)[None, :]
    x = tl.load(X + rows[:, None] * sx + cols[None, :], mask=ok, other=0.0)
    dt: tl.constexpr = x.dtype
    xf = x.to(tl.float32)
    rstd = tl.math.rsqrt(tl.sum(xf * xf, 1) / N + eps)
    w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
    y = round_to(round_to(xf * rstd[:, None], dt) * w[None, :], dt)
    tl.store(Y + rows[:, None] * N + cols[None, :], y.to(dt), mask=ok)


@triton.jit
def scale_kernel(Y, W, n, N, BLOCK: tl.constexpr):
    """Y <- W * Y in place for rows of width N (Y contiguous), rounded to Y's dtype once, as torch
    multiplies: the float32 product of two bfloat16 numbers is exact, so this is torch's bit for bit."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    y = tl.load(Y + offs, mask=ok, other=0.0)
    w = tl.load(W + offs % N, mask=ok, other=0.0)
    dt: tl.constexpr = y.dtype
    tl.store(Y + offs, round_to(y.to(tl.float32) * w.to(tl.float32), dt).to(dt), mask=ok)


@triton.jit
def silu_mul_kernel(G, U, n, BLOCK: tl.constexpr):
    """G <- silu(G) * U in place, rounding silu(G) and the product to G's dtype as torch's
    `F.silu(g, inplace=True).mul_(u)` does."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    g = tl.load(G + offs, mask=ok, other=0.0)
    dt: tl.constexpr = g.dtype
    gf = g.to(tl.float32)
    a = round_to(gf / (1.0 + tl.exp(-gf)), dt)
    y = round_to(a * tl.load(U + offs, mask=ok, other=0.0).to(tl.float32), dt)
    tl.store(G + offs, y.to(dt), mask=ok)


@triton.jit
def rope_kernel(
    Qx, Kx, COS, SIN, sqt, skt, sct, H, HKV, D: tl.constexpr, HALF: tl.constexpr, HP: tl.constexpr, KP: tl.constexpr
):
    # one token per program: x <- round(round(x * cos) + round(roll(x, D/2) * sin_signed))
    n = tl.program_id(0)
    d = tl.arange(0, D)
    rd = (d + HALF) % D
    c = tl.load(COS + n * sct + d).to(tl.float32)[None, :]
    sn = tl.load(SIN + n * sct + d).to(tl.float32)[None, :]
    hq = tl.arange(0, HP)[:, None]
    mq = hq < H
    x = tl.load(Qx + n * sqt + hq * D + d[None, :], mask=mq, other=0.0)
    xr = tl.load(Qx + n * sqt + hq * D + rd[None, :], mask=mq, other=0.0)
    dt: tl.constexpr = x.dtype
    y = round_to(round_to(x.to(tl.float32) * c, dt) + round_to(xr.to(tl.float32) * sn, dt), dt).to(dt)
    tl.debug_barrier()  # every load of the row before any store (in place)
    tl.store(Qx + n * sqt + hq * D + d[None, :], y, mask=mq)
    hk = tl.arange(0, KP)[:, None]
    mk = hk < HKV
    x = tl.load(Kx + n * skt + hk * D + d[None, :], mask=mk, other=0.0)
    xr = tl.load(Kx + n * skt + hk * D + rd[None, :], mask=mk, other=0.0)
    y = round_to(round_to(x.to(tl.float32) * c, dt) + round_to(xr.to(tl.float32) * sn, dt), dt).to(dt)
    tl.debug_barrier()
    tl.store(Kx + n * skt + hk * D + d[None, :], y, mask=mk)


@triton.jit
def target_logprob_kernel(X, T, Out, sx, V, BLOCK: tl.constexpr):
    """Out[r] = X[r, T[r]] - logsumexp(X[r, :]) in float32, reading the logits once in their dtype."""
    r = tl.program_id(0)
    row = X + r.to(tl.int64) * sx
    cols = tl.arange(0, BLOCK)
    m = tl.full((BLOCK,), float("-inf"), tl.float32)  # per-lane running max and sum
    acc = tl.zeros((BLOCK,), tl.float32)
    for v0 in range(0, V, BLOCK):
        x = tl.load(row + v0 + cols, mask=v0 + cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        live = m_new > float("-inf")
        acc = tl.where(live, acc * tl.exp(m - m_new) + tl.exp(x - m_new), 0.0)
        m = m_new
    top = tl.max(m, 0)
    total = tl.sum(tl.where(m > float("-inf"), acc * tl.exp(m - top), 0.0), 0)
    tgt = tl.load(row + tl.load(T + r)).to(tl.float32)
    tl.store(Out + r, tgt - (top + tl.log(total)))
