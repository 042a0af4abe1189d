"""The trainer with `repro.preset: authors_code` on CPU with the tiny model: every algorithm's fold
runs, and the run folder's config.yaml holds the preset's resolved values."""

import pytest
import torch
import yaml

from repro_train.tasks.arithmetic import generate, write_jsonl
from tests.helpers.trainer_utils import all_finite, last_checkpoint, make_recipe, metrics, policy_weights, run_inprocess

FOLDS = {
    "grpo": ("group", "advantage"),
    "gae": ("none", "second_gae"),
    "reinforce_pp": ("batch", "advantage"),
    "reinforce_pp_baseline": ("group_mean", "advantage"),
    "rloo": ("group", "advantage"),
}


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


@pytest.mark.parametrize("algo", sorted(FOLDS))
def test_authors_preset_trains_every_algorithm(tmp_path, tiny_model_dir, data_path, algo):
    recipe = make_recipe(
        tmp_path,
        tiny_model_dir,
        data_path,
        algo={"estimator": algo},
        model={"path": tiny_model_dir, "think_end": ""},
        repro={"preset": "authors_code", "alpha": 0.5},
        train={"steps": 1},
    )
    run = run_inprocess(recipe)
    row = metrics(run)[-1]
    assert not all_finite(row), all_finite(row)
    # no '</think>' in a random model's text: every rollout still has its forced whole-response cut
    assert row["repro/scored_frac"] == 1.0 and row["repro/cuts_per_rollout"] >= 1
    saved = yaml.safe_load(open(f"{run}/config.yaml"))["repro"]
    assert (saved["preset"], saved["cut_at"], saved["top_k"], saved["alpha"]) == ("authors_code", "fork", 20, 0.5)
    assert (saved["process_norm"], saved["ppo_process_reward"]) == FOLDS[algo]


def test_authors_preset_changes_the_update(tmp_path, tiny_model_dir, data_path):
    """PPO's second GAE reaches the policy: alpha 0 and alpha 0.5 give different weights."""
    base = dict(algo={"estimator": "gae"}, train={"steps": 1})
    runs = [
        run_inprocess(
            make_recipe(
                tmp_path / str(a), tiny_model_dir, data_path, repro={"preset": "authors_code", "alpha": a}, **base
            )
        )
        for a in (0.0, 0.5)
    ]
    a, b = (policy_weights(last_checkpoint(r)) for r in runs)
    assert any(not torch.equal(a[k], b[k]) for k in a)
