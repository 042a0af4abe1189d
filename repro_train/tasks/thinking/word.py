"""The word family: a story of gains, losses, packs bought, doublings and shares ("Maya has 24 marbles. She ...").
Its people, items, clauses and step phrases, `make_word`, the second solution (the story as one expression),
gathered as WORD; its answer checks are the chain's, over the story's main line of facts."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .chain import CHAIN
from .phrases import ALT_CLOSERS, ALT_OPENERS
from .problems import Fact, Family, Problem, Step, ThinkingConfig, draw_number, early_numbers

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


WORD = Family(make_word, _alt_word, CHAIN.checks)
