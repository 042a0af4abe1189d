"""One run per folder (repro_train/trainer/run_folder.py): a lock that a second run meets with a clear
message, stale locks detected and explained, a new run refused in a folder holding another run unless
train.overwrite (which removes that run's files and nothing else)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from repro_train.core.typed_config import ConfigError
from repro_train.trainer.run_folder import LOCK, _proc_stat, acquire_lock, remove_run_files, run_files
from tests.helpers.trainer_utils import REPO, make_recipe, metrics, run_inprocess


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


def holder(pid, host=None, start=None, job=None) -> dict:
    return {
        "pid": pid,
        "host": host or socket.gethostname(),
        "start": start,
        "started": "2026-12-07 10:00:00",
        "command": "repro-train train --config r.yaml",
        "slurm_job_id": job,
    }


def write_lock(folder, h) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK), "w") as fh:
        json.dump(h, fh)


def test_a_live_holder_on_this_host_is_refused(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, holder(proc.pid, start=_proc_stat(proc.pid)[19]))
        with pytest.raises(ConfigError, match=f"is in use by another run: pid {proc.pid}, started 2026-12-07"):
            acquire_lock(str(tmp_path))
    finally:
        proc.kill()
        proc.wait()
    # the same pid, now gone: the lock is stale, explained and taken over
    lock = acquire_lock(str(tmp_path))
    assert json.load(open(tmp_path / LOCK))["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK).exists()


def test_a_dead_or_reused_pid_is_stale(tmp_path, capsys):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    write_lock(tmp_path, holder(proc.pid))
    acquire_lock(str(tmp_path)).release()
    assert f"removed a stale lock {tmp_path / LOCK}: pid {proc.pid}" in capsys.readouterr().err
    write_lock(tmp_path, holder(os.getpid(), start="1"))  # our pid, another start time: the pid was reused
    acquire_lock(str(tmp_path)).release()
    assert "is no longer running" in capsys.readouterr().err


def test_another_hosts_lock_is_explained_unless_it_is_this_slurm_jobs(tmp_path, monkeypatch, capsys):
    write_lock(tmp_path, holder(123, host="node7", job="4242"))
    with pytest.raises(ConfigError) as e:
        acquire_lock(str(tmp_path))
    assert "locked by a run on host node7: pid 123" in str(e.value)
    assert "cannot tell whether it still runs" in str(e.value) and f"delete {tmp_path / LOCK}" in str(e.value)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # the requeued attempt of the same job: the other cannot still run
    acquire_lock(str(tmp_path)).release()
    assert "an earlier attempt of Slurm job 4242 on node7" in capsys.readouterr().err


def test_remove_run_files_touches_nothing_else(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-000002" / "policy").mkdir(parents=True)
    (run / "checkpoint-000003.tmp").mkdir()
    (run / "wandb").mkdir()
    for name in ("metrics.jsonl", "samples.jsonl", "config.yaml", "PREEMPTED", "notes.txt", "checkpoint-7"):
        (run / name).write_text("x")  # checkpoint-7 is a file: not a checkpoint folder
    (run / "mine").mkdir()
    outside = tmp_path / "keep.jsonl"
    outside.write_text("user data")
    os.remove(run / "samples.jsonl")
    os.symlink(outside, run / "samples.jsonl")  # a link is removed, what it points to is not
    assert run_files(str(run)) == [
        "PREEMPTED",
        "checkpoint-000002",
        "checkpoint-000003.tmp",
        "config.yaml",
        "metrics.jsonl",
        "samples.jsonl",
        "wandb",
    ]
    removed = remove_run_files(str(run), also=("eval",))
    assert len(removed) == 7 and sorted(os.listdir(run)) == ["checkpoint-7", "mine", "notes.txt"]
    assert outside.read_text() == "user data"


def snapshot(folder) -> dict:
    """Every file under folder with its bytes and mtime."""
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, folder)] = (open(p, "rb").read(), os.path.getmtime(p))
    return out


def test_a_new_run_into_another_runs_folder_is_refused_or_overwritten(tmp_path, tiny_model_dir, data_path):
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 2})
    run = run_inprocess(recipe)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "mine").mkdir()
    before = snapshot(run)
    with pytest.raises(ConfigError, match="holds another run .*train.resume=auto.*train.overwrite=true"):
        run_inprocess(recipe, "train.steps=1", "optim.lr=0.01")
    assert snapshot(run) == before and not os.path.exists(os.path.join(run, LOCK))  # untouched, lock released
    run_inprocess(recipe, "train.steps=1", "optim.lr=0.01", "train.overwrite=true")
    assert [r["step"] for r in metrics(run)] == [1]  # only the new run's step
    assert sorted(os.listdir(run)) == [
        "checkpoint-000001",
        "config.yaml",
        "metrics.jsonl",
        "mine",
        "notes.txt",
        "samples.jsonl",
    ]
    assert "lr: 0.01" in open(os.path.join(run, "config.yaml")).read()


GATE = """
import os, time
calls = []
def gate(prompts, completions, answers, **columns):
    calls.append(1)
    while len(calls) == 2 and not os.path.exists(os.environ["REPRO_TEST_GATE"]):  # step 2 waits for the test
        time.sleep(0.05)
    return [0.5] * len(completions)
"""


@pytest.mark.slow
def test_two_runs_on_one_folder(tmp_path, tiny_model_dir, data_path):
    """A second run on a folder a live run uses is refused (before it reads anything else); the first is
    unaffected."""
    from tests.trainer.test_preempt import wait_for_steps

    (tmp_path / "gate.py").write_text(GATE)
    reward = {"functions": [{"name": f"{tmp_path / 'gate.py'}:gate"}], "timeout_s": 300}
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, reward=reward)
    cmd = [sys.executable, "-m", "repro_train", "train", "--config", recipe]
    environ = dict(
        os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=REPO, REPRO_TEST_GATE=str(tmp_path / "go")
    )
    first = subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = str(tmp_path / "run")
    try:
        wait_for_steps(first, run, 1)  # the first run is in step 2, waiting at the gate
        second = subprocess.run(
            cmd + ["train.resume=auto"], cwd=REPO, env=environ, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"is in use by another run: pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        (tmp_path / "go").touch()
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err[-2000:]
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]  # the first run's steps, once each
    assert not os.path.exists(os.path.join(run, LOCK))
