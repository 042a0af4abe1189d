"""2 ranks on CPU (torchrun + gloo DDP, and DeepSpeed ZeRO-2 via `accelerate launch`) give the
same weights as 1 process with the same global batch; a full 3-step run completes under both."""

import os
import sys

import pytest

from repro_train.tasks.arithmetic import generate, write_jsonl
from tests.helpers.trainer_utils import (
    REPO,
    last_checkpoint,
    make_recipe,
    max_abs_diff,
    metrics,
    policy_weights,
    run_cli,
    run_inprocess,
)

pytestmark = pytest.mark.distributed
BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("dist")
    data = tmp / "toy.jsonl"
    write_jsonl(generate(8, seed=11, with_traces=False), str(data))
    # 4 prompts x 4 samples per step; per-prompt seeds make the rollouts independent of the ranks
    sections = dict(
        rollout={"prompts_per_step": 4, "per_prompt_seed": True},
        algo={"micro_batch_size": 2},
        train={"steps": 3, "save_every": 1, "keep_last": 3},
    )
    recipe = make_recipe(tmp, tiny_model_dir, str(data), **sections)
    reference = run_inprocess(recipe, f"train.output_dir={tmp / 'single'}")
    return tmp, recipe, reference


def check_against_reference(run_dir, reference) -> float:
    """Max |w_2ranks - w_1process| after the first update (identical rollouts); the run did 3 steps."""
    ref_rows, rows = metrics(reference), metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert last_checkpoint(run_dir).endswith("checkpoint-000003")
    assert rows[0]["reward/mean"] == pytest.approx(ref_rows[0]["reward/mean"], abs=1e-9)  # same rollouts
    assert rows[0]["train/pg_loss"] == pytest.approx(ref_rows[0]["train/pg_loss"], abs=1e-5)
    step1 = lambda d: policy_weights(os.path.join(d, "checkpoint-000001"))  # noqa: E731
    return max_abs_diff(step1(run_dir), step1(reference))


def test_torchrun_two_ranks_ddp(setup):
    tmp, recipe, reference = setup
    out = tmp / "ddp"
    res = run_cli(
        ["train", "--config", recipe, f"train.output_dir={out}"],
        launcher=[f"{BIN}/torchrun", "--standalone", "--nproc_per_node", "2", "-m", "repro_train"],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ddp on 2 process(es)" in res.stdout
    assert check_against_reference(str(out), reference) < 1e-4


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_two_ranks(setup, stage):
    """ZeRO-2, and ZeRO-3 (sharded weights gathered for generation), through the shipped launcher configs."""
    tmp, recipe, reference = setup
    out = tmp / stage
    res = run_cli(
        ["train", "--config", recipe, f"train.output_dir={out}", "train.device=auto"],
        launcher=[
            f"{BIN}/accelerate",
            "launch",
            "--config_file",
            f"{REPO}/launch/accelerate/{stage}.yaml",
            "--num_processes",
            "2",
            "-m",
            "repro_train",
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{stage} on 2 process(es)" in res.stdout
    assert check_against_reference(str(out), reference) < 1e-4


def test_ppo_under_zero3_two_ranks(setup, tmp_path):
    """The critic's values travel through ZeRO-3's output hooks (a ModelOutput key), then GAE."""
    tmp, recipe, _ = setup
    reference = run_inprocess(recipe, f"train.output_dir={tmp / 'single-gae'}", "algo.estimator=gae", "train.steps=1")
    out = tmp / "zero3-gae"
    res = run_cli(
        ["train", "--config", recipe, f"train.output_dir={out}", "algo.estimator=gae", "train.steps=1"],
        launcher=[
            f"{BIN}/accelerate",
            "launch",
            "--config_file",
            f"{REPO}/launch/accelerate/zero3.yaml",
            "--num_processes",
            "2",
            "-m",
            "repro_train",
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    step1 = lambda d, name: policy_weights(os.path.join(d, "checkpoint-000001"), name)  # noqa: E731
    assert max_abs_diff(step1(str(out), "policy"), step1(reference, "policy")) < 1e-4
    assert max_abs_diff(step1(str(out), "critic"), step1(reference, "critic")) < 1e-4


def test_fsdp2_on_cpu_is_refused_clearly(setup):
    tmp, recipe, _ = setup
    res = run_cli(
        ["train", "--config", recipe, f"train.output_dir={tmp / 'fsdp2'}"],
        launcher=[
            f"{BIN}/accelerate",
            "launch",
            "--config_file",
            f"{REPO}/launch/accelerate/fsdp2.yaml",
            "--num_processes",
            "2",
            "-m",
            "repro_train",
        ],
    )
    assert res.returncode != 0
    assert "FSDP2 needs GPUs" in res.stderr


def test_zero3_weight_push_gathers_one_parameter_at_a_time(setup, tiny_model_dir):
    """What the vLLM engine receives under ZeRO-3 (2 ranks): every policy weight whole, under its
    Hugging Face name, equal to the model's; no critic weight; never more than one partitioned
    parameter gathered at a time, and none left gathered afterwards."""
    import torch
    from transformers import AutoModelForCausalLM

    tmp, recipe, _ = setup
    out = tmp / "push-zero3"
    out.mkdir()
    res = run_cli(
        [f"{REPO}/tests/helpers/dist_push_weights.py", recipe, str(out)],
        launcher=[
            f"{BIN}/accelerate",
            "launch",
            "--config_file",
            f"{REPO}/launch/accelerate/zero3.yaml",
            "--num_processes",
            "2",
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = torch.load(out / "pushed.pt")
    assert got["strategy"] == "zero3" and got["partitioned"] > 10
    assert got["most_whole"] == 1 and got["after"] == 0
    want = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())
    assert set(got["weights"]) == set(want)
    for name, t in want.items():
        assert torch.equal(got["weights"][name], t.detach()), name
