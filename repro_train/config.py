"""All configuration: typed, frozen dataclasses with their defaults and docs, `load` and `validate`.

A recipe is a YAML file whose sections map onto `Config`; `load(path, overrides)` builds it, checks
every key and type (unknown keys name the nearest valid one) and runs `validate`, which raises on
anything inconsistent instead of fixing it. Defaults live here once, documented by the string
under each field; `docs/recipes.md` is generated from these docstrings.

The RePro options follow `shared/spec/repro-method.md`: every choice the paper leaves open is a
named field whose default is the spec's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .config_base import ConfigError


@dataclass(frozen=True)
class ReProConfig:
    """RePro process rewards (spec: shared/spec/repro-method.md, sections 1-12)."""

    enabled: bool = True
    """Compute RePro process advantages and fold them into the outcome advantage."""
    alpha: float = 0.1
    """Weight of the token process advantage: A_hat = A + alpha * A_tilde (spec 12)."""
    top_k: int = 10
    """Keep the top_k segments with the highest fork entropy (ties: earlier first); all if fewer (spec 4)."""
    w: float = 0.2
    """Process score S = (1 - w) * S_magn + w * S_stab; the paper finds smaller w better (spec 8)."""
    think_end: str = "</think>"
    """End-of-thinking marker; the thinking span stops at the token where its first occurrence begins. Empty: no marker (spec 1)."""
    segment_delimiter: str = r"\n\n"
    """Regex for segment boundaries inside the thinking span; a whitespace run containing a match is one boundary (spec 2)."""
    probe_prefix: str = "\n\nFinal answer: "
    """Forcing text placed between the reasoning prefix and the answer when scoring J (spec 5)."""
    probe_answer_format: str = "{answer}"
    """Scored answer text: the literal '{answer}' is replaced by the ground-truth answer; other braces are kept, so '{answer}}$' works (spec 5)."""
    magnitude_eps: float = 1e-6
    """S_magn = 1 - tanh(J / min(J_b, -magnitude_eps)) (spec 6)."""
    stability_ema: float = 0.0
    """EMA decay applied to (J_b, J_1, ...) before Kendall tau: e_i = d * e_{i-1} + (1 - d) * J_i; 0 = off (spec 7)."""
    first_step_baseline: Literal["score", "zero"] = "score"
    """S_0 for r_1 = S_1 - S_0: 'score' = the empty prefix's score (1-w)(1-tanh 1) + w/2, 'zero' = 0 (spec 9)."""
    process_norm: Literal["group", "batch", "none"] = "group"
    """Pool for normalising r: the rollouts of one prompt, the whole batch (all ranks), or no normalisation (spec 10)."""
    norm_eps: float = 1e-6
    """r' = (r - mean) / (std + norm_eps), population std (spec 10)."""
    apply_to: Literal["all", "correct", "incorrect"] = "all"
    """Which rollouts get the process advantage, by outcome correctness (spec 12)."""
    ppo_process_reward: Literal["advantage", "dense_reward"] = "advantage"
    """PPO only: add alpha * A_tilde after GAE ('advantage'), or put alpha * r' on the cut tokens as dense rewards before GAE (spec 12)."""
    probe_impl: Literal["fused", "naive"] = "fused"
    """'fused': score all cut points in one extra forward over the log-prob pass's KV cache; 'naive': one teacher-forced sequence per cut point (reference)."""
    probe_batch_size: int = 16
    """Naive probe only: teacher-forced sequences per forward."""


def validate_repro(c: ReProConfig, prefix: str = "repro.") -> None:
    """Raise ConfigError naming the field when a RePro option is out of range."""
    if c.alpha < 0:
        raise ConfigError(f"'{prefix}alpha' must be >= 0 (0 turns the fold off), got {c.alpha}")
    if c.top_k < 1:
        raise ConfigError(f"'{prefix}top_k' must be >= 1, got {c.top_k}")
    if not 0.0 <= c.w <= 1.0:
        raise ConfigError(f"'{prefix}w' must be in [0, 1], got {c.w}")
    if not 0.0 <= c.stability_ema < 1.0:
        raise ConfigError(f"'{prefix}stability_ema' must be in [0, 1) (0 = off), got {c.stability_ema}")
    if c.magnitude_eps <= 0 or c.norm_eps <= 0:
        raise ConfigError(f"'{prefix}magnitude_eps' and '{prefix}norm_eps' must be > 0")
    if c.probe_batch_size < 1:
        raise ConfigError(f"'{prefix}probe_batch_size' must be >= 1, got {c.probe_batch_size}")
    try:
        rx = re.compile(c.segment_delimiter)
    except re.error as e:
        raise ConfigError(f"'{prefix}segment_delimiter' is not a valid regex: {e}") from None
    if rx.match("") is not None:
        raise ConfigError(f"'{prefix}segment_delimiter' must not match the empty string (got {c.segment_delimiter!r})")
    if "{answer}" not in c.probe_answer_format:
        raise ConfigError(f"'{prefix}probe_answer_format' must contain '{{answer}}', got {c.probe_answer_format!r}")
