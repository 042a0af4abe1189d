"""Loss aggregation, the clipped policy loss (PPO / GRPO / REINFORCE++) and the clipped value loss.

    pg_loss, pg_metrics = get_policy_loss("ppo_clip")(logprobs, old_logprobs, adv, mask, ...)
    vf_loss, vf_metrics = value_loss(values, old_values, returns, mask, ...)
    ent = agg_loss(entropy, mask, "token-mean", global_tokens=n)

Every tensor argument is (B, T), B rollouts of this micro-batch; `mask` is True (or 1) on real response tokens.
Losses are scalars; given the global token and sequence counts, the losses of every micro-batch on every rank
sum to the global mean (left as None: a local mean). Formulas and metrics: docs/algorithms.md, "Losses".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.registry import Registry

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def agg_loss(
    x: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """Aggregate a (B, T) per-token loss into a scalar; masked tokens never contribute.

    token-mean:               sum_{b,t} x m / global_tokens          (default: local mask.sum())
    seq-mean-token-mean:      sum_b [sum_t x m / len_b] / global_seqs (default: local rows with len_b > 0)
    seq-mean-token-sum-norm:  sum_b [sum_t x m / max_len] / global_seqs
                              (Dr. GRPO's constant normaliser; max_len default T = mask.shape[1])
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; choices: {', '.join(LOSS_AGG_MODES)}")
    mask = mask.bool()
    xm = torch.where(mask, x, 0)  # (B, T)
    if mode == "token-mean":
        denom = global_tokens if global_tokens is not None else mask.sum().clamp(min=1)
        return xm.sum() / denom
    lens = mask.sum(-1)  # (B,) len_b
    if global_seqs is None:
        global_seqs = (lens > 0).sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        per_seq = xm.sum(-1) / lens.clamp(min=1)  # an empty row contributes 0
    else:
        per_seq = xm.sum(-1) / (max_len if max_len is not None else mask.shape[1])
    return per_seq.sum() / global_seqs


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Local mean of x over valid tokens, detached (a metric). Scalar."""
    x = torch.where(mask, x.detach().to(torch.float32), 0)
    return x.sum() / mask.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Policy losses
# ---------------------------------------------------------------------------------------------

PolicyLoss = Callable[..., "tuple[torch.Tensor, dict[str, torch.Tensor]]"]
POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register
"""Decorator adding a policy loss under a name; a name already taken raises ValueError."""
get_policy_loss = POLICY_LOSSES.get
"""The policy loss registered under a name; an unknown name raises ValueError listing the choices."""


@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    agg: str = "token-mean",
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    max_len: int | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level clipped surrogate (PPO, arXiv:1707.06347), asymmetric clip (DAPO "clip-higher",
    arXiv:2503.14476) and dual clip (arXiv:1912.09729; on at c = 3 as in verl, None turns it off),
    as verl `compute_policy_loss_vanilla`.

    `is_weights` (B, T), when given, multiplies each token's loss (detached): the correction for a
    rollout engine that samples from a slightly different distribution (algos/correction.py).
    Returns (loss, metrics): clipfrac, dual_clipfrac, approx_kl, ratio_mean (local, detached).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None to turn it off), got {dual_clip}")
    mask = mask.bool()
    log_ratio = logprobs - old_logprobs  # (B, T) log pi / pi_old
    ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))  # r_t; the clamp (verl) keeps exp finite
    loss_unclipped = -advantages * ratio  # -r A
    loss_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # -clip(r, 1-eps_l, 1+eps_h) A
    loss = torch.maximum(loss_unclipped, loss_clipped)  # -min(r A, clip(r) A)
    if dual_clip is not None:
        # For A < 0 the clipped loss grows without bound in r; cap it at -dual_clip * A.
        loss_cap = -advantages * dual_clip
        dual_clipped = (advantages < 0) & (loss > loss_cap)
        loss = torch.where(advantages < 0, torch.minimum(loss, loss_cap), loss)
    else:
        dual_clipped = torch.zeros_like(mask)
    if is_weights is not None:
        loss = loss * is_weights.detach()
    pg_loss = agg_loss(loss, mask, agg, global_tokens, global_seqs, max_len)
    metrics = {
        "clipfrac": _masked_mean((loss_clipped > loss_unclipped).float(), mask),
        "dual_clipfrac": _masked_mean(dual_clipped.float(), mask),
        "approx_kl": _masked_mean(-log_ratio, mask),  # k1 of KL(pi_old || pi): mean(log pi_old - log pi)
        "ratio_mean": _masked_mean(ratio, mask),
    }
    return pg_loss, metrics


# ---------------------------------------------------------------------------------------------
# Value loss
# ---------------------------------------------------------------------------------------------


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float | None = 0.2,
    agg: str = "token-mean",
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (verl `compute_value_loss`); clip=None gives the plain squared error.

    loss_t = 0.5 * max((v_t - R_t)^2, (clip(v_t, old_t - c, old_t + c) - R_t)^2)
    Returns (loss, {"vf_clipfrac": fraction of valid tokens where the clipped term is strictly
    larger, i.e. the clip bound v and took the token's gradient away: verl's and TRL's event}).
    """
    mask = mask.bool()
    loss = (values - returns) ** 2  # (B, T)
    if clip is None:
        clipped = torch.zeros_like(mask)
    else:
        # clamp(v, lo, hi) is v itself inside the range; old + (v - old).clamp(-c, c) is v only up to
        # rounding, which made the clipped term "larger" by one unit on tokens the clip never touched.
        v_clipped = torch.clamp(values, old_values - clip, old_values + clip)
        loss_clipped = (v_clipped - returns) ** 2
        clipped = loss_clipped > loss
        loss = torch.maximum(loss, loss_clipped)
    vf_loss = 0.5 * agg_loss(loss, mask, agg, global_tokens, global_seqs, max_len)
    return vf_loss, {"vf_clipfrac": _masked_mean(clipped.float(), mask)}
