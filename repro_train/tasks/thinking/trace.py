"""A problem's trace: `draw_habits` picks a row's habits, `make_trace` writes the `<think>` response (opener, plan,
the steps with the habits placed among them, the conclusion, the habits after the answer, `Final answer: N`) and
counts what it planted (`n_rechecks`, `n_backtracks`) and where the answer is first stated (`answer_char`)."""

from __future__ import annotations

import random

from . import phrases
from .families import FAMILY
from .problems import HABITS, Fact, Problem, Step, ThinkingConfig, cap_first, signed

THINK_START, THINK_END, ANSWER_PREFIX = "<think>", "</think>", "Final answer: "
MARK = "\x00"
"""Placed right after the first correct statement of the answer while a trace is built, then removed."""
WRONG_OFFSETS = (-10, -2, -1, 1, 2, 10)
"""A planted wrong result is the right one plus one of these."""


def draw_habits(rng: random.Random, cfg: ThinkingConfig) -> tuple[str, ...]:
    """() with probability 1 - overthink; else each habit with its probability, at least one."""
    if rng.random() >= cfg.overthink:
        return ()
    while True:
        got = tuple(h for h in HABITS if rng.random() < getattr(cfg, h))
        if got:
            return got


def _plan_paragraph(p: Problem, rng: random.Random) -> str:
    """A plan before the first step (every trace has one: it is how reasoners start, not a habit)."""
    info = p.info
    extra = ""
    if p.family == "equation" and p.n_steps >= 3:
        extra = phrases.PLAN_EXTRA["bracket"]
    elif p.family == "gcd" and info["kind"] == "lcm":
        extra = phrases.PLAN_EXTRA["lcm"]
    elif p.family == "gcd" and len(info["nums"]) == 3:
        extra = phrases.PLAN_EXTRA["three"]
    fields = dict(n=p.n_steps, terms=p.n_steps + 1, item=info.get("item", ""), start=info.get("start", ""))
    return rng.choice(phrases.PLANS[p.family]).format(**fields) + extra


def _lead(j: int, n: int, rng: random.Random) -> str:
    return rng.choice(phrases.LEADS["first" if j == 0 else "last" if j == n - 1 else "next"])


def render(step: Step, value: int, rng: random.Random, lead: str = "", mark: bool = False) -> str:
    """The step's paragraph with `value` as its result; MARK right after it when `mark`."""
    f = step.fact
    eq = (f.eq(value) if f else step.stated.format(r=value)) + (MARK if mark else "")
    ctx = dict(step.ctx, eq=eq, r=value, lead=lead, r_s=signed(value))
    if f:
        ctx |= dict(a=f.a, b=f.b, lhs=f.lhs(), u=f.unit)
    return cap_first(rng.choice(step.says).format(**ctx).strip())


def _wrong(fact: Fact, answer: int, rng: random.Random) -> int:
    r = fact.result
    offsets = (-2, -1, 1, 2) if fact.op in ("rem", "÷") else WRONG_OFFSETS
    ok = [r + d for d in offsets if r + d != answer and (r + d > 0 or r <= 0)]
    ok = [w for w in ok if fact.op != "rem" or w < fact.b] or [r + 1]
    return rng.choice(ok)


def _check_paragraph(fact: Fact, rng: random.Random) -> str:
    return rng.choice(phrases.REVERIFY).format(lhs=fact.lhs(), inv=fact.inverse(), r=fact.result, u=fact.unit)


def _doubt_paragraph(fact: Fact, rng: random.Random) -> str:
    return rng.choice(phrases.DOUBTS).format(lhs=fact.lhs(), words=cap_first(fact.words()), r=fact.result, u=fact.unit)


def _place_habits(p: Problem, habits: tuple[str, ...], rng: random.Random) -> tuple[int | None, dict, list[Fact]]:
    """Where the habits before the answer go: (backtracked step or None, {j: paragraphs after step j},
    facts to re-verify after the answer)."""
    n = len(p.steps)
    with_fact = [i for i, s in enumerate(p.steps) if s.fact]
    wrong_at = rng.choice(with_fact) if "backtrack" in habits else None
    after: dict[int, list[str]] = {j: [] for j in range(n)}
    if "hesitate" in habits:
        for j in sorted(rng.sample(with_fact, min(len(with_fact), rng.randint(1, 3)))):
            after[j].append(_doubt_paragraph(p.steps[j].fact, rng))
    late = []
    if "reverify" in habits:
        for i in sorted(rng.sample(with_fact, min(len(with_fact), rng.randint(1, 3)))):
            j = rng.randint(i, n)  # re-verified after step j; j == n: after the answer
            if j == n:
                late.append(p.steps[i].fact)
            else:
                after[j].append(_check_paragraph(p.steps[i].fact, rng))
    return wrong_at, after, late


def _solution(p: Problem, wrong_at: int | None, after: dict, rng: random.Random) -> list[str]:
    """The steps in order, the planted wrong step and its fix, and the paragraphs planned after each."""
    out, n = [], len(p.steps)
    for j, step in enumerate(p.steps):
        last = j == n - 1
        lead = _lead(j, n, rng)
        if j == wrong_at:
            w = _wrong(step.fact, p.answer, rng)
            out.append(render(step, w, rng, lead))
            fix_eq = step.fact.eq(step.result) + (MARK if last else "")
            out.append(cap_first(rng.choice(phrases.FIXES).format(eq=fix_eq, w=w)))
        else:
            out.append(render(step, step.result, rng, lead, mark=last))
        out += after[j]
    return out


def _after_answer(p: Problem, habits: tuple[str, ...], late: list[Fact], rng: random.Random) -> tuple[list[str], int]:
    """The habits after the answer, as blocks in random order, then a closing line ([] if none); and
    how many of the paragraphs are rechecks (the re-verifications, the alternative's opener, the
    answer checks)."""
    blocks = [[_check_paragraph(f, rng)] for f in late]
    n_rechecks = len(late)
    if "restate" in habits and rng.random() < 0.5:
        blocks.append([rng.choice(phrases.RESTATE_AGAIN).format(target=p.target, ans=p.answer, para=p.paraphrase)])
    if "alternative" in habits:
        blocks.append(FAMILY[p.family].alternative(p, rng))
        n_rechecks += 1
    if "recheck_answer" in habits:
        bodies = FAMILY[p.family].checks(p)
        picked = rng.sample(bodies, rng.randint(2, min(3, len(bodies))))
        intros = rng.sample(phrases.ANSWER_CHECKS, len(picked))
        blocks.append([cap_first(t.format(ans=p.answer, body=b)) for t, b in zip(intros, picked)])
        n_rechecks += len(picked)
    if not blocks:
        return [], 0
    rng.shuffle(blocks)
    return [para for block in blocks for para in block] + [rng.choice(phrases.CLOSERS).format(ans=p.answer)], n_rechecks


def make_trace(p: Problem, habits: tuple[str, ...], rng: random.Random) -> tuple[str, int, int, int]:
    """(response, answer_char, n_rechecks, n_backtracks) for problem `p` with `habits`.

    The response is `<think>\\n` + paragraphs joined by blank lines + `\\n\\n</think>\\n\\nFinal answer: N`;
    answer_char is where the first correct statement of the answer ends."""
    unknown = set(habits) - set(HABITS)
    if unknown:
        raise ValueError(f"unknown habits {sorted(unknown)}; choose from {HABITS}")
    if "restate" in habits:
        paras = [rng.choice(phrases.RESTATES).format(q=p.question, para=p.paraphrase)]
    else:
        paras = [rng.choice(phrases.OPENERS)]
    paras.append(_plan_paragraph(p, rng))
    wrong_at, after, late = _place_habits(p, habits, rng)
    paras += _solution(p, wrong_at, after, rng)
    paras.append(rng.choice(phrases.CONCLUDE).format(ans=p.answer, target=p.target))
    tail, n_late = _after_answer(p, habits, late, rng)
    text = f"{THINK_START}\n" + "\n\n".join(paras + tail) + f"\n\n{THINK_END}\n\n{ANSWER_PREFIX}{p.answer}"
    answer_char = text.index(MARK)
    n_rechecks = sum(len(v) for v in after.values()) + n_late
    return text.replace(MARK, ""), answer_char, n_rechecks, int(wrong_at is not None)
