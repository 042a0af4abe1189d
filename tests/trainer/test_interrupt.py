"""Ctrl-C and stops during user code (repro_train/trainer/preempt.py, commands/train.py): SIGINT finishes the step,
writes a checkpoint and exits 130 (no requeue marker); a second Ctrl-C stops at once; SIGTERM while a reward function
hangs ends the hang, abandons that step and exits 75 with the last checkpoint. Real signals, sent to the process."""

import os
import signal

import pytest

from repro_train.trainer.preempt import INTERRUPT_EXIT, MARKER, REQUEUE_EXIT
from tests.helpers.trainer_utils import last_checkpoint, make_recipe, metrics, run_cli_inprocess


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


SIGNALLER = """
import os, signal, time
calls = []
def at_step_2(prompts, completions, answers, **columns):
    calls.append(1)
    if len(calls) == 2:
        for name in os.environ["REPRO_TEST_SIGNALS"].split(","):
            os.kill(os.getpid(), getattr(signal, name))
        time.sleep(30)  # a hang: only the stop can end it before the deadline of 300 s
    return [0.5] * len(completions)
"""


def recipe_with_signals(tmp_path, tiny_model_dir, data_path, monkeypatch, signals: str) -> str:
    (tmp_path / "signaller.py").write_text(SIGNALLER)
    monkeypatch.setenv("REPRO_TEST_SIGNALS", signals)
    reward = {"functions": [{"name": f"{tmp_path / 'signaller.py'}:at_step_2"}], "timeout_s": 300}
    return make_recipe(tmp_path, tiny_model_dir, data_path, reward=reward, train={"steps": 4, "save_every": 1})


def test_ctrl_c_finishes_the_step_and_writes_a_checkpoint(tmp_path, tiny_model_dir, data_path, monkeypatch, capsys):
    from repro_train.trainer import experience

    orig = experience.rollout_phase

    def rollout(rt, step):
        if step + 1 == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step 2 (outside any reward call)
        return orig(rt, step)

    monkeypatch.setattr(experience, "rollout_phase", rollout)
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 4})
    assert run_cli_inprocess(recipe) == INTERRUPT_EXIT
    err = capsys.readouterr().err
    assert "got Ctrl-C (SIGINT): finishing this step" in err and "interrupted: stopped by SIGINT after step 2" in err
    run = str(tmp_path / "run")
    assert [r["step"] for r in metrics(run)] == [1, 2]
    assert last_checkpoint(run).endswith("checkpoint-000002")
    assert not os.path.exists(os.path.join(run, MARKER))  # Ctrl-C asks for no requeue
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_at_once(tmp_path, tiny_model_dir, data_path, monkeypatch, capsys):
    recipe = recipe_with_signals(tmp_path, tiny_model_dir, data_path, monkeypatch, "SIGINT,SIGINT")
    assert run_cli_inprocess(recipe) == INTERRUPT_EXIT
    run = str(tmp_path / "run")
    err = capsys.readouterr().err
    assert f"stopped at once by a second Ctrl-C; the last checkpoint is {run}/checkpoint-000001 (step 1)" in err
    assert [r["step"] for r in metrics(run)] == [1] and not os.path.exists(os.path.join(run, "run.lock"))


def test_sigterm_ends_a_hung_reward_function(tmp_path, tiny_model_dir, data_path, monkeypatch, capsys):
    recipe = recipe_with_signals(tmp_path, tiny_model_dir, data_path, monkeypatch, "SIGTERM")
    assert run_cli_inprocess(recipe) == REQUEUE_EXIT
    run = str(tmp_path / "run")
    err = capsys.readouterr().err
    assert "preempted: stopped by SIGTERM during step 2: reward" in err and "was still running at" in err
    assert f"that step was abandoned and the last checkpoint is {run}/checkpoint-000001 (step 1)" in err
    assert [r["step"] for r in metrics(run)] == [1] and last_checkpoint(run).endswith("checkpoint-000001")
    assert os.path.exists(os.path.join(run, MARKER))  # the job is requeued; it resumes from checkpoint-000001
