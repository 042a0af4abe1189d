"""The four families by name (FAMILY) and `draw_problem`, which draws a problem of one whose answer is none of its
early numbers. Each family is a module of its own (chain.py, equation.py, gcd.py, word.py) that ends in its
`problems.Family`: how to make a problem, its second solution and its answer checks."""

from __future__ import annotations

import random

from .chain import CHAIN
from .equation import EQUATION
from .gcd import GCD
from .problems import FAMILIES, Family, Problem, ThinkingConfig
from .word import WORD

MAX_DRAWS = 200
"""Draws per row before giving up on a problem space that is too small."""

FAMILY: dict[str, Family] = {"chain": CHAIN, "equation": EQUATION, "gcd": GCD, "word": WORD}


def draw_problem(family: str, rng: random.Random, cfg: ThinkingConfig) -> Problem:
    """A problem of `family` whose answer is none of its early numbers (drawn again until so)."""
    if family not in FAMILY:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    for _ in range(MAX_DRAWS):
        problem = FAMILY[family].make(rng, cfg, rng.randint(*cfg.steps))
        if problem.answer not in problem.early:
            return problem
    raise ValueError(f"{family}: no problem whose answer differs from its early numbers in {MAX_DRAWS} draws: {cfg}")
