"""The Triton kernels behind `logprobs.py` (imported on first use: importing repro_train never needs
triton, and TRITON_INTERPRET must be set before triton is imported).

Both kernels take one chunk of logits x (n, V), rows `sx` apart, in the matmul's dtype, one program
per row, and do the softmax math in float32 on z = x / temperature:

- `row_stats_kernel` reads the row once and writes lse = logsumexp(z), lp = z[t] - lse and, with
  WITH_ENT, the entropy H = sum_j p_j (lse - z_j), from an online (running max) pass.
- `row_grad_kernel` overwrites the row with d(loss)/dx from the upstream gradients of lp and H:
  dz_j = g_lp (1[j = t] - p_j) + g_ent p_j (S - z_j) with S = sum_j p_j z_j = lse - H, dx = dz / T.
"""

import triton
import triton.language as tl


@triton.jit
def row_stats_kernel(X, T, LP, LSE, ENT, sx, V, temperature, WITH_ENT: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    row = X + r.to(tl.int64) * sx
    cols = tl.arange(0, BLOCK)
    # Running over blocks of the row, relative to the running max m:
    #   l = sum exp(z - m),  a = sum exp(z - m) (z - m)
    # so that lse = m + log l and H = lse - S = log l - a / l (no cancellation of m: H stays exact
    # when the distribution is peaked and lse is large). When m grows to m', every term is scaled
    # by exp(m - m') and (z - m) becomes (z - m') + (m - m'): a' = exp(m - m') (a + l (m - m')).
    m = float("-inf")
    l = 0.0
    a = 0.0
    for v0 in range(0, V, BLOCK):
        ok = v0 + cols < V
        z = tl.load(row + v0 + cols, mask=ok, other=float("-inf")).to(tl.float32) / temperature
        m_new = tl.maximum(m, tl.max(z, 0))
        scale = tl.exp(m - m_new)  # 0 on the first block (m = -inf)
        e = tl.exp(z - m_new)  # 0 past V
        if WITH_ENT:
            shift = tl.where(l > 0.0, m - m_new, 0.0)  # l = 0 before the first block: no -inf * 0
            a = scale * (a + l * shift) + tl.sum(e * tl.where(ok, z - m_new, 0.0), 0)
        l = l * scale + tl.sum(e, 0)
        m = m_new
    lse = m + tl.log(l)
    target = tl.load(row + tl.load(T + r)).to(tl.float32) / temperature
    tl.store(LP + r, target - lse)
    tl.store(LSE + r, lse)
    if WITH_ENT:
        tl.store(ENT + r, tl.log(l) - a / l)


@triton.jit
def row_grad_kernel(X, T, LSE, S, GLP, GENT, sx, V, temperature, HAS_GENT: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    row = X + r.to(tl.int64) * sx
    cols = tl.arange(0, BLOCK)
    t = tl.load(T + r)
    lse = tl.load(LSE + r)
    g_lp = tl.load(GLP + r)
    if HAS_GENT:
        s = tl.load(S + r)
        g_ent = tl.load(GENT + r)
    for v0 in range(0, V, BLOCK):
        c = v0 + cols
        ok = c < V
        z = tl.load(row + c, mask=ok, other=0.0).to(tl.float32) / temperature
        p = tl.exp(z - lse)
        dz = g_lp * (tl.where(c == t, 1.0, 0.0) - p)
        if HAS_GENT:
            dz += g_ent * p * (s - z)
        tl.store(row + c, (dz / temperature).to(X.dtype.element_ty), mask=ok)  # in place: this row only
