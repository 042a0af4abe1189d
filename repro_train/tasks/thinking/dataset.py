"""The data set: `generate` draws distinct problems of the asked families for a split, each with its trace, as
rows (the columns: `generate`'s docstring); `is_heldout` is the hash that keeps `train` apart from `test` and
`hard`. `repro-train data export "thinking:..."` and `data.source: thinking:...` come here (data/named.py)."""

from __future__ import annotations

import hashlib
import random

from .families import FAMILY, MAX_DRAWS, draw_problem
from .problems import FAMILIES, SPLITS, Problem, ThinkingConfig
from .trace import draw_habits, make_trace

HELDOUT_BUCKETS = 10
"""One problem in this many (by the hash of its key) is reserved for the held-out splits."""


def is_heldout(key: str) -> bool:
    """Whether a problem (its `Problem.key`) belongs to the held-out splits: a stable hash, not the seed."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % HELDOUT_BUCKETS == 0


DEFAULTS = ThinkingConfig()
"""The knobs `generate` uses unless given others (frozen: one shared instance is safe)."""


def generate(
    n: int,
    seed: int = 0,
    families: tuple[str, ...] = FAMILIES,
    cfg: ThinkingConfig = DEFAULTS,
    split: str = "train",
) -> list[dict]:
    """`n` rows of distinct problems (by `Problem.key`); row i is of family families[i % len(families)].

    Columns: question, answer, response, family, split, steps, habits, n_rechecks, n_backtracks,
    answer_char, key. Deterministic in (n, seed, families, cfg, split)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; choose from {SPLITS}")
    bad = [f for f in families if f not in FAMILY]
    if bad or not families:
        raise ValueError(f"families={families}: choose one or more of {FAMILIES}")
    problem_cfg = cfg.harder() if split == "hard" else cfg
    rows, seen, draw = [], set(), 0
    while len(rows) < n:
        family = families[len(rows) % len(families)]
        for _ in range(MAX_DRAWS):
            draw += 1
            p = draw_problem(family, random.Random(f"thinking/{seed}/{split}/{draw}/problem"), problem_cfg)
            if p.key not in seen and is_heldout(p.key) == (split != "train"):
                break
        else:
            raise ValueError(
                f"{family}: found only {len(rows)} distinct {split} problems before giving up; the problem "
                f"space of {problem_cfg} is too small for n={n}: raise steps or digits, or lower n"
            )
        seen.add(p.key)
        rows.append(_row(p, split, random.Random(f"thinking/{seed}/{split}/{draw}/trace"), cfg))
    return rows


def _row(p: Problem, split: str, rng: random.Random, cfg: ThinkingConfig) -> dict:
    habits = draw_habits(rng, cfg)
    response, answer_char, n_rechecks, n_backtracks = make_trace(p, habits, rng)
    return {
        "question": p.question,
        "answer": str(p.answer),
        "response": response,
        "family": p.family,
        "split": split,
        "steps": p.n_steps,
        "habits": list(habits),
        "n_rechecks": n_rechecks,
        "n_backtracks": n_backtracks,
        "answer_char": answer_char,
        "key": p.key,
    }
