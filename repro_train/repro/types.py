"""The method's data types: what the probe needs of a rollout and what it returns for it.

`ProbeRequest` is built by `RePro.plan` (pipeline.py) before any forward; `ProbeResult` comes back
from the probe engine (`probe/`) and feeds `RePro.advantages`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProbeRequest:
    """What the probe needs of one rollout; `None` in its place skips the rollout."""

    seg_starts: tuple[int, ...]
    seg_ends: tuple[int, ...]
    answer_ids: tuple[int, ...]


@dataclass
class ProbeResult:
    """Selection and J of one rollout."""

    H: torch.Tensor
    """(n_segments,) fork entropies at the segment starts."""
    selected: list[bool]
    cuts: list[int]
    """c_1 < ... < c_m (response-token indices, exclusive ends of the selected segments)."""
    J_b: float
    J: torch.Tensor
    """(m,) J at each cut, float32 on the CPU."""
