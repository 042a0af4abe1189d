"""Fork entropy and top-k selection of segments (spec sections 3 and 4).

    H = fork_entropies(entropy_row, seg_starts)        # H_i = entropy of the distribution of y[s_i]
    sel, cuts = select_cuts(seg_starts, seg_ends, H, top_k)

`entropy_row[t]` is the entropy (sampling temperature applied) of the policy's next-token
distribution that produced response token t, i.e. computed at the position before it; for t = 0
that is the last prompt position. Selection keeps the `top_k` highest entropies, ties broken by
position (earlier first), then restores trace order; the cut points are the ends of the selected
segments, so step j is the token range [c_{j-1}, c_j) with c_0 = 0.
"""
from __future__ import annotations

from typing import Sequence

import torch


def fork_entropies(entropy_row: torch.Tensor, seg_starts: Sequence[int]) -> torch.Tensor:
    """H_i = entropy_row[s_i] for each segment start; shape (n_segments,)."""
    if len(seg_starts) == 0:
        return entropy_row.new_zeros(0)
    return entropy_row[torch.as_tensor(list(seg_starts), dtype=torch.long, device=entropy_row.device)]


def select_cuts(seg_starts: Sequence[int], seg_ends: Sequence[int], H: torch.Tensor,
                top_k: int) -> tuple[list[bool], list[int]]:
    """Selected-segment flags (trace order) and the cut points c_1 < ... < c_m (spec 4)."""
    n = len(seg_starts)
    if n == 0:
        return [], []
    if n <= top_k:
        keep = list(range(n))
    else:
        # A stable descending sort keeps earlier segments first among equal entropies.
        order = torch.sort(H.detach().float().cpu(), descending=True, stable=True).indices[:top_k]
        keep = sorted(order.tolist())
    selected = [False] * n
    for i in keep:
        selected[i] = True
    return selected, [int(seg_ends[i]) for i in keep]
