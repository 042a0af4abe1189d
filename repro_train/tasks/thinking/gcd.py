"""The gcd family: the GCD of two or three numbers by Euclid's algorithm, or the LCM of two ("What is the GCD of 84
and 126?"). Its question and step phrases, `make_gcd`, the second solution (prime factorizations) and the answer
checks (the multipliers share no factor), gathered as GCD."""

from __future__ import annotations

import math
import random

from .phrases import ALT_CLOSERS, ALT_OPENERS
from .problems import Fact, Family, Problem, Step, ThinkingConfig, draw_number, ints_in

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


GCD = Family(make_gcd, _alt_gcd, _checks_gcd)
