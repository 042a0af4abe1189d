"""The probe blocks of a micro-batch and the answer log-probs J is the mean of.

A block is one (rollout, cut) pair: the forcing ids f and the answer q placed after the prefix
p + y[:c]. Block 0 of every row is c = 0 (J_b). Both the fused and the naive probe start from
`Blocks`; `block_inputs` lays them out for the fused probe's single forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def answer_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, tmask: torch.Tensor, chunk: int = 1024, kernels=None
) -> torch.Tensor:
    """Mean float32 log-prob of the valid targets per row: logits (N, Q, V), targets/tmask (N, Q).

    kernels (a `triton.ops.Kernels`): its Triton `target_logprobs`, which reads each row once and
    writes one float per row. Otherwise one float32 log-softmax kernel per `chunk` positions
    (bounded memory), reading the logits in their own dtype."""
    N, Q, V = logits.shape
    flat, tgt = logits.reshape(N * Q, V), targets.reshape(N * Q, 1)
    if kernels is not None:
        lp = kernels.target_logprobs(flat, tgt.view(-1)).view(N, Q)
    else:
        lp = torch.cat(
            [
                torch.log_softmax(flat[s : s + chunk], dim=-1, dtype=torch.float32).gather(-1, tgt[s : s + chunk])
                for s in range(0, N * Q, chunk)
            ]
        ).view(N, Q)
    m = tmask.to(lp.dtype)
    return (lp * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def padded(rows: Sequence[Sequence[int]], width: int, fill: int) -> torch.Tensor:
    """(len(rows), width) long tensor of the rows, right-padded with `fill`."""
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


@dataclass
class Blocks:
    """The probe blocks of a micro-batch as device tensors (nb blocks per row, Q answer columns)."""

    cuts: torch.Tensor
    """(B, nb) cut of each block; block 0 is c = 0 (J_b)."""
    valid: torch.Tensor
    """(B, nb) True for blocks to score."""
    answers: torch.Tensor
    """(B, Q) answer ids, padded."""
    answer_len: torch.Tensor
    """(B,) answer lengths (0 for skipped rows)."""
    forcing: torch.Tensor
    """(n_forcing,) forcing ids (probe_prefix)."""

    @classmethod
    def from_lists(
        cls,
        blocks: Sequence[Sequence[int]],
        answers: Sequence[Sequence[int] | None],
        forcing: Sequence[int],
        pad_id: int,
        device=None,
    ) -> Blocks:
        """blocks[b] = cuts to score for row b (0 = J_b), answers[b] its answer ids (or None)."""
        answers = [a if (a and bl) else () for a, bl in zip(answers, blocks)]
        nb = max([len(bl) for bl in blocks] + [1])
        Q = max([len(a) for a in answers] + [1])
        valid = torch.arange(nb).view(1, -1) < torch.tensor([len(bl) for bl in blocks]).view(-1, 1)
        return cls(
            padded(blocks, nb, 0).to(device),
            valid.to(device),
            padded(answers, Q, pad_id).to(device),
            torch.tensor([len(a) for a in answers], device=device),
            torch.tensor(list(forcing), dtype=torch.long, device=device),
        )

    def to_lists(self) -> tuple[list[list[int]], list[list[int]]]:
        cuts, valid, ans, alen = (
            self.cuts.tolist(),
            self.valid.tolist(),
            self.answers.tolist(),
            self.answer_len.tolist(),
        )
        blocks = [[c for c, v in zip(cr, vr) if v] for cr, vr in zip(cuts, valid)]
        return blocks, [a[:n] for a, n in zip(ans, alen)]


def probe_layout(n_blocks: int, answer_len: int, forcing_len: int) -> tuple[int, int]:
    """(block length, probe columns) of phase 2 for the most blocks and longest answer of a batch."""
    lead = 0 if forcing_len else 1
    Lb = lead + forcing_len + max(answer_len, 1) - 1
    return Lb, max(n_blocks, 1) * Lb


def block_inputs(C, valid, ans, alen, forcing, plen, P, last, Lb: int):
    """Phase 2's inputs from the blocks (cuts C and valid (B, nb), answers `ans` (B, Q) and their lengths,
    forcing ids, prompt lengths; P, the prompt width, an int or a 0-d tensor on the device; `last`
    (B, nb) the token before each cut, re-fed when there are no forcing ids, else None): the
    blocks' tokens and positions (B, Lp), the first visible cache column of each row (B,) (rows
    are left-padded), each block's end of visible cache columns (B, nb), the positions that
    predict answer tokens, and the targets with their mask (B * nb, Q)."""
    B, nb = C.shape
    Q, n_forcing = ans.shape[1], forcing.numel()
    lead = 0 if n_forcing else 1
    device = C.device
    parts = []  # (B, nb, Lb) block tokens: [lead] + f + q[:-1]
    if lead:
        parts.append(last.unsqueeze(-1))
    if n_forcing:
        parts.append(forcing.view(1, 1, n_forcing).expand(B, nb, n_forcing))
    parts.append(ans[:, None, : Q - 1].expand(B, nb, Q - 1))
    ids = torch.cat(parts, dim=-1).reshape(B, nb * Lb)
    pos = (plen.view(B, 1, 1) + C.unsqueeze(-1) - lead + torch.arange(Lb, device=device)).reshape(B, nb * Lb)
    limit = torch.where(valid, P + C - lead, torch.zeros_like(C))  # cache columns < limit are visible
    keep = (
        torch.arange(nb, device=device).view(-1, 1) * Lb + lead + n_forcing - 1 + torch.arange(Q, device=device)
    ).reshape(-1)
    targets = ans.unsqueeze(1).expand(B, nb, Q).reshape(B * nb, Q)
    tmask = ((torch.arange(Q, device=device).view(1, 1, -1) < alen.view(-1, 1, 1)) & valid.unsqueeze(-1)).reshape(
        B * nb, Q
    )
    return ids, pos, P - plen, limit, keep, targets, tmask
