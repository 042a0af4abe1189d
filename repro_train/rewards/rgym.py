"""`reasoning_gym`: a reasoning-gym generator's own answer checker as an outcome reward.

    reward: {functions: [{name: reasoning_gym}]}      # with data.source: reasoning-gym:TASK?... (or its export)
    reward: {functions: [{name: reasoning_gym, kwargs: {partial_credit: true, threshold: 0.5}}]}

The answer is extracted as by exact_match and scored by reasoning-gym's `score_answer` for the row's task
(columns `rg_dataset`, `rg_entry`): 1.0 when that score reaches `threshold`, else 0.0 (`partial_credit=True`:
the score itself). Needs the reasoning-gym package (imported on first call). The strict checks before it and
checkers that raise: docs/rewards.md, "Built-ins", rule 10.
"""

from __future__ import annotations

import json
import math

from .extract import answer_number, extract_answer, parse_exact, strict_refusal
from .functions import compile_answer_pattern, numbers_match, register_reward

REL_TOL, ABS_TOL = 1e-6, 1e-9
"""The tolerances of `numeric`'s defaults, for a gold number that is not written as an integer."""


@register_reward("reasoning_gym", correctness=True)
class ReasoningGym:
    """reasoning-gym's checker for the row's task; needs the columns rg_dataset and rg_entry."""

    def __init__(
        self, pattern: str | None = None, partial_credit: bool = False, threshold: float = 1.0, strict: bool = True
    ):
        self.pattern = compile_answer_pattern(pattern)
        self.partial_credit = bool(partial_credit)
        self.threshold = float(threshold)  # outcome.py: correct = value >= threshold
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] (a reasoning-gym score), got {threshold}")
        self.strict = bool(strict)
        self._scorers: dict = {}

    def _scorer(self, task: str):
        if task not in self._scorers:
            try:
                from reasoning_gym import get_score_answer_fn
            except ImportError:
                raise RuntimeError(
                    "the reasoning_gym reward needs the reasoning-gym package: pip install reasoning-gym==0.1.25"
                ) from None
            self._scorers[task] = get_score_answer_fn(task)
        return self._scorers[task]

    def raw_score(self, pred: str, answer: str, task: str, meta: dict) -> float | None:
        """reasoning-gym's score in [0, 1]; 0.0 where its checker raises on `pred`, None where it
        raises on the gold too (the row, not the answer, is broken). An unknown task raises."""
        scorer, entry = self._scorer(task), {"answer": answer, "metadata": meta}
        try:
            score = float(scorer(pred, entry))
        except Exception:  # checkers call int() etc. on the answer unguarded (prime_factorization)
            try:
                scorer(answer, entry)
            except Exception:
                return None
            return 0.0
        return min(max(score, 0.0), 1.0) if math.isfinite(score) else 0.0

    def check(self, completion: str, answer: str | None, task: str, entry: str | dict | None) -> float | None:
        if answer is None:
            return None
        pred = extract_answer(completion, self.pattern)
        if pred is None:
            return 0.0
        try:
            meta = json.loads(entry) if isinstance(entry, str) else dict(entry or {})
        except (TypeError, ValueError):
            return None
        if self.strict:
            if strict_refusal(completion, pred, answer, pattern=self.pattern):
                return 0.0
            gold, value = parse_exact(answer), answer_number(pred)
            if gold is not None and value is not None and not numbers_match(value, gold, answer, REL_TOL, ABS_TOL):
                return 0.0
        if pred.endswith(".") and not pred.endswith("..") and not answer.rstrip().endswith("."):
            pred = pred[:-1].rstrip()  # "Final answer: 739." ends a sentence; prime_factorization's int() would raise
        raw = self.raw_score(pred, answer, task, meta)
        if raw is None or self.partial_credit:
            return raw
        return float(raw >= self.threshold)

    def __call__(self, prompts, completions, answers, rg_dataset=None, rg_entry=None, **columns) -> list[float | None]:
        if rg_dataset is None:
            raise ValueError(
                "the reasoning_gym reward needs the column 'rg_dataset' (and 'rg_entry'): use "
                "data.source: reasoning-gym:TASK?... or a file exported by `repro-train data export`"
            )
        entries = rg_entry if rg_entry is not None else [None] * len(completions)
        return [self.check(c, a, t, e) for c, a, t, e in zip(completions, answers, rg_dataset, entries)]
