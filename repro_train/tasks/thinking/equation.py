"""The equation family: a linear equation in x, with brackets and x on both sides as the steps grow ("Solve for x:
7x - 12 = 3x + 20."). Its question and step phrases, `make_equation`, the second solution (the operations undone,
or a neighbouring x tried) and the answer checks (x substituted back), gathered as EQUATION."""

from __future__ import annotations

import random

from .phrases import ALT_CLOSERS, ALT_OPENERS
from .problems import Fact, Family, Problem, Step, ThinkingConfig, draw_number, early_numbers, signed

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


EQUATION = Family(make_equation, _alt_equation, _checks_equation)
