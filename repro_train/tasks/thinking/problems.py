"""Thinking traces: procedural problems solved in long `<think>` traces with the overthinking habits
of distilled reasoners, for turning a small pretrained model into a "thinker".

    rows = generate(2000, seed=1, families=("chain", "equation"), split="train")
    repro-train data export "thinking:all?n=2000&seed=1&split=train" --out data/think-train.jsonl

Four families with exact integer answers (chain, equation, gcd, word). A trace overthinks with
probability `overthink`, then carries habits (restate, reverify, hesitate, alternative, recheck_answer,
backtrack) that each row records, with `n_rechecks`, `n_backtracks` and `answer_char`. The `train`
split is disjoint from `test` and `hard` by a hash of each problem's computation. The response format,
the habits, the splits, determinism and lengths: docs/models-and-data.md, "Thinking traces".
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from .phrases import ALT_CLOSERS, ALT_OPENERS

FAMILIES = ("chain", "equation", "gcd", "word")
HABITS = ("restate", "reverify", "hesitate", "alternative", "recheck_answer", "backtrack")
SPLITS = ("train", "test", "hard")
MAX_DRAWS = 200
"""Draws per row before giving up on a problem space that is too small."""


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


# ---------------------------------------------------------------- chain

CHAIN_QUESTIONS = (
    "Calculate {expr}.",
    "What is {expr}?",
    "Compute {expr}.",
    "Find the value of {expr}.",
    "Evaluate {expr}.",
    "Work out {expr}.",
)
CHAIN_SAYS = (
    "{lead} {eq}.",
    "{lead} I take {a} and {opverb} {b}, so {eq}.",
    "{lead} the running total is {a}, and {opping} {b} gives {eq}.",
    "{lead} {a} {opword} {b}. That is {eq}.",
    "{lead} {opping} {b} to get {eq}.",
)
CHAIN_SAYS_SPLIT = (
    "{lead} {a} {opword} {b}. I'll do it in two parts: {words}. So {eq}.",
    "{lead} {opping} {b}: {words}, which means {eq}.",
    "{lead} for {a} {opword} {b}, {words}. That gives {eq}.",
)
_OPWORD = {"+": "plus", "-": "minus"}
_OPVERB = {"+": "add", "-": "subtract"}
_OPPING = {"+": "adding", "-": "subtracting"}


def _arith_step(fact: Fact, says: tuple[str, ...], split_says: tuple[str, ...] = (), **ctx) -> Step:
    split = fact.op in "+-" and len(place_values(fact.b)) >= 2 and split_says
    ctx |= {"opword": _OPWORD.get(fact.op, ""), "opverb": _OPVERB.get(fact.op, ""), "opping": _OPPING.get(fact.op, "")}
    if split:
        ctx["words"] = fact.words()
    return Step(split_says if split else says, fact, ctx=tuple(ctx.items()))


def make_chain(rng: random.Random, cfg: ThinkingConfig, n_steps: int) -> Problem:
    """`n_steps` additions and subtractions of numbers of `digits` digits; every total stays >= 1."""
    total = start = draw_number(rng, cfg.digits)
    facts = []
    for _ in range(n_steps):
        b = draw_number(rng, cfg.digits)
        op = "-" if total - b >= 1 and rng.random() < 0.5 else "+"
        facts.append(Fact(total, op, b))
        total = facts[-1].result
    expr = f"{start}" + "".join(f" {f.op} {f.b}" for f in facts)
    question = rng.choice(CHAIN_QUESTIONS).format(expr=expr)
    moves = ", ".join(f"{_OPVERB[f.op]} {f.b}" for f in facts)
    return Problem(
        "chain",
        question,
        total,
        tuple(_arith_step(f, CHAIN_SAYS, CHAIN_SAYS_SPLIT) for f in facts),
        early_numbers(question, facts),
        f"I need the value of {expr}: start from {start}, then {moves}, in that order.",
        f"the value of {expr}",
        {"facts": facts, "expr": expr},
        n_steps,
    )


def _alt_chain(p: Problem, rng: random.Random) -> list[str]:
    facts = p.info["facts"]
    plus = [facts[0].a] + [f.b for f in facts if f.op == "+"]
    minus = [f.b for f in facts if f.op == "-"]
    if not minus:
        nums = [f.b for f in reversed(facts)] + [facts[0].a]
        return [
            rng.choice(ALT_OPENERS).format(how="by adding the numbers in the opposite order"),
            cap_first(_running(nums)) + ".",
            rng.choice(ALT_CLOSERS).format(ans=p.answer),
        ]
    pos, neg = sum(plus), sum(minus)
    return [
        rng.choice(ALT_OPENERS).format(how="by adding up what is added and what is taken away separately"),
        f"What is added: {_running(plus)}.",
        f"What is taken away: {_running(minus)}.",
        f"Then {pos} - {neg} = {pos - neg}. " + rng.choice(ALT_CLOSERS).format(ans=p.answer),
    ]


def _running(nums: list[int]) -> str:
    """'47 + 385 = 432, 432 + 62 = 494' (or 'just 47' for one number)."""
    if len(nums) == 1:
        return f"just {nums[0]}"
    out, total = [], nums[0]
    for n in nums[1:]:
        out.append(f"{total} + {n} = {total + n}")
        total += n
    return ", ".join(out)


def _checks_chain(p: Problem) -> list[str]:
    facts = p.info.get("chain", p.info["facts"])
    back = ", ".join(f.inverse() for f in reversed(facts))
    forward = ", ".join(f.eq(f.result) for f in p.info["facts"])
    return [
        f"going backwards from {p.answer}: {back}, which is the number I started from",
        f"running through the steps again: {forward}",
        f"undoing each step from the end: {back}. That lands on the start",
    ]


# ---------------------------------------------------------------- equation

EQUATION_QUESTIONS = (
    "Solve for x: {eqn}.",
    "Find x if {eqn}.",
    "What value of x satisfies {eqn}?",
    "Solve the equation {eqn}.",
    "Determine x such that {eqn}.",
)
EXPAND_SAYS = (
    "{lead} expand {a}(x + {b}): {eq}, so the {side} side becomes {a}x + {r}{tail}.",
    "{lead} multiply out the bracket {a}(x + {b}). That needs {eq}, giving {a}x + {r}{tail} on the {side}.",
    "{lead} distribute {a} over (x + {b}): {a} times x is {a}x and {eq}, so the {side} side is {a}x + {r}{tail}.",
)
COMBINE_SAYS = (
    "{lead} combine the constants on the {side}: {eq}, so that side is {coef}x{r_s}.",
    "{lead} the constants on the {side} side go together: {eq}. Now the {side} side reads {coef}x{r_s}.",
)
XTERMS_SAYS = (
    "{lead} subtract {b}x from both sides: {eq}, so {r}x{cs} = {d}.",
    "{lead} move the x terms to the left. {eq}, which leaves {r}x{cs} = {d}.",
    "{lead} taking {b}x away from both sides gives {eq}, so the equation is {r}x{cs} = {d}.",
)
CONST_SAYS = {
    "-": (
        "{lead} subtract {b} from both sides: {eq}, so {k}x = {r}.",
        "{lead} take {b} away from both sides. {eq}, which gives {k}x = {r}.",
        "{lead} moving the {b} to the right means subtracting it: {eq}, so {k}x = {r}.",
    ),
    "+": (
        "{lead} add {b} to both sides: {eq}, so {k}x = {r}.",
        "{lead} adding {b} to both sides gives {eq}, so {k}x = {r}.",
        "{lead} to clear the -{b}, add {b} on both sides: {eq}, so {k}x = {r}.",
    ),
}
DIVIDE_SAYS = (
    "{lead} divide both sides by {b}: x = {eq}.",
    "{lead} dividing by {b} gives x = {eq}.",
    "{lead} x is {a} divided by {b}, so x = {eq}.",
    "{lead} both sides divided by {b}: x = {eq}.",
)


def _side(terms: list[tuple]) -> str:
    """('x', 7) -> 7x, ('c', -12) -> - 12, ('p', 3, 4) -> 3(x + 4); joined with signs: 7x - 12."""
    out = ""
    for t in terms:
        if t[0] == "c":
            out += signed(t[1]) if out else str(t[1])
        else:
            piece = f"{t[1]}x" if t[0] == "x" else f"{t[1]}(x + {t[2]})"
            out += f" + {piece}" if out else piece
    return out


def _draw_equation(rng: random.Random, cfg: ThinkingConfig, form: int) -> dict | None:
    """Coefficients of the form (see ThinkingConfig.steps) with solution x; None if a constant is 0."""
    x = draw_number(rng, cfg.digits)
    c = rng.randint(2, 7) if form >= 2 else 0
    a = rng.randint(c + 2, c + 8)
    p = draw_number(rng, cfg.digits) if form >= 3 else 0
    e = rng.choice((-1, 1)) * draw_number(rng, cfg.digits) if form >= 4 else 0
    b = a * p + e if form >= 3 else rng.choice((-1, 1)) * draw_number(rng, cfg.digits)
    d = (a - c) * x + b
    f = draw_number(rng, cfg.digits) if form >= 5 else 0
    g = d - c * f
    if 0 in (b, d) or (form >= 5 and g == 0):
        return None
    left = [("x", a), ("c", b)] if form <= 2 else [("p", a, p)] + ([("c", e)] if form >= 4 else [])
    right = [("c", d)] if form == 1 else [("x", c), ("c", d)] if form <= 4 else [("p", c, f), ("c", g)]
    return dict(x=x, a=a, c=c, p=p, e=e, b=b, d=d, f=f, g=g, k=a - c, m=(a - c) * x, left=left, right=right)


def _equation_steps(v: dict, form: int, right: str) -> list[Step]:
    a, c, b, d, k = v["a"], v["c"], v["b"], v["d"], v["k"]
    steps = []
    if form >= 3:
        tail = signed(v["e"]) if form >= 4 else ""
        steps.append(Step(EXPAND_SAYS, Fact(a, "×", v["p"]), ctx=(("side", "left"), ("tail", tail))))
    if form >= 4:
        ap, e = a * v["p"], v["e"]
        steps.append(Step(COMBINE_SAYS, Fact(ap, "+" if e > 0 else "-", abs(e)), ctx=(("side", "left"), ("coef", a))))
    if form >= 5:
        cf, g = c * v["f"], v["g"]
        steps.append(Step(EXPAND_SAYS, Fact(c, "×", v["f"]), ctx=(("side", "right"), ("tail", signed(g)))))
        steps.append(Step(COMBINE_SAYS, Fact(cf, "+" if g > 0 else "-", abs(g)), ctx=(("side", "right"), ("coef", c))))
    if form >= 2:
        steps.append(Step(XTERMS_SAYS, Fact(a, "-", c, unit="x"), ctx=(("cs", signed(b)), ("d", d))))
    op = "-" if b > 0 else "+"
    steps.append(Step(CONST_SAYS[op], Fact(d, op, abs(b)), ctx=(("k", k),)))
    steps.append(Step(DIVIDE_SAYS, Fact(v["m"], "÷", k)))
    return steps


def make_equation(rng: random.Random, cfg: ThinkingConfig, n_steps: int) -> Problem:
    """A linear equation with a positive integer solution; its form grows with n_steps (up to 5)."""
    form = min(n_steps, 5)
    v = None
    while v is None:
        v = _draw_equation(rng, cfg, form)
    left, right = _side(v["left"]), _side(v["right"])
    eqn = f"{left} = {right}"
    question = rng.choice(EQUATION_QUESTIONS).format(eqn=eqn)
    steps = _equation_steps(v, form, right)
    facts = [s.fact for s in steps]
    return Problem(
        "equation",
        question,
        v["x"],
        tuple(steps),
        early_numbers(question, facts),
        f"I need the number x for which {left} equals {right}.",
        "the value of x",
        v | {"eqn": eqn, "left_text": left, "right_text": right},
        n_steps,
    )


def _evaluate_side(terms: list[tuple], x: int) -> tuple[str, int]:
    """('7 × 8 - 12 = 56 - 12 = 44', 44): the side's terms evaluated at x."""
    shown, values = "", []
    for t in terms:
        values.append(t[1] * x if t[0] == "x" else t[1] * (x + t[2]) if t[0] == "p" else t[1])
        if t[0] == "c":
            shown += signed(t[1]) if shown else str(t[1])
        else:
            piece = f"{t[1]} × {x}" if t[0] == "x" else f"{t[1]} × ({x} + {t[2]})"
            shown += f" + {piece}" if shown else piece
    if len(values) == 1:
        return (shown if terms[0][0] == "c" else f"{shown} = {values[0]}"), values[0]
    middle = str(values[0]) + "".join(signed(v) for v in values[1:])
    return f"{shown} = {middle} = {sum(values)}", sum(values)


def _alt_equation(p: Problem, rng: random.Random) -> list[str]:
    v = p.info
    x, k, b, d, m = v["x"], v["k"], v["b"], v["d"], v["m"]
    collected = f"{k}x{signed(b)} = {d}"
    if rng.random() < 0.5:
        return [
            rng.choice(ALT_OPENERS).format(how=f"by undoing the operations of {collected} in reverse order"),
            f"The x was multiplied by {k} and then {abs(b)} was {'added' if b > 0 else 'subtracted'}. "
            f"Undoing the last one first: {d}{signed(-b)} = {m}.",
            f"Then undoing the multiplication: {m} ÷ {k} = {x}. " + rng.choice(ALT_CLOSERS).format(ans=f"x = {x}"),
        ]
    lo_l, lo_v = _evaluate_side(v["left"], x - 1)
    lo_r, lo_rv = _evaluate_side(v["right"], x - 1)
    return [
        rng.choice(ALT_OPENERS).format(how=f"by trying a value next to it, x = {x - 1}"),
        f"With x = {x - 1}, the left side is {lo_l} and the right side is {lo_r}. They differ by {lo_rv - lo_v}.",
        f"Each step up in x changes the left side by {v['a']} and the right side by {v['c']}, closing the gap by "
        f"{k}. The gap of {lo_rv - lo_v} closes after one step, at x = {x}. " + rng.choice(ALT_CLOSERS).format(ans=x),
    ]


def _checks_equation(p: Problem) -> list[str]:
    v = p.info
    x, k, b, d, m = v["x"], v["k"], v["b"], v["d"], v["m"]
    left, lv = _evaluate_side(v["left"], x)
    right, rv = _evaluate_side(v["right"], x)
    return [
        f"plugging x = {x} back into the original equation: the left side is {left}, and the right side is "
        f"{right}. Both sides are {lv}",
        f"in the collected form {k}x{signed(b)} = {d}: {k} × {x} = {m}, and {m}{signed(b)} = {d}. It matches",
        f"substituting {x} for x on both sides once more: {left} and {right}, so both give {rv}",
    ]


# ---------------------------------------------------------------- gcd and lcm

GCD_QUESTIONS = (
    "What is the greatest common divisor of {nums}?",
    "Find the GCD of {nums}.",
    "Compute the greatest common divisor of {nums}.",
    "What is the largest number that divides each of {nums}?",
)
LCM_QUESTIONS = (
    "What is the least common multiple of {nums}?",
    "Find the LCM of {nums}.",
    "Compute the least common multiple of {nums}.",
    "What is the smallest positive number that is a multiple of both {nums}?",
)
EUCLID_SAYS = (
    "{lead} divide {a} by {b}: {eq}.",
    "{lead} {eq}.",
    "{lead} {b} goes into {a} {q_times}: {eq}.",
    "{lead} I divide {a} by {b}, and {eq}.",
)
GCD_DONE_SAYS = (
    "The remainder is 0, so the last nonzero remainder, {last}, is the GCD: {eq}.",
    "That division comes out even, so {last} divides everything before it, and {eq}.",
    "Now the remainder is 0, which ends the algorithm. The GCD is the last divisor: {eq}.",
)
GCD_PAIR_SAYS = (
    "The remainder is 0, so the GCD of {x} and {y} is {r}. Now I need the GCD of {r} and {z}.",
    "So {x} and {y} have GCD {r}. The GCD of all three is the GCD of {r} and {z}.",
)
LCM_GCD_SAYS = (
    "The remainder is 0, so the GCD of {x} and {y} is {r}. The LCM is {x} ÷ {r} times {y}.",
    "So the GCD is {r}, and the LCM is {x} divided by the GCD, times {y}.",
)
LCM_DIV_SAYS = ("{lead} {eq}.", "{lead} dividing {a} by the GCD: {eq}.", "{lead} {a} ÷ {b} first: {eq}.")
LCM_MUL_SAYS = ("{lead} the LCM is {eq}.", "{lead} multiplying by {b}: {eq}, which is the LCM.", "{lead} {eq}.")


def _euclid(x: int, y: int) -> list[Fact]:
    x, y = max(x, y), min(x, y)
    facts = []
    while y:
        facts.append(Fact(x, "rem", y))
        x, y = y, x % y
    return facts


def _euclid_steps(x: int, y: int) -> list[Step]:
    times = {1: "once", 2: "twice"}
    return [Step(EUCLID_SAYS, f, ctx=(("q", f.q), ("q_times", times.get(f.q, f"{f.q} times")))) for f in _euclid(x, y)]


def _draw_multipliers(rng: random.Random, count: int, top: int, kind: str) -> list[int]:
    while True:
        ms = rng.sample(range(2, top + 1), count)
        coprime = math.gcd(*ms) == 1 if kind == "gcd" else math.gcd(ms[0], ms[1]) == 1
        if coprime:
            return ms


def make_gcd(rng: random.Random, cfg: ThinkingConfig, n_steps: int) -> Problem:
    """g times distinct multipliers in 2..3 + 2 n_steps (coprime, so g is the GCD); an LCM of two
    numbers in 4 of 10 two-number problems."""
    count = 2 if n_steps <= 3 else 3
    kind = "lcm" if count == 2 and rng.random() < 0.4 else "gcd"
    g = draw_number(rng, (min(cfg.digits[0], 2), min(cfg.digits[1], 2)))  # 3-digit factors make 5-digit numbers
    ms = _draw_multipliers(rng, count, 3 + 2 * n_steps, kind)
    nums = [g * m for m in ms]
    listed = " and ".join(map(str, nums)) if count == 2 else f"{nums[0]}, {nums[1]} and {nums[2]}"
    args = ", ".join(map(str, nums))
    steps = _euclid_steps(nums[0], nums[1])
    if kind == "gcd":
        if count == 3:
            g1 = math.gcd(nums[0], nums[1])
            xyz = (("x", nums[0]), ("y", nums[1]), ("z", nums[2]))
            steps.append(Step(GCD_PAIR_SAYS, stated="{r}", value=g1, ctx=xyz))
            steps += _euclid_steps(g1, nums[2])
        last = steps[-1].fact.b
        steps.append(Step(GCD_DONE_SAYS, stated=f"gcd({args}) = {{r}}", value=g, ctx=(("last", last),)))
        answer, early = g, frozenset(nums)
        question = rng.choice(GCD_QUESTIONS).format(nums=listed)
        para = f"I need the largest whole number that divides each of {listed} with no remainder."
    else:
        answer, early = g * ms[0] * ms[1], frozenset(nums) | {g, ms[0]}
        steps.append(Step(LCM_GCD_SAYS, stated="{r}", value=g, ctx=(("x", nums[0]), ("y", nums[1]))))
        steps.append(Step(LCM_DIV_SAYS, Fact(nums[0], "÷", g)))
        steps.append(Step(LCM_MUL_SAYS, Fact(ms[0], "×", nums[1])))
        question = rng.choice(LCM_QUESTIONS).format(nums=listed)
        para = f"I need the smallest positive number that both {listed} divide into evenly."
    target = f"the {'greatest common divisor' if kind == 'gcd' else 'least common multiple'} of {listed}"
    info = {"kind": kind, "nums": nums, "g": g, "ms": ms, "listed": listed}
    return Problem("gcd", question, answer, tuple(steps), early | ints_in(question), para, target, info, n_steps)


def _factor(n: int) -> list[int]:
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    return out + ([n] if n > 1 else [])


def _product(fs: list[int]) -> str:
    return " × ".join(map(str, fs))


def _alt_gcd(p: Problem, rng: random.Random) -> list[str]:
    nums, kind = p.info["nums"], p.info["kind"]
    factored = [_factor(n) for n in nums]
    lines = [f"{n} = {_product(fs)}" for n, fs in zip(nums, factored)]
    out = [rng.choice(ALT_OPENERS).format(how="with prime factorizations"), "; ".join(lines) + "."]
    primes = sorted(set().union(*factored))
    if kind == "gcd":
        common = [q for q in primes for _ in range(min(fs.count(q) for fs in factored))]
        shared = (
            f"the common factor is {common[0]}" if len(common) == 1 else f"the common factors are {_product(common)}"
        )
        tail = "" if len(common) == 1 else f", and {_product(common)} = {p.answer}"
        out.append(f"Taking each prime as often as it appears in all of them, {shared}{tail}.")
    else:
        most = [q for q in primes for _ in range(max(fs.count(q) for fs in factored))]
        out.append(f"Taking each prime as often as it appears in either, {_product(most)} = {p.answer}.")
    out.append(rng.choice(ALT_CLOSERS).format(ans=p.answer))
    return out


def _checks_gcd(p: Problem) -> list[str]:
    nums, g, ms = p.info["nums"], p.info["g"], p.info["ms"]
    if p.info["kind"] == "lcm":
        L, (a, b) = p.answer, nums
        return [
            f"{L} ÷ {a} = {L // a} and {L} ÷ {b} = {L // b}, and {L // a} and {L // b} share no factor, "
            f"so no smaller number is a multiple of both",
            f"the product {a} × {b} = {a * b}, and {a * b} ÷ {g} = {L}, the product divided by the GCD",
            f"{L} is {L // a} times {a} and {L // b} times {b}, so it is a common multiple, and the GCD {g} was "
            f"only counted once",
        ]
    odd = next(m for m in ms if m % 2)
    each = " and ".join(f"{g} × {m} = {n}" for m, n in zip(ms, nums))
    return [
        f"{each}, and the multipliers {', '.join(map(str, ms))} have no common factor, so nothing larger "
        "divides them all",
        f"{' and '.join(f'{n} ÷ {g} = {m}' for m, n in zip(ms, nums))}, all whole numbers",
        f"a bigger candidate like {2 * g} fails, because {g * odd} ÷ {2 * g} is not whole ({odd} is odd)",
    ]


# ---------------------------------------------------------------- word problems

PEOPLE = (
    ("Maya", "she", "her", "her"),
    ("Leo", "he", "him", "his"),
    ("Priya", "she", "her", "her"),
    ("Omar", "he", "him", "his"),
    ("Lena", "she", "her", "her"),
    ("Sam", "he", "him", "his"),
    ("Kenji", "he", "him", "his"),
    ("Ana", "she", "her", "her"),
    ("Tom", "he", "him", "his"),
    ("Zara", "she", "her", "her"),
)
ITEMS = ("marbles", "stickers", "apples", "books", "coins", "cards", "pencils", "shells", "stamps", "beads")
BOXES = ("bags", "boxes", "packs", "jars")
FRIENDS = ("a friend", "a neighbor", "a classmate", "a cousin")
CLAUSES = {
    "gain": (
        "{He} finds {n} more {item}.",
        "Then {he} gets {n} {item} from {friend}.",
        "{He} wins {n} {item} at a fair.",
    ),
    "lose": ("{He} gives {n} {item} to {friend}.", "{He} loses {n} {item}.", "{He} trades away {n} {item}."),
    "packs": ("{He} buys {p} {box} of {item} with {k} in each.", "{He} buys {p} {box}, each holding {k} {item}."),
    "times": ("Then the number of {item} {he} has {grows}.", "Later {he} ends up with {times} as many {item}."),
    "share": (
        "{He} splits the {item} into {k} equal groups and keeps one group.",
        "{He} divides the {item} into {k} equal piles and keeps just one pile.",
    ),
}
WORD_SAYS = {
    "gain": (
        "{lead} {he} gets {b} more, so {eq}. Now {he} has {r} {item}.",
        "{lead} adding the {b} new {item}: {eq}.",
        "{lead} {eq} {item}, after the {b} new ones.",
    ),
    "lose": (
        "{lead} {he} gives away {b}, so {eq}. That leaves {him} with {r} {item}.",
        "{lead} {b} {item} go, which leaves {eq}.",
        "{lead} taking away {b}: {eq}.",
    ),
    "box": ("{lead} {a} {box} of {b} is {eq} {item}.", "{lead} the {box} hold {eq} {item} in all."),
    "add": (
        "Adding those to the {a} {he} had: {eq}.",
        "Together with the {a} from before, {eq}. So {he} has {r} {item} now.",
        "So {eq} {item}.",
    ),
    "times": ("{lead} {growing} means multiplying by {b}: {eq}.", "{lead} {times} as many is {eq}."),
    "share": (
        "{lead} splitting {a} into {b} equal groups: {eq}, and {he} keeps one group.",
        "{lead} {he} keeps one of {b} equal groups, so {eq}.",
    ),
}
_GROWS = {
    2: {"grows": "doubles", "times": "twice", "growing": "doubling"},
    3: {"grows": "triples", "times": "three times", "growing": "tripling"},
}


@dataclass(frozen=True)
class Clause:
    """One sentence of a word problem and the steps that solve it."""

    text: str
    steps: tuple[Step, ...]
    short: str
    """The clause in a few words, for the paraphrase."""
    suffix: str
    """What it appends to the story's expression: " + 3 × 12"."""
    side: tuple[Fact, ...] = ()
    """Facts off the main chain (the packs' product)."""


def _word_clause(rng: random.Random, cfg: ThinkingConfig, v: int, kind: str, who: dict) -> Clause:
    ctx = tuple(who.items())
    if kind in ("gain", "lose"):
        n = draw_number(rng, cfg.digits) if kind == "gain" else rng.randint(1, min(v - 1, 10 ** cfg.digits[1] - 1))
        fact = Fact(v, "+" if kind == "gain" else "-", n)
        short = f"gets {n} more" if kind == "gain" else f"gives away {n}"
        text = rng.choice(CLAUSES[kind]).format(n=n, **who)
        return Clause(text, (Step(WORD_SAYS[kind], fact, ctx=ctx),), short, f" {fact.op} {n}")
    if kind == "packs":
        p, k = rng.randint(2, 9), draw_number(rng, cfg.digits)
        product = Fact(p, "×", k)
        steps = (Step(WORD_SAYS["box"], product, ctx=ctx), Step(WORD_SAYS["add"], Fact(v, "+", p * k), ctx=ctx))
        text = rng.choice(CLAUSES[kind]).format(p=p, k=k, **who)
        return Clause(text, steps, f"buys {p} {who['box']} of {k}", f" + {p} × {k}", (product,))
    if kind == "times":
        k = rng.choice((2, 3))
        text = rng.choice(CLAUSES[kind]).format(**_GROWS[k], **who)
        step = Step(WORD_SAYS[kind], Fact(v, "×", k), ctx=ctx + tuple(_GROWS[k].items()))
        return Clause(text, (step,), f"{_GROWS[k]['grows']} them", f" × {k}")
    k = rng.choice([d for d in range(2, 7) if v % d == 0 and v // d >= 2])
    text = rng.choice(CLAUSES[kind]).format(k=k, **who)
    return Clause(text, (Step(WORD_SAYS[kind], Fact(v, "÷", k), ctx=ctx),), f"keeps one of {k} equal groups", f" ÷ {k}")


def _word_kinds(v: int, cfg: ThinkingConfig) -> list[str]:
    kinds = ["gain", "packs"] + (["lose"] if v >= 2 else [])
    kinds += ["times"] if v <= 10 ** (cfg.digits[1] + 1) else []
    kinds += ["share"] if any(v % d == 0 and v // d >= 2 for d in range(2, 7)) else []
    return kinds


def make_word(rng: random.Random, cfg: ThinkingConfig, n_steps: int) -> Problem:
    """A person, an item and `n_steps` clauses (gain, loss, packs bought, a doubling, a share)."""
    name, he, him, his = rng.choice(PEOPLE)
    who = dict(name=name, he=he, He=he.capitalize(), him=him, his=his, item=rng.choice(ITEMS))
    who |= dict(box=rng.choice(BOXES), friend=rng.choice(FRIENDS))
    v = start = draw_number(rng, cfg.digits)
    clauses, expr = [], str(v)
    for _ in range(n_steps):
        clauses.append(_word_clause(rng, cfg, v, rng.choice(_word_kinds(v, cfg)), who))
        suffix = clauses[-1].suffix
        expr = f"({expr}){suffix}" if suffix[1] in "×÷" and " " in expr else expr + suffix
        v = clauses[-1].steps[-1].result
    ask = rng.choice(("How many {item} does {name} have now?", "How many {item} does {name} end up with?"))
    question = " ".join([f"{name} has {start} {who['item']}."] + [c.text for c in clauses] + [ask.format(**who)])
    steps = [s for c in clauses for s in c.steps]
    facts = [s.fact for s in steps]
    side = {id(f) for c in clauses for f in c.side}
    return Problem(
        "word",
        question,
        v,
        tuple(steps),
        early_numbers(question, facts),
        f"{name} starts with {start} {who['item']}, then {', then '.join(c.short for c in clauses)}; the question "
        f"is how many {who['item']} {he} has at the end.",
        f"how many {who['item']} {name} has at the end",
        {"facts": facts, "chain": [f for f in facts if id(f) not in side], "expr": expr} | who | {"start": start},
        n_steps,
    )


def _alt_word(p: Problem, rng: random.Random) -> list[str]:
    facts = p.info["facts"]
    return [
        rng.choice(ALT_OPENERS).format(how=f"by writing the whole story as one expression, {p.info['expr']}"),
        "Working it out from the inside: " + ", ".join(f.eq(f.result) for f in facts) + ".",
        rng.choice(ALT_CLOSERS).format(ans=p.answer),
    ]


@dataclass(frozen=True)
class Family:
    make: Callable[[random.Random, ThinkingConfig, int], Problem]
    alternative: Callable[[Problem, random.Random], list[str]]
    """The second solution (alternative habit): an opener that names the method, then its work."""
    checks: Callable[[Problem], list[str]]
    """At least three different checks of the answer, lower case (recheck_answer habit)."""


FAMILY = {
    "chain": Family(make_chain, _alt_chain, _checks_chain),
    "equation": Family(make_equation, _alt_equation, _checks_equation),
    "gcd": Family(make_gcd, _alt_gcd, _checks_gcd),
    "word": Family(make_word, _alt_word, _checks_chain),
}


def draw_problem(family: str, rng: random.Random, cfg: ThinkingConfig) -> Problem:
    """A problem of `family` whose answer is none of its early numbers (drawn again until so)."""
    if family not in FAMILY:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    for _ in range(MAX_DRAWS):
        problem = FAMILY[family].make(rng, cfg, rng.randint(*cfg.steps))
        if problem.answer not in problem.early:
            return problem
    raise ValueError(f"{family}: no problem whose answer differs from its early numbers in {MAX_DRAWS} draws: {cfg}")
