"""The reward registry and the in-process built-ins: `exact_match`, `numeric`, `format`.

A reward function is called once per batch and returns one value per rollout:

    fn(prompts, completions, answers, **columns) -> list[float | None]

`answers` are the gold answers (None where a row has none); `columns` holds every other dataset
column as a list of length B. None means "cannot score this rollout" (OutcomeReward counts it and
uses 0). A registered class is constructed with the spec's kwargs, and the instance is the function.
`math_verify` lives in mathverify.py (it needs a process pool); docs/rewards.md describes them all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from .extract import extract_answer, last_number, normalize_answer, parse_number

RewardFn = Callable[..., list[float | None]]
"""fn(prompts: list[str], completions: list[str], answers: list[str | None], **columns)."""

REWARDS: dict[str, type | Callable] = {}
"""Built-in rewards by name. Each entry carries `.correctness`: whether it counts toward `correct`."""


def register_reward(name: str, *, correctness: bool):
    """Decorator: add a reward class or function to REWARDS under `name`.

    `correctness` is the default for RewardSpec.correctness (True: its value >= 0.5 means the
    rollout is correct). A duplicate name raises.
    """

    def deco(obj):
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered; registered: {sorted(REWARDS)}")
        if ":" in name:
            raise ValueError(f"reward name {name!r} must not contain ':' (that marks an import path)")
        obj.correctness = correctness
        REWARDS[name] = obj
        return obj

    return deco


def compile_answer_pattern(pattern: str | None) -> re.Pattern | None:
    """Compile a user answer regex; it must have exactly one group (the answer)."""
    if pattern is None:
        return None
    compiled = re.compile(pattern)
    if compiled.groups != 1:
        raise ValueError(f"pattern {pattern!r} must have exactly one group (the answer), it has {compiled.groups}")
    return compiled


def _nonnegative(name: str, value) -> float:
    # YAML reads 1e-6 (no dot) as a string, so accept numeric strings here.
    value = float(value)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


@register_reward("exact_match", correctness=True)
class ExactMatch:
    """1.0 if the completion's answer equals the gold answer as strings, else 0.0.

    The answer is group 1 of the last `pattern` match, or by default the last "Final answer:" line,
    falling back to the last \\boxed{...}. No answer -> 0.0; no gold -> None.
    """

    def __init__(self, pattern: str | None = None, normalize: bool = True):
        self.pattern = compile_answer_pattern(pattern)
        self.normalize = bool(normalize)  # compare normalize_answer() forms

    def check(self, completion: str, answer: str | None) -> float | None:
        if answer is None:
            return None
        pred = extract_answer(completion, self.pattern)
        if pred is None:
            return 0.0
        if self.normalize:
            return float(normalize_answer(pred) == normalize_answer(answer))
        return float(pred == answer.strip())

    def __call__(self, prompts, completions, answers, **columns) -> list[float | None]:
        return [self.check(c, a) for c, a in zip(completions, answers)]


@register_reward("numeric", correctness=True)
class Numeric:
    """1.0 if the completion's answer and the gold answer are close as numbers, else 0.0.

    Same extraction as exact_match; numbers are read by `parse_number` (ints, decimals, a/b,
    \\frac{a}{b}, thousands commas, a sign). Unparsable answer -> 0.0; unparsable or no gold -> None.
    """

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9, pattern: str | None = None):
        self.rel_tol = _nonnegative("rel_tol", rel_tol)
        self.abs_tol = _nonnegative("abs_tol", abs_tol)
        self.pattern = compile_answer_pattern(pattern)

    def check(self, completion: str, answer: str | None) -> float | None:
        gold = parse_number(answer)
        if gold is None:
            return None
        pred = parse_number(self.answer(completion))
        if pred is None:
            return 0.0
        return float(math.isclose(pred, gold, rel_tol=self.rel_tol, abs_tol=self.abs_tol))

    def answer(self, completion: str) -> str | None:
        """The answer text the completion gives (exact_match's extraction)."""
        return extract_answer(completion, self.pattern)

    def __call__(self, prompts, completions, answers, **columns) -> list[float | None]:
        return [self.check(c, a) for c, a in zip(completions, answers)]


@register_reward("last_number", correctness=True)
class LastNumber(Numeric):
    """1.0 if the last number the completion writes equals the gold number, else 0.0.

    The number is the last one in the last "Final answer:" line, or in the whole completion when
    there is none (`last_number`), so a model that ignores the answer-line format still gets
    signal, and a restated problem cannot pass as its own answer: "The final answer is 3 - 7 - 7."
    reads as 7. math_verify's own extraction reads that sentence as the expression 3 - 7 - 7 and
    scores it right (docs/rewards.md, "Restated problems"). No number -> 0.0; unparsable or no gold -> None.
    """

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9):
        super().__init__(rel_tol, abs_tol)

    def answer(self, completion: str) -> str | None:
        return last_number(completion)


DEFAULT_FORMAT_PATTERN = r"(?ims)</think>.*^[ \t*]*final answer:[ \t*]*\S"
"""A `</think>` marker, then (later) a line starting with "Final answer:" and a non-blank answer."""


def parse_flags(flags: int | str) -> int:
    """re flags from an int or names joined by '|': "IGNORECASE|DOTALL", "I|S", "" (none)."""
    if isinstance(flags, int):
        return flags
    value = 0
    for part in filter(None, (p.strip() for p in str(flags).split("|"))):
        if part.upper() not in re.RegexFlag.__members__:
            raise ValueError(f"unknown regex flag {part!r}; choose from: {', '.join(sorted(re.RegexFlag.__members__))}")
        value |= re.RegexFlag[part.upper()]
    return value


@register_reward("format", correctness=False)
class Format:
    """1.0 if `re.search(pattern, completion, flags)` matches, else 0.0. Gold answers are unused."""

    def __init__(self, pattern: str = DEFAULT_FORMAT_PATTERN, flags: int | str = 0):
        self.regex = re.compile(pattern, parse_flags(flags))

    def __call__(self, prompts, completions, answers, **columns) -> list[float | None]:
        return [float(self.regex.search(c) is not None) for c in completions]
