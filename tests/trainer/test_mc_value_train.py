"""process.source: mc_value in the trainer (CPU, tiny model): the recipe checks, and a short run whose process
rewards are Monte-Carlo value increments: finite, logged, and a different update from J's."""

import os
import sys

import pytest
import torch

from repro_train.config import ConfigError, load
from repro_train.tasks.arithmetic import generate, write_jsonl
from tests.helpers.trainer_utils import (
    all_finite,
    last_checkpoint,
    make_recipe,
    max_abs_diff,
    metrics,
    policy_weights,
    run_cli,
    run_inprocess,
)

ODD = "def odd_length(prompts, completions, answers, **columns):\n    return [float(len(t) % 2) for t in completions]\n"
"""A correctness reward a random tiny model passes about half the time, continuation by continuation."""


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


def recipe(tmp_path, model_dir, data_path, source: str, **sections) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "odd.py").write_text(ODD)
    reward = {"functions": [{"name": f"{tmp_path / 'odd.py'}:odd_length", "correctness": True}], "num_workers": 1}
    return make_recipe(
        tmp_path,
        model_dir,
        data_path,
        reward=reward,
        repro={"probe_prefix": "\n\nFinal answer: ", "alpha": 0.5},
        process={"source": source, "mc_continuations": 3},
        **sections,
    )


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["repro.enabled=false"], "'process.source' = mc_value needs repro.enabled: true"),
        (["process.mc_continuations=0"], "'process.mc_continuations' must be >= 1"),
        (["rollout.min_new_tokens=4"], "'process.source' = mc_value needs rollout.min_new_tokens = 0"),
        (["process.source=mc"], "'process.source'"),
    ],
)
def test_recipe_checks_name_the_key(tmp_path, tiny_model_dir, data_path, overrides, needle):
    path = recipe(tmp_path, tiny_model_dir, data_path, "mc_value")
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load(path, overrides)
    assert load(path).process.source == "mc_value"
    assert load(path, ["process.source=repro", "repro.enabled=false"]).process.source == "repro"


def test_two_steps_with_mc_values_are_finite_and_change_the_update(tmp_path, tiny_model_dir, data_path):
    steps = {"train": {"steps": 2}}
    j_run = run_inprocess(recipe(tmp_path / "j", tiny_model_dir, data_path, "repro", **steps))
    mc_run = run_inprocess(recipe(tmp_path / "mc", tiny_model_dir, data_path, "mc_value", **steps))
    rows = metrics(mc_run)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert not all_finite(r), all_finite(r)
        assert 0.0 <= r["repro/mc/V_b"] <= 1.0 and 0.0 <= r["repro/mc/V_last"] <= 1.0
        # at least the prompt and one cut per scored rollout; K = 3 continuations of each, <= 12 tokens
        assert r["repro/mc/prefixes"] >= 1.0 and 0 < r["repro/mc/tokens"] <= 12 * 3 * r["repro/mc/prefixes"]
        assert r["time/mc_s"] > 0 and r["repro/cuts_per_rollout"] > 0
    assert "repro/mc/V_b" not in metrics(j_run)[0]
    # the same rollouts (per-prompt seeds) and the same outcome rewards: only the process rewards differ
    assert [r["reward/mean"] for r in metrics(j_run)][:1] == [r["reward/mean"] for r in rows][:1]
    assert metrics(j_run)[0]["repro/J_b"] == rows[0]["repro/J_b"]
    assert metrics(j_run)[0]["repro/r"] != rows[0]["repro/r"]
    a, b = policy_weights(last_checkpoint(j_run)), policy_weights(last_checkpoint(mc_run))
    assert all(torch.isfinite(b[k]).all() for k in b)
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.distributed
def test_two_ranks_equal_one_process(tmp_path, tiny_model_dir, data_path):
    """torchrun, 2 ranks (gloo DDP) against 1 process, process_norm batch (the pool's stats are all-reduced): the
    same values (seeds from the prompt's slot and the rollout's place, not the rank) and the same first update."""
    sections = dict(
        rollout={"prompts_per_step": 4, "per_prompt_seed": True},
        algo={"micro_batch_size": 2},
        train={"steps": 1, "device": "cpu"},
    )
    path = recipe(tmp_path, tiny_model_dir, data_path, "mc_value", **sections)
    one = run_inprocess(path, "repro.process_norm=batch", f"train.output_dir={tmp_path / 'one'}")
    two = tmp_path / "two"
    res = run_cli(
        ["train", "--config", path, "repro.process_norm=batch", f"train.output_dir={two}"],
        launcher=[
            f"{os.path.dirname(sys.executable)}/torchrun",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "repro_train",
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = metrics(one)[0], metrics(str(two))[0]
    for key in ("reward/mean", "repro/mc/V_b", "repro/mc/V_last", "repro/mc/prefixes", "repro/r"):
        assert b[key] == pytest.approx(a[key], abs=1e-9), key
    assert max_abs_diff(policy_weights(last_checkpoint(one)), policy_weights(last_checkpoint(str(two)))) < 1e-4
