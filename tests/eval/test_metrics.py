"""Detectors, metrics and plots: planted traces, hand-written prose, hand-computed numbers."""

import itertools
import re

import pytest

from repro_train.eval.detectors import classify_paragraph, count_backtracks, count_rechecks
from repro_train.eval.metrics import (
    length_stats,
    maj_at_k,
    mean_pass_at_k,
    pass_at_1,
    pass_at_k,
    summarize,
    tokens_after_first_correct,
)
from repro_train.eval.plots import plot_accuracy_vs_length, plot_length_histograms
from repro_train.tasks.arithmetic import generate

STEP = re.compile(r"\d+ [-+*] \d+ = \d+")


# ---------------------------------------------------------------- detectors


def test_detectors_find_every_planted_paragraph():
    seen = set()
    for row in generate(500, seed=11):
        thinking = row["response"].split("</think>")[0]
        planted = sum(not STEP.fullmatch(p) for p in thinking.strip().split("\n\n"))
        want = {"direct": (0, 0), "recheck": (planted, 0), "backtrack": (0, 1)}[row["style"]]
        assert (count_rechecks(row["response"]), count_backtracks(row["response"])) == want, row
        seen.add((row["style"], planted))
    assert {("direct", 0), ("recheck", 1), ("recheck", 2), ("backtrack", 1)} <= seen


@pytest.mark.parametrize(
    "paragraph, label",
    [
        ("Let me double-check: 3 * 4 = 12. Yes.", "recheck"),
        ("To double check, 12 + 5 = 17.", "recheck"),
        ("LET ME VERIFY this once more: 17 - 2 = 15.", "recheck"),
        ("Let me check again. 4 * 5 = 20. Yes, that is right.", "recheck"),
        ("Let me recheck the multiplication; it gives 20.", "recheck"),
        ("Wait, no, 12 + 5 is 17, not 18.", "backtrack"),
        ("I made a mistake above.", "backtrack"),
        ("Actually, the sum is not 18.", "backtrack"),
        ("Let me reconsider the second step.", "backtrack"),
        ("That\u2019s not right: 7 * 8 = 56.", "backtrack"),
        ("Hmm, let me verify 7 * 8. It is 54? No wait, that's wrong, it is 56.", "backtrack"),
        ("So the answer is 20. That is right.", None),
        ("12 + 5 = 17", None),
        ("Now add 3 to get 20, which is correct.", None),
    ],
)
def test_classify_hand_written(paragraph, label):
    assert classify_paragraph(paragraph) == label


@pytest.mark.parametrize(
    "paragraph, label",
    [
        # hesitations that ask, and rounds that re-solve (the thinking traces' and R1's phrasings)
        ("Wait, is 432 - 129 really 303? 303 plus 129 gives back 432. Yes.", "recheck"),
        ("Hmm, did I get 7 * 8 right? 7 times 8 is 56.", "recheck"),
        ("Hmm, wait. Is 56 right for 7 * 8? 8 times 7 is 56, so yes.", "recheck"),
        ("Is that correct? 4 times 8 is 32.", "recheck"),
        ("Hmm, let me think about that again. 12 plus 5 is 17.", "recheck"),
        ("Going back over the first step once more: 17 - 5 = 12.", "recheck"),
        ("Alternatively, I can add the numbers in the other order: 5 + 12 = 17.", "recheck"),
        ("Let me solve it a different way: undo the steps from the end.", "recheck"),
        ("Plugging x = 8 back into the equation: 7 * 8 - 12 = 44 on both sides.", "recheck"),
        ("Just to be sure, 17 - 12 = 5. It checks out.", "recheck"),
        ("To confirm: 3 * 14 = 42.", "recheck"),
        ("I want to make sure the sum is 17.", "recheck"),
        # retractions in new words
        ("Hmm, no. 12 + 5 is 17.", "backtrack"),
        ("Hmm, that doesn't look right. 12 + 5 = 17.", "backtrack"),
        ("Oh, I miscalculated: 7 * 8 = 56.", "backtrack"),
        ("Wait, I got that step wrong. 432 - 129 = 303, not 313.", "backtrack"),
        ("That should be 36, not 38.", "backtrack"),
        ("I messed up the carry; 48 + 72 = 120.", "backtrack"),
        ("Wait, is 7 * 8 really 54? No wait, that's wrong: 56.", "backtrack"),  # a doubt that retracts
        # plain steps: no hesitation, no second look
        ("Wait for the total: 12 + 5 = 17.", None),  # "wait" without a question
        ("The right side is 3 * 8 + 20 = 44.", None),
        ("Then multiply by 2 to get back to 40.", None),
        ("So x should be 8.", None),
        ("Now the remainder is 0, which ends the algorithm.", None),
        ("The plan is to collect the x terms on one side, then divide.", None),
        ("How many marbles does Maya have now?", None),
        ("Hmm, now add 9: 56 + 9 = 65.", None),
        ("There is another number to add: 5 + 12 = 17.", None),
    ],
)
def test_classify_new_phrasings(paragraph, label):
    assert classify_paragraph(paragraph) == label


def test_counts_per_paragraph():
    text = (
        "Let me verify: 2 + 2 = 4. Let me double-check again. Yes.\n\n"  # one recheck
        "4 * 3 = 12\n\n"
        "Wait, no. That is wrong. I made a mistake.\n  \n"  # one backtrack
        "4 * 3 = 12. To double check: 12 / 3 = 4.\n\n"  # a second recheck
        "</think>\n\nFinal answer: 12"
    )
    assert count_rechecks(text) == 2
    assert count_backtracks(text) == 1
    assert count_rechecks("") == count_backtracks("") == 0


# ---------------------------------------------------------------- metrics


def test_pass_at_1_is_mean_of_per_problem_means():
    # (1/2 + 3/4) / 2, not the pooled 4/6
    assert pass_at_1([[True, False], [True, True, True, False]]) == pytest.approx(0.625)
    assert pass_at_1([[False]]) == 0.0
    with pytest.raises(ValueError):
        pass_at_1([[True], []])


def test_maj_at_k_ties_none_and_k():
    answers = [
        ["3", None, "4", "4"],  # k=2: only "3" votes -> right; k=4: "4" wins -> wrong
        [None, None, "7", "7"],  # k=2: no vote -> wrong; k=4: "7" -> right
        ["5", "6", "5", "6"],
    ]  # tie at k=4 -> "5" (seen first, not last) -> wrong
    gold = ["3", "7", "6"]
    assert maj_at_k(answers, gold, 1) == pytest.approx(1 / 3)
    assert maj_at_k(answers, gold, 2) == pytest.approx(1 / 3)
    assert maj_at_k(answers, gold, 4) == pytest.approx(1 / 3)
    assert maj_at_k([["6", "5", "6", "5"]], ["6"], 4) == 1.0  # tie -> "6", seen first
    with pytest.raises(ValueError):
        maj_at_k(answers, gold, 5)


def test_length_stats():
    # sorted [1, 2, 3, 4, 100]: p90 at position 0.9 * 4 = 3.6 -> 4 + 0.6 * (100 - 4) = 61.6
    assert length_stats([100, 3, 1, 4, 2]) == pytest.approx({"mean": 22.0, "median": 3.0, "p90": 61.6, "max": 100})
    assert length_stats([5]) == {"mean": 5.0, "median": 5.0, "p90": 5.0, "max": 5}


def _offsets(tokens):
    out, pos = [], 0
    for t in tokens:
        out.append(pos)
        pos += len(t)
    return out


def test_tokens_after_first_correct_rules():
    def run(tokens, answer):
        return tokens_after_first_correct("".join(tokens), _offsets(tokens), answer)

    assert run(["x", " = 63", ".", " ok", "\n\n"], "63") == 3  # "= 63." matches; 3 tokens after
    assert run(["x =", " 63 and", " more"], "63") == 1  # token 1 begins inside the match
    assert run(["y = 630", " z = 63.5", " w"], "63") is None  # longer numbers do not match
    assert run(["The answer is 63", "!"], "63") == 1
    assert run(["Final", " answer", ":", " 63"], "63") == 0
    assert run(["17 + 46", " is 63"], "63") is None  # not a step result


# Six responses, two problems, three samples each; tokens are text chunks.
RESPONSES = [  # (problem_id, gold, tokens, extracted answer, correct)
    (
        "p0",
        "63",
        ["25 * 3 = 75", "\n\n", "75 - 12", " = 63", "\n\n</think>\n\n", "Final answer: 63"],
        "63",
        True,
    ),  # 6 tokens; after "= 63": 2
    (
        "p0",
        "63",
        [
            "75 - 12 = 63",
            "\n\n",
            "Wait, let me double-check: ",
            "75 - 12 = 63",
            ". Yes, that is right.",
            "\n\n</think>\n\n",
            "Final answer: 63",
        ],
        "63",
        True,
    ),  # 7 tokens, 1 recheck; after: 6
    ("p0", "63", ["75 - 12 = 53", "\n\n</think>\n\n", "Final answer: 53"], "53", False),  # 3 tokens; 63 never appears
    (
        "p1",
        "10",
        ["10 * 10 = 100", "\n\n</think>\n\n", "Final answer: 100"],
        "100",
        False,
    ),  # 3 tokens; "= 100" is not 10
    (
        "p1",
        "10",
        [
            "4 + 5 = 8",
            "\n\n",
            "Wait, that is wrong. ",
            "4 + 5 = 9, not 8.",
            "\n\n",
            "9 + 1 = 10",
            "\n\n</think>\n\n",
            "Final answer: 10",
        ],
        "10",
        True,
    ),  # 8 tokens, 1 backtrack; after: 2
    (
        "p1",
        "10",
        ["9 + 1 = 10", "\n\n", "Let me verify: 9 + 1 = 10.", " Correct.", "\n\n</think>\n\n", "Final answer: 10"],
        "10",
        True,
    ),  # 6 tokens, 1 recheck; after: 5
]


@pytest.mark.parametrize(
    "n, c, k, want",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5) = 11/12
        (5, 2, 1, 2 / 5),  # k = 1: the fraction correct
        (4, 0, 3, 0.0),  # nothing correct
        (4, 3, 2, 1.0),  # n - c = 1 < k: every pair holds a correct one
        (6, 1, 6, 1.0),  # k = n: any correct sample
    ],
)
def test_pass_at_k_closed_form_by_hand(n, c, k, want):
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_equals_counting_the_subsets():
    """The definition: the share of the C(n, k) subsets of k samples that hold a correct one (samples 0..c-1)."""
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                want = sum(any(i < c for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_matches_the_product_form():
    # Chen et al.'s numerically stable form: 1 - prod_{i = n-c+1}^{n} (1 - k / i)
    n, c, k = 200, 3, 100
    prod = (1 - 100 / 198) * (1 - 100 / 199) * (1 - 100 / 200)
    assert pass_at_k(n, c, k) == pytest.approx(1 - prod, abs=1e-12)


def test_mean_pass_at_k_and_errors():
    # problem 0: 1 of 4 -> 1 - C(3,2)/C(4,2) = 1/2; problem 1: 2 of 4 -> 1 - C(2,2)/C(4,2) = 5/6
    assert mean_pass_at_k([[True, False, False, False], [True, True, False, False]], 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k samples for each"):
        mean_pass_at_k([[True, False], [True]], 2)


def test_summarize_hand_computed():
    samples = [
        {
            "problem_id": pid,
            "gold": gold,
            "text": "".join(toks),
            "token_offsets": _offsets(toks),
            "n_tokens": len(toks),
            "answer": ans,
            "correct": ok,
        }
        for pid, gold, toks, ans, ok in RESPONSES
    ]
    s = summarize(samples, k_values=(1, 3, 4), pass_k=(1, 2, 4))
    assert s["n_problems"] == 2 and s["n_samples"] == 6
    assert s["pass@1"] == pytest.approx(2 / 3)  # (2/3 + 2/3) / 2
    assert s["pass@2"] == 1.0  # 2 of 3 correct in each: 1 - C(1,2)/C(3,2) = 1
    assert "pass@4" not in s  # only 3 samples per problem
    assert s["maj@1"] == pytest.approx(0.5)  # p0 "63" right, p1 "100" wrong
    assert s["maj@3"] == pytest.approx(1.0)  # "63" 2-1, "10" 2-1
    assert "maj@4" not in s  # only 3 samples per problem
    assert s["mean_tokens"] == pytest.approx(5.5)  # (6+7+3+3+8+6) / 6
    assert s["median_tokens"] == pytest.approx(6.0)  # [3, 3, 6, 6, 7, 8]
    assert s["p90_tokens"] == pytest.approx(7.5)  # position 4.5: (7 + 8) / 2
    assert s["max_tokens"] == 8
    assert s["recheck_rate"] == pytest.approx(2 / 6)
    assert s["frac_with_recheck"] == pytest.approx(2 / 6)
    assert s["backtrack_rate"] == pytest.approx(1 / 6)
    assert s["frac_with_backtrack"] == pytest.approx(1 / 6)
    assert s["tokens_after_first_correct"] == pytest.approx(3.75)  # (2 + 6 + 2 + 5) / 4
    assert s["frac_answer_appears"] == pytest.approx(4 / 6)


# ---------------------------------------------------------------- plots


def test_plots_write_png(tmp_path):
    summaries = {"base": {"mean_tokens": 120.0, "pass@1": 0.6}, "repro": {"mean_tokens": 80.0, "pass@1": 0.65}}
    a, b = tmp_path / "acc.png", tmp_path / "sub" / "len.png"
    plot_accuracy_vs_length(summaries, a)
    plot_length_histograms({"base": [100, 120, 150, 90], "repro": [70, 80, 85]}, b)
    for p in (a, b):
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
