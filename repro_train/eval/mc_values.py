"""Monte-Carlo values of RePro's cuts, sampled with a rollout engine and graded by the outcome reward
(docs/repro.md, "Monte-Carlo step values"; the pure half is repro/mc.py).

    mc = cut_values(engine, grade, decode, prompts, responses, cuts, mask, K, budget, seed_of)  # repro.types.MCValues
    add_mc_values(results, engine, grade, decode, K, budget, seed)   # `repro-train inspect --mc-values K`'s rows
    plot_mc_row(result, path, title)                                  # J and V along the response, r against r_mc

For each prefix prompt_i + y_i[:c], c in (0, c_1, ..., c_m), one `sample` call for the whole batch draws K
continuations (seed `seed_of(i, c)`), each cut to `budget - c` tokens, decoded with the prefix and graded by
`grade(rows, texts)`, row i's prompt and answer standing for every continuation of its prefixes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..core.seeds import mix_seed
from ..repro.mc import increments, mc_value
from ..repro.types import MCValues
from ..rollout.base import RolloutEngine

Grade = Callable[[list[int], list[str]], Sequence[bool]]
"""grade(rows, texts): whether each text (a whole response of rollout rows[n]) is correct."""
Decode = Callable[[list[list[int]]], list[str]]
"""decode(id lists): their texts, as the rollouts' own texts were decoded (special tokens skipped)."""


def cut_prefixes(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], cuts: torch.Tensor, mask: torch.Tensor
) -> tuple[list[tuple[int, int]], dict[tuple[int, int], int]]:
    """(distinct prefixes as (row, c), where): where[(i, j)] is the index of rollout i's prefix j among them (j = 0
    the prompt alone, j >= 1 the prefix up to its j-th cut). Rollouts with no valid cut get none."""
    index: dict[tuple, int] = {}
    prefixes: list[tuple[int, int]] = []
    where: dict[tuple[int, int], int] = {}
    for i in range(mask.shape[0]):
        if not bool(mask[i].any()):
            continue
        for j, c in enumerate([0] + cuts[i][mask[i]].tolist()):
            key = (tuple(prompts[i]), tuple(responses[i][:c]))
            if key not in index:
                index[key] = len(prefixes)
                prefixes.append((i, c))
            where[(i, j)] = index[key]
    return prefixes, where


def sample_outcomes(
    engine: RolloutEngine,
    grade: Grade,
    decode: Decode,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    prefixes: Sequence[tuple[int, int]],
    K: int,
    budget: int,
    seeds: Sequence[int],
) -> tuple[torch.Tensor, int]:
    """((P, K) bool outcomes, continuation tokens) of K continuations from each prefix (row, c). The engine is
    called even with no prefix: under tensor parallelism or ZeRO-3 its call is a collective every rank joins."""
    asks = [list(prompts[i]) + list(responses[i][:c]) for i, c in prefixes]
    out = engine.sample(asks, K, list(seeds))
    rows, ids, tokens = [], [], 0
    for (i, c), group in zip(prefixes, out.token_ids):
        for cont in group:
            kept = cont[: max(budget - c, 0)]  # the rollout's own length limit
            tokens += len(kept)
            rows.append(i)
            ids.append(list(responses[i][:c]) + kept)
    correct = list(grade(rows, decode(ids))) if ids else []
    return torch.tensor(correct, dtype=torch.bool).reshape(len(prefixes), K), tokens


def cut_values(
    engine: RolloutEngine,
    grade: Grade,
    decode: Decode,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    cuts: torch.Tensor,
    mask: torch.Tensor,
    K: int,
    budget: int,
    seed_of: Callable[[int, int], int],
) -> MCValues:
    """V and its SE at the empty prefix and at every valid cut (cuts, mask: (N, M), as `ReProOutput`'s)."""
    prefixes, where = cut_prefixes(prompts, responses, cuts, mask)
    seeds = [seed_of(i, c) for i, c in prefixes]
    outcomes, tokens = sample_outcomes(engine, grade, decode, prompts, responses, prefixes, K, budget, seeds)
    v, se = mc_value(outcomes) if prefixes else (torch.zeros(0, dtype=torch.float64),) * 2  # (P,)
    N, M = mask.shape
    V_b = torch.full((N,), float("nan"), dtype=torch.float64)
    V_b_se = V_b.clone()
    V = torch.zeros(N, M, dtype=torch.float64)
    V_se = torch.zeros(N, M, dtype=torch.float64)
    for (i, j), p in where.items():
        if j == 0:
            V_b[i], V_b_se[i] = v[p], se[p]
        else:  # cuts are right-padded: the j-th valid cut is column j - 1
            V[i, j - 1], V_se[i, j - 1] = v[p], se[p]
    return MCValues(V_b=V_b, V=V, V_b_se=V_b_se, V_se=V_se, K=K, prefixes=len(prefixes), tokens=tokens)


# ----------------------------------------------------------------------------------------------
# `repro-train inspect --mc-values K`
# ----------------------------------------------------------------------------------------------


def _num(x: float) -> float | None:
    x = float(x)
    return None if x != x else round(x, 6)


def add_mc_values(
    results: list[dict], engine: RolloutEngine, grade: Grade, decode: Decode, K: int, budget: int, seed: int
) -> None:
    """Add V_b, V_b_se, V, V_se and r_mc (the MC process reward per cut: V's increments, before normalisation) to
    each of inspect's result rows (`prompt_ids`, `response_ids`, `cuts`; `row`, its line, seeds its prefixes:
    mix_seed(seed, row, c)). A row with no cut gets V_b None and empty lists. `grade` gets indices into `results`."""
    M = max([len(r["cuts"]) for r in results] + [1])
    cuts = torch.zeros(len(results), M, dtype=torch.long)
    mask = torch.zeros(len(results), M, dtype=torch.bool)
    for b, r in enumerate(results):
        cuts[b, : len(r["cuts"])] = torch.tensor(r["cuts"], dtype=torch.long)
        mask[b, : len(r["cuts"])] = True
    prompts = [r["prompt_ids"] for r in results]
    responses = [r["response_ids"] for r in results]
    row_of = [r.get("row", b) for b, r in enumerate(results)]
    mc = cut_values(
        engine, grade, decode, prompts, responses, cuts, mask, K, budget, lambda i, c: mix_seed(seed, row_of[i], c)
    )
    r_mc = increments(mc.V_b, mc.V, mask)
    for b, r in enumerate(results):
        m = len(r["cuts"])
        r.update(
            {
                "mc_K": K,
                "V_b": _num(mc.V_b[b]),
                "V_b_se": _num(mc.V_b_se[b]),
                "V": [_num(v) for v in mc.V[b, :m]],
                "V_se": [_num(v) for v in mc.V_se[b, :m]],
                "r_mc": [_num(v) for v in r_mc[b, :m]],
            }
        )


def plot_mc_row(res: dict, path: str, title: str) -> None:
    """J (left axis) and V with its SE (right axis) along the response, at 0 and at each cut; below, each step's
    RePro reward r beside its MC reward r_mc."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax3) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    xs = [0] + list(res["cuts"])
    if res["J_b"] is not None:
        ax1.plot(xs, [res["J_b"]] + res["J"], "o-", color="C0", label="J (answer log-prob)")
    ax1.set_ylabel("J", color="C0")
    ax2 = ax1.twinx()
    if res.get("V_b") is not None:
        se = [res["V_b_se"]] + res["V_se"]
        ax2.errorbar(xs, [res["V_b"]] + res["V"], yerr=[0 if s is None else s for s in se], fmt="s-", color="C1")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel(f"V (share correct of {res.get('mc_K')} continuations)", color="C1")
    for c in res["cuts"]:
        ax1.axvline(c, color="C3", ls="--", lw=0.8)
    ax1.set_title(title, fontsize=9)
    prev = 0
    for c, r, rm in zip(res["cuts"], res["r"], res.get("r_mc", [])):
        w = (c - prev) / 2
        ax3.bar(prev, r, width=w, align="edge", color="C0", alpha=0.7, edgecolor="k", lw=0.5)
        ax3.bar(prev + w, rm, width=w, align="edge", color="C1", alpha=0.7, edgecolor="k", lw=0.5)
        prev = c
    ax3.axhline(0, color="k", lw=0.8)
    ax3.set_ylabel("r (blue) / r_mc (orange)")
    ax3.set_xlabel("response token (red dashed: cuts)")
    ax3.set_xlim(0, max(len(res["response_ids"]), 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
