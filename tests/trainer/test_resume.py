"""A resume tells the truth (repro_train/trainer/run_folder.py): settings that change what is trained are refused
naming each key, or applied, printed and recorded with train.resume_changes=allow; a checkpoint of another critic
layout or other weights is refused before anything in the run folder changes; an older checkpoint of the same run
is not continued beside newer ones."""

import json
import os

import pytest

from repro_train.core.typed_config import ConfigError
from repro_train.trainer.run_folder import RESUMES, changed_settings
from tests.helpers.trainer_utils import last_checkpoint, make_recipe, metrics, run_inprocess, trainer_state
from tests.trainer.test_run_folder import snapshot


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


def test_which_settings_count_as_changes():
    saved = {
        "optim": {"lr": 0.001, "scheduler": "constant"},
        "train": {"steps": 2, "save_every": 1, "seed": 0},
        "log": {"wandb": True},
        "reward": {"timeout_s": 5.0, "functions": [{"name": "f", "kwargs": {"api_key": "<redacted>"}}]},
        "rollout": {"group_size": 4, "vllm": {"max_num_seqs": 256}},
    }
    now = json.loads(json.dumps(saved))
    now["train"].update(steps=9, save_every=3, seed=1)  # steps: free under a constant learning rate
    now["log"]["wandb"] = False
    now["reward"]["timeout_s"] = 60.0
    now["reward"]["functions"][0]["kwargs"]["api_key"] = "sk-real"  # a redacted secret is not compared
    now["rollout"].update(group_size=8, vllm={"max_num_seqs": 64})
    assert changed_settings(saved, now) == {"rollout.group_size": (4, 8), "train.seed": (0, 1)}
    saved["optim"]["scheduler"] = now["optim"]["scheduler"] = "linear"  # the schedule runs over train.steps
    assert "train.steps" in changed_settings(saved, now)


def test_changed_settings_are_refused_naming_each_key(tmp_path, tiny_model_dir, data_path):
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 2, "save_every": 2})
    run = run_inprocess(recipe)
    before = snapshot(run)
    with pytest.raises(ConfigError) as e:
        run_inprocess(recipe, "train.resume=auto", "train.steps=3", "optim.lr=0.01", "algo.clip_high=0.28")
    msg = str(e.value)
    assert f"{run}/checkpoint-000002 (step 2) was trained with other settings" in msg
    assert "  algo.clip_high: 0.2 -> 0.28\n  optim.lr: 0.001 -> 0.01\n" in msg  # each key; train.steps is free
    assert "train.resume_changes=allow" in msg
    assert snapshot(run) == before  # nothing written: not config.yaml, not the logs


def test_allowed_changes_are_applied_printed_and_recorded(tmp_path, tiny_model_dir, data_path, capsys):
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 2, "save_every": 2})
    run = run_inprocess(recipe)
    capsys.readouterr()
    run_inprocess(recipe, "train.resume=auto", "train.steps=3", "optim.lr=0.01", "train.resume_changes=allow")
    out = capsys.readouterr().out
    assert "train.resume_changes=allow: from step 3 on, changed settings apply:\n  optim.lr: 0.001 -> 0.01" in out
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["train/lr"] == pytest.approx(1e-3) and rows[2]["train/lr"] == pytest.approx(1e-2)
    _, optim = trainer_state(last_checkpoint(run))
    assert optim["param_groups"][0]["lr"] == pytest.approx(1e-2)  # what the optimizer stepped with
    entry = json.loads(open(os.path.join(run, RESUMES)).read().splitlines()[-1])
    assert entry["step"] == 2 and entry["changes"] == {"optim.lr": [0.001, 0.01]}
    assert "lr: 0.01" in open(os.path.join(run, "config.yaml")).read()


def test_an_incompatible_checkpoint_is_refused_before_anything_is_written(tmp_path, tiny_model_dir, data_path):
    from repro_train.testing import build_tiny_model

    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 1})
    run = run_inprocess(recipe)
    before = snapshot(run)
    allow = ("train.resume=auto", "train.steps=2", "train.resume_changes=allow")
    with pytest.raises(ConfigError, match="trained without a critic, and algo.estimator = gae needs one"):
        run_inprocess(recipe, *allow, "algo.estimator=gae")
    other = build_tiny_model(str(tmp_path / "other"), hidden=32)
    with pytest.raises(ConfigError) as e:
        run_inprocess(recipe, *allow, f"model.path={other}")
    assert f"its policy has other weights than model.path = {other}: lm_head.weight [384, 64] vs [384, 32]" in str(
        e.value
    )
    assert "Nothing in" in str(e.value) and snapshot(run) == before


def test_an_older_checkpoint_of_the_same_run_is_not_continued_beside_newer_ones(tmp_path, tiny_model_dir, data_path):
    recipe = make_recipe(
        tmp_path, tiny_model_dir, data_path, train={"steps": 2, "save_every": 1, "keep_optimizer_state_last": 2}
    )
    run = run_inprocess(recipe)
    first = os.path.join(run, "checkpoint-000001")
    with pytest.raises(ConfigError, match="is older than checkpoint-000002 of the same run"):
        run_inprocess(recipe, f"train.resume={first}")
    run_inprocess(recipe, f"train.resume={first}", "train.overwrite=true")  # the newer history goes
    assert [r["step"] for r in metrics(run)] == [1, 2]
    assert [json.loads(line)["checkpoint"] for line in open(os.path.join(run, RESUMES))] == [first]
