"""`repro-train eval` (eval/cli.py) and its runner: files, reproducibility, hand-computed metrics
through the whole wiring, GSM8K-style data, and the error messages."""

import json

import pytest

from repro_train.commands.eval import main
from repro_train.eval import runner
from repro_train.eval.runner import EvalError, EvalSettings, evaluate, load_problems

# ---------------------------------------------------------------- CLI end to end (tiny random Llama)


def _run(tmp_path, name, models, *extra):
    out = tmp_path / name
    argv = [a for m in models for a in ("--model", m)]
    rc = main(
        argv
        + [
            "--data",
            "toy",
            "--n-problems",
            "3",
            "--samples",
            "2",
            "--max-new-tokens",
            "16",
            "--k",
            "1,2",
            "--out",
            str(out),
            *extra,
        ]
    )
    assert rc == 0
    return out


def test_cli_end_to_end_and_reproducible(tiny_model_dir, tmp_path, capsys):
    out = _run(tmp_path, "one", [f"a={tiny_model_dir}", f"b={tiny_model_dir}"])
    table = capsys.readouterr().out
    assert "pass@1" in table and "pass@2" in table and "maj@2" in table  # --pass-k defaults to --k

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"a", "b"}
    for key in (
        "pass@1",
        "pass@2",
        "maj@1",
        "maj@2",
        "mean_tokens",
        "median_tokens",
        "recheck_rate",
        "backtrack_rate",
        "tokens_after_first_correct",
        "frac_answer_appears",
        "settings",
    ):
        assert key in summary["a"], key
    assert summary["a"]["n_problems"] == 3 and summary["a"]["n_samples"] == 6
    assert summary["a"]["settings"]["reward"] == "exact_match"  # the toy task's default
    assert summary["a"]["settings"]["model"] == tiny_model_dir
    assert summary["a"]["max_tokens"] <= 16

    rows = [json.loads(line) for line in (out / "samples_a.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert [r["problem_id"] for r in rows] == [0, 0, 1, 1, 2, 2]
    assert set(rows[0]) >= {
        "problem_id",
        "question",
        "gold",
        "completion",
        "answer",
        "correct",
        "n_tokens",
        "rechecks",
        "backtracks",
    }
    for png in ("accuracy_vs_length.png", "length_hist.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The two problems' pairs differ: each problem has its own seed.
    assert rows[0]["completion"] != rows[2]["completion"]

    # Same seed: identical samples, across models in one run and across runs.
    again = _run(tmp_path, "two", [f"a={tiny_model_dir}"])
    first = (out / "samples_a.jsonl").read_text()
    assert (out / "samples_b.jsonl").read_text() == first
    assert (again / "samples_a.jsonl").read_text() == first
    # Another seed: different samples.
    other = _run(tmp_path, "three", [f"a={tiny_model_dir}"], "--seed", "1")
    assert (other / "samples_a.jsonl").read_text() != first


def test_cli_greedy_on_gsm8k_style_file(tiny_model_dir, tmp_path):
    data = tmp_path / "gsm.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
                {"question": "What is 2 times 600?", "answer": "2 * 600 = 1200\n#### 1,200"},
            ]
        )
        + "\n"
    )
    out = tmp_path / "gsm"
    rc = main(
        [
            "--model",
            tiny_model_dir,
            "--data",
            str(data),
            "--greedy",
            "--batch-size",
            "1",
            "--max-new-tokens",
            "4",
            "--reward",
            "numeric",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    label = tiny_model_dir.rstrip("/").split("/")[-1]  # a bare path is labelled by its folder
    rows = [json.loads(line) for line in (out / f"samples_{label}.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in rows] == ["7", "1200"]
    summary = json.loads((out / "summary.json").read_text())[label]
    assert summary["n_samples"] == 2 and "maj@4" not in summary
    assert summary["settings"]["greedy"] is True and summary["settings"]["samples"] == 1


# ---------------------------------------------------------------- evaluate(): hand-computed metrics


class CharTokenizer:
    """One token per character (id = ord + 3); ids 0, 1, 2 = <pad>, <bos>, <eos> (special)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    bos_token = "<bos>"
    chat_template = "Q: {question}\nA: "
    _SPECIAL = {0: "<pad>", 1: "<bos>", 2: "<eos>"}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return f"Q: {messages[-1]['content']}\nA: "

    def __call__(self, text, add_special_tokens=True):
        class Enc:
            input_ids = self.encode(text)

        return Enc()

    def encode(self, text):
        return [ord(c) + 3 for c in text]

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        return "".join(
            "" if (i in self._SPECIAL and skip_special_tokens) else self._SPECIAL.get(i) or chr(i - 3) for i in ids
        )

    def batch_decode(self, rows, skip_special_tokens=False):
        return [self.decode(r, skip_special_tokens) for r in rows]


class StubModel:
    class generation_config:
        eos_token_id = 2


# Problem 0 (gold 63): wrong, right with a re-check before </think> (answer "63.0": numeric says
# right, so it votes "63"), right with a backtrack and a "Let me verify" after </think> (not counted).
P0 = [
    "17 + 46 = 64\n\n</think>\n\nFinal answer: 64",
    "17 + 46 = 63\n\nLet me verify: 17 + 46 = 63.\n\n</think>\n\nFinal answer: 63.0",
    "17 + 46 = 62\n\nWait, that is wrong. 17 + 46 = 63, not 62.\n\n</think>\n\nLet me verify: yes.\n\nFinal answer: 63",
]
# Problem 1 (gold 7): "= 7" then a wrong answer; a wrong answer; cut off right after "= 7" (no EOS).
P1 = ["3 + 4 = 7\n\n</think>\n\nFinal answer: 8", "</think>\n\nFinal answer: 8", "3 + 4 = 7"]


def test_evaluate_wiring_hand_computed(monkeypatch):
    tok = CharTokenizer()
    problems = [{"id": 0, "question": "17 + 46?", "answer": "63"}, {"id": 1, "question": "3 + 4?", "answer": "7"}]
    finished = {P1[2]: False}

    def fake_generate(model, prompts, settings, eos, pad_id, progress=True):
        assert [tok.decode(p) for p in prompts] == ["Q: 17 + 46?\nA: ", "Q: 3 + 4?\nA: "]
        assert eos == [2] and settings.samples == 3
        return [[tok.encode(t) + ([2] if finished.get(t, True) else []) for t in group] for group in (P0, P1)]

    monkeypatch.setattr(runner, "generate_responses", fake_generate)
    settings = EvalSettings(samples=3, reward="numeric", k_values=(1, 3, 8), pass_k=(2, 8))
    summary, samples = evaluate(StubModel(), tok, problems, settings, progress=False)

    # Lengths: characters + 1 EOS; the cut-off response has none.
    assert [s["n_tokens"] for s in samples] == [41, 73, 106, 37, 26, 9]
    assert summary["mean_tokens"] == pytest.approx(292 / 6)
    assert summary["median_tokens"] == 39.0  # (37 + 41) / 2
    assert [s["correct"] for s in samples] == [False, True, True, False, False, False]
    assert [s["answer"] for s in samples] == ["64", "63.0", "63", "8", "8", None]
    assert summary["pass@1"] == pytest.approx((2 / 3 + 0 / 3) / 2)
    # pass@2: problem 0 has 2 of 3 right -> 1 - C(1,2)/C(3,2) = 1; problem 1 none -> 0
    assert summary["pass@2"] == 0.5 and "pass@8" not in summary
    # maj@1: first answers 64 and 8, both wrong. maj@3: problem 0 votes 64, 63, 63 -> right (with
    # "63.0" voting as itself it would be a 3-way tie won by "64"); problem 1 votes 8, 8 -> wrong.
    assert summary["maj@1"] == 0.0
    assert summary["maj@3"] == 0.5
    assert "maj@8" not in summary
    # Detectors on the thinking part: one recheck (sample 0.1), one backtrack (0.2); the
    # "Let me verify" after </think> in 0.2 does not count (over the whole text the rate is 2/6).
    assert [(s["rechecks"], s["backtracks"]) for s in samples] == [(0, 0), (1, 0), (0, 1), (0, 0), (0, 0), (0, 0)]
    assert summary["recheck_rate"] == pytest.approx(1 / 6)
    assert summary["backtrack_rate"] == pytest.approx(1 / 6)
    assert summary["frac_with_recheck"] == pytest.approx(1 / 6)
    # Tokens after the first "= gold": 0.1: 60 chars after "= 63" + EOS; 0.2: 58 after
    # "46 = 63" + EOS; 1.0: 27 after "= 7" + EOS; 1.2: nothing follows; 0.0, 1.1: never appears.
    assert [s["tokens_after_first_correct"] for s in samples] == [None, 61, 59, 28, None, 0]
    assert summary["tokens_after_first_correct"] == pytest.approx((61 + 59 + 28 + 0) / 4)
    assert summary["frac_answer_appears"] == pytest.approx(4 / 6)
    assert summary["frac_finished"] == pytest.approx(5 / 6)


def test_evaluate_rejects_bad_settings():
    with pytest.raises(EvalError, match="greedy"):
        evaluate(
            StubModel(),
            CharTokenizer(),
            [{"id": 0, "question": "q", "answer": "1"}],
            EvalSettings(greedy=True, samples=4),
        )
    with pytest.raises(EvalError, match="unknown reward 'exact'"):
        evaluate(
            StubModel(), CharTokenizer(), [{"id": 0, "question": "q", "answer": "1"}], EvalSettings(reward="exact")
        )


# ---------------------------------------------------------------- problems and errors


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_load_problems_gsm8k_style_and_regex(tmp_path):
    f = _jsonl(
        tmp_path / "g.jsonl",
        [
            {"question": "a?", "answer": "1 + 1 = 2\n#### 2"},
            {"question": "b?", "answer": "#### 1,234"},
            {"question": "c?", "answer": 5},
        ],
    )
    assert load_problems(f) == [
        {"id": 0, "question": "a?", "answer": "2"},
        {"id": 1, "question": "b?", "answer": "1234"},
        {"id": 2, "question": "c?", "answer": "5"},
    ]
    assert len(load_problems(f, 2)) == 2
    f2 = _jsonl(tmp_path / "m.jsonl", [{"problem": "x?", "solution": r"so \boxed{3} and \boxed{4}"}])
    got = load_problems(f2, question_field="problem", answer_field="solution", answer_regex=r"\\boxed\{(\d+)\}")
    assert got == [{"id": 0, "question": "x?", "answer": "4"}]  # the last match
    with pytest.raises(EvalError, match="does not match"):
        load_problems(f2, question_field="problem", answer_field="solution", answer_regex=r"#### (\d+)")
    toy = load_problems("toy", 3, toy_seed=5)
    assert [p["id"] for p in toy] == [0, 1, 2] and toy == load_problems("toy", 3, toy_seed=5)


def test_cli_errors(tmp_path, tiny_model_dir, capsys):
    f = _jsonl(tmp_path / "m.jsonl", [{"problem": "x?", "solution": "#### 3"}])
    assert main(["--model", tiny_model_dir, "--data", f]) == 2
    err = capsys.readouterr().err
    assert "no field 'question' (--question-field)" in err and "['problem', 'solution']" in err
    assert main(["--model", tiny_model_dir, "--data", f, "--question-field", "problem"]) == 2
    assert "no field 'answer' (--answer-field)" in capsys.readouterr().err

    assert main(["--model", "=x", "--data", "toy"]) == 2
    assert "expected LABEL=PATH" in capsys.readouterr().err
    assert main(["--model", f"a={tmp_path}/nope", "--data", "toy"]) == 2
    assert "is not a model folder" in capsys.readouterr().err
    assert main(["--model", f"a={tiny_model_dir}", "--model", f"a={tiny_model_dir}", "--data", "toy"]) == 2
    assert "used twice" in capsys.readouterr().err
    assert main(["--model", tiny_model_dir, "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--model", tiny_model_dir, "--data", "toy", "--pass-k", "1,0"]) == 2
    assert "--pass-k '1,0': values must be >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------- several sets, reference responses


def test_parse_data_names_sets_and_keeps_named_sources_whole(tmp_path):
    from repro_train.commands.eval import parse_data

    assert parse_data(["toy"]) == {"toy": "toy"}
    src = "thinking:all?n=2&seed=0&split=test"
    assert parse_data([src]) == {src: src}  # one set: its '=' signs are the source's
    assert parse_data([f"test={src}", "hard=thinking:all?n=2&split=hard"]) == {
        "test": src,
        "hard": "thinking:all?n=2&split=hard",
    }
    f = tmp_path / "held.jsonl"
    f.write_text('{"question": "q", "answer": "1"}\n')
    assert parse_data([str(f), "toy"]) == {"held": str(f), "toy": "toy"}  # a file is named by its stem
    with pytest.raises(EvalError, match="name each one"):
        parse_data([src, "thinking:all?n=3"])
    with pytest.raises(EvalError, match="used twice"):
        parse_data(["x=toy", "x=gsm8k-100"])


def test_reference_traces_score_as_planted(tiny):
    """The trace generator's own responses, measured like a model's: all correct under the strict `numeric` check,
    re-checks and backtracks as planted (docs/models-and-data.md), and the tokens after the first correct answer are
    those that begin at or after the row's answer_char (offsets from the tokenizer's own offset mapping), plus EOS."""
    from repro_train.data.named import load_named
    from repro_train.eval.runner import evaluate_references

    _, tok = tiny
    rows = load_named("thinking:all?n=8&seed=3&split=test&max_digits=2") + load_named("thinking:word?n=2&split=hard")
    problems = [
        {"id": i, "question": r["question"], "answer": r["answer"], "reference": r["response"]}
        for i, r in enumerate(rows)
    ]
    summary, samples = evaluate_references(tok, problems, EvalSettings(reward="numeric", samples=1), [tok.eos_token_id])
    assert summary["pass@1"] == 1.0 and summary["frac_finished"] == 1.0
    assert [s["rechecks"] for s in samples] == [r["n_rechecks"] for r in rows]
    assert [s["backtracks"] for s in samples] == [r["n_backtracks"] for r in rows]
    for s, r in zip(samples, rows):
        starts = [
            a for a, _ in tok(r["response"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        ]
        assert s["tokens_after_first_correct"] == sum(a >= r["answer_char"] for a in starts) + 1
        assert s["n_tokens"] == len(starts) + 1


def test_cli_several_sets_with_reference(tiny_model_dir, tmp_path):
    out = tmp_path / "ev"
    data = ["--data", "test=thinking:chain?n=2&split=test", "--data", "hard=thinking:chain?n=2&split=hard"]
    rc = main(
        [
            "--model",
            f"m={tiny_model_dir}",
            *data,
            "--reference",
            "response",
            "--greedy",
            "--max-new-tokens",
            "4",
            "--reward",
            "numeric",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    for name in ("test", "hard"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert set(summary) == {"m", "reference"} and summary["reference"]["pass@1"] == 1.0
        assert summary["reference"]["settings"]["model"] == "reference:response"
        assert summary["m"]["settings"]["data"].startswith(f"thinking:chain?n=2&split={name}")
        assert (out / name / "samples_reference.jsonl").exists()
    assert main(["--model", tiny_model_dir, *data, "--reference", "nope", "--out", str(out)]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(
    not __import__("torch").cuda.is_available() or __import__("importlib").util.find_spec("vllm") is None,
    reason="needs a CUDA GPU and vLLM",
)
def test_vllm_engine_answers_like_hf_greedy_on_a_gpu(tmp_path):
    """`--engine vllm` on the shipped tiny reasoner (float32, eager): greedy responses agree with transformers'
    generate on nearly every problem (argmax ties and kernels may differ on a few) and so does the accuracy."""
    import subprocess
    import sys

    from tests.helpers import REPO

    rows = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / engine
        cmd = [sys.executable, "-m", "repro_train", "eval", "--model", "toy", "--data", "toy", "--n-problems", "32"]
        cmd += ["--greedy", "--max-new-tokens", "128", "--engine", engine, "--vllm-eager", "--device", "cuda"]
        p = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, cwd=REPO)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        rows[engine] = [json.loads(x) for x in (out / "samples_toy.jsonl").read_text().splitlines()]
    same = sum(a["completion"] == b["completion"] for a, b in zip(rows["hf"], rows["vllm"]))
    assert same >= 28, f"only {same} of 32 greedy responses agree"
    acc = {e: sum(r["correct"] for r in rs) for e, rs in rows.items()}
    assert abs(acc["hf"] - acc["vllm"]) <= 4, acc


def test_a_model_folder_missing_its_weights_is_one_error_line(tmp_path, capsys):
    """A folder with only config.json: `error:` naming what is missing and the fix, exit 2, no traceback."""
    from repro_train.commands.eval import main

    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["--model", str(folder), "--data", "toy", "--n-problems", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is missing model.safetensors" in err and "prepare-model" in err and "Traceback" not in err
