"""Length-control reward shapers: the baselines that RePro is compared with, under one trainer.

    shaping:                       # recipe section (ShapingConfig, shaping/params.py)
      methods: [kimi]              # applied in this order, after the outcome reward, before the estimator
      kimi: {warmup_steps: 0}

    new_rewards = SHAPERS.get(name).reward(ShapeInputs(...), params)        # (B,) -> (B,)
    adv = SHAPERS.get(name).advantage(adv, ShapeInputs(...), params)        # (B, T), GRPO-LEAD only

Each method is one registered pure tensor function of the outcome rewards, correctness, lengths, truncation and
group ids; a prompt's group sits on one rank, so no shaper communicates. The methods, their inputs and where the
trainer calls them: docs/rewards.md, "Length-control shapers".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..algos.moments import pool_index, pool_moments
from ..core.registry import Registry
from ..core.typed_config import ConfigError
from .params import (
    CosineParams,
    DapoOverlongParams,
    EfficiencyParams,
    GatedBonusParams,
    GrpoLeadParams,
    KimiParams,
    L1ExactParams,
    L1MaxParams,
    LaserParams,
    ShapingConfig,
    ShorterBetterParams,
    ThinkPruneParams,
)

# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeInputs:
    rewards: torch.Tensor
    """(B,) float outcome reward R (after the shapers earlier in the list)."""
    correct: torch.Tensor
    """(B,) bool c."""
    lengths: torch.Tensor
    """(B,) response length in tokens (EOS included), as sampled."""
    truncated: torch.Tensor
    """(B,) bool: the response hit rollout.max_new_tokens without EOS."""
    group_ids: torch.Tensor
    """(B,) long; the rollouts of one prompt share an id (never spans ranks)."""
    thinking_lengths: torch.Tensor | None = None
    """(B,) tokens before the end-of-thinking marker; set when shaping.length = thinking."""
    step: int = 0
    """RL step (0-based): Kimi's warm-up and ThinkPrune's rounds read it."""

    @property
    def measured(self) -> torch.Tensor:
        """The length the group-relative methods compare: thinking length when given, else L. (B,) float"""
        return (self.thinking_lengths if self.thinking_lengths is not None else self.lengths).double()


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

RewardFn = Callable[[ShapeInputs, object], torch.Tensor]
AdvantageFn = Callable[[torch.Tensor, ShapeInputs, object], torch.Tensor]


@dataclass(frozen=True)
class Shaper:
    reward: RewardFn
    """(inputs, params) -> new rewards (B,)."""
    advantage: AdvantageFn | None = None
    """(advantages (B, T), inputs, params) -> advantages, applied after the estimator; None = none."""


SHAPERS: Registry[Shaper] = Registry("length shaper")
"""name -> Shaper; the name is also the ShapingConfig field holding its parameters."""


def register_shaper(name: str, advantage: AdvantageFn | None = None):
    """Decorator adding a reward function (and optional advantage modifier) under `name`."""

    def deco(fn: RewardFn) -> RewardFn:
        SHAPERS.register(name)(Shaper(fn, advantage))
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# Group statistics (over each group's rows; a group never spans ranks)
# ---------------------------------------------------------------------------------------------


def _groups(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(inverse (B,) with values in [0, n), n groups)."""
    return pool_index(group_ids)


def group_sum(x: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """sum of x over each row's group, broadcast back to the rows. (B,)"""
    inv, n = _groups(group_ids)
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, inv, x)[inv]


def group_reduce(x: torch.Tensor, where: torch.Tensor, group_ids: torch.Tensor, op: str) -> torch.Tensor:
    """'amin' / 'amax' of x over the rows of each group where `where` is True; nan for a group
    with no such row. (B,)"""
    inv, n = _groups(group_ids)
    fill = math.inf if op == "amin" else -math.inf
    vals = torch.where(where, x, torch.full_like(x, fill))
    out = torch.full((n,), fill, dtype=x.dtype, device=x.device).scatter_reduce(0, inv, vals, op)
    return torch.where(torch.isinf(out), torch.full_like(out, math.nan), out)[inv]


def group_mean_std(x: torch.Tensor, where: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, population std) of x over each group's rows where `where`; nan where none. (B,), (B,)

    Through algos/moments.py: when those rows' x are all equal, the mean is exactly that value and
    the std exactly 0, so the terms built on x - mean (efficiency, GRPO-LEAD, gated_bonus) are 0."""
    inv, n = _groups(group_ids)
    pm = pool_moments(x, inv, n, where.bool(), ddof=0.0)
    none = pm.count == 0
    mean = torch.where(none, torch.nan, pm.mean)[inv]
    std = torch.where(none, torch.nan, pm.var.sqrt())[inv]
    return mean.to(x.dtype), std.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# The methods. R' as a function of R (outcome reward), c, L; every one returns float (B,).
# ---------------------------------------------------------------------------------------------


def _c(inp: ShapeInputs) -> torch.Tensor:
    return inp.correct.double()


@register_shaper("dapo_overlong")
def dapo_overlong(inp: ShapeInputs, p: DapoOverlongParams) -> torch.Tensor:
    """R' = R + pen(L): 0 if L <= L_max - L_cache; ((L_max - L_cache) - L) / L_cache in the
    buffer; -1 if L > L_max (DAPO eq. 13). Response length: the penalty targets the generation limit."""
    L = inp.lengths.double()
    soft = p.max_len - p.cache_len
    pen = torch.where(L <= soft, torch.zeros_like(L), (soft - L) / p.cache_len)
    pen = torch.where(L > p.max_len, torch.full_like(L, -1.0), pen)
    return inp.rewards.double() + pen


@register_shaper("kimi")
def kimi(inp: ShapeInputs, p: KimiParams) -> torch.Tensor:
    """lambda = 0.5 - (L - min_L) / (max_L - min_L) over the group (0 when all lengths are equal);
    R' = R + weight * (lambda if correct else min(0, lambda)). Off before warmup_steps."""
    L, c = inp.measured, inp.correct
    if inp.step < p.warmup_steps:
        return inp.rewards.double()
    every = torch.ones_like(c)
    lo = group_reduce(L, every, inp.group_ids, "amin")
    hi = group_reduce(L, every, inp.group_ids, "amax")
    span = hi - lo
    lam = torch.where(span > 0, 0.5 - (L - lo) / span.clamp(min=1e-12), torch.zeros_like(L))
    return inp.rewards.double() + p.weight * torch.where(c, lam, lam.clamp(max=0))


@register_shaper("l1_exact")
def l1_exact(inp: ShapeInputs, p: L1ExactParams) -> torch.Tensor:
    """R' = R - alpha * |n_gold - L| (LCPO-Exact; R in place of c)."""
    return inp.rewards.double() - p.alpha * (p.target_len - inp.measured).abs()


@register_shaper("l1_max")
def l1_max(inp: ShapeInputs, p: L1MaxParams) -> torch.Tensor:
    """R' = R * clip(alpha * (n_gold - L) + delta, 0, 1) (LCPO-Max; R in place of c)."""
    return inp.rewards.double() * (p.alpha * (p.target_len - inp.measured) + p.delta).clamp(0.0, 1.0)


@register_shaper("shorter_better")
def shorter_better(inp: ShapeInputs, p: ShorterBetterParams) -> torch.Tensor:
    """SOL = the shortest correct L in the group, or the group's mean L when none is correct;
    R' = alpha * R - beta * |L - SOL|."""
    L = inp.measured
    shortest = group_reduce(L, inp.correct, inp.group_ids, "amin")
    mean_all, _ = group_mean_std(L, torch.ones_like(inp.correct), inp.group_ids)
    sol = torch.where(torch.isnan(shortest), mean_all, shortest)
    return p.alpha * inp.rewards.double() - p.beta * (L - sol).abs()


@register_shaper("cosine")
def cosine(inp: ShapeInputs, p: CosineParams) -> torch.Tensor:
    """The correctness term is replaced by a cosine of the length:
    v(L) = v_max + (v_0 - v_max) * (1 + cos(pi * min(L / L_max, 1))) / 2, with (v_0, v_max) =
    (correct_at_0, correct_at_max) if correct else (wrong_at_0, wrong_at_max); R' = R - c + v(L)."""
    c = inp.correct
    x = (inp.measured / p.max_len).clamp(max=1.0)
    v0 = torch.where(c, p.correct_at_0, p.wrong_at_0).double()
    vm = torch.where(c, p.correct_at_max, p.wrong_at_max).double()
    v = vm + (v0 - vm) * (1 + torch.cos(math.pi * x)) / 2
    return inp.rewards.double() - _c(inp) + v


@register_shaper("efficiency")
def efficiency(inp: ShapeInputs, p: EfficiencyParams) -> torch.Tensor:
    """mu, sigma = mean and population std of L over the group's correct responses;
    R' = R - c * alpha * sigmoid((L - mu) / (sigma + eps)), i.e. c * (1 - alpha * sigmoid(...)) for R = c."""
    L = inp.measured
    mu, sigma = group_mean_std(L, inp.correct, inp.group_ids)
    s = torch.sigmoid((L - mu) / (sigma + p.eps))
    return inp.rewards.double() - _c(inp) * p.alpha * s.nan_to_num(0.0)


def lead_weight(pass_rate: torch.Tensor, p: GrpoLeadParams) -> torch.Tensor:
    """w(p) = A + (B - A) / (1 + exp(k (p - p0)))."""
    return p.w_min + (p.w_max - p.w_min) / (1 + torch.exp(p.k * (pass_rate - p.p0)))


def grpo_lead_advantage(adv: torch.Tensor, inp: ShapeInputs, p: GrpoLeadParams) -> torch.Tensor:
    """A' = A * w(rho) where A > 0, A * w(1 - rho) elsewhere; rho = the group's pass rate. (B, T)"""
    if not p.difficulty_reweight:
        return adv
    rho = group_sum(_c(inp), inp.group_ids) / group_sum(torch.ones_like(_c(inp)), inp.group_ids)  # (B,)
    w_pos = lead_weight(rho, p)[:, None].to(adv)  # (B, 1)
    w_neg = lead_weight(1 - rho, p)[:, None].to(adv)  # (B, 1)
    return torch.where(adv > 0, adv * w_pos, adv * w_neg)


@register_shaper("grpo_lead", advantage=grpo_lead_advantage)
def grpo_lead(inp: ShapeInputs, p: GrpoLeadParams) -> torch.Tensor:
    """The correctness term is replaced: exp(-alpha * z) if correct, z = (L - mu_c) / (sigma_c + eps)
    over the group's correct responses; wrong_reward (-1) if wrong. R' = R - c + that."""
    L = inp.measured
    mu, sigma = group_mean_std(L, inp.correct, inp.group_ids)
    z = ((L - mu) / (sigma + p.eps)).nan_to_num(0.0)
    term = torch.where(inp.correct, torch.exp(-p.alpha * z), torch.full_like(z, p.wrong_reward))
    return inp.rewards.double() - _c(inp) + term


def thinkprune_limit(step: int, p: ThinkPruneParams) -> int:
    """The limit of `step`'s round."""
    r = step // p.round_steps if p.round_steps > 0 else 0
    return p.limits[min(r, len(p.limits) - 1)]


@register_shaper("thinkprune")
def thinkprune(inp: ShapeInputs, p: ThinkPruneParams) -> torch.Tensor:
    """R' = 0 for a response that was cut (truncated, or longer than this round's limit), else R."""
    cut = inp.truncated | (inp.lengths > thinkprune_limit(inp.step, p))
    return torch.where(cut, torch.zeros_like(inp.rewards.double()), inp.rewards.double())


@register_shaper("laser")
def laser(inp: ShapeInputs, p: LaserParams) -> torch.Tensor:
    """R' = R + alpha * c * [L <= L_T] (LASER's step reward)."""
    return inp.rewards.double() + p.alpha * _c(inp) * (inp.measured <= p.target_len).double()


@register_shaper("gated_bonus")
def gated_bonus(inp: ShapeInputs, p: GatedBonusParams) -> torch.Tensor:
    """bonus = clamp(1 - L / mean correct L of the group, 0, max_bonus); R' = R * (1 + bonus * c).
    A group with no correct response gets no bonus."""
    L = inp.measured
    mu, _ = group_mean_std(L, inp.correct, inp.group_ids)
    bonus = (1 - L / mu).clamp(0.0, p.max_bonus).nan_to_num(0.0)
    return inp.rewards.double() * (1 + bonus * _c(inp))


# ---------------------------------------------------------------------------------------------
# Config validation and the whole list's application
# ---------------------------------------------------------------------------------------------


def validate_shaping(s: ShapingConfig, max_new_tokens: int, prefix: str = "shaping.") -> None:
    """Raise ConfigError naming the field; never fixes values."""
    for i, name in enumerate(s.methods):
        if name not in SHAPERS:
            import difflib

            close = difflib.get_close_matches(name, list(SHAPERS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"'{prefix}methods[{i}]' = {name!r} is not a shaper{hint}; choices: {', '.join(SHAPERS)}")
    if len(set(s.methods)) != len(s.methods):
        raise ConfigError(f"'{prefix}methods' lists a shaper twice: {list(s.methods)}")
    used = set(s.methods)
    d = s.dapo_overlong
    if "dapo_overlong" in used:
        if not 0 < d.cache_len < d.max_len:
            raise ConfigError(
                f"'{prefix}dapo_overlong.cache_len' must be in (0, max_len = {d.max_len}), got {d.cache_len}"
            )
        if d.max_len > max_new_tokens:
            raise ConfigError(
                f"'{prefix}dapo_overlong.max_len' = {d.max_len} exceeds rollout.max_new_tokens = "
                f"{max_new_tokens}: no response could reach it; set it to {max_new_tokens} "
                f"(DAPO's L_max is the generation limit) and cache_len below it"
            )
    tp = s.thinkprune
    if "thinkprune" in used:
        lim = list(tp.limits)
        if not lim or min(lim) < 1 or any(b >= a for a, b in zip(lim, lim[1:])):
            raise ConfigError(f"'{prefix}thinkprune.limits' must be positive and strictly decreasing, got {lim}")
        if lim[0] > max_new_tokens:
            raise ConfigError(
                f"'{prefix}thinkprune.limits' starts at {lim[0]} > rollout.max_new_tokens = "
                f"{max_new_tokens}; the limits are cuts below the generation limit, e.g. "
                f"[{max_new_tokens}, {max_new_tokens * 3 // 4}, {max_new_tokens // 2}]"
            )
        if tp.round_steps < 0:
            raise ConfigError(f"'{prefix}thinkprune.round_steps' must be >= 0, got {tp.round_steps}")
    g = s.grpo_lead
    checks = [
        ("kimi.warmup_steps", s.kimi.warmup_steps >= 0, ">= 0"),
        ("l1_exact.alpha", s.l1_exact.alpha >= 0, ">= 0"),
        ("l1_exact.target_len", s.l1_exact.target_len >= 1, ">= 1"),
        ("l1_max.alpha", s.l1_max.alpha >= 0, ">= 0"),
        ("l1_max.target_len", s.l1_max.target_len >= 1, ">= 1"),
        ("shorter_better.beta", s.shorter_better.beta >= 0, ">= 0"),
        ("cosine.max_len", s.cosine.max_len >= 1, ">= 1"),
        ("efficiency.alpha", 0 <= s.efficiency.alpha <= 1, "in [0, 1]"),
        ("efficiency.eps", s.efficiency.eps > 0, "> 0"),
        ("grpo_lead.alpha", g.alpha >= 0, ">= 0"),
        ("grpo_lead.eps", g.eps > 0, "> 0"),
        ("grpo_lead.w_min", 0 <= g.w_min <= g.w_max, "in [0, grpo_lead.w_max]"),
        ("laser.target_len", s.laser.target_len >= 1, ">= 1"),
        ("gated_bonus.max_bonus", s.gated_bonus.max_bonus >= 0, ">= 0"),
    ]
    for key, ok, must in checks:
        if key.split(".")[0] in used and not ok:
            raise ConfigError(f"'{prefix}{key}' must be {must}, got {_get(s, key)}")


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class ShapingResult:
    """What the shapers did to one batch: the trainer keeps it on the batch for the advantage
    modifiers and the metrics."""

    inputs: ShapeInputs
    """The inputs of the first shaper (outcome rewards)."""
    contributions: dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> R' - R of that shaper (B,)."""


def apply_reward_shapers(s: ShapingConfig, inp: ShapeInputs) -> tuple[torch.Tensor, ShapingResult]:
    """Run s.methods in order; returns (new rewards (B,) float32, what each one added)."""
    res = ShapingResult(inp)
    cur = inp
    for name in s.methods:
        new = SHAPERS.get(name).reward(cur, getattr(s, name))
        res.contributions[name] = (new - cur.rewards.double()).float()
        cur = ShapeInputs(
            new.float(), cur.correct, cur.lengths, cur.truncated, cur.group_ids, cur.thinking_lengths, cur.step
        )
    return cur.rewards.float(), res


def apply_advantage_shapers(s: ShapingConfig, res: ShapingResult | None, adv: torch.Tensor) -> torch.Tensor:
    """The methods' advantage modifiers (GRPO-LEAD's difficulty weights), in order. (B, T)"""
    for name in s.methods if res is not None else ():
        mod = SHAPERS.get(name).advantage
        if mod is not None:
            adv = mod(adv, res.inputs, getattr(s, name))
    return adv
