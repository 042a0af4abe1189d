"""`repro-train demo` (what `make demo` runs): its pieces by hand, then end to end, shrunk (1 RL step, 2 problems)."""

import json
import os

import pytest

from repro_train.commands.demo import (
    MARKER,
    differences,
    logged_view,
    main,
    pick_example,
    prepare_out,
    recheck_stats,
    table,
)
from repro_train.core.typed_config import ConfigError


def test_the_output_folder_holds_only_the_demos_files(tmp_path):
    new = tmp_path / "new"
    assert prepare_out(str(new)) == [] and os.listdir(new) == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_out(str(empty)) == [] and (empty / MARKER).exists()
    # a folder with other files is refused, and nothing in it is touched
    mine = tmp_path / "mine"
    (mine / "grpo-s0").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="holds files the demo did not write"):
        prepare_out(str(mine))
    assert sorted(os.listdir(mine)) == ["grpo-s0", "notes.txt"]
    # a previous demo's output: its own entries go, anything else stays
    prev = tmp_path / "prev"
    for d in ("base", "grpo-s0", "grpo_repro-s0", "grpo-s0x"):
        (prev / d / "run").mkdir(parents=True)
    for f in (MARKER, "table.md", "curves.png", "notes.txt"):
        (prev / f).write_text("x")
    assert prepare_out(str(prev)) == ["base", "curves.png", "grpo-s0", "grpo_repro-s0", "table.md"]
    assert sorted(os.listdir(prev)) == sorted([MARKER, "grpo-s0x", "notes.txt"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        prepare_out(str(tmp_path / "file"))


BASE = {"pass@1": 0.75, "mean_tokens": 50.0, "recheck_rate": 0.4, "backtrack_rate": 0.2}
GRPO = {"pass@1": 0.80, "mean_tokens": 47.5, "recheck_rate": 0.3, "backtrack_rate": 0.15}
REPRO = {"pass@1": 0.80, "mean_tokens": 45.0, "recheck_rate": 0.24, "backtrack_rate": 0.12}


def test_the_sentence_states_grpos_change_and_repros_share():
    text = differences(BASE, GRPO, REPRO)
    # GRPO vs base: 0.4 -> 0.3 is -25%; 50 -> 47.5 tokens -5%; RePro vs GRPO: 0.3 -> 0.24 is -20%, 0.15 -> 0.12 -20%
    assert "GRPO alone, against the base model: re-checks per response 0.400 -> 0.300 (-25%)" in text
    assert "tokens 50.0 -> 47.5 (-5%)" in text and "accuracy 0.750 -> 0.800 (+7%)" in text
    assert "GRPO + RePro against GRPO: re-checks 0.300 -> 0.240 (-20%), backtracks 0.150 -> 0.120 (-20%)" in text
    assert "accuracy 0.800 -> 0.800 (+0%)" in text


def test_table_has_one_column_per_arm():
    lines = table({"base": BASE, "grpo": GRPO, "grpo_repro": REPRO}).splitlines()
    assert "base model" in lines[0] and "GRPO" in lines[0] and "GRPO + RePro" in lines[0]
    assert lines[4].split("|")[2:5] == ["        0.400 ", "        0.300 ", "        0.240 "]
    assert "tokens after first correct" in lines[-1] and lines[-1].rstrip().endswith("- |")  # not in the summaries


def test_a_logged_row_seen_as_the_trainer_scored_it():
    """logged_view: A_tilde from the logged r' by the trainer's function: step 1 gets r'_1 + r'_2 = 0.5 - 1.25,
    step 2 (the re-check) r'_2 = -1.25; the text after the last cut has no score."""
    from repro_train.models.loading import load_tokenizer_at

    tok = load_tokenizer_at("toy")
    first, check, tail = "4 * 2 = 8\n\n", "Let me verify: 4 * 2 = 8. Correct.\n\n", "</think>\n\nFinal answer: 8"
    ids = [tok(t, add_special_tokens=False).input_ids for t in (first, check, tail)]
    c1, c2 = len(ids[0]), len(ids[0]) + len(ids[1])
    row = {
        "step": 3,
        "prompt": "<|bos|>Question: Start with 4. Multiply by 2. What is the result?\n<think>\n",
        "answer": "8",
        "reward": 1.0,
        "response_ids": ids[0] + ids[1] + ids[2],
        "J_b": -9.0,
        "J": [-3.0, -3.0],
        "cuts": [c1, c2],
        "r": [0.4, 0.0],
        "r_norm": [0.5, -1.25],
    }
    v = logged_view(row, tok)
    s1, s2, s3 = v["steps"]
    assert (s1["text"], s2["text"], s3["text"]) == (first, check, tail)
    assert s1["A_tilde"] == pytest.approx(-0.75) and s2["A_tilde"] == pytest.approx(-1.25) and "J" not in s3
    assert (s1["kind"], s2["kind"]) == (None, "recheck")
    assert v["A_tilde"][:c1] == pytest.approx([-0.75] * c1) and v["A_tilde"][c2:] == [0.0] * len(ids[2])
    stats = recheck_stats([v])
    assert stats["recheck"] == {
        "n": 1,
        "r_norm": -1.25,
        "A_tilde": pytest.approx(-1.25),
        "r_norm_negative": 1.0,
        "A_tilde_negative": 1.0,
    }
    assert stats["other"]["n"] == 1 and stats["other"]["A_tilde"] == pytest.approx(-0.75)
    assert pick_example([v]) is v
    assert logged_view({**row, "cuts": []}, tok) is None  # not scored by RePro


def test_demo_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--steps", "1", "--problems", "2", "--samples", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for line in ("accuracy (pass@1)", "re-checks per response", "GRPO alone, against the base model", "RePro's share"):
        assert line in text
    # the example: a logged response with a re-check if one of the step's 4 logged samples has one
    assert ("J_b = " in text) != ("no logged response with a re-check" in text)
    assert "Over the run's 4 logged responses:" in text
    summary = json.loads((out / "results.json").read_text())
    assert set(summary) == {"base", "grpo", "grpo_repro"}
    assert all(s["n_samples"] == 4 for s in summary.values())
    assert os.path.getsize(out / "curves.png") > 20000
    assert (out / "grpo_repro-s0" / "run" / "checkpoint-000001" / "policy" / "model.safetensors").exists()
    rows = [json.loads(x) for x in (out / "grpo_repro-s0" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["repro/cuts_per_rollout"] > 0  # RePro scored the tiny reasoner's rollouts
    grpo = [json.loads(x) for x in (out / "grpo-s0" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "repro/J_b" not in grpo[0]  # the GRPO arm runs without RePro
    assert (out / MARKER).exists() and (out / "table.md").read_text().startswith("|")


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("mine")
    assert main(["--out", str(tmp_path), "--steps", "1"]) == 2
    assert "holds files the demo did not write (x.txt)" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "d"), "--problems", "0"]) == 2
    assert "--problems must be >= 1" in capsys.readouterr().err
