"""Checkpoints hold your model (trainer/checkpoint.py, commands/export.py): policy/ in the model's own dtype, the
trainer state only in the newest train.keep_optimizer_state_last checkpoints, and `repro-train export` writes a
checkpoint's policy as a Hugging Face folder (optionally cast) without overwriting anything."""

import json
import os

import pytest
import torch

from repro_train.commands.export import main as export
from repro_train.trainer.checkpoint import list_checkpoints, resolve_resume
from repro_train.trainer.manifest import verify
from tests.helpers.trainer_utils import make_recipe, policy_weights, run_inprocess, trainer_state


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """3 steps of a model that comes in bfloat16 (trained in float32), a checkpoint per step, 2 kept."""
    from repro_train.tasks.arithmetic import generate, write_jsonl
    from repro_train.testing import build_tiny_model

    tmp = tmp_path_factory.mktemp("bf16")
    model = build_tiny_model(str(tmp / "model"), dtype=torch.bfloat16)
    write_jsonl(generate(8, seed=3, with_traces=False), str(tmp / "d.jsonl"))
    recipe = make_recipe(tmp, model, str(tmp / "d.jsonl"), train={"steps": 3, "save_every": 1})
    return run_inprocess(recipe)


def test_checkpoints_keep_the_state_only_where_a_resume_needs_it(bf16_run):
    older, newest = list_checkpoints(bf16_run)
    assert os.path.basename(newest) == "checkpoint-000003" and os.path.isdir(os.path.join(newest, "state"))
    assert not os.path.exists(os.path.join(older, "state")) and verify(older) is None and verify(newest) is None
    assert resolve_resume("auto", bf16_run) == newest
    model, _ = trainer_state(newest)
    assert {t.dtype for t in model.values() if t.is_floating_point()} == {torch.float32}  # exact resume: full precision


def test_the_policy_is_saved_in_the_models_own_dtype(bf16_run):
    newest = list_checkpoints(bf16_run)[-1]
    weights = policy_weights(newest)
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert json.load(open(os.path.join(newest, "policy", "config.json")))["dtype"] == "bfloat16"
    model, _ = trainer_state(newest)
    for name, t in weights.items():  # the trained float32 weights, rounded once
        assert torch.equal(t, model[f"policy.{name}"].to(torch.bfloat16)), name


def test_export_writes_your_model(bf16_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = str(tmp_path / "mine")
    assert export([bf16_run, "--out", out]) == 0
    assert "your model" in capsys.readouterr().out
    newest = list_checkpoints(bf16_run)[-1]
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.dtype == torch.bfloat16 and AutoTokenizer.from_pretrained(out).eos_token == "<|eos|>"
    for name, t in policy_weights(newest).items():
        assert torch.equal(loaded.state_dict()[name], t), name
    cast = str(tmp_path / "f32")
    assert export([bf16_run, "--out", cast, "--step", "2", "--dtype", "float32"]) == 0
    older = policy_weights(list_checkpoints(bf16_run)[0])
    assert all(torch.equal(t, older[k].float()) for k, t in policy_weights(cast, "").items())
    assert json.load(open(os.path.join(cast, "config.json")))["dtype"] == "float32"
    assert export([bf16_run, "--out", out]) == 2  # never over an existing model
    assert "exists and is not an empty folder" in capsys.readouterr().err
