"""Monte-Carlo step values on RePro's cuts: the other road to process rewards (rStar-Math, arXiv 2501.04519;
Math-Shepherd, arXiv 2312.08935), put through RePro's own normalisation and fold (docs/repro.md, "Monte-Carlo
step values").

    V, se = mc_value(outcomes)                       # (..., K) outcomes of K continuations -> share correct, its SE
    r = increments(mc.V_b, mc.V, mask)               # r_j = V(c_j) - V(c_{j-1}), V(c_0) = V_b (the prompt alone)
    out = mc_process_output(repro, out, mc, group_ids, T)   # RePro's pools, r' and A_tilde from those r
    rho = spearman(dJ, dV); agree, n = sign_agreement(r, dV)   # the J-vs-V analysis (experiments/mc_vs_j.py)

Sampling and grading the continuations needs a rollout engine and an outcome reward: eval/mc_values.py. Notation
as in scores.py: N rollouts, M = most cuts of a rollout, K continuations per prefix.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .pipeline import RePro, ReProOutput
from .types import MCValues


def mc_value(outcomes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """V = share of the K outcomes that are correct, and its standard error s / sqrt(K), s the sample standard
    deviation: SE = sqrt(V (1 - V) / (K - 1)); NaN for K = 1. (...,) float64 each, from (..., K) bool or 0/1.

    V = 0 or 1 gives SE 0: K continuations that all agree say nothing more precise (a known limit of the plug-in
    estimate, which the K of a recipe should keep in mind)."""
    x = outcomes.to(torch.float64)
    K = x.shape[-1]
    V = x.mean(-1)
    if K < 2:
        return V, torch.full_like(V, float("nan"))
    return V, (V * (1.0 - V) / (K - 1)).sqrt()


def increments(base: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """r_j = x_j - x_{j-1} with x_0 = base: the change of a per-cut quantity over each step (V for the MC process
    reward, J for the analysis). base (N,), values and mask (N, M); 0 where masked. (N, M)"""
    prev = torch.cat([base.unsqueeze(-1), values[..., :-1]], dim=-1).to(values.dtype)
    r = values - prev
    return torch.where(mask, r, torch.zeros_like(r))  # NaN base of an unscored rollout never leaks


def mc_process_output(
    repro: RePro,
    out: ReProOutput,
    mc: MCValues,
    group_ids: torch.Tensor | None,
    n_tokens: int,
    batch_stats=None,
) -> ReProOutput:
    """`out` (RePro's cuts and scores of the batch) with the MC value increments as its step rewards, normalised
    over RePro's pools (repro.process_norm) into r' and A_tilde by the same code as J's (`RePro.normalise`); the
    trainer then folds them exactly as RePro's (trainer/process_fold.py). `batch_stats` as in `RePro.advantages`."""
    r = increments(mc.V_b, mc.V, out.mask)
    return replace(repro.normalise(out, r, group_ids, n_tokens, batch_stats), mc=mc)


# ----------------------------------------------------------------------------------------------
# the J-vs-V analysis
# ----------------------------------------------------------------------------------------------


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor, ties sharing the mean of their ranks: (3, 1, 3, 2) -> (3.5, 1, 3.5, 2)."""
    order = torch.argsort(x, stable=True)
    _, inv, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)  # rank of each run's last member
    mean_rank = last - (counts.to(torch.float64) - 1.0) / 2.0  # (first + last) / 2
    ranks = torch.empty(x.numel(), dtype=torch.float64)
    ranks[order] = mean_rank[inv]
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (ties allowed). NaN with fewer than
    two pairs or when either side is constant."""
    x, y = x.reshape(-1).double(), y.reshape(-1).double()
    if x.numel() != y.numel():
        raise ValueError(f"spearman needs pairs, got {x.numel()} and {y.numel()} values")
    if x.numel() < 2:
        return float("nan")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.square().sum() * ry.square().sum()).sqrt()
    return float("nan") if denom == 0 else float((rx * ry).sum() / denom)


def sign_agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    """(share of the steps with b != 0 where sign(a) = sign(b), how many such steps): does a step reward `a` point
    the way the MC value moved? Steps where the MC value did not move (frequent for small K) are left out."""
    a, b = a.reshape(-1), b.reshape(-1)
    moved = b != 0
    n = int(moved.sum())
    if n == 0:
        return float("nan"), 0
    return float((torch.sign(a[moved]) == torch.sign(b[moved])).double().mean()), n
