"""The CPU tail off the critical path (trainer/cpu_tail.py, rollout.overlap_cpu_tail): a step whose decoding, rewards
and RePro plan run on background threads gives exactly the batch and the update of the step without; a reward's
exception and its on_error policy surface in the main thread; no tail thread outlives a step, on an error either."""

import dataclasses
import sys
import threading
import traceback

import pytest
import torch

from repro_train.config import load
from repro_train.rewards.outcome import RewardFailed
from repro_train.tasks.arithmetic import generate, write_jsonl
from repro_train.trainer import experience
from repro_train.trainer.cpu_tail import CpuTail
from repro_train.trainer.experience import make_experience
from repro_train.trainer.loop import update_phase
from repro_train.trainer.runtime import build_runtime
from tests.helpers.trainer_utils import make_recipe, reset_accelerate

REWARDS = """
import threading, time

THREADS = []  # the threads each call ran on

def parity(prompts, completions, answers, **columns):
    \"\"\"Even answers: 1.0 for every response (a group without outcome signal, refilled); odd: the digit share.\"\"\"
    THREADS.append(threading.current_thread().name)
    return [1.0 if int(a) % 2 == 0 else sum(ch.isdigit() for ch in t) / max(len(t), 1)
            for t, a in zip(completions, answers)]

def raises(prompts, completions, answers, **columns):
    THREADS.append(threading.current_thread().name)
    raise ValueError("the grader fell over on purpose")

def slow(prompts, completions, answers, **columns):
    THREADS.append(threading.current_thread().name)
    time.sleep(0.5)  # still running when the main thread fails
    return [0.5] * len(completions)
"""


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tail")
    rows = generate(40, seed=5, with_traces=False)
    even = [r for r in rows if int(r["answer"]) % 2 == 0]
    odd = [r for r in rows if int(r["answer"]) % 2 == 1]
    # step 0 draws rows 0-1: an even answer (all 1.0, correct: no outcome signal, refilled) and an odd one
    write_jsonl([even[0], odd[0], odd[1], even[1]] + odd[2:4], str(tmp / "toy.jsonl"))
    (tmp / "rewards.py").write_text(REWARDS)
    return tmp


def recipe(tmp_path, model_dir, data_path, fn="parity", **sections) -> str:
    fns = [{"name": f"{data_path / 'rewards.py'}:{fn}", "correctness": True}]  # even answers are correct
    sections["reward"] = {"functions": fns, **sections.get("reward", {})}
    sections["repro"] = {"probe_prefix": "\n\nFinal answer: ", **sections.get("repro", {})}
    sections["data"] = {"shuffle": False}
    return make_recipe(tmp_path, model_dir, str(data_path / "toy.jsonl"), **sections)


def reward_module(data_path):
    return sys.modules[f"repro_reward_file:{(data_path / 'rewards.py').resolve()}"]


def in_background(rt) -> None:
    """The recipe's custom reward treated like math_verify, a function that times its own items: called in
    OutcomeReward.prefetch, on the tail's outcome thread (custom functions run on the main thread, under the
    deadline's signal)."""
    rt.reward._fns = [dataclasses.replace(b, guarded=False) for b in rt.reward._fns]


def one_step(recipe_path: str, overlap: bool, patch=None):
    """Step 0's batch and update statistics with rollout.overlap_cpu_tail = `overlap`; `patch(rt)` runs first."""
    reset_accelerate()
    try:
        rt = build_runtime(load(recipe_path, [f"rollout.overlap_cpu_tail={str(overlap).lower()}"]))
        try:
            seen = []
            if rt.repro is not None:  # where RePro's plan ran
                plan = rt.repro.plan
                rt.repro.plan = lambda *a: seen.append(threading.current_thread().name) or plan(*a)
            if patch is not None:
                patch(rt)
            batch = make_experience(rt, 0)
            stats = update_phase(rt, batch)
            faults = rt.reward.take_faults()
        finally:
            rt.close()
    finally:
        reset_accelerate()
    return batch, stats, faults, seen


def tail_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("repro-train-")]


TENSORS = (
    "rewards",
    "correct",
    "truncated",
    "advantages",
    "returns",
    "old_logprobs",
    "entropy",
    "ref_logprobs",
    "values",
    "is_weights",
)


def assert_same_batch(a, b) -> None:
    assert a.texts == b.texts and a.prompt_index == b.prompt_index and a.response_ids == b.response_ids
    for name in TENSORS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=name)
    assert a.reward_parts.keys() == b.reward_parts.keys()
    for k in a.reward_parts:
        assert torch.equal(a.reward_parts[k], b.reward_parts[k])
    assert (a.unscorable, a.sampling) == (b.unscorable, b.sampling)
    assert a.plan == b.plan  # requests, segmentations and skip reasons of every rollout
    assert (a.repro is None) == (b.repro is None)
    if a.repro is not None:
        for f in ("J_b", "J", "cuts", "mask", "S", "r", "r_norm", "process_adv"):
            torch.testing.assert_close(getattr(a.repro, f), getattr(b.repro, f), rtol=0, atol=0, equal_nan=True)
        assert a.repro.skipped == b.repro.skipped


def assert_same_update(a: dict, b: dict) -> None:
    values = lambda d: {k: v for k, v in d.items() if not k.endswith("_s")}  # noqa: E731 - timings differ
    assert values(a) == values(b) and "pg_loss" in values(a)


SETTINGS = {
    # GRPO + RePro, on-policy, the policy pass only for RePro; dynamic sampling refills the even answers' groups
    "grpo_repro_refill": dict(rollout={"dynamic_sampling": "outcome", "refill_rounds": 1}),
    # PPO (critic) + reference (KL) + a separate old-log-prob pass, the kimi length shaper, and a plan that reads the
    # outcome (repro.apply_to: the rewards are joined before the plan, which still runs beside the policy pass)
    "ppo_ref_shaper_apply_to": dict(
        algo={"estimator": "gae", "kl_coef": 0.05, "old_logprobs": "recompute", "micro_batch_size": 2},
        shaping={"methods": ["kimi"]},
        repro={"apply_to": "incorrect"},
    ),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_a_step_with_the_tail_overlapped_is_the_step_without(tmp_path, tiny_model_dir, data_path, setting):
    rec = recipe(tmp_path, tiny_model_dir, data_path, **SETTINGS[setting])
    on, on_stats, on_faults, on_plan = one_step(rec, True)
    off, off_stats, off_faults, off_plan = one_step(rec, False)
    assert_same_batch(on, off)
    assert_same_update(on_stats, off_stats)
    assert on_faults == off_faults
    # the overlap really ran: the plan on the tail's thread, the rewards' calls joined before the advantages
    assert on_plan and all(name.startswith("repro-train-plan") for name in on_plan)
    assert off_plan and set(off_plan) == {"MainThread"}
    assert {"cpu_tail_s", "cpu_tail_hidden_s", "decode_s", "reward_s", "plan_s"} <= on.timings.keys()
    assert off.timings["cpu_tail_hidden_s"] == 0.0  # everything ran on the main thread
    if setting == "grpo_repro_refill":
        assert on.sampling["rounds"] == 1 and on.sampling["dropped"] > 0  # the refill ran
    else:
        assert on.shaping is not None and on.ref_logprobs is not None and on.values is not None
    assert tail_threads() == []


def test_a_reward_computed_on_the_tail_thread_gives_the_same_step(tmp_path, tiny_model_dir, data_path):
    rec = recipe(tmp_path, tiny_model_dir, data_path)
    on, on_stats, _, _ = one_step(rec, True, in_background)
    on_threads = list(reward_module(data_path).THREADS)  # (each runtime imports the reward file afresh)
    off, off_stats, _, _ = one_step(rec, False, in_background)
    off_threads = list(reward_module(data_path).THREADS)
    assert_same_batch(on, off)
    assert_same_update(on_stats, off_stats)
    assert on_threads and all(t.startswith("repro-train-outcome") for t in on_threads)
    assert off_threads and set(off_threads) == {"MainThread"}


def test_an_exception_on_the_tail_thread_is_raised_in_the_main_thread(tmp_path, tiny_model_dir, data_path):
    rec = recipe(tmp_path, tiny_model_dir, data_path, fn="raises")
    with pytest.raises(ValueError, match="the grader fell over on purpose") as err:
        one_step(rec, True, in_background)
    reward_module_path = str((data_path / "rewards.py").resolve())
    frames = traceback.extract_tb(err.value.__traceback__)
    assert any(f.filename == reward_module_path and f.name == "raises" for f in frames)  # its own traceback
    assert any(f.name == "finish_outcome" for f in frames)  # raised again in the main thread's join
    assert reward_module(data_path).THREADS[-1].startswith("repro-train-outcome")
    assert tail_threads() == []


@pytest.mark.parametrize("on_error", ["error", "skip"])
def test_a_failing_reward_under_the_overlap_fails_as_without_it(tmp_path, tiny_model_dir, data_path, on_error):
    """A custom function runs on the main thread under its deadline in either mode: the same message, the same
    skipped rows."""
    rec = recipe(tmp_path, tiny_model_dir, data_path, fn="raises", reward={"on_error": on_error})
    if on_error == "error":
        messages = []
        for overlap in (True, False):
            with pytest.raises(RewardFailed) as err:
                one_step(rec, overlap)
            messages.append(str(err.value))
        assert messages[0] == messages[1] and "raised ValueError: the grader fell over on purpose" in messages[0]
    else:
        on, _, on_faults, _ = one_step(rec, True)
        off, _, off_faults, _ = one_step(rec, False)
        assert on_faults == off_faults == {"errors": len(on.rewards), "timeouts": 0}
        assert torch.equal(on.rewards, off.rewards) and on.unscorable == off.unscorable == len(on.rewards)
    assert tail_threads() == []


def test_an_error_in_the_main_thread_leaves_no_tail_thread_running(tmp_path, tiny_model_dir, data_path, monkeypatch):
    rec = recipe(tmp_path, tiny_model_dir, data_path, fn="slow")

    def fails(rt, batch, plan):
        raise RuntimeError("the device fell over")

    monkeypatch.setattr(experience, "policy_pass", fails)
    with pytest.raises(RuntimeError, match="the device fell over"):
        one_step(rec, True, in_background)
    assert tail_threads() == []


@pytest.mark.parametrize("overlap", [True, False])
def test_the_tail_runs_jobs_in_order_and_raises_where_it_is_read(overlap):
    tail = CpuTail(overlap)
    order = []
    a = tail.submit("outcome", "a_s", lambda: order.append("a") or 1)
    b = tail.submit("outcome", "b_s", lambda: order.append("b") or a.result() + 1)
    assert tail.wait(b) == 2 and order == ["a", "b"]
    if overlap:
        bad = tail.submit("plan", None, lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            tail.wait(bad)
    else:
        with pytest.raises(ZeroDivisionError):  # inline: raised where it is called
            tail.submit("plan", None, lambda: 1 / 0)
    with pytest.raises(ValueError, match="unknown lane 'gpu'; choices: outcome, plan"):
        tail.submit("gpu", None, print)
    timings = {}
    tail.close(timings)
    assert set(timings) == {"a_s", "b_s", "cpu_tail_s", "cpu_tail_hidden_s"}
    assert timings["cpu_tail_s"] == timings["a_s"] + timings["b_s"]
    assert tail_threads() == []
