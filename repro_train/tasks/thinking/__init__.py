"""Thinking traces: procedural problems solved in long `<think>` traces with the overthinking habits
of distilled reasoners, for turning a small pretrained model into a "thinker".

    rows = generate(2000, seed=1, families=("chain", "equation"), split="train")
    repro-train data export "thinking:all?n=2000&seed=1&split=train" --out data/think-train.jsonl

Four families with exact integer answers (chain, equation, gcd, word). A trace overthinks with
probability `overthink`, then carries habits (restate, reverify, hesitate, alternative, recheck_answer,
backtrack) that each row records, with `n_rechecks`, `n_backtracks` and `answer_char`. The `train`
split is disjoint from `test` and `hard` by a hash of each problem's computation. The response format,
the habits, the splits, determinism and lengths: docs/models-and-data.md, "Thinking traces".

The modules, each importing only those above it:
    problems.py    ThinkingConfig, Fact, Step, Problem, Family and the helpers the others share
    phrases.py     the trace's phrase tables: openers, plans, leads, conclusions, the habits' paragraphs
    chain.py, equation.py, gcd.py, word.py   one family each: its phrases, make_*, second solution, answer checks
    families.py    FAMILY (the four by name) and draw_problem
    trace.py       draw_habits and make_trace: a problem's `<think>` response with its habits planted
    dataset.py     generate and is_heldout: the rows of a split
"""

from .chain import make_chain
from .dataset import generate, is_heldout
from .equation import make_equation
from .families import FAMILY, draw_problem
from .gcd import make_gcd
from .phrases import (
    ALT_CLOSERS,
    ALT_OPENERS,
    ANSWER_CHECKS,
    CLOSERS,
    CONCLUDE,
    DOUBTS,
    FIXES,
    OPENERS,
    PLAN_EXTRA,
    PLANS,
    RESTATE_AGAIN,
    RESTATES,
    REVERIFY,
)
from .problems import FAMILIES, HABITS, SPLITS, Fact, Family, Problem, Step, ThinkingConfig
from .trace import ANSWER_PREFIX, MARK, THINK_END, THINK_START, draw_habits, make_trace, render
from .word import make_word

__all__ = [
    "ALT_CLOSERS",
    "ALT_OPENERS",
    "ANSWER_CHECKS",
    "ANSWER_PREFIX",
    "CLOSERS",
    "CONCLUDE",
    "DOUBTS",
    "FAMILIES",
    "FAMILY",
    "FIXES",
    "HABITS",
    "MARK",
    "OPENERS",
    "PLAN_EXTRA",
    "PLANS",
    "RESTATE_AGAIN",
    "RESTATES",
    "REVERIFY",
    "SPLITS",
    "THINK_END",
    "THINK_START",
    "Fact",
    "Family",
    "Problem",
    "Step",
    "ThinkingConfig",
    "draw_habits",
    "draw_problem",
    "generate",
    "is_heldout",
    "make_chain",
    "make_equation",
    "make_gcd",
    "make_trace",
    "make_word",
    "render",
]
