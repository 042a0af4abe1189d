"""Evaluation metrics: pure functions over lists (docs/toy-task.md, "Metrics").

    summary = summarize(samples)     # one row per sampled response, grouped by "problem_id"

Answer extraction and correctness checking happen before (rewards/); here answers are compared
as exact strings.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence

from repro_train.eval.detectors import count_backtracks, count_rechecks


def pass_at_1(correct: list[list[bool]]) -> float:
    """Mean over problems of the fraction of its samples that are correct (each problem weighs
    the same, whatever its number of samples)."""
    if not correct or any(len(c) == 0 for c in correct):
        raise ValueError("pass_at_1 needs at least one problem and one sample per problem")
    return sum(sum(c) / len(c) for c in correct) / len(correct)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from n samples of which c are correct (Chen et al. 2021, arXiv:2107.03374):

        pass@k = 1 - C(n - c, k) / C(n, k)

    the chance that k of the n samples, drawn without replacement, hold at least one correct one. Exact integer
    binomials (Python ints), one rounding at the division. Needs 0 <= c <= n and 1 <= k <= n."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k holds a correct sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(correct: list[list[bool]], k: int) -> float:
    """pass@k averaged over problems (each weighs the same); every problem needs at least k samples."""
    if not correct or any(len(c) < k for c in correct):
        raise ValueError(f"pass@{k} needs at least one problem and k samples for each")
    return sum(pass_at_k(len(c), sum(map(bool, c)), k) for c in correct) / len(correct)


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """Most frequent non-None answer; ties go to the answer seen first; None if all are None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    # Counter keeps first-insertion order and max() returns the first maximum: ties -> seen first.
    return max(counts, key=counts.__getitem__)


def maj_at_k(answers: list[list[str | None]], gold: list[str], k: int) -> float:
    """Fraction of problems whose majority vote over their first k answers equals the gold string.

    None answers (nothing extracted) do not vote; a problem with no vote counts as wrong. Every
    problem needs at least k samples."""
    if len(answers) != len(gold) or not answers:
        raise ValueError(f"maj_at_k: {len(answers)} answer lists for {len(gold)} gold answers")
    if k < 1 or any(len(a) < k for a in answers):
        raise ValueError(
            f"maj@{k} needs k >= 1 and at least k samples for every problem (fewest: {min(len(a) for a in answers)})"
        )
    return sum(majority_vote(a[:k]) == g for a, g in zip(answers, gold)) / len(answers)


def length_stats(lengths: list[int]) -> dict:
    """{"mean", "median", "p90", "max"}; p90 interpolates linearly between order statistics
    (numpy's default: position 0.9 * (n - 1) in the sorted list)."""
    if not lengths:
        raise ValueError("length_stats needs at least one length")
    xs = sorted(lengths)
    pos = 0.9 * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    p90 = xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
    return {"mean": sum(xs) / len(xs), "median": float(statistics.median(xs)), "p90": float(p90), "max": xs[-1]}


def answer_pattern(answer: str) -> re.Pattern:
    """Where the correct value appears as the result of a step or as the stated answer.

    `(?:=|answer(?: is)?:?|\\boxed{)\\s*ANSWER(?!\\.?\\d)`, case-insensitive: `= 63` (a step
    result), `Final answer: 63`, `the answer is 63`, `\\boxed{63`. The value must not continue as
    a longer number: `= 630` and `= 63.5` do not match, `= 63.` does."""
    return re.compile(r"(?:=|\banswer(?:\s+is)?\s*:?|\\boxed\{)\s*" + re.escape(answer) + r"(?!\.?\d)", re.IGNORECASE)


def tokens_after_first_correct(text: str, token_offsets: Sequence[int], answer: str) -> int | None:
    """Number of response tokens that begin at or after the end of the first `answer_pattern`
    match in `text`; None when the correct value never appears.

    text: the decoded response; token_offsets: the character offset at which each token begins
    (non-decreasing, as `repro.segment.decode_with_offsets` returns), one per token counted.
    A token that begins inside the match (or before it and runs past its end) is not counted."""
    m = answer_pattern(answer).search(text)
    if m is None:
        return None
    return len(token_offsets) - bisect.bisect_left(token_offsets, m.end())


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarize(samples: list[dict], k_values: Sequence[int] = (1, 4, 8), pass_k: Sequence[int] = (1, 4, 8)) -> dict:
    """Metrics over sampled responses.

    samples: rows {"problem_id", "correct": bool, "answer": str | None (extracted), "gold": str,
    "n_tokens": int, "text": str, "token_offsets": list[int]}; a problem's samples keep their
    order (maj@k votes over the first k).
    Returns: n_problems, n_samples, pass@1, pass@k (unbiased, `pass_at_k`) for each k > 1 in pass_k and
    maj@k for each k in k_values that every problem has enough samples for, mean/median/p90/max_tokens,
    recheck_rate and backtrack_rate (mean paragraphs per response), frac_with_recheck, frac_with_backtrack,
    tokens_after_first_correct (mean over the responses where the gold value appears; None if
    none) and frac_answer_appears (the fraction of responses where it does).
    """
    if not samples:
        raise ValueError("summarize needs at least one sample")
    groups: dict = {}
    for s in samples:
        groups.setdefault(s["problem_id"], []).append(s)
    for pid, rows in groups.items():
        if len({r["gold"] for r in rows}) != 1:
            raise ValueError(f"problem {pid!r} has several gold answers")
    golds = [rows[0]["gold"] for rows in groups.values()]
    answers = [[r["answer"] for r in rows] for rows in groups.values()]
    fewest = min(len(a) for a in answers)

    out = {
        "n_problems": len(groups),
        "n_samples": len(samples),
        "pass@1": pass_at_1([[bool(r["correct"]) for r in rows] for rows in groups.values()]),
    }
    for k in pass_k:
        if 1 < k <= fewest:  # pass@1 is the mean fraction correct, the estimator's value at k = 1
            out[f"pass@{k}"] = mean_pass_at_k([[bool(r["correct"]) for r in rows] for rows in groups.values()], k)
    for k in k_values:
        if k <= fewest:
            out[f"maj@{k}"] = maj_at_k(answers, golds, k)
    lengths = length_stats([s["n_tokens"] for s in samples])
    out.update({f"{name}_tokens": value for name, value in lengths.items()})

    rechecks = [count_rechecks(s["text"]) for s in samples]
    backtracks = [count_backtracks(s["text"]) for s in samples]
    out["recheck_rate"] = sum(rechecks) / len(samples)
    out["backtrack_rate"] = sum(backtracks) / len(samples)
    out["frac_with_recheck"] = sum(r > 0 for r in rechecks) / len(samples)
    out["frac_with_backtrack"] = sum(b > 0 for b in backtracks) / len(samples)

    after = [tokens_after_first_correct(s["text"], s["token_offsets"], s["gold"]) for s in samples]
    found = [a for a in after if a is not None]
    out["tokens_after_first_correct"] = _mean(found)
    out["frac_answer_appears"] = len(found) / len(samples)
    return out
