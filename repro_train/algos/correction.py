"""Train/inference mismatch: the gap between the trainer's and the rollout engine's log-probs, and the
importance-sampling correction for it (docs/algorithms.md, "Train/inference mismatch").

    gap_sum, gap_max = logprob_gap(old_logprobs, engine_logprobs, mask)
    w, stats = is_weights(old_logprobs, engine_logprobs, mask, "token_tis", cap=2.0)   # (B, T)

Shapes: (B, T) response tokens, `mask` True on real ones. `old_logprobs` are the trainer's (log pi_train),
`engine_logprobs` what the engine sampled with (log pi_engine); the detached weight w multiplies each token's policy
loss. Modes: token_tis, w_t = min(pi_train_t / pi_engine_t, C); sequence_mask, w_t = 1 where the row's
rho = prod_t pi_train_t / pi_engine_t lies in [1/C, C], else 0; none, w_t = 1. Weights are 0 on masked tokens.
"""

from __future__ import annotations

import math

import torch

IS_MODES = ("none", "token_tis", "sequence_mask")


def logprob_gap(
    trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, max) of |trainer - engine| over valid tokens: the silent-bug detector's numbers.

    The sum (not the mean) so that callers can divide by a global token count."""
    mask = mask.bool()
    gap = torch.where(mask, (trainer_logprobs.float() - engine_logprobs.float()).abs(), 0.0)  # (B, T)
    return gap.sum(), gap.max() if gap.numel() else torch.tensor(0.0)


def is_weights(
    trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor, mode: str, cap: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token importance weights (B, T) for `mode` (see the module docstring) and their metrics:
    weight_mean (over valid tokens), clipped_frac (token_tis: tokens at the cap) and
    dropped_seq_frac (sequence_mask: rows with tokens that were dropped)."""
    if mode not in IS_MODES:
        raise ValueError(f"unknown is_correction {mode!r}; choices: {', '.join(IS_MODES)}")
    if cap <= 1.0:
        raise ValueError(f"the importance-weight cap must be > 1, got {cap}")
    mask = mask.bool()
    log_ratio = torch.where(mask, trainer_logprobs.float() - engine_logprobs.float(), 0.0)  # (B, T)
    stats: dict[str, torch.Tensor] = {}
    if mode == "none":
        w = torch.ones_like(log_ratio)
    elif mode == "token_tis":
        raw = torch.exp(log_ratio.clamp(max=20.0))  # pi_train / pi_engine; the clamp keeps exp finite
        w = raw.clamp(max=cap)
        stats["clipped_frac"] = _mean_where(raw > cap, mask)
    else:
        seq = log_ratio.sum(-1)  # (B,) log rho_b
        keep = seq.abs() <= math.log(cap)  # 1/C <= rho_b <= C
        w = keep[:, None].float().expand_as(log_ratio).clone()
        rows = mask.any(-1)
        stats["dropped_seq_frac"] = (~keep & rows).float().sum() / rows.sum().clamp(min=1)
    w = torch.where(mask, w, 0.0)
    stats["weight_mean"] = _mean_where(w, mask)
    return w, stats


def _mean_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x.float(), 0.0).sum() / mask.sum().clamp(min=1)
