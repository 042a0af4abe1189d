"""What every family builds on: the constants (FAMILIES, HABITS, SPLITS), ThinkingConfig (difficulty and habit
knobs), Fact (one computation), Step (one paragraph of a solution), Problem, Family (what a family module provides)
and the small helpers the families and the trace share (draw_number, signed, early_numbers, ...)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

FAMILIES = ("chain", "equation", "gcd", "word")
HABITS = ("restate", "reverify", "hesitate", "alternative", "recheck_answer", "backtrack")
SPLITS = ("train", "test", "hard")


@dataclass(frozen=True)
class ThinkingConfig:
    """Difficulty and habit knobs. Ranges are inclusive (lo, hi)."""

    steps: tuple[int, int] = (2, 5)
    """Work per problem: chain operations; word clauses; equation form (1: ax + b = d, 2: x on both
    sides, 3: a bracket, 4: a bracket and a constant, 5+: brackets on both sides); gcd: 2 numbers up
    to 3, else 3 (larger multipliers, so longer Euclid runs, as steps grow)."""
    digits: tuple[int, int] = (1, 3)
    """Digits of the numbers drawn: chain terms, word quantities, the equation's x and constants,
    the GCD's common factor (at most 2 digits)."""
    overthink: float = 0.7
    """Share of traces that carry at least one habit; the rest are clean."""
    restate: float = 0.5
    """Probability of each habit in an overthinking trace (drawn independently, again if none):
    the question in other words at the start, and half the time after the answer."""
    reverify: float = 0.6
    """1-3 finished steps re-verified by the inverse operation."""
    hesitate: float = 0.5
    """1-3 doubts ("Wait, is ... really ...?") about the step just done, resolved."""
    alternative: float = 0.5
    """A second solution by another method after the answer."""
    recheck_answer: float = 0.6
    """2-3 checks of the final answer after it is found."""
    backtrack: float = 0.3
    """One step written with a wrong result, then a correction."""

    def __post_init__(self):
        for name in ("steps", "digits"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name}={getattr(self, name)}: need 1 <= lo <= hi")
        if self.digits[1] > 4:
            raise ValueError(f"digits={self.digits}: at most 4 digits (traces grow long)")
        for name in ("overthink", *HABITS):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: a probability in [0, 1]")
        if self.overthink > 0 and not any(getattr(self, h) > 0 for h in HABITS):
            raise ValueError(f"overthink={self.overthink} but every habit is 0: set a habit > 0 or overthink=0")

    def harder(self) -> ThinkingConfig:
        """The `hard` split's config: steps (max + 1, max + 3), the rest unchanged."""
        return replace(self, steps=(self.steps[1] + 1, self.steps[1] + 3))


# ---------------------------------------------------------------- arithmetic facts and steps


@dataclass(frozen=True)
class Fact:
    """One computation `a op b`; op is + - × ÷ or rem (the remainder of a ÷ b). `unit` ("x") is
    written after every number of a + or - between like terms: 7x - 3x = 4x."""

    a: int
    op: str
    b: int
    unit: str = ""

    @property
    def q(self) -> int:
        return self.a // self.b

    @property
    def result(self) -> int:
        a, b = self.a, self.b
        return {"+": a + b, "-": a - b, "×": a * b, "÷": a // b, "rem": a % b}[self.op]

    def lhs(self) -> str:
        if self.op == "rem":
            return f"the remainder of {self.a} ÷ {self.b}"
        return f"{self.a}{self.unit} {self.op} {self.b}{self.unit}"

    def eq(self, value: int) -> str:
        """The step as written, with `value` as its result (a wrong one for a backtrack)."""
        if self.op == "rem":
            return f"{self.a} ÷ {self.b} is {self.q} with remainder {value}"
        return f"{self.a}{self.unit} {self.op} {self.b}{self.unit} = {value}{self.unit}"

    def inverse(self) -> str:
        """The check by the inverse operation, ending in `= a`."""
        a, b, r, u = self.a, self.b, self.result, self.unit
        return {
            "+": f"{r}{u} - {b}{u} = {a}{u}",
            "-": f"{r}{u} + {b}{u} = {a}{u}",
            "×": f"{r} ÷ {b} = {a}",
            "÷": f"{r} × {b} = {a}",
            "rem": f"{self.q} × {b} + {r} = {a}",
        }[self.op]

    def words(self) -> str:
        """The same result reached another way, in words (no "=": eval.metrics.answer_pattern reads "= N" as a
        statement of the answer, and `answer_char` must point at the solution's own statement of it)."""
        a, b, r = self.a, self.b, self.result
        if self.op in "+-" and len(place_values(b)) >= 2:
            word, last = ("plus", "more makes") if self.op == "+" else ("minus", "less leaves")
            sign = 1 if self.op == "+" else -1
            *parts, final = place_values(b)
            out, x = [], a
            for part in parts:
                x += sign * part
                out.append(f"{word} {part} is {x}")
            return f"{a} {', '.join(out)}, and {final} {last} {r}"
        if self.op == "+":
            return f"{r} minus {b} gives back {a}"
        if self.op == "-":
            return f"{r} plus {b} gives back {a}"
        if self.op == "×" and len(place_values(a)) >= 2:
            parts = place_values(a)
            return ", ".join(f"{q} times {b} is {q * b}" for q in parts) + f", which add up to {r}"
        if self.op == "×":
            return f"{r} divided by {b} gives back {a}"
        if self.op == "÷":
            return f"{r} times {b} is {a}"
        return f"{self.q} times {b} is {self.q * b}, and {a} minus {self.q * b} leaves {r}"


def place_values(n: int) -> list[int]:
    """The nonzero place values of n >= 0, largest first: 305 -> [300, 5]."""
    digits = str(n)
    return [int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits) if d != "0"]


@dataclass(frozen=True)
class Step:
    """One paragraph of the solution: a template from `says`, filled with the fact (a, b, r, eq, lhs,
    u), `lead` (First, / Next, / ...) and `ctx`. A step without a fact states a value: `stated` with
    {r} (e.g. "gcd(84, 126) = {r}") is its `eq`."""

    says: tuple[str, ...]
    fact: Fact | None = None
    stated: str = ""
    value: int = 0
    ctx: tuple[tuple[str, object], ...] = ()

    @property
    def result(self) -> int:
        return self.fact.result if self.fact else self.value


@dataclass(frozen=True)
class Problem:
    family: str
    question: str
    answer: int
    steps: tuple[Step, ...]
    """The solution; the last step states the answer first."""
    early: frozenset[int]
    """Numbers given, or written after "=" before the answer; the answer must not be one of them."""
    paraphrase: str
    """The question in other words (restate habit)."""
    target: str
    """What is asked, as a noun phrase: "the value of x"."""
    info: dict
    """Family data for the plan, the second solution and the answer checks."""
    n_steps: int
    """The difficulty drawn from ThinkingConfig.steps."""

    @property
    def key(self) -> str:
        """The computation, whatever the wording: questions with one key (another template, name or
        item) are one problem. 'chain//47 + 385;432 - 129'."""
        facts = ";".join(f"{s.fact.a} {s.fact.op} {s.fact.b}" for s in self.steps if s.fact)
        return f"{self.family}/{self.info.get('kind', '')}/{facts}"


@dataclass(frozen=True)
class Family:
    """What the data set needs of a family (each family module ends in one: chain.CHAIN, ...)."""

    make: Callable[[random.Random, ThinkingConfig, int], Problem]
    alternative: Callable[[Problem, random.Random], list[str]]
    """The second solution (alternative habit): an opener that names the method, then its work."""
    checks: Callable[[Problem], list[str]]
    """At least three different checks of the answer, lower case (recheck_answer habit)."""


def draw_number(rng: random.Random, digits: tuple[int, int]) -> int:
    """A number of d digits, d drawn from the inclusive range `digits`; at least 2."""
    d = rng.randint(*digits)
    return rng.randint(max(2, 10 ** (d - 1)), 10**d - 1)


def signed(n: int) -> str:
    """' + 5' or ' - 5'."""
    return f" + {n}" if n >= 0 else f" - {-n}"


def ints_in(text: str) -> set[int]:
    """The whole numbers written in `text`."""
    return {int(s) for s in re.findall(r"\d+", text)}


def early_numbers(question: str, facts: list[Fact]) -> frozenset[int]:
    """The question's numbers and every operand and result before the last fact's result."""
    out = ints_in(question) | {abs(facts[-1].a), abs(facts[-1].b)}
    for f in facts[:-1]:
        out |= {abs(f.a), abs(f.b), abs(f.result)}
    return frozenset(out)


def cap_first(text: str) -> str:
    """`text` with its first letter upper case (str.capitalize would lower the rest)."""
    return text[:1].upper() + text[1:]
