"""Fork entropy and top-k selection of segments (spec sections 3 and 4), batched on the device.

    H = entropy.gather(1, seg_starts)                  # H_i = entropy of the distribution of y[s_i]
    selected, cuts, cut_valid = select_cuts_batched(H, seg_valid, seg_ends, top_k)
    cuts, cut_valid = add_forced_cuts(cuts, cut_valid, forced, forced_valid)   # force_think_end_cut

`entropy[b, t]` is the entropy (sampling temperature applied) of the next-token distribution that produced
response token t. The `top_k` highest are kept (ties: earlier first), in trace order; the cut points are the
selected segments' ends, so step j is the token range [c_{j-1}, c_j) with c_0 = 0 (with `repro.cut_at: fork`
the plan passes each candidate's start as its "end": the cut is the fork itself). docs/repro.md, steps 3-4.
"""

from __future__ import annotations

import torch


def select_cuts_batched(
    H: torch.Tensor, seg_valid: torch.Tensor, seg_ends: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k fork segments of every rollout of a padded batch, on the tensors' device, no host sync.

    H, seg_ends (B, S) with seg_valid (B, S) marking real segments. Returns the selected flags
    (B, S), the cut points (B, k) in trace order (k = min(top_k, S)) and their validity (B, k).
    Ties go to the earlier segment (stable descending sort); a row with fewer than k segments
    keeps them all. `tests/repro/test_scores.py` checks it against a per-rollout reference."""
    B, S = H.shape
    k = min(top_k, S)
    key = torch.where(seg_valid, H.float(), torch.full_like(H, float("-inf"), dtype=torch.float32))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices[:, :k]  # (B, k)
    n_valid = seg_valid.sum(-1, keepdim=True)  # (B, 1)
    keep = torch.arange(k, device=H.device).view(1, -1) < n_valid  # the first min(k, n) are real
    idx = torch.where(keep, order, torch.full_like(order, S))  # invalid -> S (sorts last)
    idx = torch.sort(idx, dim=-1).values  # trace order
    cut_valid = idx < S
    safe = idx.clamp(max=S - 1)
    cuts = torch.where(cut_valid, seg_ends.gather(1, safe), torch.zeros_like(safe))
    selected = torch.zeros(B, S + 1, dtype=torch.bool, device=H.device).scatter_(1, idx, True)[:, :S]
    return selected, cuts, cut_valid


def add_forced_cuts(
    cuts: torch.Tensor, cut_valid: torch.Tensor, forced: torch.Tensor, forced_valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected cuts (B, k) with the forced ones (B, F) added (`repro.force_think_end_cut`):
    sorted, duplicates removed, valid cuts first. Returns (cuts, valid), each (B, k + F); invalid
    entries hold 0. On the tensors' device, no host sync."""
    both = torch.cat([cuts, forced], dim=1)  # (B, k + F)
    valid = torch.cat([cut_valid, forced_valid], dim=1)
    big = torch.iinfo(both.dtype).max
    key = torch.sort(torch.where(valid, both, torch.full_like(both, big)), dim=-1).values
    dup = torch.cat([torch.zeros_like(key[:, :1], dtype=torch.bool), key[:, 1:] == key[:, :-1]], dim=1)
    key = torch.where(dup, torch.full_like(key, big), key)
    key = torch.sort(key, dim=-1).values  # duplicates moved behind the valid cuts
    valid = key != big
    return torch.where(valid, key, torch.zeros_like(key)), valid
