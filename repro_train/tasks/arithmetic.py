"""Synthetic multi-step arithmetic: a toy task where overthinking is real (docs/toy-task.md).

    python -m repro_train.tasks.arithmetic --n 1000 --seed 0 --out data/arith.jsonl
    rows = generate(n, seed, TaskConfig())     # question, answer and a chain-of-thought response per row

A problem is a left-to-right chain of 2-4 operations (+ N, - N, * N) on integers in [0, 999]. Each response is in one
of three styles, mixed at set ratios: direct (the steps, one per paragraph), recheck (plus 1-2 paragraphs that
re-verify a step) or backtrack (one step first written wrong, then fixed). The formats below are a contract: the tiny
reasoner's tokenizer, the RePro probe (`"\\n\\nFinal answer: "`) and the outcome reward parse them. Row i comes from
its own string-seeded `random.Random` streams, so prefixes are stable and the questions do not depend on the traces.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

MAX_VALUE = 999
"""Every start, intermediate and final value lies in [0, MAX_VALUE]."""
STYLES = ("direct", "recheck", "backtrack")
THINK_END = "</think>"
ANSWER_PREFIX = "Final answer: "

RECHECK_TEMPLATES = (
    "Wait, let me double-check: {eq}. Yes, that is right.",
    "Let me verify: {eq}. Correct.",
    "Wait, let me double-check that step. {eq}. Yes.",
    "Let me verify {eq} once more. It holds.",
)
"""Recheck paragraphs; `{eq}` is a step already done, e.g. `17 + 8 = 25`."""
BACKTRACK_TEMPLATES = (
    "Wait, that is wrong. {eq}, not {wrong}.",
    "Hmm, that is not right. {eq}, not {wrong}.",
    "Wait, that is wrong, I made a mistake. {eq}.",
    "Hmm, that is not right. Let me redo it: {eq}.",
)
"""Correction paragraphs after a wrong step; `{eq}` is the step with its right result."""
WRONG_OFFSETS = (-10, -2, -1, 1, 2, 10)
"""A planted wrong result is the right one plus one of these (kept inside [0, MAX_VALUE])."""

_VERBS = {"+": "add {n}", "-": "subtract {n}", "*": "multiply by {n}"}


@dataclass(frozen=True)
class TaskConfig:
    """Difficulty knobs. Ranges are inclusive (lo, hi)."""

    n_ops: tuple[int, int] = (2, 4)
    """Number of operations per problem."""
    operand_range: tuple[int, int] = (1, 20)
    """Operand of + and -; narrowed per step so the value stays in [1, MAX_VALUE]."""
    start_range: tuple[int, int] = (1, 30)
    """Start value."""
    mul_range: tuple[int, int] = (2, 5)
    """Factor of *; within 2..9."""
    ops: tuple[str, ...] = ("+", "-", "*")
    """Operators drawn from (uniformly among those that fit the current value)."""
    style_ratios: tuple[float, float, float] = (0.5, 0.25, 0.25)
    """Weights of the styles (direct, recheck, backtrack); need not sum to 1."""

    def __post_init__(self):
        for name in ("n_ops", "operand_range", "start_range", "mul_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name}={getattr(self, name)}: need 0 <= lo <= hi")
        if self.n_ops[0] < 1:
            raise ValueError(f"n_ops={self.n_ops}: need at least one operation")
        if self.start_range[1] > MAX_VALUE:
            raise ValueError(f"start_range={self.start_range}: values must stay <= {MAX_VALUE}")
        if not 2 <= self.mul_range[0] <= self.mul_range[1] <= 9:
            raise ValueError(f"mul_range={self.mul_range}: factors must lie in 2..9")
        unknown = [op for op in self.ops if op not in _VERBS]
        if unknown or not self.ops:
            raise ValueError(f"ops={self.ops}: choose a non-empty subset of {tuple(_VERBS)}")
        if len(self.style_ratios) != 3 or min(self.style_ratios) < 0 or sum(self.style_ratios) <= 0:
            raise ValueError(f"style_ratios={self.style_ratios}: three weights >= 0, sum > 0, for {STYLES}")


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str
    """The final value as a decimal string."""
    start: int
    ops: tuple[tuple[str, int], ...]
    """((op, operand), ...), applied left to right."""


def apply_op(value: int, op: str, n: int) -> int:
    return {"+": value + n, "-": value - n, "*": value * n}[op]


def solve(problem: Problem) -> int:
    """Left-to-right evaluation of the chain."""
    value = problem.start
    for op, n in problem.ops:
        value = apply_op(value, op, n)
    return value


def format_question(start: int, ops: tuple[tuple[str, int], ...]) -> str:
    """`Start with 17. Add 8, then multiply by 3, then subtract 12. What is the result?`"""
    phrases = ", then ".join(_VERBS[op].format(n=n) for op, n in ops)
    return f"Start with {start}. {phrases[0].upper()}{phrases[1:]}. What is the result?"


def _operand_bounds(value: int, op: str, cfg: TaskConfig) -> tuple[int, int]:
    """Inclusive operand range for `op` that keeps the result in [0, MAX_VALUE] (lo > hi: none)."""
    lo, hi = cfg.operand_range
    if op == "+":
        return lo, min(hi, MAX_VALUE - value)
    if op == "-":
        return lo, min(hi, value - 1)  # never reach 0: 0 * n would absorb the rest
    lo, hi = cfg.mul_range
    return lo, (hi if value == 0 else min(hi, MAX_VALUE // value))


def make_problem(rng: random.Random, cfg: TaskConfig) -> Problem:
    """Draw one chain: the operator uniformly among those that fit the current value, then the
    operand uniformly within the bounds that keep the value in range."""
    value = rng.randint(*cfg.start_range)
    start, ops = value, []
    for _ in range(rng.randint(*cfg.n_ops)):
        bounds = {op: _operand_bounds(value, op, cfg) for op in cfg.ops}
        fits = [op for op in cfg.ops if bounds[op][0] <= bounds[op][1]]
        if not fits:
            raise ValueError(f"no operator in {cfg.ops} keeps {value} inside [0, {MAX_VALUE}] with {cfg}")
        op = rng.choice(fits)
        n = rng.randint(*bounds[op])
        ops.append((op, n))
        value = apply_op(value, op, n)
    ops = tuple(ops)
    return Problem(format_question(start, ops), str(value), start, ops)


def _equation(a: int, op: str, n: int, result: int) -> str:
    return f"{a} {op} {n} = {result}"


def make_trace(problem: Problem, style: str, rng: random.Random) -> str:
    """The response the model learns: paragraphs joined by one blank line, then the answer.

    `"\\n\\n".join(paragraphs) + "\\n\\n</think>\\n\\nFinal answer: " + answer` (no leading <think>:
    the prompt ends with it). Styles: see the module docstring and docs/toy-task.md.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {STYLES}")
    steps, value = [], problem.start  # steps[i] = (a, op, n, result)
    for op, n in problem.ops:
        steps.append((value, op, n, apply_op(value, op, n)))
        value = steps[-1][3]
    paragraphs = [_equation(*s) for s in steps]
    if style == "recheck":
        k = rng.randint(1, min(2, len(steps)))
        # Insert from the back so earlier indices stay valid; recheck j re-verifies a step <= j.
        for j in sorted(rng.sample(range(len(steps)), k), reverse=True):
            eq = _equation(*steps[rng.randint(0, j)])
            paragraphs.insert(j + 1, rng.choice(RECHECK_TEMPLATES).format(eq=eq))
    elif style == "backtrack":
        i = rng.randrange(len(steps))
        a, op, n, right = steps[i]
        wrong = right + rng.choice([d for d in WRONG_OFFSETS if 0 <= right + d <= MAX_VALUE])
        fix = rng.choice(BACKTRACK_TEMPLATES).format(eq=_equation(a, op, n, right), wrong=wrong)
        paragraphs[i : i + 1] = [_equation(a, op, n, wrong), fix]
    return "\n\n".join(paragraphs) + f"\n\n{THINK_END}\n\n{ANSWER_PREFIX}{problem.answer}"


def generate(n: int, seed: int, cfg: TaskConfig = TaskConfig(), with_traces: bool = True) -> list[dict]:
    """`n` rows {"question", "answer"[, "response", "style"]}, deterministic in (n, seed, cfg).

    Row i uses its own generators seeded from (seed, i), so generate(10, s)[:5] == generate(5, s).
    """
    rows = []
    for i in range(n):
        problem = make_problem(random.Random(f"{seed}/{i}/problem"), cfg)
        row = {"question": problem.question, "answer": problem.answer}
        if with_traces:
            rng = random.Random(f"{seed}/{i}/trace")
            style = rng.choices(STYLES, weights=cfg.style_ratios)[0]
            row["response"] = make_trace(problem, style, rng)
            row["style"] = style
        rows.append(row)
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    """One JSON object per line (UTF-8); creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--no-traces", action="store_true", help="questions and answers only")
    args = p.parse_args(argv)
    write_jsonl(generate(args.n, args.seed, with_traces=not args.no_traces), args.out)


if __name__ == "__main__":
    main()
