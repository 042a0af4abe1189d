"""Per-token KL estimators between the policy and the reference model (Schulman, "Approximating
KL divergence", http://joschu.net/blog/kl-approx.html; verl `kl_penalty`).

    kl = kl_penalty(logprobs, ref_logprobs, kind="k3")    # (B, T); masking is the caller's job

With d = logp - ref_logp on a token sampled from the policy:
    k1 = d                                   unbiased, high variance, can be negative
    k2 = 0.5 * d^2                           biased, low variance, >= 0
    k3 = exp(-d) + d - 1  ("low_var_kl")     unbiased, low variance, >= 0; clamped to [-10, 10]
    abs = |d|
Used as a reward penalty (token_rewards = -kl_coef * kl) or as a loss term (agg_loss of kl).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.registry import Registry

KLEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KL_ESTIMATORS: Registry[KLEstimator] = Registry("KL estimator")
register_kl_estimator = KL_ESTIMATORS.register
"""Decorator adding a KL estimator under a name; a name already taken raises ValueError."""
get_kl_estimator = KL_ESTIMATORS.get
"""The KL estimator registered under a name; an unknown name raises ValueError listing the choices."""


@register_kl_estimator("k1")
def k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return logprobs - ref_logprobs  # log pi - log pi_ref


@register_kl_estimator("k2")
def k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2  # 0.5 (log pi - log pi_ref)^2


@register_kl_estimator("low_var_kl")
@register_kl_estimator("k3")
def k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    # x = log pi_ref - log pi;  k3 = exp(x) - x - 1. Both clamps are verl's: exp(20) is finite
    # in float32, and one token's penalty is capped at 10.
    x = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return (torch.exp(x) - x - 1.0).clamp(-10.0, 10.0)


@register_kl_estimator("abs")
def abs_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return (logprobs - ref_logprobs).abs()  # |log pi - log pi_ref|


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token KL estimate of KL(pi || pi_ref) by estimator `kind`. (B, T) -> (B, T)"""
    return get_kl_estimator(kind)(logprobs, ref_logprobs)
