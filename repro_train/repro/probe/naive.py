"""The reference definition of J (spec 5): one teacher-forced forward per (rollout, cut).

    J(c) = (1/|q|) sum_i log pi(q_i | p + y[:c] + f + q[:i])

f = forcing ids (probe_prefix), q = answer ids; J_b = J(0). Log-softmax in float32, no
temperature, no gradient. This is the probe's `impl: naive` and the oracle the fused probe
(`fused.py`) is tested against; read it to learn what J is, the rest of `probe/` to learn how
it is made fast.

Under ZeRO-3 and FSDP every forward is a collective, so the number of forwards is padded to
`sync_calls(n)`, the maximum over ranks, which the caller supplies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ...models.forward import Sequences
from .blocks import Blocks, answer_logprobs


class _Item(NamedTuple):
    """One teacher-forced sequence: rollout `row`'s block `block`, ids p + y[:c] + f + q, answer q."""

    row: int | None
    block: int | None
    ids: list[int]
    answer: list[int]


def probe_naive(
    model,
    seqs: Sequences,
    blocks: Blocks,
    pad_id: int,
    batch_size: int = 16,
    sync_calls: Callable[[int], int] | None = None,
) -> torch.Tensor:
    """J at every block (B, nb), from one teacher-forced sequence p + y[:c] + f + q per block
    (sorted by length before batching, so little padding); the same result as `probe_fused`."""
    device = seqs.input_ids.device
    nb = blocks.cuts.shape[1]
    items = _items(seqs, blocks)
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    n_calls = sync_calls(len(chunks)) if sync_calls is not None else len(chunks)
    J = torch.zeros(blocks.cuts.shape[0], nb)
    for i in range(n_calls):
        chunk = chunks[i] if i < len(chunks) else [_Item(None, None, [pad_id, pad_id], [pad_id])]  # dummy forward
        vals = _teacher_forced_J(model, chunk, pad_id, device)
        for j, item in enumerate(chunk):
            if item.row is not None:
                J[item.row, item.block] = vals[j]
    return J.to(device)


def _items(seqs: Sequences, blocks: Blocks) -> list[_Item]:
    """Every block as a teacher-forced sequence, longest first."""
    forcing = blocks.forcing.tolist()
    cuts, answers = blocks.to_lists()
    P = seqs.prompt_width
    plen = seqs.prompt_lens.tolist()
    rlen = seqs.response_mask.sum(-1).tolist()
    rows = seqs.input_ids.tolist()
    items = []
    for b, (bl, q) in enumerate(zip(cuts, answers)):
        p, y = rows[b][P - plen[b] : P], rows[b][P : P + rlen[b]]
        for k, c in enumerate(bl):
            items.append(_Item(b, k, p + y[:c] + list(forcing) + list(q), list(q)))
    items.sort(key=lambda it: len(it.ids), reverse=True)
    return items


def _teacher_forced_J(model, chunk: list[_Item], pad_id: int, device) -> torch.Tensor:
    """J of each item of `chunk` in one left-padded forward: (len(chunk),) float32 on the host."""
    Q = max(len(it.answer) for it in chunk)
    L = max(len(it.ids) for it in chunk)
    ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
    att = torch.zeros((len(chunk), L), dtype=torch.long)
    targets = torch.zeros((len(chunk), Q), dtype=torch.long)
    tmask = torch.zeros((len(chunk), Q), dtype=torch.bool)
    for j, (_, _, seq, q) in enumerate(chunk):  # (row, block, ids, answer)
        ids[j, L - len(seq) :] = torch.tensor(seq)
        att[j, L - len(seq) :] = 1
        targets[j, Q - len(q) :] = torch.tensor(q)  # kept column Q - |q| + i predicts q_i
        tmask[j, Q - len(q) :] = True
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids.to(device),
        attention_mask=att.to(device),
        position_ids=pos.to(device),
        use_cache=False,
        logits_to_keep=Q + 1,
    )
    return answer_logprobs(out.logits[:, :-1], targets.to(device), tmask.to(device)).float().cpu()
