"""Graders that cannot be gamed (issue 32): each case the issue lists, on the real libraries.

RL optimises against the grader, so a grader's mistake becomes the policy's skill. These tests
hold every built-in to the strict answer rule (docs/rewards.md, "The strict answer rule"), to
exact integers, to reasoning-gym's partial credit kept apart from correctness, and fuzz every
built-in with hypothesis: arbitrary text and perturbed gold answers give a value or None, never
an exception. reasoning-gym (0.1.25) and math-verify are the installed packages, not fakes.
"""

import inspect
import json
import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro_train.rewards import (
    REWARDS,
    ExactMatch,
    Format,
    LastNumber,
    MathVerify,
    Numeric,
    OutcomeReward,
    ReasoningGym,
    RewardSpec,
    parse_exact,
    strict_refusal,
    verify_answer,
)
from repro_train.rewards.outcome import correct_threshold

rg = pytest.importorskip("reasoning_gym")

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
IN_PROCESS = {"exact_match": ExactMatch(), "numeric": Numeric(), "last_number": LastNumber(), "format": Format()}


def item(task: str, seed: int, index: int) -> dict:
    """reasoning-gym's own seeded item (the answer and metadata its checker reads)."""
    return rg.create_dataset(task, seed=seed, size=index + 1)[index]


def rgym(fn: ReasoningGym, completion: str, entry: dict) -> float | None:
    return fn(
        [""],
        [completion],
        [str(entry["answer"])],
        rg_dataset=[entry["metadata"]["source_dataset"]],
        rg_entry=[json.dumps(entry["metadata"], default=str)],
    )[0]


@pytest.fixture(scope="module")
def mv():
    with MathVerify(num_workers=2, timeout_s=2.0) as reward:
        yield reward


# ---------------------------------------------------------------- a crash from one answer

PRIME_123 = ("prime_factorization", 0, 239)  # "Find the prime factorization of 123" -> "3 × 41"
PRIME_739 = ("prime_factorization", 0, 461)  # 739 is prime -> "739"


def test_prime_factorization_answers_that_crash_reasoning_gym_score_zero():
    e123, e739 = item(*PRIME_123), item(*PRIME_739)
    assert (e123["answer"], e739["answer"]) == ("3 × 41", "739")
    score = rg.get_score_answer_fn("prime_factorization")
    for bad in ("3 x 41", "3 * 41"):  # the library itself raises: one sampled answer ended the step
        with pytest.raises(ValueError, match="invalid literal for int"):
            score(bad, e123)
    with pytest.raises(ValueError):
        score("739.", e739)
    fn = ReasoningGym()
    assert rgym(fn, "Final answer: 3 x 41", e123) == 0.0  # "unparseable": the model's answer is unreadable
    assert rgym(fn, "Final answer: 3 * 41", e123) == 0.0
    assert rgym(fn, "Final answer: 739.", e739) == 1.0  # a sentence's period is not part of the answer
    assert rgym(fn, "Final answer: 3 × 41", e123) == 1.0


def test_reasoning_gym_gold_that_its_checker_cannot_read_is_unscorable():
    e = item(*PRIME_123)
    broken = {**e, "answer": "three times forty-one"}  # the checker raises on the gold too: the row is broken
    assert rgym(ReasoningGym(), "Final answer: 3 x 41", broken) is None
    assert ReasoningGym().check("Final answer: 3", "3", "prime_factorization", "{not json") is None


# ---------------------------------------------------------------- wrong integers accepted


@pytest.mark.parametrize("name", ["numeric", "last_number"])
def test_integers_compare_exactly(name):
    fn = IN_PROCESS[name]
    # rel_tol 1e-6 * 38095785 = 38.1 would accept any answer within 38
    assert fn.check("Final answer: 38095786", "38095785") == 0.0
    assert fn.check("Final answer: 38095785", "38095785") == 1.0
    assert fn.check("Final answer: 38,095,785", "38095785") == 1.0
    # beyond 2**53 floats are equal: 12345678901234567891.0 == 12345678901234567890.0
    assert float("12345678901234567891") == float("12345678901234567890")
    assert fn.check("Final answer: 12345678901234567891", "12345678901234567890") == 0.0
    # a non-integer gold keeps the tolerance: |0.7500001 - 0.75| = 1e-7 <= 1e-6 * 0.75
    assert fn.check("Final answer: 0.7500001", "0.75") == 1.0
    assert fn.check("Final answer: 0.7501", "0.75") == 0.0


def test_numeric_gold_written_as_integer_is_read_as_one():
    fn = Numeric()
    assert fn.check("Final answer: 42.0", "42") == 1.0  # the same number, exactly
    assert fn.check("Final answer: 84/2", "42") == 1.0
    assert fn.check("Final answer: 42.0000001", "42") == 0.0
    assert fn.check("Final answer: 42.0000001", "42.0") == 1.0  # a gold written as a float: tolerance
    assert parse_exact("0.1") == Fraction(1, 10) and parse_exact("1e-3") == Fraction(1, 1000)
    assert parse_exact("1e99999999") is None  # no 100-million-digit integer


# ---------------------------------------------------------------- partial credit read as correct

SIMPLE_EQ_54 = ("simple_equations", 0, 56)  # 61 - 99*r = -5285 -> 54
GSM_65 = ("gsm_symbolic", 0, 33)


def test_partial_credit_is_not_correctness():
    e54, e65 = item(*SIMPLE_EQ_54), item(*GSM_65)
    assert (e54["answer"], e65["answer"]) == ("54", "65")
    # the library's own scores: "54" in "-54" gives len("54") / len("-54"); gsm_symbolic's regex drops the sign
    assert rg.get_score_answer_fn("simple_equations")("-54", e54) == pytest.approx(2 / 3)
    assert rg.get_score_answer_fn("gsm_symbolic")("-65", e65) == 1.0
    lenient = ReasoningGym(partial_credit=True, strict=False)
    assert rgym(lenient, "Final answer: -54", e54) == pytest.approx(2 / 3)  # the raw score, as asked
    assert rgym(ReasoningGym(strict=False), "Final answer: -54", e54) == 0.0  # default: 1 at a full score
    assert rgym(ReasoningGym(strict=False), "Final answer: -65", e65) == 1.0  # the library's mistake...
    assert rgym(ReasoningGym(), "Final answer: -65", e65) == 0.0  # ...refused: -65 is not 65 as numbers
    assert rgym(ReasoningGym(), "Final answer: -54", e54) == 0.0
    assert rgym(ReasoningGym(), "Final answer: 54", e54) == 1.0


def test_correct_means_a_full_score_unless_the_recipe_sets_a_threshold():
    e = item(*PRIME_123)  # "123" has the product of 3 × 41: reasoning-gym gives 0.5
    rows = dict(rg_dataset=["prime_factorization"] * 3, rg_entry=[json.dumps(e["metadata"])] * 3)
    completions, answers = ["Final answer: 3 × 41", "Final answer: 123", "Final answer: 7"], [e["answer"]] * 3
    res = OutcomeReward([RewardSpec("reasoning_gym")])([""] * 3, completions, answers, columns=rows)
    assert res.per_fn["reasoning_gym"].tolist() == [1.0, 0.0, 0.0]
    assert res.correct.tolist() == [True, False, False]
    partial = RewardSpec("reasoning_gym", kwargs={"partial_credit": True})
    res = OutcomeReward([partial])([""] * 3, completions, answers, columns=rows)
    assert res.per_fn["reasoning_gym"].tolist() == pytest.approx([1.0, 0.5, 0.01])  # wrong factors: 0.01
    assert res.correct.tolist() == [True, False, False]  # 0.5 is not correct (was: >= 0.5)
    half = RewardSpec("reasoning_gym", kwargs={"partial_credit": True, "threshold": 0.5})
    res = OutcomeReward([half])([""] * 3, completions, answers, columns=rows)
    assert res.correct.tolist() == [True, True, False]
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        OutcomeReward([RewardSpec("reasoning_gym", kwargs={"threshold": 0})])


def test_custom_correctness_reward_needs_a_full_score(tmp_path):
    path = tmp_path / "half.py"
    path.write_text(
        "def half(prompts, completions, answers, **columns):\n    return [0.5] * len(completions)\n"
        "def lenient(prompts, completions, answers, **columns):\n    return [0.5] * len(completions)\n"
        "lenient.threshold = 0.5\n"
    )
    res = OutcomeReward([RewardSpec(f"{path}:half", correctness=True)])(["q"], ["a"], ["1"])
    assert res.correct.tolist() == [False]
    res = OutcomeReward([RewardSpec(f"{path}:lenient", correctness=True)])(["q"], ["a"], ["1"])
    assert res.correct.tolist() == [True]
    assert correct_threshold(ExactMatch()) == 1.0 and correct_threshold(ReasoningGym(threshold=0.75)) == 0.75


# ---------------------------------------------------------------- hedges, negations, restatements

# (completion, gold): each was scored right by at least one built-in on the code before this rule
GAMES = {
    "hedge": ("Final answer: 5 or 6", "5"),
    "hedge, last": ("Final answer: 6 or 5", "5"),
    "negation": ("Final answer: not 42", "42"),
    "plus-minus": (r"Final answer: $\pm 3$", "3"),
    "two values": ("Final answer: 6, 5", "5"),
    "two lines": ("Final answer: 6\nFinal answer: 5", "5"),
    "two boxes": (r"so \boxed{6} or rather \boxed{5}", "5"),
    "restated expression": ("Final answer: 3 - 7 - 7", "-11"),
    "restated, false equality": ("The final answer to the given arithmetic problem is 3 - 7 - 7 = 3.", "-11"),
    "restated, last operand": ("The final answer is 0 + 4.", "4"),
    "restated question": ("State the final answer to the following arithmetic problem: 3 - 7 - 7 =", "-11"),
    "restated question, last operand": ("What is 0 + 4?", "4"),
}


@pytest.mark.parametrize("name", sorted(GAMES))
def test_games_score_zero_with_every_reward(name, mv):
    completion, gold = GAMES[name]
    for reward, fn in IN_PROCESS.items():
        if reward != "format":
            assert fn.check(completion, gold) == 0.0, reward
    assert mv([""] * 2, [completion, "Final answer: " + gold], [gold] * 2) == [0.0, 1.0]
    assert verify_answer(completion, gold, extract="final_answer") == 0.0
    e = item(*GSM_65)  # reasoning-gym's gsm_symbolic checker takes the first number it finds
    assert rgym(ReasoningGym(), completion.replace(gold, "65"), e) == 0.0


def test_games_were_scored_right_before_the_rule(mv):
    """The same games with strict=False: what the rule closes (each line failed on the old code)."""
    loose_ln, loose_rg = LastNumber(strict=False), ReasoningGym(strict=False)
    assert verify_answer("Final answer: 5 or 6", "5", strict=False) == 1.0
    assert verify_answer("Final answer: not 42", "42", strict=False) == 1.0
    assert verify_answer(*GAMES["restated question"], strict=False) == 1.0
    assert verify_answer("Final answer: 3 - 7 - 7", "-11", extract="final_answer", strict=False) == 1.0
    assert loose_ln.check("The final answer is 0 + 4.", "4") == 1.0
    assert loose_ln.check("Final answer: 6 or 5", "5") == 1.0
    assert rgym(loose_rg, "Final answer: 65 or 66", item(*GSM_65)) == 1.0
    assert rgym(loose_rg, "Final answer: not 65", item(*GSM_65)) == 1.0


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("Final answer: 3 - 7 - 7 = -11", "-11"),  # the work, then the value it equals
        ("Final answer: 4 = 2 + 2", "4"),
        ("Final answer: 8 apples", "8"),
        ("</think>\n\nFinal answer: 1", "1"),
        (
            "6 - 2 = 4\n\nWait, that is wrong. 6 - 2 = 4, not 3.\n\n</think>\n\nFinal answer: 4",
            "4",
        ),  # work, then one answer
        (r"so the answer is \boxed{\frac{1}{2}}.", "0.5"),
        ("Final answer: The final answer is 14400. I hope it is correct.", "14400"),
        ("The answer is -11.", "-11"),
    ],
)
def test_honest_answers_pass_the_rule(completion, gold):
    assert verify_answer(completion, gold) == 1.0
    assert verify_answer(completion, gold, strict=False) == 1.0


def test_roundings_and_digit_groups_are_one_value():
    # |2/3 - 0.67| = 1/300 <= 0.005, half a unit in the last written place
    assert strict_refusal("Final answer: 2/3 = 0.67", "2/3 = 0.67", "2/3") is None
    assert strict_refusal("Final answer: 2/3 = 0.6", "2/3 = 0.6", "2/3") is not None  # 1/15 > 0.05
    # math-verify and exact_match read "1 000" as 1000; last_number reads its last number, 000
    assert verify_answer("Final answer: 1 000", "1000") == 1.0
    assert ExactMatch().check("Final answer: 1 000", "1000") == 1.0
    assert LastNumber().check("Final answer: 1 000", "1000") == 0.0


@pytest.mark.parametrize(
    "span, gold, why",
    [
        ("5 or 6", "5", "a hedge ('or')"),
        (r"x \neq 5", "5", r"a negation ('\\neq')"),
        ("isn't 5", "5", 'a negation ("n\'t")'),
        ("3 - 7 - 7", "-11", "an expression with no value written ('3 - 7 - 7')"),
        ("3 - 7 - 7 = 3", "-11", "'3 - 7 - 7 = 3' sets unequal values equal"),
        (r"\boxed{2^3}", "8", "an expression with no value written"),
        (r"\frac{1}{2} = 0.6", "0.5", "sets unequal values equal"),
        ("6 5", "5", "several values (6, 5)"),
    ],
)
def test_strict_refusal_says_why(span, gold, why):
    assert why in strict_refusal("Final answer: " + span, span, gold)


@pytest.mark.parametrize(
    "span, gold",
    [
        (r"x^2 + 1", "x^2+1"),  # not a number: expressions are answers
        (r"\sqrt{2} + 1", r"1+\sqrt{2}"),
        (r"2 \times 433", "2 × 433"),
        ("-34x-45y+20z-100=0", "34x+45y-20z+100=0"),  # "-100" goes on from z: not "-100 = 0"
        ("a_{37} = 19", "a_{37} = 19"),
        ("True or False", "True or False"),  # the gold has the hedge itself
        (r"5\text{ cm}^2", "5"),
    ],
)
def test_strict_refusal_leaves_symbolic_answers_alone(span, gold):
    assert strict_refusal("Final answer: " + span, span, gold) is None


def test_strict_is_an_option_of_every_grading_builtin():
    for name in ("exact_match", "numeric", "last_number", "math_verify", "reasoning_gym"):
        assert inspect.signature(REWARDS[name]).parameters["strict"].default is True, name
    res = OutcomeReward([RewardSpec("last_number", kwargs={"strict": False})])(["q"], ["What is 0 + 4?"], ["4"])
    assert res.per_fn["last_number"].tolist() == [1.0]


# ---------------------------------------------------------------- fuzz: any string gives a value

GOLDS = ["42", "-11", "0.75", "3/4", r"\frac{1}{2}", "1,000", "38095785", "x^2+1", "(1, 2)", "Paris", "3 × 41"]
PIECES = [" ", "\n", "Final answer: ", "\\boxed{", "\\frac{", "\\neq", "\\sqrt{", "\\left("]
PIECES += "or not = + - * / ^ ( ) { } $ </think> . , 9 0 1e999 x _".split()


def perturbed(draw_gold, pieces):
    """A gold answer with random pieces inserted, dropped or wrapped around it."""
    return st.tuples(
        draw_gold, st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.sampled_from(pieces)), max_size=6)
    ).map(_perturb)


def _perturb(args):
    gold, edits = args
    text = gold
    for op, at, piece in edits:
        at = at % (len(text) + 1)
        if op == 0:
            text = text[:at] + piece + text[at:]
        elif op == 1:
            text = text[:at] + text[at + 1 :]
        elif op == 2:
            text = piece + text
        else:
            text = "Final answer: " + text + piece
    return text


TEXT = st.one_of(st.text(max_size=120), st.text(alphabet="".join(sorted(set("".join(PIECES)))), max_size=120))
COMPLETIONS = st.one_of(TEXT, perturbed(st.sampled_from(GOLDS), PIECES), st.lists(st.sampled_from(PIECES)).map("".join))
GOLD_TEXT = st.one_of(st.sampled_from(GOLDS), perturbed(st.sampled_from(GOLDS), PIECES), st.text(max_size=30))


def _is_value(v) -> bool:
    return v is None or (isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0)


@FUZZ
@given(completion=COMPLETIONS, gold=GOLD_TEXT)
def test_fuzz_in_process_rewards_never_raise(completion, gold):
    for name, fn in IN_PROCESS.items():
        values = fn([""] * 2, [completion, completion], [gold, None])
        assert all(_is_value(v) for v in values), (name, values)
    assert isinstance(strict_refusal(completion, completion, gold), (str, type(None)))


@FUZZ
@given(completion=COMPLETIONS, gold=GOLD_TEXT)
def test_fuzz_strict_never_raises_with_spans_of_the_completion(completion, gold):
    # any substring as span and tail, as the rewards pass them
    cut = len(completion) // 2
    assert isinstance(strict_refusal(completion, completion[cut:], gold, tail=completion[:cut]), (str, type(None)))


RG_FAMILIES = [
    "prime_factorization",
    "simple_equations",
    "gsm_symbolic",
    "chain_sum",
    "basic_arithmetic",
    "fraction_simplification",
    "decimal_arithmetic",
    "word_sorting",
]
RG_ITEMS = [item(task, 0, i) for task in RG_FAMILIES for i in range(3)]


@FUZZ
@given(entry=st.sampled_from(RG_ITEMS), data=st.data())
def test_fuzz_reasoning_gym_never_raises(entry, data):
    gold = str(entry["answer"])
    completion = data.draw(st.one_of(TEXT, perturbed(st.just(gold), PIECES)))
    for fn in (ReasoningGym(), ReasoningGym(partial_credit=True, strict=False)):
        assert _is_value(rgym(fn, completion, entry))


def test_every_reasoning_gym_family_scores_its_own_gold_one():
    """The rule refuses no honest answer on these families: each gold, as a final answer, scores 1."""
    fn = ReasoningGym()
    for entry in RG_ITEMS:
        assert rgym(fn, f"Final answer: {entry['answer']}", entry) == 1.0, entry["answer"]


@settings(FUZZ, max_examples=15)
@given(pairs=st.lists(st.tuples(COMPLETIONS, GOLD_TEXT), min_size=1, max_size=8))
def test_fuzz_math_verify_never_raises_in_the_pool(mv, pairs):
    """Through the worker pool (a pathological answer can hang sympy; the item timer scores it None)."""
    values = mv([""] * len(pairs), [c for c, _ in pairs], [g for _, g in pairs])
    assert len(values) == len(pairs) and all(_is_value(v) for v in values)
