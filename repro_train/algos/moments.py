"""Mean and spread of pools of values (a prompt's group, a batch) such that a flat pool, every member
equal, gives exactly 0 deviation whatever the value and dtype. Every group or batch statistic of the
package goes through here: the advantage estimators, RePro's normalisation pools, the shapers' group terms.

    inv, n = pool_index(group_ids)                          # (B,) pool of each row, n pools
    pm = pool_moments(x, inv, n, valid, ddof=1)             # pools on one process: pm.centred, pm.var, pm.mean
    sums = reduce(moment_sums(x, valid))                    # a pool spread over ranks: all-reduce (SUM) this (4,)
    centred, var = centre_by_sums(x, valid, sums, ddof=1)

Statistics are float64; callers cast their outputs. Why the textbook mean fails and the two exact constructions
used here: docs/algorithms.md, "Shared implementation details", item 7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

F64 = torch.float64


def pool_index(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(inverse (B,) with values in [0, n), n): the pool of each row, pools numbered by sorted id."""
    _, inv = torch.unique(ids, return_inverse=True)
    return inv, int(inv.max()) + 1 if inv.numel() else 0


def divide_keep_zero(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, except that a 0 numerator gives 0 (not NaN) when den is 0 too: a flat pool's
    deviation divided by its zero std (eps = 0) is 0, as the formula's limit and verl's docs say."""
    return torch.where(num == 0, torch.zeros_like(num), num / den)


@dataclass(frozen=True)
class PoolMoments:
    count: torch.Tensor
    """(n,) float64 members per pool (valid values plus extra zeros)."""
    mean: torch.Tensor
    """(n,) float64 pool mean; exactly the common value of a flat pool; 0 for an empty pool."""
    centred: torch.Tensor
    """x.shape float64: x - its pool's mean on valid values, 0 elsewhere; exactly 0 in a flat pool."""
    var: torch.Tensor
    """(n,) float64 sum of squared deviations / max(count - ddof, 1); exactly 0 for a flat pool."""


def _per_row(t: torch.Tensor) -> torch.Tensor:
    """Sum of each row of a (B,) or (B, K) tensor. (B,)"""
    return t.flatten(1).sum(-1) if t.dim() > 1 else t


def pool_moments(
    x: torch.Tensor,
    pools: torch.Tensor,
    n_pools: int,
    valid: torch.Tensor | None = None,
    ddof: float = 1.0,
    extra_zeros: torch.Tensor | None = None,
) -> PoolMoments:
    """Moments of the pools of x on this process. x is (B,) or (B, K); row b belongs to pool
    pools[b] (B,); `valid` (x's shape, bool) selects the members (None: all); `extra_zeros` (B,)
    adds that many zeros to row b's pool (RePro's authors' quirk): counted, never output.

    With ref_p = the largest valid member of pool p (0 if none) and d = x - ref_p:
        mean_d = (sum d - n_extra ref_p) / count,   centred = d - mean_d,   mean = ref_p + mean_d
        var = (sum centred^2 + n_extra (ref_p + mean_d)^2) / max(count - ddof, 1)
    A flat pool has d = 0 everywhere, hence mean_d = centred = var = 0 and mean = its value, exactly.
    """
    x64 = x.to(F64)
    v = torch.ones_like(x, dtype=torch.bool) if valid is None else valid.bool()
    pe = pools.reshape(-1, *([1] * (x.dim() - 1))).expand(x.shape)  # pool of each element
    zeros = torch.zeros(n_pools, dtype=F64, device=x.device)
    neg_inf = torch.full_like(x64, -torch.inf)
    ref = torch.full_like(zeros, -torch.inf).scatter_reduce(
        0, pe.reshape(-1), torch.where(v, x64, neg_inf).reshape(-1), "amax"
    )
    ref = torch.where(ref == -torch.inf, zeros, ref)  # a pool with no valid member
    d = torch.where(v, x64 - ref[pe], 0.0)
    n_extra = zeros if extra_zeros is None else zeros.index_add(0, pools, extra_zeros.to(F64))
    count = zeros.index_add(0, pools, _per_row(v.to(F64))) + n_extra
    mean_d = (zeros.index_add(0, pools, _per_row(d)) - n_extra * ref) / count.clamp(min=1.0)
    centred = torch.where(v, d - mean_d[pe], 0.0)
    ss = zeros.index_add(0, pools, _per_row(centred * centred)) + n_extra * (ref + mean_d) ** 2
    return PoolMoments(count, ref + mean_d, centred, ss / (count - ddof).clamp(min=1.0))


SPLIT = 2.0**27 + 1.0
"""Veltkamp's constant: hi keeps the top 26 of a float64's 53 significant bits, lo = x - hi fits in 26."""


def _split(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) float64 with hi + lo = x exactly, each of at most 26 significant bits (Veltkamp:
    c = SPLIT x, hi = c - (c - x)), at any exponent; 0 where not valid. float32 and narrower
    values are all hi."""
    x64 = torch.where(valid, x.to(F64), 0.0)
    c = x64 * SPLIT
    hi = c - (c - x64)
    hi = torch.where(torch.isfinite(c), hi, x64)  # |x| > 1e300 would overflow: left whole
    return hi, x64 - hi


def moment_sums(x: torch.Tensor, valid: torch.Tensor, extra_zeros: float | torch.Tensor = 0.0) -> torch.Tensor:
    """(count, sum of hi halves, sum of lo halves, sum of squares) of the valid x, float64 (4,): what ranks
    all-reduce (SUM) for a pool spread over them. `extra_zeros` zeros join the count."""
    valid = valid.bool()
    hi, lo = _split(x, valid)
    x64 = hi + lo
    count = valid.sum().to(F64) + extra_zeros
    return torch.stack([count, hi.sum(), lo.sum(), (x64 * x64).sum()])


def centre_by_sums(
    x: torch.Tensor, valid: torch.Tensor, sums: torch.Tensor, ddof: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x - mean on valid values and 0 elsewhere (x's shape), var = (S2 - S1 mean) / max(n - ddof, 1))
    from the all-reduced `moment_sums`, both float64. mean = S_hi / n + S_lo / n, taken part by part
    so that a flat pool's members centre to exactly 0."""
    valid = valid.bool()
    n, s_hi, s_lo, s2 = sums.to(F64).unbind()
    m_hi, m_lo = s_hi / n.clamp(min=1.0), s_lo / n.clamp(min=1.0)
    hi, lo = _split(x, valid)
    centred = torch.where(valid, (hi - m_hi) + (lo - m_lo), 0.0)
    var = ((s2 - (s_hi + s_lo) * (m_hi + m_lo)) / (n - ddof).clamp(min=1.0)).clamp(min=0.0)
    return centred, var
