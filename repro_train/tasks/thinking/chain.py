"""The chain family: sums and differences of several numbers, left to right ("Calculate 47 + 385 - 129 + 62.").
Its question and step phrases, `make_chain`, the second solution (sums regrouped) and the answer checks (the steps
undone from the end), gathered as CHAIN."""

from __future__ import annotations

import random

from .phrases import ALT_CLOSERS, ALT_OPENERS
from .problems import Fact, Family, Problem, Step, ThinkingConfig, cap_first, draw_number, early_numbers, place_values

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
    """The word family's checks too: backwards over info["chain"], the story's main line without the packs'
    products."""
    facts = p.info.get("chain", p.info["facts"])
    back = ", ".join(f.inverse() for f in reversed(facts))
    forward = ", ".join(f.eq(f.result) for f in p.info["facts"])
    return [
        f"going backwards from {p.answer}: {back}, which is the number I started from",
        f"running through the steps again: {forward}",
        f"undoing each step from the end: {back}. That lands on the start",
    ]


CHAIN = Family(make_chain, _alt_chain, _checks_chain)
