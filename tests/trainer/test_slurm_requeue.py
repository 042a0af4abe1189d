"""launch/slurm/train.sbatch for real under a fake two-node Slurm job: stand-in srun (starts one
real torchrun per "node", in parallel, passing signals on) and scontrol; two local processes
rendezvous over c10d and train with gloo. SIGUSR1 to the batch script (what Slurm sends before the
time limit) makes both ranks checkpoint and stop, the script requeues the job, and the requeued
job resumes from the checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.trainer_utils import REPO, last_checkpoint, make_recipe, metrics

SCRIPT = os.path.join(REPO, "launch", "slurm", "train.sbatch")
FAKE_SCONTROL = """#!/bin/bash
if [ "$1 $2" = "show hostnames" ]; then printf 'localhost\\nlocalhost\\n'; exit 0; fi
if [ "$1" = requeue ]; then echo "requeue $2" >> "$OUT/scontrol.log"; exit 0; fi
echo "fake scontrol: unexpected arguments $*" >&2; exit 1
"""
FAKE_SRUN = """#!/bin/bash
# One task per node, started together (SLURM_NODEID set); signals are passed on to every task.
while [[ "$1" == --* ]]; do [[ "$1" == *=* ]] && shift || shift 2; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i "$@" & pids+=($!); done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
rc=0
for p in "${pids[@]}"; do
  while :; do wait "$p"; r=$?; kill -0 "$p" 2>/dev/null || break; done
  wait "$p"; r=$?
  [ "$r" != 0 ] && rc=$r
done
exit $rc
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_node_job_is_preempted_requeued_and_resumes(tmp_path, tiny_model_dir):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    data = tmp_path / "d.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(data))
    recipe = make_recipe(tmp_path, tiny_model_dir, str(data), train={"steps": 200})
    run_dir = str(tmp_path / "run")
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        OUT=str(tmp_path),
        PYTHONPATH=REPO,
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        SLURM_JOB_ID="4242",
        SLURM_NNODES="2",
        SLURM_JOB_NODELIST="node[1-2]",
        SLURM_SUBMIT_DIR=REPO,
        GPUS_PER_NODE="1",
        RECIPE=recipe,
        OUTPUT_DIR=run_dir,
        MASTER_PORT=str(free_port()),
        EXTRA="",
        TORCH_ELASTIC_SHUTDOWN_TIMEOUT="120",
    )
    job = subprocess.Popen(
        ["bash", SCRIPT], cwd="/", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        path = os.path.join(run_dir, "metrics.jsonl")
        while not (os.path.exists(path) and sum(1 for _ in open(path)) >= 1):
            assert job.poll() is None, job.communicate()[1][-4000:]
            time.sleep(0.2)
        job.send_signal(signal.SIGUSR1)  # Slurm's warning before the time limit, to the batch shell
        out, err = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0, err[-4000:]
    assert "train.sbatch: got SIGUSR1" in err and "requeueing job 4242" in err, err[-4000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert "repro-train: ddp on 2 process(es)" in out  # one rank per fake node, rendezvous done
    assert err.count("got SIGTERM") == 2, err[-4000:]  # both ranks were told, through srun and torchrun
    k = len(metrics(run_dir))
    assert last_checkpoint(run_dir).endswith(f"checkpoint-{k:06d}")
    assert json.load(open(os.path.join(run_dir, "PREEMPTED")))["step"] == k

    # Slurm starts the requeued job: same job id, same run folder; it resumes and finishes
    res = subprocess.run(
        ["bash", SCRIPT, f"train.steps={k + 1}"],
        cwd="/",
        env={**env, "MASTER_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, k + 2))
    assert last_checkpoint(run_dir).endswith(f"checkpoint-{k + 1:06d}")
    assert not os.path.exists(os.path.join(run_dir, "PREEMPTED"))
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"  # not requeued again
