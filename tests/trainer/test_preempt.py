"""Preemption (repro_train/trainer/preempt.py): SIGTERM / SIGUSR1 finish the step, write a
checkpoint, exit with REQUEUE_EXIT and a PREEMPTED marker; train.resume=auto continues from it.
Under torchrun a signal to one rank stops every rank after the same step."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from repro_train.trainer.preempt import MARKER, REQUEUE_EXIT, Preemption
from tests.helpers.trainer_utils import REPO, last_checkpoint, make_recipe, metrics

TOY = [
    "--config",
    "recipes/toy/grpo_repro.yaml",
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=48",
    "algo.micro_batch_size=8",
    "train.device=cpu",
    "log.wandb=false",
    "log.progress=false",
    "train.save_every=0",
]


class OneRank:
    world = 1


def test_handler_sets_a_flag_and_restores():
    before = signal.getsignal(signal.SIGUSR1)
    p = Preemption().install()
    assert not p.agreed(OneRank())
    os.kill(os.getpid(), signal.SIGUSR1)
    assert p.received == "SIGUSR1" and p.agreed(OneRank())
    p.restore()
    assert signal.getsignal(signal.SIGUSR1) is before


def env():
    return dict(
        os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1", PYTHONPATH=REPO
    )


def wait_for_steps(proc, run_dir: str, n: int) -> None:
    """Block until metrics.jsonl holds n steps (the run is then inside step n + 1 or later)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    while not (os.path.exists(path) and sum(1 for _ in open(path)) >= n):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_writes_a_checkpoint_and_the_requeued_run_resumes(tmp_path, sig):
    run_dir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "repro_train", "train", *TOY, f"train.output_dir={run_dir}"]
    proc = subprocess.Popen(
        cmd + ["train.steps=60"], cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_steps(proc, run_dir, 1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == REQUEUE_EXIT, err[-3000:]
    assert f"got {sig.name}" in err and "preempted: stopped by" in err
    k = len(metrics(run_dir))  # the step in progress was finished, then the run stopped
    assert 1 <= k < 60
    assert last_checkpoint(run_dir).endswith(f"checkpoint-{k:06d}")
    marker = json.load(open(os.path.join(run_dir, MARKER)))
    assert marker["step"] == k and marker["signal"] == sig.name
    # the requeued job: same folder, train.resume=auto
    res = subprocess.run(
        cmd + [f"train.steps={k + 1}", "train.resume=auto"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, k + 2))
    assert last_checkpoint(run_dir).endswith(f"checkpoint-{k + 1:06d}")
    assert not os.path.exists(os.path.join(run_dir, MARKER))


def worker_pids(launcher_pid: int) -> dict[int, int]:
    """{RANK: pid} of torchrun's worker processes (read from /proc)."""
    out = {}
    for pid in open(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read().split():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except FileNotFoundError:
            continue
        rank = [e for e in environ if e.startswith(b"RANK=")]
        if rank:
            out[int(rank[0][5:])] = int(pid)
    return out


@pytest.mark.slow
@pytest.mark.distributed
def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path, tiny_model_dir):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    data = tmp_path / "d.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(data))
    recipe = make_recipe(tmp_path, tiny_model_dir, str(data), train={"steps": 200})
    run_dir = str(tmp_path / "run")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "repro_train",
        "train",
        "--config",
        recipe,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_steps(proc, run_dir, 2)
        pids = worker_pids(proc.pid)
        os.kill(pids[1], signal.SIGUSR1)  # rank 1 only
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert "got SIGUSR1" in err and err.count("got SIGUSR1") == 1, err[-3000:]
    k = len(metrics(run_dir))
    assert 2 <= k < 200
    assert last_checkpoint(run_dir).endswith(f"checkpoint-{k:06d}")
    assert json.load(open(os.path.join(run_dir, MARKER))) == {
        "step": k,
        "signal": "a signal on another rank",
        "checkpoint": last_checkpoint(run_dir),
    }
    assert proc.returncode != 0  # torchrun reports the workers' exit code 75 as a failure
    assert f"exitcode  : {REQUEUE_EXIT}" in err or f"exit code {REQUEUE_EXIT}" in err, err[-3000:]


@pytest.mark.parametrize("at_step, steps", [(1, 3), (3, 3)], ids=["mid-run", "last-step"])
def test_signal_inside_a_step_in_process(tmp_path, tiny_model_dir, monkeypatch, at_step, steps):
    """The signal arrives during step `at_step`: that step is finished and checkpointed; during the
    last step the run simply ends (nothing left to requeue)."""
    from repro_train.tasks.arithmetic import generate, write_jsonl
    from repro_train.trainer import experience
    from repro_train.trainer.preempt import Preempted
    from tests.helpers.trainer_utils import run_inprocess

    data = tmp_path / "d.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(data))
    orig = experience.rollout_phase

    def rollout(rt, step):
        if step + 1 == at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(rt, step)

    monkeypatch.setattr(experience, "rollout_phase", rollout)
    recipe = make_recipe(tmp_path, tiny_model_dir, str(data), train={"steps": steps})
    run_dir = str(tmp_path / "run")
    if at_step < steps:
        with pytest.raises(Preempted, match=f"stopped by SIGTERM after step {at_step}"):
            run_inprocess(recipe)
        assert os.path.exists(os.path.join(run_dir, MARKER))
    else:
        run_inprocess(recipe)
        assert not os.path.exists(os.path.join(run_dir, MARKER))
    assert len(metrics(run_dir)) == at_step
    assert last_checkpoint(run_dir).endswith(f"checkpoint-{at_step:06d}")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
