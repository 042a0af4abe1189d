"""Advantage estimators: GRPO / Dr. GRPO, RLOO, REINFORCE++, REINFORCE++-baseline, GAE (PPO).

Every estimator has one signature and is chosen by name:

    out = get_estimator("grpo")(AdvantageInputs(...), AdvantageParams(...), reduce)
    out.advantages, out.returns                       # (B, T), exactly 0 on masked tokens

`reduce` is an all-reduce SUM across data-parallel ranks (identity on one process); an estimator registers
with `register_estimator(name, needs_critic=, group_relative=)`. Notation, formulas, precision and where
we differ from verl: docs/algorithms.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.registry import Registry
from .moments import centre_by_sums, divide_keep_zero, moment_sums, pool_index, pool_moments

WORK = torch.float64
"""Sums, statistics and recursions run in float64; every estimator returns float32 (OUT)."""
OUT = torch.float32

Reduce = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """The single-process `reduce`: the local sum is the global sum."""
    return x


@dataclass(frozen=True)
class AdvantageInputs:
    rewards: torch.Tensor
    """(B,) float outcome reward per rollout."""
    mask: torch.Tensor
    """(B, T) bool, True on real response tokens (right-padded)."""
    group_ids: torch.Tensor
    """(B,) long; rollouts of one prompt share an id. Groups never span ranks."""
    token_rewards: torch.Tensor | None = None
    """(B, T) extra per-token rewards (e.g. -kl_coef * KL, dense process rewards)."""
    values: torch.Tensor | None = None
    """(B, T) critic values V(s_t); gae only."""

    def __post_init__(self):
        if self.mask.dim() != 2 or self.mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a (B, T) bool tensor, got shape {tuple(self.mask.shape)} dtype {self.mask.dtype}"
            )
        B, T = self.mask.shape
        for name, t, shape in (
            ("rewards", self.rewards, (B,)),
            ("group_ids", self.group_ids, (B,)),
            ("token_rewards", self.token_rewards, (B, T)),
            ("values", self.values, (B, T)),
        ):
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} to match mask, got {tuple(t.shape)}")


@dataclass(frozen=True)
class AdvantageParams:
    gamma: float = 1.0
    """Discount of the return-to-go (reinforce_pp, gae, and every estimator's `returns`)."""
    lam: float = 0.95
    """GAE lambda (gae only)."""
    grpo_std_norm: bool = True
    """grpo: divide by the group std; False = Dr. GRPO (arXiv:2503.20783)."""
    whiten: bool = True
    """gae: whiten advantages over the (global) batch's valid tokens."""
    eps: float = 1e-6
    """grpo: A = (s - mean) / (std + eps), s the total reward. Batch whitening uses masked_whiten's 1e-8 (verl)."""


@dataclass
class AdvantageOutput:
    advantages: torch.Tensor
    """(B, T), exactly 0 on masked tokens."""
    returns: torch.Tensor
    """(B, T): value targets for gae (A before whitening + V); the discounted return-to-go G for
    the others. 0 on masked tokens."""


Estimator = Callable[[AdvantageInputs, AdvantageParams, Reduce], AdvantageOutput]
ESTIMATORS: Registry[Estimator] = Registry("advantage estimator")
get_estimator = ESTIMATORS.get
"""The advantage estimator registered under a name; an unknown name raises ValueError listing the choices."""


@dataclass(frozen=True)
class EstimatorFacts:
    """What the trainer and the checks need to know about an estimator, recorded where it is registered."""

    needs_critic: bool
    """It reads critic values (AdvantageInputs.values): the trainer builds a value model (PPO)."""
    group_relative: bool
    """Its advantage compares the rollouts of one prompt: a group of equal rewards gets exactly 0 (before any batch
    whitening), and a group needs >= 2."""


def register_estimator(name: str, *, needs_critic: bool = False, group_relative: bool = False):
    """Decorator adding an advantage estimator under a name, with its facts; a name already taken raises ValueError."""
    return ESTIMATORS.register(name, facts=EstimatorFacts(needs_critic, group_relative))


def estimator_facts(name: str) -> EstimatorFacts:
    """The facts of the estimator registered under `name` (an unknown name raises ValueError listing the choices)."""
    return ESTIMATORS.facts(name)["facts"]


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce = identity, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the valid tokens of ALL ranks; 0 on masked tokens. (B, T), x's dtype

    sums = reduce(moment_sums(x, mask))          (count, sum of float32 parts, sum of the rest, sum of squares)
    mean = S1 / n,  var = (S2 - S1 * mean) / (n - 1)        (unbiased, as verl masked_var)
    float64 throughout, and the mean taken part by part (algos/moments.py), so that a batch whose
    valid x are all equal whitens to exactly 0 whatever their value and dtype.
    """
    centred, var = centre_by_sums(x, mask, reduce(moment_sums(x, mask)))
    return torch.where(mask, divide_keep_zero(centred, torch.sqrt(var + eps)), 0.0).to(x.dtype)


def _total_rewards(inp: AdvantageInputs) -> torch.Tensor:
    """s_i = rewards_i + sum_t token_rewards_i,t over valid tokens: the total reward. (B,) float64"""
    total = inp.rewards.to(WORK)
    if inp.token_rewards is not None:
        total = total + torch.where(inp.mask, inp.token_rewards.to(WORK), 0.0).sum(-1)
    return total


def _token_rewards(inp: AdvantageInputs) -> torch.Tensor:
    """r_t = token_rewards_t + rewards * [t == last valid token]; 0 on masked tokens. (B, T) float64"""
    mask = inp.mask
    if inp.token_rewards is None:
        r = torch.zeros(mask.shape, dtype=WORK, device=mask.device)  # (B, T)
    else:
        r = torch.where(mask, inp.token_rewards.to(WORK), 0.0)
    T = mask.shape[1]
    last = T - 1 - mask.flip(-1).int().argmax(-1)  # (B,) last True per row
    outcome = torch.where(mask.any(-1), inp.rewards.to(WORK), 0.0)  # a row with no tokens drops it
    return r.scatter_add(1, last.unsqueeze(1), outcome.unsqueeze(1))


def _return_to_go(r: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1}, skipping masked tokens; 0 on masked tokens. (B, T)

    verl resets the running return at masked tokens instead of skipping them; both agree on
    right-padded masks, and skipping matches how GAE treats masked tokens.
    """
    out = torch.zeros_like(r)  # (B, T)
    running = torch.zeros_like(r[:, 0])  # (B,)
    for t in reversed(range(r.shape[1])):
        running = torch.where(mask[:, t], r[:, t] + gamma * running, running)
        out[:, t] = running
    return torch.where(mask, out, 0)


def _group_stats(total: torch.Tensor, group_ids: torch.Tensor):
    """Per rollout: its group's size G, its deviation s_i - mean_g and the group's unbiased std, each (B,) float64.

    The deviation is exactly 0 in a group of equal totals (algos/moments.py). A group of one gets
    mean 0 and std 1, as verl (its deviation is then its own total reward).
    """
    inv, n_groups = pool_index(group_ids)
    pm = pool_moments(total, inv, n_groups, ddof=1.0)  # mean_g, sum (s_i - mean_g)^2 / (G_g - 1)
    count = pm.count[inv]
    single = count == 1
    dev = torch.where(single, total.to(WORK), pm.centred)
    std = torch.where(single, 1.0, pm.var.sqrt()[inv])
    return count, dev, std


def _broadcast(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A_i on every valid token of row i, 0 elsewhere. (B,) -> (B, T)"""
    return torch.where(mask, a.unsqueeze(1), 0)


# ---------------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------------


@register_estimator("grpo", group_relative=True)
@torch.no_grad()
def grpo(inp: AdvantageInputs, p: AdvantageParams, reduce: Reduce = identity) -> AdvantageOutput:
    """GRPO (arXiv:2402.03300) and Dr. GRPO (arXiv:2503.20783, grpo_std_norm=False)."""
    total = _total_rewards(inp)  # (B,)
    _, adv, std = _group_stats(total, inp.group_ids)  # Dr. GRPO: A_i = s_i - mean_g
    if p.grpo_std_norm:
        adv = divide_keep_zero(adv, std + p.eps)  # GRPO: A_i = (s_i - mean_g) / (std_g + eps)
    returns = _return_to_go(_token_rewards(inp), inp.mask, p.gamma)
    return AdvantageOutput(_broadcast(adv, inp.mask).to(OUT), returns.to(OUT))


@register_estimator("rloo", group_relative=True)
@torch.no_grad()
def rloo(inp: AdvantageInputs, p: AdvantageParams, reduce: Reduce = identity) -> AdvantageOutput:
    """RLOO (arXiv:2402.14740): leave-one-out baseline; a group of one gets 0."""
    total = _total_rewards(inp)  # (B,)
    count, dev, _ = _group_stats(total, inp.group_ids)
    # A_i = s_i - mean_{j != i} s_j = G / (G - 1) * (s_i - mean_g)
    adv = torch.where(count > 1, count / (count - 1).clamp(min=1) * dev, 0.0)
    returns = _return_to_go(_token_rewards(inp), inp.mask, p.gamma)
    return AdvantageOutput(_broadcast(adv, inp.mask).to(OUT), returns.to(OUT))


@register_estimator("reinforce_pp")
@torch.no_grad()
def reinforce_pp(inp: AdvantageInputs, p: AdvantageParams, reduce: Reduce = identity) -> AdvantageOutput:
    """REINFORCE++ (arXiv:2501.03262): whitened discounted return-to-go, no critic, no groups."""
    returns = _return_to_go(_token_rewards(inp), inp.mask, p.gamma)  # G_t = sum_{s>=t} gamma^(s-t) r_s
    adv = masked_whiten(returns, inp.mask, reduce)  # A_t = (G_t - mean(G)) / std(G), global batch
    return AdvantageOutput(adv.to(OUT), returns.to(OUT))


@register_estimator("reinforce_pp_baseline", group_relative=True)
@torch.no_grad()
def reinforce_pp_baseline(inp: AdvantageInputs, p: AdvantageParams, reduce: Reduce = identity) -> AdvantageOutput:
    """REINFORCE++-baseline (arXiv:2501.03262): group-mean baseline, then global whitening."""
    total = _total_rewards(inp)  # (B,)
    _, dev, _ = _group_stats(total, inp.group_ids)
    adv = _broadcast(dev, inp.mask)  # A_i,t = s_i - mean_g on valid tokens
    adv = masked_whiten(adv, inp.mask, reduce)  # then (A - mean(A)) / std(A) over the global batch
    returns = _return_to_go(_token_rewards(inp), inp.mask, p.gamma)
    return AdvantageOutput(adv.to(OUT), returns.to(OUT))


@register_estimator("gae", needs_critic=True)
@torch.no_grad()
def gae(inp: AdvantageInputs, p: AdvantageParams, reduce: Reduce = identity) -> AdvantageOutput:
    """PPO's Generalized Advantage Estimation (arXiv:1506.02438) over response tokens."""
    if inp.values is None:
        raise ValueError("the 'gae' estimator needs critic values: AdvantageInputs(values=...) of shape (B, T)")
    mask = inp.mask
    r = _token_rewards(inp)  # (B, T)
    V = torch.where(mask, inp.values.to(WORK), 0.0)  # (B, T)
    adv = torch.zeros_like(r)  # (B, T)
    next_v = torch.zeros_like(r[:, 0])  # V beyond the last valid token = 0
    next_a = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + p.gamma * next_v - V[:, t]  # delta_t = r_t + gamma V_{t+1} - V_t
        a = delta + p.gamma * p.lam * next_a  # A_t = delta_t + gamma lam A_{t+1}
        # Masked tokens are skipped: they carry V_{t+1} and A_{t+1} through unchanged (verl).
        next_v = torch.where(mask[:, t], V[:, t], next_v)
        next_a = torch.where(mask[:, t], a, next_a)
        adv[:, t] = next_a
    adv = torch.where(mask, adv, 0)
    returns = torch.where(mask, adv + V, 0)  # value targets R_t = A_t + V_t, before whitening
    if p.whiten:
        adv = masked_whiten(adv, mask, reduce)
    return AdvantageOutput(adv.to(OUT), returns.to(OUT))
