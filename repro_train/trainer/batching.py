"""Micro-batches: which rows go through one forward (and backward) together.

    groups = plan_micro_batches(prompt_lens, response_lens, rows=8, max_tokens=16384, agree=dist.max_int)

Without a token budget, consecutive rows `rows` at a time (the batch's order). With `algo.max_tokens_per_micro_batch`
the rows are sorted by length, longest first, and packed so that a micro-batch's padded size, rows x (longest prompt
+ longest response), stays within the budget (a row longer than the budget is alone), so short rows share a forward
and padding is small. Losses are normalised by global counts, so the grouping changes the gradient only by float
rounding (tests/trainer/test_batching.py). Ranks must run the same number of micro-batches where every forward is a
collective (FSDP2, ZeRO-3): `agree` returns the largest count over ranks, and a rank with fewer splits its biggest
groups until it has as many. Under DDP and ZeRO-2 the counts may differ (a no-grad forward talks to no other rank, and
each rank syncs its gradients once, at its own last micro-batch), so the trainer agrees only when sharded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def plan_micro_batches(
    prompt_lens: Sequence[int],
    response_lens: Sequence[int],
    rows: int,
    max_tokens: int | None = None,
    agree: Callable[[int], int] | None = None,
) -> list[list[int]]:
    """Row indices of each micro-batch (every row exactly once)."""
    n = len(prompt_lens)
    if max_tokens is None:
        groups = [list(range(s, min(s + rows, n))) for s in range(0, n, rows)]
    else:
        order = sorted(range(n), key=lambda i: (-(prompt_lens[i] + response_lens[i]), i))
        groups, cur, p_max, r_max = [], [], 0, 0
        for i in order:
            p, r = max(p_max, prompt_lens[i]), max(r_max, response_lens[i])
            if cur and (len(cur) + 1) * (p + r) > max_tokens:
                groups.append(cur)
                cur, p, r = [], prompt_lens[i], response_lens[i]
            cur.append(i)
            p_max, r_max = p, r
        if cur:
            groups.append(cur)
    if agree is not None:
        want = agree(len(groups))
        while len(groups) < want:  # split the group with most rows (never empty: every rank has as many rows)
            k = max(range(len(groups)), key=lambda j: len(groups[j]))
            g = groups.pop(k)
            groups[k:k] = [g[: len(g) // 2], g[len(g) // 2 :]]
    return groups


def padded_tokens(prompt_lens: Sequence[int], response_lens: Sequence[int], groups: list[list[int]]) -> int:
    """Tokens the forwards of `groups` compute, padding included (for the padding share)."""
    return sum(len(g) * (max(prompt_lens[i] for i in g) + max(response_lens[i] for i in g)) for g in groups if g)
