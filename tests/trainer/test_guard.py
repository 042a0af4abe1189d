"""Non-finite numbers (repro_train/trainer/guard.py): each injected where it arises; the step is
not applied, where it appeared is logged, and max_bad_steps bad steps in a row stop the run with a
checkpoint of the last good weights."""

import json
import math
import os

import pytest
import torch

from repro_train.trainer import experience, loop
from repro_train.trainer.guard import NonFiniteStop
from tests.helpers.trainer_utils import last_checkpoint, make_recipe, metrics, policy_weights, run_inprocess


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


class NanGrad(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def first_valid(mask):
    i, j = mask.nonzero()[0].tolist()
    return i, j


def poison_logprobs(batch):
    batch.old_logprobs[first_valid(batch.mask)] = float("nan")


def poison_J(batch):
    batch.repro.J[first_valid(batch.repro.mask)] = float("-inf")


def poison_advantages(batch):
    batch.advantages[first_valid(batch.mask)] = float("inf")


def inject(monkeypatch, where: str, steps: set[int]):
    """Make step indices in `steps` (0-based calls) produce a non-finite value at `where`."""
    calls = {"n": -1}
    if where in ("log-probs", "J", "advantages"):
        phase = "forward_phase" if where == "log-probs" else "advantage_phase"
        poison = {"log-probs": poison_logprobs, "J": poison_J, "advantages": poison_advantages}[where]
        orig = getattr(experience, phase)

        def wrapped(rt, batch):
            orig(rt, batch)
            calls["n"] += 1
            if calls["n"] in steps:
                poison(batch)

        monkeypatch.setattr(experience, phase, wrapped)
    else:  # loss / grad_norm: per micro-batch; the step index comes from the rollout phase
        orig_roll, orig_loss = experience.rollout_phase, loop.micro_loss

        def roll(rt, step):
            calls["n"] = step
            return orig_roll(rt, step)

        def micro(rt, batch, rows, norms):
            loss, stats = orig_loss(rt, batch, rows, norms)
            if calls["n"] in steps:
                loss = loss * float("nan") if where == "loss" else NanGrad.apply(loss)
            return loss, stats

        monkeypatch.setattr(experience, "rollout_phase", roll)
        monkeypatch.setattr(loop, "micro_loss", micro)


WHERE = ["log-probs", "J", "advantages", "loss", "grad_norm"]


@pytest.mark.parametrize("where", WHERE)
def test_a_bad_step_is_not_applied_and_logged(tmp_path, tiny_model_dir, data_path, monkeypatch, capsys, where):
    inject(monkeypatch, where, steps={0})
    # old log-probs exist before the update only when recomputed (an on-policy step takes the update's own)
    algo = {"old_logprobs": "recompute"} if where == "log-probs" else {}
    recipe = make_recipe(
        tmp_path, tiny_model_dir, data_path, train={"steps": 2}, repro={"probe_prefix": "\n\nFinal answer: "}, algo=algo
    )
    run = run_inprocess(recipe)
    rows = metrics(run)
    assert rows[0]["guard/skipped_step"] == 1 and rows[0][f"guard/nonfinite/{where}"] >= 1
    assert rows[1]["guard/skipped_step"] == 0 and not any(k.startswith("guard/nonfinite") for k in rows[1])
    state = json.load(open(os.path.join(last_checkpoint(run), "trainer_state.json")))
    assert state["optimizer_steps"] == 1  # only step 2 was applied
    w = policy_weights(last_checkpoint(run))
    assert all(torch.isfinite(v).all() for v in w.values())
    assert f"step 1: non-finite {where}" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["advantages", "grad_norm"])
def test_bad_steps_in_a_row_stop_with_the_last_good_weights(tmp_path, tiny_model_dir, data_path, monkeypatch, where):
    from safetensors.torch import load_file

    initial = load_file(f"{tiny_model_dir}/model.safetensors")
    inject(monkeypatch, where, steps={1, 2, 3, 4})  # step 1 good, then bad from step 2 on
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 6, "max_bad_steps": 2})
    with pytest.raises(NonFiniteStop, match=rf"2 steps in a row \(2-3\).*step 2: {where}; step 3: {where}"):
        run_inprocess(recipe)
    run = str(tmp_path / "run")
    ckpt = last_checkpoint(run)
    assert ckpt.endswith("checkpoint-000003")
    assert json.load(open(os.path.join(ckpt, "trainer_state.json")))["optimizer_steps"] == 1
    w = policy_weights(ckpt)
    assert all(torch.isfinite(v).all() for v in w.values())
    assert any(not torch.equal(w[k], initial[k]) for k in w)  # step 1 was applied
    rows = metrics(run)
    assert [r["guard/skipped_step"] for r in rows] == [0, 1, 1]
    assert math.isfinite(rows[0]["train/pg_loss"])
