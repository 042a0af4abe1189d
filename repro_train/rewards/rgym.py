"""`reasoning_gym`: a reasoning-gym generator's own answer checker as an outcome reward.

    reward: {functions: [{name: reasoning_gym}]}      # with data.source: reasoning-gym:TASK?... (or its export)

The answer is extracted as by exact_match (group 1 of the last `pattern` match, else the last
"Final answer:" line, else the last \\boxed{}); then reasoning-gym's `score_answer` for the row's
task (column `rg_dataset`) scores it against the row's entry (gold answer + column `rg_entry`,
the generator's metadata as JSON). Scores are in [0, 1] (some tasks give partial credit).
No answer -> 0.0; no gold -> None. Needs the reasoning-gym package (imported on first call).
"""

from __future__ import annotations

import json

from .extract import extract_answer
from .functions import compile_answer_pattern, register_reward


@register_reward("reasoning_gym", correctness=True)
class ReasoningGym:
    """reasoning-gym's checker for the row's task; needs the columns rg_dataset and rg_entry."""

    def __init__(self, pattern: str | None = None):
        self.pattern = compile_answer_pattern(pattern)
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

    def check(self, completion: str, answer: str | None, task: str, entry: str | dict | None) -> float | None:
        if answer is None:
            return None
        pred = extract_answer(completion, self.pattern)
        if pred is None:
            return 0.0
        meta = json.loads(entry) if isinstance(entry, str) else (entry or {})
        return float(self._scorer(task)(pred, {"answer": answer, "metadata": meta}))

    def __call__(self, prompts, completions, answers, rg_dataset=None, rg_entry=None, **columns) -> list[float | None]:
        if rg_dataset is None:
            raise ValueError(
                "the reasoning_gym reward needs the column 'rg_dataset' (and 'rg_entry'): use "
                "data.source: reasoning-gym:TASK?... or a file exported by `repro-train data export`"
            )
        entries = rg_entry if rg_entry is not None else [None] * len(completions)
        return [self.check(c, a, t, e) for c, a, t, e in zip(completions, answers, rg_dataset, entries)]
