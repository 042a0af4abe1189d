"""The method's data types: what the probe needs of a rollout and what it returns for it.

`ProbeRequest` is built by `RePro.plan` (pipeline.py) before any forward; `ProbeResult` comes back
from the probe runner (`probe/`) and feeds `RePro.advantages`. `MCValues` holds the Monte-Carlo values
of the same cuts (repro/mc.py, eval/mc_values.py), when `process.source` is `mc_value`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProbeRequest:
    """What the probe needs of one rollout; `None` in its place skips the rollout."""

    seg_starts: tuple[int, ...]
    """Where the fork entropy of each candidate is read (its first token)."""
    seg_ends: tuple[int, ...]
    """The cut each candidate gives when selected (its segment's end; its start under cut_at = fork)."""
    answer_ids: tuple[int, ...]
    """The scored probe tokens q."""
    forced_cuts: tuple[int, ...] = ()
    """Cuts added whatever the selection (force_think_end_cut), merged in sorted, without duplicates."""


@dataclass
class ProbeResult:
    """Selection and J of one rollout."""

    H: torch.Tensor
    """(n_segments,) fork entropies at the segment starts."""
    selected: list[bool]
    cuts: list[int]
    """c_1 < ... < c_m (response-token indices: the selected candidates' cuts and the forced cuts)."""
    J_b: float
    J: torch.Tensor
    """(m,) J at each cut, float32 on the CPU."""


@dataclass
class MCValues:
    """Monte-Carlo values of a batch's cut prefixes: V(c) = share of K continuations from prompt + y[:c] that the
    outcome reward marks correct, with its standard error (repro/mc.py). Shapes follow `ReProOutput`."""

    V_b: torch.Tensor
    """(N,) float64 V of the empty prefix (the prompt alone); NaN for rollouts with no cut."""
    V: torch.Tensor
    """(N, M) float64 V(c_j) at RePro's cuts; 0 where the cut mask is False."""
    V_b_se: torch.Tensor
    """(N,) standard error of V_b (NaN where V_b is, or K = 1)."""
    V_se: torch.Tensor
    """(N, M) standard error of V (0 where masked; NaN for K = 1)."""
    K: int
    """Continuations per prefix."""
    prefixes: int = 0
    """Distinct prefixes sampled (identical prefixes share one estimate)."""
    tokens: int = 0
    """Continuation tokens sampled (what the estimate cost the engine)."""
