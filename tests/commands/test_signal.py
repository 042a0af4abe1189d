"""`repro-train signal`: group counts and notes by hand; its steps are training's steps minus the update."""

import json
import math

import pytest
import torch

from repro_train.commands.signal import advice, format_table, main, mean_row, signal_steps, with_process
from repro_train.config import load
from repro_train.tasks.arithmetic import generate, write_jsonl
from repro_train.trainer.metrics import group_counts
from tests.helpers.trainer_utils import make_recipe, metrics, reset_accelerate, run_inprocess


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


def test_group_counts_by_hand():
    # groups 5: all right; 7: mixed; 9: all wrong; 2: all correct but shaped rewards differ
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.9])
    correct = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1]).bool()
    ids = torch.tensor([5, 5, 5, 7, 7, 7, 9, 9, 9, 2, 2])
    n, counts = group_counts(rewards, correct, ids)
    assert n == 4
    assert counts == {"zero_std": 2, "all_correct": 2, "all_wrong": 1}


def test_process_share_and_mean_by_hand():
    rows = [
        {"adv/abs_mean": 0.5, "repro/process_adv_abs": 1.0, "accuracy": 0.25},
        {"adv/abs_mean": 0.8, "repro/process_adv_abs": 2.0, "accuracy": math.nan},
    ]
    out = [with_process(r, alpha=0.1) for r in rows]
    assert out[0]["process"] == pytest.approx(0.1) and out[0]["process_share"] == pytest.approx(0.2)
    assert out[1]["process"] == pytest.approx(0.2) and out[1]["process_share"] == pytest.approx(0.25)
    mean = mean_row(out)
    assert mean["accuracy"] == 0.25  # the NaN step is skipped
    assert mean["process_share"] == pytest.approx(0.225)
    assert "process" not in with_process({"adv/abs_mean": 0.5}, alpha=0.1)  # RePro off
    table = format_table(out, repro_on=True).splitlines()
    assert table[0].count("|") == table[2].count("|") == 15  # 13 columns + step, no stray pipes
    assert table[-1].startswith("| mean | 0.250 |")


def test_advice_speaks_only_where_the_numbers_say_so():
    cfg = load(None, ["repro.enabled=true", "repro.alpha=0.05", "rollout.max_new_tokens=64"])
    quiet = {
        "groups/zero_std_frac": 0.2,
        "groups/all_correct_frac": 0.1,
        "groups/all_wrong_frac": 0.1,
        "truncated_frac": 0.05,
        "repro/cuts_per_rollout": 4.0,
        "process_share": 0.3,
    }
    assert advice(quiet, cfg) == []
    loud = {**quiet, "groups/zero_std_frac": 0.75, "groups/all_wrong_frac": 0.6, "truncated_frac": 0.25}
    loud.update({"repro/cuts_per_rollout": 1.7, "process_share": 0.04})
    notes = advice(loud, cfg)
    assert len(notes) == 4
    assert notes[0].startswith("75% of prompt groups") and "mostly all wrong" in notes[0]
    assert "25% of responses" in notes[1] and "max_new_tokens=64" in notes[1]
    assert "1.70 cuts" in notes[2] and "4% of the advantage (alpha 0.05)" in notes[3]
    assert len(advice(loud, load(None, ["repro.enabled=false"]))) == 2  # no RePro notes with RePro off
    # PPO's critic and REINFORCE++'s batch baseline still learn from flat groups: only the truncation note
    for estimator in ("gae", "reinforce_pp"):
        notes = advice(loud, load(None, ["repro.enabled=false", f"algo.estimator={estimator}"]))
        assert len(notes) == 1 and "max_new_tokens" in notes[0]


def test_first_step_is_trainings_first_step_and_nothing_is_updated(tmp_path, tiny_model_dir, data_path):
    from repro_train.trainer.runtime import build_runtime

    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, repro={"enabled": True, "probe_prefix": "\nAnswer: "})
    reset_accelerate()
    try:
        rt = build_runtime(load(recipe, [f"train.output_dir={tmp_path / 'sig'}"]))
        before = {k: v.clone() for k, v in rt.model.state_dict().items()}
        rows = signal_steps(rt, 2, progress=False)
        after = rt.model.state_dict()
        rt.close()
    finally:
        reset_accelerate()
    assert all(torch.equal(before[k], after[k]) for k in before)
    trained = metrics(run_inprocess(recipe, "train.steps=1"))[0]
    keys = [k for k in rows[0] if not k.startswith("time/")]
    assert "groups/zero_std_frac" in keys and "repro/cuts_per_rollout" in keys
    assert {k: rows[0][k] for k in keys} == {k: trained[k] for k in keys}
    assert rows[1]["accuracy"] == rows[1]["accuracy"]  # a second step with fresh prompts, finite


def test_cli_writes_one_line_per_step_and_prints_the_table(tmp_path, tiny_model_dir, data_path, capsys):
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, repro={"enabled": False})
    reset_accelerate()
    try:
        assert main(["--config", recipe, "--steps", "2", "--out", str(tmp_path / "s"), "log.progress=false"]) == 0
    finally:
        reset_accelerate()
    lines = [json.loads(x) for x in (tmp_path / "s" / "signal.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    printed = capsys.readouterr().out
    assert "| mean |" in printed and "cuts" not in printed  # RePro off in this recipe: no RePro columns
    assert not (tmp_path / "s" / "checkpoints").exists()
    assert main(["--config", recipe, "--steps", "0"]) == 2
