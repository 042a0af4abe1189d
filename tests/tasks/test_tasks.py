"""The synthetic arithmetic task: formats, determinism, arithmetic checked by an independent
evaluator that reads only the question text, planted styles, ratios and ranges."""

import random
import re
from collections import Counter

import pytest

from repro_train.tasks.arithmetic import (
    Problem,
    TaskConfig,
    format_question,
    generate,
    make_problem,
    make_trace,
    solve,
    write_jsonl,
)

STEP = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
VERB = re.compile(r"(add|subtract|multiply by) (\d+)")
VERB_OP = {"add": "+", "subtract": "-", "multiply by": "*"}
EXAMPLE = Problem(
    question="Start with 17. Add 8, then multiply by 3, then subtract 12. What is the result?",
    answer="63",
    start=17,
    ops=(("+", 8), ("*", 3), ("-", 12)),
)


def parse_question(q: str) -> tuple[int, list[tuple[str, int]]]:
    """Independent reader of the question text: (start, [(op, n), ...])."""
    m = re.fullmatch(r"Start with (\d+)\. ([A-Z].*)\. What is the result\?", q)
    assert m, q
    ops = []
    for phrase in m.group(2).split(", then "):
        v = VERB.fullmatch(phrase[0].lower() + phrase[1:])
        assert v, phrase
        ops.append((VERB_OP[v.group(1)], int(v.group(2))))
    return int(m.group(1)), ops


def thinking_paragraphs(response: str, answer: str) -> list[str]:
    tail = f"\n\n</think>\n\nFinal answer: {answer}"
    assert response.endswith(tail) and response.count("</think>") == 1
    paras = response[: -len(tail)].split("\n\n")
    assert all(p and p == p.strip() and "\n" not in p for p in paras), paras  # ONE blank line
    return paras


def test_example_formats():
    assert format_question(17, EXAMPLE.ops) == EXAMPLE.question
    assert solve(EXAMPLE) == 63  # 17 + 8 = 25; 25 * 3 = 75; 75 - 12 = 63
    expected = "17 + 8 = 25\n\n25 * 3 = 75\n\n75 - 12 = 63\n\n</think>\n\nFinal answer: 63"
    assert make_trace(EXAMPLE, "direct", random.Random(0)) == expected


def test_deterministic_and_prefix_stable():
    a = generate(40, seed=7)
    assert a == generate(40, seed=7)
    assert a != generate(40, seed=8)
    assert generate(10, 7)[:5] == generate(5, 7)
    # Questions do not depend on traces or style ratios.
    plain = generate(40, 7, with_traces=False)
    assert [r["question"] for r in plain] == [r["question"] for r in a]
    assert set(plain[0]) == {"question", "answer"}
    other = generate(40, 7, TaskConfig(style_ratios=(0.0, 1.0, 0.0)))
    assert [r["answer"] for r in other] == [r["answer"] for r in a]


def test_make_problem_uses_only_the_given_rng():
    random.seed(0)
    p1 = make_problem(random.Random(3), TaskConfig())
    random.seed(1)
    assert make_problem(random.Random(3), TaskConfig()) == p1


@pytest.mark.parametrize(
    "cfg", [TaskConfig(), TaskConfig(n_ops=(5, 6), operand_range=(50, 300), start_range=(400, 999), mul_range=(7, 9))]
)
def test_answers_and_ranges_by_independent_evaluator(cfg):
    for row in generate(500, seed=1, cfg=cfg, with_traces=False):
        start, ops = parse_question(row["question"])
        assert cfg.start_range[0] <= start <= cfg.start_range[1]
        assert cfg.n_ops[0] <= len(ops) <= cfg.n_ops[1]
        value = start
        for op, n in ops:
            lo, hi = cfg.mul_range if op == "*" else cfg.operand_range
            assert lo <= n <= hi
            assert op != "*" or 2 <= n <= 9
            value = OPS[op](value, n)
            assert 1 <= value <= 999  # start >= 1 and subtraction never reaches 0
        assert row["answer"] == str(value)


def test_traces_arithmetic_and_planted_styles():
    counts = Counter()
    for row in generate(500, seed=2):
        start, ops = parse_question(row["question"])
        paras = thinking_paragraphs(row["response"], row["answer"])
        value, i, n_wrong, n_extra = start, 0, 0, 0
        done = []  # correct steps written so far
        while i < len(paras):
            m = STEP.fullmatch(paras[i])
            assert m or done, paras  # the trace opens with a step
            if not m:  # a recheck paragraph
                assert row["style"] == "recheck"
                assert paras[i].startswith(("Wait, let me double-check", "Let me verify"))
                assert STEP.search(paras[i]).group(0) in done
                n_extra += 1
                i += 1
                continue
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert (a, op, b) == (value, *ops[len(done)])  # continues from the right value
            right = OPS[op](a, b)
            if c != right:  # the planted wrong step, then its correction
                assert row["style"] == "backtrack" and 1 <= abs(c - right) <= 10 and c >= 0
                fix = paras[i + 1]
                assert fix.startswith(("Wait, that is wrong", "Hmm, that is not right"))
                assert f"{a} {op} {b} = {right}" in fix
                n_wrong += 1
                i += 1
            done.append(f"{a} {op} {b} = {right}")
            value = right
            i += 1
        assert len(done) == len(ops) and str(value) == row["answer"]
        assert n_wrong == (row["style"] == "backtrack")
        assert (1 <= n_extra <= 2) if row["style"] == "recheck" else n_extra == 0
        counts[row["style"], n_extra] += 1
    # Every kind of trace occurs, including two rechecks in one trace.
    assert {("direct", 0), ("recheck", 1), ("recheck", 2), ("backtrack", 0)} <= set(counts)


def test_style_ratios():
    styles = Counter(r["style"] for r in generate(2000, seed=3))
    # Binomial std at n=2000: 0.011 (p=.5), 0.0097 (p=.25); 0.04 is > 3.5 std.
    assert abs(styles["direct"] / 2000 - 0.5) < 0.04
    assert abs(styles["recheck"] / 2000 - 0.25) < 0.04
    assert abs(styles["backtrack"] / 2000 - 0.25) < 0.04
    only = Counter(r["style"] for r in generate(200, 3, TaskConfig(style_ratios=(0, 0, 1))))
    assert only == {"backtrack": 200}


def test_bad_configs_and_styles_raise():
    for bad in [
        dict(mul_range=(1, 5)),
        dict(mul_range=(2, 10)),
        dict(ops=("/",)),
        dict(ops=()),
        dict(start_range=(1, 1000)),
        dict(n_ops=(0, 2)),
        dict(operand_range=(5, 2)),
        dict(style_ratios=(0, 0, 0)),
        dict(style_ratios=(1, 1)),
    ]:
        with pytest.raises(ValueError):
            TaskConfig(**bad)
    with pytest.raises(ValueError, match="direct"):
        make_trace(EXAMPLE, "ramble", random.Random(0))


def test_write_jsonl(tmp_path):
    import json

    rows = generate(3, seed=0)
    path = tmp_path / "sub" / "rows.jsonl"
    write_jsonl(rows, path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
