"""Thinking traces (repro_train/tasks/thinking/): answers recomputed by independent readers of the
question text, determinism, habit shares against their knobs, held-out splits, the first-correct
offset against eval.metrics, detectors against the planted paragraphs, lengths, the named set."""

import math
import random
import re
from collections import Counter

import pytest

from repro_train.commands.data import main as data_main
from repro_train.core.typed_config import ConfigError
from repro_train.data.jsonl import iter_jsonl
from repro_train.data.named import is_named, load_named
from repro_train.eval.detectors import classify_paragraph, count_backtracks, count_rechecks
from repro_train.eval.metrics import answer_pattern
from repro_train.rewards.extract import extract_final_answer
from repro_train.tasks import thinking as T
from repro_train.tasks.thinking import (
    FAMILIES,
    HABITS,
    Fact,
    Problem,
    Step,
    ThinkingConfig,
    generate,
    is_heldout,
    make_trace,
)

EVERY_HABIT = ThinkingConfig(overthink=1.0, **{h: 0.6 for h in HABITS})
TOKEN = re.compile(r"\d|[A-Za-z]+|\n|[^\sA-Za-z\d]")
"""A small stand-in tokenizer: one token per digit (as SmolLM2's), word, newline or symbol. On 400
default rows SmolLM2's tokenizer gives 1.06 to 1.24 times as many tokens (median 1.16)."""


def n_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def thinking(row: dict) -> str:
    return row["response"].split("</think>")[0]


@pytest.fixture(scope="module")
def rows():
    """Every family, every split, default knobs and every habit likely."""
    out = []
    for cfg in (ThinkingConfig(), EVERY_HABIT):
        for split in T.SPLITS:
            out += generate(200, seed=7, cfg=cfg, split=split)
    return out


# ---------------------------------------------------------------- independent readers of the question


def solve_chain(q: str) -> int:
    expr = re.search(r"\d+(?: [-+] \d+)+", q).group(0).split()
    value = int(expr[0])
    for op, n in zip(expr[1::2], expr[2::2]):
        value = value + int(n) if op == "+" else value - int(n)
    return value


def solve_equation(q: str) -> int:
    """Read `L = R`, make both sides Python (7x -> 7*x, 3(x + 4) -> 3*(x + 4)), solve the linear
    equation from its values at x = 0 and x = 1."""
    left, right = re.search(r"([-\dx()+ ]+) = ([-\dx()+ ]+)", q).groups()

    def f(x):
        py = [re.sub(r"(\d)([x(])", r"\1*\2", side) for side in (left, right)]
        return eval(py[0], {"x": x}) - eval(py[1], {"x": x})  # noqa: S307 (our own digits and x only)

    slope = f(1) - f(0)
    assert slope != 0 and f(0) % slope == 0, q
    return -f(0) // slope


def solve_gcd(q: str) -> int:
    nums = [int(n) for n in re.findall(r"\d+", q)]
    lcm = re.search(r"least common multiple|LCM|multiple of both", q)
    return math.lcm(*nums) if lcm else math.gcd(*nums)


WORD_RULES = (
    (r"has (\d+) \w+\.$", lambda v, n: n),
    (r"(?:finds|gets|wins) (\d+)", lambda v, n: v + n),
    (r"(?:gives|loses|trades away) (\d+)", lambda v, n: v - n),
    (r"buys (\d+) \w+(?:,| of \w+) (?:each holding|with) (\d+)", lambda v, p, k: v + p * k),
    (r"doubles|twice as many", lambda v: 2 * v),
    (r"triples|three times as many", lambda v: 3 * v),
    (r"into (\d+) equal", lambda v, k: v // k),
)


def solve_word(q: str) -> int:
    value = None
    for sentence in re.split(r"(?<=[.?]) ", q)[:-1]:  # the last one asks
        for pattern, apply in WORD_RULES:
            if m := re.search(pattern, sentence):
                value = apply(value, *map(int, m.groups())) if value is not None else int(m.group(1))
                break
        else:
            raise AssertionError(f"unread sentence {sentence!r}")
    return value


SOLVERS = {"chain": solve_chain, "equation": solve_equation, "gcd": solve_gcd, "word": solve_word}


def test_readers_on_hand_written_questions():
    assert solve_chain("Calculate 47 + 385 - 129 + 62.") == 365
    assert solve_equation("Solve for x: 7x - 12 = 3x + 20.") == 8  # 4x = 32
    assert solve_equation("Find x if 3(x + 4) - 5 = 2x + 9.") == 2  # 3x + 7 = 2x + 9
    assert solve_gcd("What is the greatest common divisor of 84 and 126?") == 42
    assert solve_gcd("Find the LCM of 84 and 126.") == 252
    q = (
        "Maya has 24 marbles. She buys 3 bags of marbles with 12 in each. She gives 15 marbles to a friend. "
        "Then the number of marbles she has doubles. She splits the marbles into 5 equal groups and keeps one "
        "group. How many marbles does Maya have now?"
    )
    assert solve_word(q) == 18  # ((24 + 36 - 15) * 2) / 5 = 90 / 5


def test_answers_are_exact(rows):
    seen = Counter()
    for row in rows:
        assert str(SOLVERS[row["family"]](row["question"])) == row["answer"], row["question"]
        assert row["answer"].isdigit() and int(row["answer"]) > 0
        seen[row["family"], row["split"]] += 1
    assert set(seen) == {(f, s) for f in FAMILIES for s in T.SPLITS}


def test_every_step_is_right(rows):
    """Each step paragraph states its fact; a fact's result is its arithmetic (independent of Fact)."""
    ops = {"+": int.__add__, "-": int.__sub__, "×": int.__mul__, "÷": int.__floordiv__}
    equations = re.compile(r"(?<![\d(] )(?<![\dx])(-?\d+)(x?) ([-+×÷]) (\d+)(x?) = (-?\d+)(x?)(?![\d(])")
    n = 0
    for row in rows:
        if row["habits"]:
            continue  # a backtrack writes a wrong result on purpose; the clean rows show every step
        for a, u1, op, b, u2, r, u3 in equations.findall(thinking(row)):
            if not u1 == u2 == u3:
                continue  # an equation in x ("7x + 12 = 40"), not a computation
            assert ops[op](int(a), int(b)) == int(r), (row["question"], a, op, b, r)
            assert op != "÷" or int(a) % int(b) == 0
            n += 1
    assert n > 500


# ---------------------------------------------------------------- format and determinism


def test_format(rows):
    for row in rows:
        text = row["response"]
        assert text.startswith("<think>\n") and text.count("</think>") == 1
        assert text.endswith(f"\n\n</think>\n\nFinal answer: {row['answer']}")
        assert T.MARK not in text and "\n\n\n" not in text
        body = text[len("<think>\n") : -len(f"\n\n</think>\n\nFinal answer: {row['answer']}")]
        assert all(p.strip() == p and p for p in body.split("\n\n"))
        assert extract_final_answer(text) == row["answer"]


def test_deterministic_prefix_stable_and_seeded():
    a = generate(12, seed=3, split="test")
    assert a == generate(12, seed=3, split="test")
    assert generate(6, seed=3, split="test") == a[:6]
    assert [r["question"] for r in generate(12, seed=4, split="test")] != [r["question"] for r in a]
    assert [r["family"] for r in a] == list(FAMILIES) * 3


def test_questions_do_not_depend_on_habit_knobs():
    clean = ThinkingConfig(overthink=0.0)
    a, b = generate(40, seed=1, cfg=clean), generate(40, seed=1, cfg=EVERY_HABIT)
    assert [(r["question"], r["answer"]) for r in a] == [(r["question"], r["answer"]) for r in b]
    assert all(r["habits"] == [] for r in a) and all(r["habits"] for r in b)


# ---------------------------------------------------------------- habits


def expected_shares(cfg: ThinkingConfig) -> dict[str, float]:
    """Clean with probability 1 - overthink; else independent draws conditioned on at least one:
    P(h) = overthink * p_h / (1 - prod_j (1 - p_j))."""
    ps = [getattr(cfg, h) for h in HABITS]
    none = math.prod(1 - p for p in ps)
    out = {h: cfg.overthink * p / (1 - none) for h, p in zip(HABITS, ps)}
    return out | {"clean": 1 - cfg.overthink}


@pytest.mark.parametrize(
    "cfg",
    [
        ThinkingConfig(),
        ThinkingConfig(overthink=0.5, restate=0.1, reverify=0.9, hesitate=0.0, alternative=0.3, backtrack=0.5),
        ThinkingConfig(overthink=1.0, restate=0.2, reverify=0.2, hesitate=0.2, alternative=0.2, recheck_answer=0.2),
    ],
)
def test_habit_shares_follow_the_knobs(cfg):
    n = 800
    got = Counter()
    for row in generate(n, seed=5, cfg=cfg):
        got.update(row["habits"] or ["clean"])
    for name, p in expected_shares(cfg).items():
        tol = 4 * math.sqrt(p * (1 - p) / n) + 1e-9  # 4 binomial standard deviations
        assert abs(got[name] / n - p) <= tol, (name, got[name] / n, p)


def test_detectors_count_the_planted_paragraphs(rows):
    for row in rows:
        counted = (count_rechecks(thinking(row)), count_backtracks(thinking(row)))
        assert counted == (row["n_rechecks"], row["n_backtracks"]), row["response"]
        rechecking = {"reverify", "hesitate", "alternative", "recheck_answer"} & set(row["habits"])
        assert (row["n_rechecks"] > 0) == bool(rechecking)
        assert row["n_backtracks"] == ("backtrack" in row["habits"])
        if "recheck_answer" in row["habits"]:
            assert row["n_rechecks"] >= 2  # the final answer is checked more than once


@pytest.mark.parametrize(
    "templates, label",
    [
        (T.REVERIFY, "recheck"),
        (T.DOUBTS, "recheck"),
        (T.ANSWER_CHECKS, "recheck"),
        (T.ALT_OPENERS, "recheck"),
        (T.FIXES, "backtrack"),
        (T.OPENERS + T.RESTATES + T.RESTATE_AGAIN + T.CONCLUDE + T.CLOSERS + T.ALT_CLOSERS, None),
        (sum(T.PLANS.values(), ()) + tuple(T.PLAN_EXTRA.values()), None),
    ],
)
def test_every_template_has_its_label(templates, label):
    fill = dict(
        lhs="7 + 5", inv="12 - 5 = 7", r=12, u="", words="7 plus 5 is 12", eq="7 + 5 = 12", w=13, how="by parts"
    )
    fill |= dict(ans=12, body="12 - 5 = 7", q="What is 7 + 5?", para="I need 7 + 5.", target="the sum", n=2)
    fill |= dict(terms=3, item="apples", start=7)
    for t in templates:
        assert classify_paragraph(t.format(**fill)) == label, t


def test_backtracks_never_change_the_answer(rows):
    """After a wrong step the trace goes on from the right value: the answer stays exact (tested
    above) and the wrong value is written once, in the paragraph before its fix."""
    for row in (r for r in rows if "backtrack" in r["habits"]):
        paras = thinking(row).split("\n\n")
        fix = next(i for i, p in enumerate(paras) if classify_paragraph(p) == "backtrack")
        assert classify_paragraph(paras[fix - 1]) is None  # the wrong step itself is a plain step


# ---------------------------------------------------------------- the first correct answer


def test_answer_char_is_where_eval_first_finds_the_answer(rows):
    for row in rows:
        first = answer_pattern(row["answer"]).search(row["response"])
        assert first.end() == row["answer_char"], row["response"]


def hand_problem(steps, answer, family="chain") -> Problem:
    info = {"facts": [s.fact for s in steps if s.fact], "kind": "gcd", "nums": [84, 126]}
    return Problem(family, "Q?", answer, tuple(steps), frozenset(), "I need Q.", "Q", info, 2)


def test_answer_char_hand_checked():
    one = ("{eq}.",)
    p = hand_problem([Step(one, Fact(47, "+", 385)), Step(one, Fact(432, "-", 129))], 303)
    text, at, _, _ = make_trace(p, (), random.Random(0))
    # the last step's paragraph reads "432 - 129 = 303."; the answer ends before its period
    assert text[at - len("432 - 129 = 303") : at + 1] == "432 - 129 = 303."
    assert text.index("432 - 129 = 303") + len("432 - 129 = 303") == at

    # a backtrack on the last step: "432 - 129 = W." first (W != 303), then the fix states the answer
    p = hand_problem([Step(one, Fact(432, "-", 129))], 303)
    text, at, _, n_back = make_trace(p, ("backtrack",), random.Random(0))
    wrong = re.search(r"432 - 129 = (\d+)\.", text)
    assert n_back == 1 and wrong.group(1) != "303"
    assert at == text.index("432 - 129 = 303") + len("432 - 129 = 303") > wrong.end()

    # the GCD: the remainder 42 is written in words first; the answer is the conclusion's "= 42"
    p = hand_problem(
        [
            Step(one, Fact(126, "rem", 84)),
            Step(one, Fact(84, "rem", 42)),
            Step(("So {eq}.",), stated="gcd(84, 126) = {r}", value=42),
        ],
        42,
        family="gcd",
    )
    text, at, _, _ = make_trace(p, (), random.Random(0))
    assert "126 ÷ 84 is 1 with remainder 42." in text
    assert at == text.index("gcd(84, 126) = 42") + len("gcd(84, 126) = 42")


def test_no_early_number_is_the_answer():
    for family in FAMILIES:
        for seed in range(100):
            p = T.draw_problem(family, random.Random(seed), ThinkingConfig())
            assert p.answer not in p.early


# ---------------------------------------------------------------- splits


def test_held_out_splits_are_disjoint_from_training():
    train = generate(1200, seed=0) + generate(400, seed=1)
    test, hard = generate(300, seed=0, split="test"), generate(300, seed=0, split="hard")
    train_keys = {r["key"] for r in train}
    for held in (test, hard):
        assert not train_keys & {r["key"] for r in held}
        assert not {r["question"] for r in train} & {r["question"] for r in held}
        assert all(is_heldout(r["key"]) for r in held)
    assert not any(is_heldout(k) for k in train_keys)
    assert len({r["key"] for r in test}) == len(test)  # distinct within a set


def test_the_key_ignores_the_wording():
    a = T.make_chain(random.Random(0), ThinkingConfig(), 3)
    b = T.make_chain(random.Random(0), ThinkingConfig(), 3)
    assert a.key == b.key and a.key.startswith("chain//")
    gcd = T.make_gcd(random.Random(1), ThinkingConfig(), 2)
    assert gcd.key.startswith(f"gcd/{gcd.info['kind']}/")


def test_hard_split_has_more_steps_and_longer_traces():
    cfg = ThinkingConfig(steps=(2, 4))
    test, hard = generate(200, seed=2, cfg=cfg, split="test"), generate(200, seed=2, cfg=cfg, split="hard")
    assert {r["steps"] for r in test} <= {2, 3, 4} and {r["steps"] for r in hard} == {5, 6, 7}
    mean = lambda rs: sum(n_tokens(r["response"]) for r in rs) / len(rs)  # noqa: E731
    assert mean(hard) > 1.2 * mean(test)


def test_small_problem_space_is_an_error():
    tiny = ThinkingConfig(steps=(1, 1), digits=(1, 1))
    with pytest.raises(ValueError, match="too small for n=500"):
        generate(500, families=("chain",), cfg=tiny)


# ---------------------------------------------------------------- lengths


def test_lengths_clean_shorter_than_overthinking(rows):
    default = [r for r in rows if r["split"] == "train"][:200]
    clean = [n_tokens(r["response"]) for r in default if not r["habits"]]
    over = [n_tokens(r["response"]) for r in default if r["habits"]]
    assert len(clean) > 30 and len(over) > 100
    assert 60 <= min(clean) and max(clean) <= 500
    assert 120 <= min(over) and max(over) <= 1400  # about 1,600 SmolLM2 tokens at most
    assert sum(over) / len(over) > 1.7 * sum(clean) / len(clean)


# ---------------------------------------------------------------- config and the named set


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(steps=(0, 2)), "steps"),
        (dict(digits=(3, 2)), "digits"),
        (dict(digits=(1, 5)), "digits"),
        (dict(backtrack=1.5), "backtrack"),
        (dict(overthink=0.5, **{h: 0.0 for h in HABITS}), "overthink"),
    ],
)
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        ThinkingConfig(**kw)


def test_generate_refuses_unknown_split_and_family():
    with pytest.raises(ValueError, match="split"):
        generate(2, split="dev")
    with pytest.raises(ValueError, match="families"):
        generate(2, families=("chain", "calculus"))


def test_named_set_is_generate():
    src = "thinking:chain,gcd?n=20&seed=2&split=test&min_steps=3&max_steps=3&max_digits=2&backtrack=0.9"
    assert is_named(src)
    cfg = ThinkingConfig(steps=(3, 3), digits=(1, 2), backtrack=0.9)
    assert load_named(src) == generate(20, 2, ("chain", "gcd"), cfg, "test")
    assert [r["family"] for r in load_named("thinking:all?n=8")] == list(FAMILIES) * 2


@pytest.mark.parametrize(
    "src, message",
    [
        ("thinking:chain,algebra?n=2", "unknown families"),
        ("thinking:all?n=2&max_step=3", "did you mean max_steps"),
        ("thinking:all?n=2&split=dev", "split"),
        ("thinking:all?n=2&overthink=2", "overthink"),
    ],
)
def test_named_set_errors(src, message):
    with pytest.raises(ConfigError, match=message):
        load_named(src)


def test_export(tmp_path):
    out = tmp_path / "think.jsonl"
    assert data_main(["export", "thinking:word?n=6&seed=3", "--out", str(out)]) == 0
    rows = [r for _, r, _ in iter_jsonl(str(out))]
    assert rows == generate(6, 3, ("word",))
    assert set(rows[0]) >= {"question", "answer", "response", "habits", "answer_char", "n_rechecks", "key"}
