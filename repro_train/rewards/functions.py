"""The reward registry and the in-process built-ins: `exact_match`, `numeric`, `last_number`, `format`
(`math_verify` lives in mathverify.py, which needs a process pool; `reasoning_gym` in rgym.py).

A reward function is called once per batch and returns one value per rollout (None: cannot score it):

    fn(prompts, completions, answers, **columns) -> list[float | None]

A registered class is constructed with the spec's kwargs, and the instance is the function. Every built-in
returns a value for any completion string, never raises, and applies the strict answer rule. The contract,
the built-ins and the rule: docs/rewards.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction

from .extract import (
    answer_key,
    answer_sentence,
    extract_answer,
    extract_final_answer,
    last_number,
    last_number_match,
    normalize_answer,
    parse_exact,
    run_start,
    strict_refusal,
    written_as_integer,
)

RewardFn = Callable[..., list[float | None]]
"""fn(prompts: list[str], completions: list[str], answers: list[str | None], **columns)."""

REWARDS: dict[str, type | Callable] = {}
"""Built-in rewards by name. Each entry carries `.correctness`: whether it counts toward `correct`."""


def register_reward(name: str, *, correctness: bool):
    """Decorator: add a reward class or function to REWARDS under `name`.

    `correctness` is the default for RewardSpec.correctness (True: its value >= the function's
    `threshold`, 1 unless it has one, means the rollout is correct; outcome.py). A duplicate name raises.
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


def numbers_match(pred: Fraction, gold: Fraction, gold_text: str, rel_tol: float, abs_tol: float) -> bool:
    """Exactly equal where the gold is written as an integer ("38095786" is not "38095785"), else
    `math.isclose` with the tolerances (a float gold such as "0.75" or "1e3", or a fraction)."""
    if written_as_integer(gold_text):
        return pred == gold
    return math.isclose(float(pred), float(gold), rel_tol=rel_tol, abs_tol=abs_tol)


@register_reward("exact_match", correctness=True)
class ExactMatch:
    """1.0 if the completion's answer equals the gold answer as strings, else 0.0.

    The answer is group 1 of the last `pattern` match, or by default the last "Final answer:" line,
    falling back to the last \\boxed{...}. No answer, or one the strict rule refuses -> 0.0; no gold -> None.
    """

    def __init__(self, pattern: str | None = None, normalize: bool = True, strict: bool = True):
        self.pattern = compile_answer_pattern(pattern)
        self.normalize = bool(normalize)  # compare normalize_answer() forms
        self.strict = bool(strict)

    def check(self, completion: str, answer: str | None) -> float | None:
        if answer is None:
            return None
        pred = extract_answer(completion, self.pattern)
        if pred is None:
            return 0.0
        # The value is read from the normalized answer, as the comparison reads it ("1 000" is one number).
        if self.strict and strict_refusal(completion, pred, answer, tail=normalize_answer(pred), pattern=self.pattern):
            return 0.0
        if self.normalize:
            return float(normalize_answer(pred) == normalize_answer(answer))
        return float(pred == answer.strip())

    def __call__(self, prompts, completions, answers, **columns) -> list[float | None]:
        return [self.check(c, a) for c, a in zip(completions, answers)]


@register_reward("numeric", correctness=True)
class Numeric:
    """1.0 if the completion's answer equals the gold answer as a number, else 0.0.

    Same extraction as exact_match; numbers are read by `parse_number` (ints, decimals, a/b,
    \\frac{a}{b}, thousands commas, a sign). A gold written as an integer is compared exactly, any
    other within rel_tol/abs_tol (`numbers_match`). Unparsable answer, or one the strict rule
    refuses -> 0.0; unparsable or no gold -> None.
    """

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9, pattern: str | None = None, strict: bool = True):
        self.rel_tol = _nonnegative("rel_tol", rel_tol)
        self.abs_tol = _nonnegative("abs_tol", abs_tol)
        self.pattern = compile_answer_pattern(pattern)
        self.strict = bool(strict)

    def check(self, completion: str, answer: str | None) -> float | None:
        gold = parse_exact(answer)
        if gold is None:
            return None
        pred = parse_exact(self.answer(completion))
        if pred is None or (self.strict and self.refusal(completion, answer)):
            return 0.0
        return float(numbers_match(pred, gold, answer, self.rel_tol, self.abs_tol))

    def answer(self, completion: str) -> str | None:
        """The answer text the completion gives (exact_match's extraction)."""
        return extract_answer(completion, self.pattern)

    def refusal(self, completion: str, answer: str) -> str | None:
        """Why the strict rule refuses the completion's answer (None: it does not)."""
        return strict_refusal(completion, self.answer(completion), answer, pattern=self.pattern)

    def __call__(self, prompts, completions, answers, **columns) -> list[float | None]:
        return [self.check(c, a) for c, a in zip(completions, answers)]


def _last_number_key(answer: str):
    """Two "Final answer:" lines are one answer for last_number when their last numbers are equal."""
    number = last_number(answer)
    return answer_key(answer if number is None else number)


@register_reward("last_number", correctness=True)
class LastNumber(Numeric):
    """1.0 if the last number the completion writes equals the gold number, else 0.0.

    The number is the last one in the last "Final answer:" line, or in the whole completion when
    there is none (`last_number`), so a model that ignores the answer-line format still gets
    signal. A restated problem earns nothing: "The final answer is 3 - 7 - 7." reads as 7, and
    the strict rule refuses "The final answer is 0 + 4." for 4 (an expression with no value
    written), which math_verify's own extraction reads as 4 (docs/rewards.md). No number -> 0.0;
    unparsable or no gold -> None.
    """

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9, strict: bool = True):
        super().__init__(rel_tol, abs_tol, strict=strict)

    def answer(self, completion: str) -> str | None:
        return last_number(completion)

    def refusal(self, completion: str, answer: str) -> str | None:
        """The answer line is the span; without one, the sentence of the last number, with the value
        read from the arithmetic run that holds that number on ("is 0 + 4." -> "0 + 4.")."""
        line = extract_final_answer(completion)
        if line is not None:
            return strict_refusal(completion, line, answer, key=_last_number_key, boxes=False)
        found = last_number_match(completion)
        if found is None:
            return None
        start, end = answer_sentence(completion, *found[1].span())
        tail = completion[max(start, run_start(completion, found[1].start())) : end]
        span = completion[start:end]
        return strict_refusal(completion, span, answer, tail=tail, key=_last_number_key, boxes=False)


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
