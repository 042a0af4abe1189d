"""Outcome rewards: extraction helpers, built-ins on hand-made completions, OutcomeReward's sum,
custom rewards by import path, and math_verify's process pool (threads, timeouts, a hung worker).

One math_verify pool (2 workers) serves the whole module; the hung-worker test starts its own.
"""

import re
import sys
import threading
import time

import pytest
import torch

from repro_train.rewards import (
    REWARDS,
    ExactMatch,
    Format,
    LastNumber,
    MathVerify,
    Numeric,
    OutcomeReward,
    RewardSpec,
    extract_answer,
    extract_boxed,
    extract_final_answer,
    last_number,
    normalize_answer,
    parse_number,
    register_reward,
    verify_answer,
)
from repro_train.rewards.mathverify import check_item

# Costs tens of seconds in sympy; the item timer stops it (measured: 24 s uninterrupted).
SLOW_PRED = r"\boxed{(x+3)^{3000} - (x+1)^{2999}}"
SLOW_GOLD = r"(x+1)^{3000} - (x+2)^{3000}"


@pytest.fixture(scope="module")
def mv_reward():
    with OutcomeReward([RewardSpec("math_verify")], num_workers=2, timeout_s=1.0) as reward:
        yield reward


# ---------------------------------------------------------------- extraction


def test_extract_boxed_nested_last_and_truncated():
    assert extract_boxed(r"so \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{1} then \boxed{ {2}+\{3\} }") == r"{2}+\{3\}"
    assert extract_boxed(r"\boxed{1} then \boxed{\frac{2}{3}") is None  # last box never closed
    assert extract_boxed("no box 42") is None


def test_extract_final_answer_takes_the_last_line():
    text = "Final answer: 3\nWait.\n**Final answer:** 7 \nbye"
    assert extract_final_answer(text) == "7"
    assert extract_final_answer("final ANSWER:\n 12") == "12"  # \s* reaches the next line
    assert extract_final_answer("Final answer:   ") is None
    assert extract_final_answer("the answer is 4") is None


def test_extract_answer_prefers_final_line_then_box_then_pattern():
    assert extract_answer(r"\boxed{5}" + "\nFinal answer: 6") == "6"
    assert extract_answer(r"thus \boxed{5}.") == "5"
    assert extract_answer("nothing") is None
    pat = re.compile(r"ANSWER=(\w+)")
    assert extract_answer("ANSWER=a ... ANSWER=b\nFinal answer: c", pat) == "b"
    assert extract_answer("Final answer: c", pat) is None


@pytest.mark.parametrize(
    "text, value",
    [
        ("42", 42.0),
        ("-3", -3.0),
        ("+7", 7.0),
        ("3.25", 3.25),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("3/4", 0.75),
        ("-3 / 4", -0.75),
        (r"\frac{3}{4}", 0.75),
        (r"-\dfrac{1}{8}", -0.125),
        ("1,000", 1000.0),
        ("-1,234,567.5", -1234567.5),
        ("$18", 18.0),
        (r"\$18.50", 18.5),
        ("50%", 50.0),
        ("42.", 42.0),
        (r"$\boxed{12}$", 12.0),
        ("**9**", 9.0),
        ("1,5", None),
        ("12,34", None),
        ("42 apples", None),
        ("x", None),
        ("", None),
        (None, None),
        ("inf", None),
        ("nan", None),
        ("1e400", None),
        ("1/0", None),
        ("1" * 5000 + "/3", None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text, norm",
    [
        (" $1 000$. ", "1000"),
        (r"\boxed{ABC}", "abc"),
        ("1,000,000", "1000000"),
        (r"1\,000", "1000"),
        ("**Yes**", "yes"),
        ("(1, 2)", "(1, 2)"),
        (r"\boxed{1} + \boxed{2}", r"\boxed{1} + \boxed{2}"),
        ("a  b\n c", "a b c"),
    ],
)
def test_normalize_answer(text, norm):
    assert normalize_answer(text) == norm


# ---------------------------------------------------------------- built-ins in process


def test_exact_match_values():
    fn = ExactMatch()
    completions = [
        "</think>\nFinal answer: $1 000$.",
        "Final answer: 41",
        "I give up",
        r"\boxed{Paris}",
        "Final answer: 7",
    ]
    answers = ["1000", "42", "42", "paris", None]
    assert fn([""] * 5, completions, answers) == [1.0, 0.0, 0.0, 1.0, None]
    assert ExactMatch(normalize=False)([""], ["Final answer: $1 000$."], ["1000"]) == [0.0]
    assert ExactMatch(pattern=r"ANSWER=(\w+)")([""] * 2, ["ANSWER=8", "Final answer: 8"], ["8", "8"]) == [1.0, 0.0]
    # the last match is the answer; the strict rule (on by default) refuses two different answers
    assert ExactMatch(pattern=r"ANSWER=(\w+)", strict=False)([""], ["ANSWER=7 ANSWER=8"], ["8"]) == [1.0]
    assert ExactMatch(pattern=r"ANSWER=(\w+)")([""], ["ANSWER=7 ANSWER=8"], ["8"]) == [0.0]


def test_numeric_values():
    fn = Numeric()
    completions = [
        "Final answer: 3/4",
        "Final answer: 0.7500001",
        "Final answer: 0.7501",
        r"so \boxed{1,000}",
        "Final answer: about 5",
        "Final answer: 5",
    ]
    answers = ["0.75", "0.75", "0.75", "1000", "5", "five"]
    # 0.7500001: |diff| 1e-7 <= rel_tol * 0.75 = 7.5e-7 -> close; 0.7501: 1e-4 is not
    assert fn([""] * 6, completions, answers) == [1.0, 1.0, 0.0, 1.0, 0.0, None]
    assert Numeric(rel_tol=0, abs_tol=0.01)([""], ["Final answer: 0.759"], ["0.75"]) == [1.0]
    assert Numeric(rel_tol="1e-6").rel_tol == 1e-6  # YAML reads 1e-6 as a string


def test_last_number_reads_the_answer_line_else_the_last_written_number():
    assert last_number("3 - 7 - 7 = -11") == "-11"  # the sign touches the digits
    assert last_number("The final answer is 3 - 7 - 7.") == "7"  # "- 7": an operator and a number
    assert last_number("5 + 3 = 8\nso 8 apples, then 2 more\nFinal answer: 8 apples") == "8"
    assert last_number("Final answer: 1,000.") == "1,000"
    assert last_number("x2 and v1.5") is None  # digits inside words are not numbers
    assert last_number("Final answer: none\n3") is None  # an answer line without a number: nothing
    assert last_number("no number") is None


def test_last_number_values_and_restated_problems():
    fn = LastNumber()
    completions = [
        "The final answer to the given arithmetic problem is 3 - 7 - 7 = 3.",  # restated, then wrong
        "The final answer is 3 - 7 - 7.",  # the problem restated: no answer
        "3 - 7 - 7 = -11",
        "The answer is 5 + 3 = 9.",
        "5 + 3 = 8\nFinal answer: 8 apples",
        "Final answer: 0.7500001",
        "nothing here",
        "Final answer: 5",
    ]
    answers = ["-11", "-11", "-11", "8", "8", "0.75", "4", "five"]
    assert fn([""] * 8, completions, answers) == [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, None]
    with pytest.raises(ValueError, match="abs_tol must be >= 0"):
        LastNumber(abs_tol=-1)
    with pytest.raises(TypeError, match="pattern"):  # numeric's answer pattern has no meaning here
        LastNumber(pattern=r"ANSWER=(\w+)")


def test_math_verify_scores_a_restated_problem_right_last_number_does_not():
    """Why the SmolLM2 recipes use last_number: math-verify reads "The final answer is 3 - 7 - 7 = 3." as the
    expression 3 - 7 - 7, equal to -11. A three-term GRPO run learned to write exactly that (docs/results.md).
    The strict answer rule (on by default) refuses it: 3 - 7 - 7 is not 3."""
    pytest.importorskip("math_verify")
    hack = "The final answer to the given arithmetic problem is 3 - 7 - 7 = 3."
    assert verify_answer(hack, "-11", strict=False) == 1.0
    assert verify_answer("The final answer is 5 + 3 = 9.", "8", strict=False) == 1.0
    assert verify_answer(hack, "-11") == 0.0
    assert verify_answer("The final answer is 5 + 3 = 9.", "8") == 0.0
    assert LastNumber()([""] * 2, [hack, "The final answer is 5 + 3 = 9."], ["-11", "8"]) == [0.0, 0.0]


def test_format_values():
    fn = Format()
    completions = [
        "steps\n\n</think>\n\nFinal answer: 42",
        "steps\nFinal answer: 42",
        "</think>\nFinal answer:   \n",
        "Final answer: 1\n</think>\ndone",
        "</think>\n**Final answer:** 9",
    ]
    assert fn([""] * 5, completions, [None] * 5) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert Format(pattern=r"^answer", flags="IGNORECASE|MULTILINE")(
        [""] * 2, ["x\nANSWER 3", "x answer"], [None] * 2
    ) == [1.0, 0.0]


def test_registry_names_and_duplicates():
    assert sorted(REWARDS) == ["exact_match", "format", "last_number", "math_verify", "numeric", "reasoning_gym"]
    assert [REWARDS[n].correctness for n in sorted(REWARDS)] == [True, False, True, True, True, True]
    with pytest.raises(ValueError, match="already registered.*exact_match"):
        register_reward("exact_match", correctness=True)(lambda *a, **k: [])
    assert REWARDS["exact_match"] is ExactMatch


# ---------------------------------------------------------------- OutcomeReward


def test_total_per_fn_correct_and_unscorable():
    specs = [
        RewardSpec("format", weight=0.25),
        RewardSpec("numeric", weight=0.5),
        RewardSpec("exact_match", weight=2.0),
        RewardSpec("format", weight=-1.0),
    ]
    completions = [
        "</think>\nFinal answer: 0.50",
        "Final answer: 1/2",
        "</think>\nFinal answer: 3",
        "</think>\nFinal answer: 3",
    ]
    answers = ["1/2", "1/2", "4", None]
    res = OutcomeReward(specs)(["q"] * 4, completions, answers)
    #            format  numeric exact  format#2(w=-1)
    # row 0:     1       1       0      1   -> 0.25 + 0.5 + 0 - 1    = -0.25
    # row 1:     0       1       1      0   -> 0    + 0.5 + 2 - 0    =  2.5
    # row 2:     1       0       0      1   -> 0.25 + 0   + 0 - 1    = -0.75
    # row 3:     1       None    None   1   -> 0.25 + 0   + 0 - 1    = -0.75 (2 unscorable)
    assert res.total.dtype == torch.float32
    assert res.total.tolist() == [-0.25, 2.5, -0.75, -0.75]
    assert list(res.per_fn) == ["format", "numeric", "exact_match", "format#2"]
    assert res.per_fn["numeric"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert res.per_fn["exact_match"].tolist() == [0.0, 1.0, 0.0, 0.0]
    # correct follows numeric (the first correctness fn), not exact_match: row 0 differs
    assert res.correct.tolist() == [True, True, False, False]
    assert res.unscorable == 2


def test_correctness_override_and_none():
    completions, answers = ["</think>\nFinal answer: 1", "Final answer: 1"], ["2", "1"]
    res = OutcomeReward([RewardSpec("format", correctness=True), RewardSpec("exact_match")])(
        ["q"] * 2, completions, answers
    )
    assert res.correct.tolist() == [True, False]
    res = OutcomeReward([RewardSpec("exact_match", correctness=False)])(["q"] * 2, completions, answers)
    assert res.correct.tolist() == [False, False] and res.correct.dtype == torch.bool


def test_construction_errors_name_the_spec():
    with pytest.raises(
        ValueError,
        match=r"unknown reward 'math_verfy' \(did you mean 'math_verify'\?\)"
        r".*exact_match, format, last_number, math_verify, numeric",
    ):
        OutcomeReward([RewardSpec("math_verfy")])
    with pytest.raises(
        ValueError,
        match=r"reward 'exact_match': bad kwargs \{'foo': 1\}.*"
        r"accepts: \['pattern', 'normalize', 'strict'\]",
    ):
        OutcomeReward([RewardSpec("exact_match", kwargs={"foo": 1})])
    with pytest.raises(ValueError, match="reward 'numeric': bad kwargs.*exactly one group"):
        OutcomeReward([RewardSpec("numeric", kwargs={"pattern": r"Final: \d+"})])
    with pytest.raises(ValueError, match="reward 'format': bad kwargs.*"):
        OutcomeReward([RewardSpec("format", kwargs={"pattern": "(unclosed"})])
    with pytest.raises(ValueError, match="reward 'numeric': bad kwargs.*rel_tol must be >= 0"):
        OutcomeReward([RewardSpec("numeric", kwargs={"rel_tol": -1})])
    with pytest.raises(ValueError, match="reward 'math_verify': bad kwargs.*'auto' or 'final_answer'"):
        OutcomeReward([RewardSpec("math_verify", kwargs={"extract": "first"})])
    with pytest.raises(ValueError, match="weight must be a finite number"):
        OutcomeReward([RewardSpec("format", weight=float("nan"))])


def test_call_checks_batch_lengths():
    reward = OutcomeReward([RewardSpec("format")])
    with pytest.raises(ValueError, match=r"batch of 2 completions but lengths \{'answers': 1\}"):
        reward(["q", "q"], ["a", "b"], ["1"])
    with pytest.raises(ValueError, match=r"columns\['level'\]"):
        reward(["q", "q"], ["a", "b"], ["1", "2"], columns={"level": [1]})


# ---------------------------------------------------------------- custom rewards

CUSTOM = """
def length_penalty(prompts, completions, answers, *, scale=1.0, **columns):
    return [-scale * len(c) for c in completions]

def by_level(prompts, completions, answers, level, **columns):
    return [float(l == "hard") if a is not None else None for l, a in zip(level, answers)]

def one_arg(x):
    return [0.0]

def no_columns(prompts, completions, answers):
    return [0.0] * len(completions)

def short(prompts, completions, answers, **columns):
    return [1.0]

def bad_value(prompts, completions, answers, **columns):
    return [float("nan")] * len(completions)
"""


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_custom_reward_by_module_path_with_kwargs_and_columns(custom_module):
    specs = [
        RewardSpec("my_rewards:length_penalty", weight=0.5, kwargs={"scale": 0.25}),
        RewardSpec("my_rewards:by_level", correctness=True),
    ]
    res = OutcomeReward(specs)(
        ["q"] * 3, ["abcd", "ab", "abcdefgh"], ["1", None, "3"], columns={"level": ["hard", "easy", "easy"]}
    )
    # length_penalty: -0.25 * [4, 2, 8] = [-1, -0.5, -2]; by_level: [1, None, 0]
    assert res.per_fn["my_rewards:length_penalty"].tolist() == [-1.0, -0.5, -2.0]
    assert res.total.tolist() == [0.5, -0.25, -1.0]  # 0.5 * penalty + by_level
    assert res.correct.tolist() == [True, False, False]
    assert res.unscorable == 1


def test_custom_reward_by_file_path(tmp_path):
    path = tmp_path / "rw.py"
    path.write_text(CUSTOM)
    res = OutcomeReward([RewardSpec(f"{path}:length_penalty")])(["q"], ["abc"], ["1"])
    assert res.total.tolist() == [-3.0]
    assert res.correct.tolist() == [False]  # custom default: not a correctness function


def test_custom_signature_errors_at_construction(custom_module):
    for name in ("one_arg", "no_columns"):
        with pytest.raises(
            ValueError,
            match=rf"reward 'my_rewards:{name}': {name}\(.*\) cannot be "
            r"called as fn\(prompts, completions, answers, \*\*columns\)",
        ):
            OutcomeReward([RewardSpec(f"my_rewards:{name}")])
    with pytest.raises(ValueError, match=r"kwargs \['scal'\] are not parameters of length_penalty"):
        OutcomeReward([RewardSpec("my_rewards:length_penalty", kwargs={"scal": 2})])
    with pytest.raises(ValueError, match=r"'my_rewards' has no function 'nope'; it has: \[.*'short'"):
        OutcomeReward([RewardSpec("my_rewards:nope")])
    with pytest.raises(ValueError, match=r"cannot import 'no_such_mod_xyz': ModuleNotFoundError"):
        OutcomeReward([RewardSpec("no_such_mod_xyz:f")])
    with pytest.raises(ValueError, match=r"cannot import 'missing/file.py': FileNotFoundError"):
        OutcomeReward([RewardSpec("missing/file.py:f")])


def test_custom_bad_return_fails_at_call(custom_module):
    with pytest.raises(ValueError, match="reward 'my_rewards:short' returned 1 values for a batch of 2"):
        OutcomeReward([RewardSpec("my_rewards:short")])(["q"] * 2, ["a", "b"], ["1", "2"])
    with pytest.raises(ValueError, match="reward 'my_rewards:bad_value' returned nan at index 0"):
        OutcomeReward([RewardSpec("my_rewards:bad_value")])(["q"], ["a"], ["1"])


# ---------------------------------------------------------------- math_verify


def test_verify_answer_in_process():
    assert verify_answer(r"so $\frac{1}{2}$", "0.5") == 1.0
    assert verify_answer("Final answer: 1/2\nthen 7", "0.5", extract="final_answer") == 1.0
    assert verify_answer("the answer is 1/2", "0.5", extract="final_answer") == 0.0  # no line
    assert verify_answer("42", None) is None


def test_math_verify_values(mv_reward):
    completions = [
        r"so the answer is $\frac{1}{2}$",
        r"\boxed{42}",
        r"\boxed{41}",
        "x = 3",
        r"\boxed{3\sqrt{2}}",
        "no answer",
        r"\boxed{7}",
    ]
    answers = ["0.5", "42", "42", "3", r"\sqrt{18}", "5", None]
    res = mv_reward(["q"] * 7, completions, answers)
    assert res.per_fn["math_verify"].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert res.correct.tolist() == [True, True, False, True, True, False, False]
    assert res.unscorable == 1  # no gold


def test_math_verify_from_a_thread(mv_reward):
    out = []
    t = threading.Thread(target=lambda: out.append(mv_reward(["q"] * 2, [r"\boxed{\frac{1}{2}}", "7"], ["0.5", "8"])))
    t.start()
    t.join(timeout=60)
    assert out and out[0].per_fn["math_verify"].tolist() == [1.0, 0.0]


def test_math_verify_item_timeout_then_next_call_works(mv_reward):
    mv_reward(["q"], ["1"], ["1"])  # make sure the pool is up
    pool = mv_reward._fns[0].fn._pool
    t0 = time.monotonic()
    res = mv_reward(["q"] * 2, [SLOW_PRED, r"\boxed{42}"], [SLOW_GOLD, "42"])
    assert time.monotonic() - t0 < 8  # the 1 s item timer stopped ~24 s of sympy
    assert mv_reward._fns[0].fn._pool is pool  # the worker survived: no kill, no restart
    assert res.per_fn["math_verify"].tolist() == [0.0, 1.0]
    assert res.unscorable == 1
    res = mv_reward(["q"], [r"\boxed{2}"], ["2"])
    assert res.per_fn["math_verify"].tolist() == [1.0] and res.unscorable == 0


STUBS = """
import signal, sys, time

def torch_loaded(completion, answer, extract, timeout_s, strict):
    return float("torch" in sys.modules)

def hang(completion, answer, extract, timeout_s, strict):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # like C code the timer cannot stop
    time.sleep(60)
"""


def test_math_verify_hung_worker_is_replaced(tmp_path, monkeypatch):
    (tmp_path / "mv_stubs.py").write_text(STUBS)
    monkeypatch.syspath_prepend(str(tmp_path))  # before the pool spawns: workers inherit sys.path
    import mv_stubs

    with MathVerify(num_workers=1, timeout_s=0.3) as mv:
        mv._task = mv_stubs.torch_loaded
        assert mv([""], ["x"], ["1"]) == [0.0]  # workers never import torch
        mv._task = mv_stubs.hang
        t0 = time.monotonic()
        assert mv([""] * 2, ["x", "y"], ["1", "2"]) == [None, None]
        assert time.monotonic() - t0 < 10  # watchdog: 2 * 0.3 + 1 s without a result
        assert mv._pool is None  # killed; the next call starts a fresh one
        mv._task = check_item
        assert mv([""] * 2, [r"\boxed{42}", r"\boxed{4}"], ["42", "5"]) == [1.0, 0.0]
    sys.modules.pop("mv_stubs", None)
