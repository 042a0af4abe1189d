"""launch/slurm/train.sbatch under a fake 2-node Slurm job: the command it prints in DRY_RUN mode,
and what each node's launcher receives when it runs through fake srun / torchrun / accelerate."""

import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO as HELPERS_REPO

REPO = Path(HELPERS_REPO)
SCRIPT = REPO / "launch" / "slurm" / "train.sbatch"
RECIPE = "recipes/toy/grpo_repro.yaml"

FAKE_SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] && [ "$3" = "gpu[07-08]" ] && printf 'gpu07\\ngpu08\\n' && exit 0
echo "fake scontrol: unexpected arguments $*" >&2; exit 1
"""
FAKE_SRUN = """#!/bin/bash
# Records its own options, then runs the command once per node, as Slurm would, with SLURM_NODEID set.
printf '%s\\n' "$@" > "$OUT/srun.args"
while [[ "$1" == --* ]]; do [[ "$1" == *=* ]] && shift || shift 2; done
for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i "$@" || exit $?; done
"""
FAKE_LAUNCHER = """#!/bin/bash
# One argument per NUL-terminated record: spaces and quotes survive.
printf '%s\\0' "$@" > "$OUT/$(basename "$0")-node$SLURM_NODEID.args"
"""


@pytest.fixture
def slurm(tmp_path):
    """Environment of a 2-node job with 4 GPUs per node, fake Slurm and launcher binaries on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in [
        ("scontrol", FAKE_SCONTROL),
        ("srun", FAKE_SRUN),
        ("torchrun", FAKE_LAUNCHER),
        ("accelerate", FAKE_LAUNCHER),
    ]:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OUT": str(tmp_path),
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_SUBMIT_DIR": str(REPO),
        "RECIPE": RECIPE,
        "EXTRA": "repro.alpha=0.2 train.steps=3",
    }
    return tmp_path, env


def run(env, *args, cwd=None):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, cwd=cwd or "/", capture_output=True, text=True, timeout=30
    )


def dry_run(env, *args) -> list[str]:
    res = run({**env, "DRY_RUN": "1"}, *args)
    assert res.returncode == 0, res.stderr
    return shlex.split(res.stdout)


TRAIN_ARGS = [
    "-m",
    "repro_train",
    "train",
    "--config",
    RECIPE,
    "train.output_dir=runs/grpo_repro-4242",
    "train.resume=auto",
    "repro.alpha=0.2",
    "train.steps=3",
    "log.run_name=a b",
    "repro.probe_prefix=it's",
]
SRUN = ["srun", "--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]


def test_syntax():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_dry_run_torchrun(slurm):
    _, env = slurm
    argv = dry_run(env, "log.run_name=a b", "repro.probe_prefix=it's")
    assert argv == SRUN + [
        "torchrun",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "4",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        "gpu07:24242",
        "--rdzv_id",
        "4242",
        *TRAIN_ARGS,
    ]


@pytest.mark.parametrize("strategy", ["zero3", "fsdp2"])
def test_dry_run_accelerate(slurm, strategy):
    _, env = slurm
    argv = dry_run({**env, "STRATEGY": strategy, "MASTER_PORT": "29999"}, "log.run_name=a b", "repro.probe_prefix=it's")
    multinode = ["--deepspeed_multinode_launcher", "standard"] if strategy == "zero3" else []
    assert argv == SRUN + [
        "bash",
        "-c",
        'exec accelerate launch --machine_rank "$SLURM_NODEID" "$@"',
        "accelerate",
        "--config_file",
        f"launch/accelerate/{strategy}.yaml",
        "--num_machines",
        "2",
        "--num_processes",
        "8",
        "--main_process_ip",
        "gpu07",
        "--main_process_port",
        "29999",
        *multinode,
        *TRAIN_ARGS,
    ]


def test_dry_run_outside_slurm_is_one_local_node(slurm):
    _, env = slurm
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_") and k != "EXTRA"}
    res = run({**env, "GPUS_PER_NODE": "2", "OUTPUT_DIR": "runs/mine", "DRY_RUN": "1"}, cwd=str(REPO))
    assert res.returncode == 0, res.stderr
    argv = shlex.split(res.stdout)
    assert argv[argv.index("--nnodes") + 1] == "1" and argv[argv.index("--nproc_per_node") + 1] == "2"
    assert argv[argv.index("--rdzv_endpoint") + 1] == "localhost:20000"
    assert argv[-2:] == ["train.output_dir=runs/mine", "train.resume=auto"]


@pytest.mark.parametrize("strategy, launcher", [("ddp", "torchrun"), ("zero2", "accelerate")])
def test_each_node_gets_its_launcher_command(slurm, strategy, launcher):
    """Runs for real through the fakes: every node starts the launcher with the arguments intact,
    and accelerate gets each node's own --machine_rank."""
    tmp, env = slurm
    res = run({**env, "STRATEGY": strategy}, "log.run_name=a b", "repro.probe_prefix=it's")
    assert res.returncode == 0, res.stderr
    assert (tmp / "srun.args").read_text().split("\n")[:5] == SRUN[1:]
    for node in (0, 1):
        args = (tmp / f"{launcher}-node{node}.args").read_text().split("\0")[:-1]
        assert args[-len(TRAIN_ARGS) :] == TRAIN_ARGS
        if launcher == "accelerate":
            assert args[:3] == ["launch", "--machine_rank", str(node)]
        else:
            assert args[args.index("--rdzv_endpoint") + 1] == "gpu07:24242"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"STRATEGY": "fsdp"}, "STRATEGY=fsdp: use one of ddp, zero2, zero3, fsdp2"),
        ({"RECIPE": "recipes/nope.yaml"}, "RECIPE=recipes/nope.yaml is not a file"),
    ],
)
def test_bad_settings_fail_before_launching(slurm, change, message):
    tmp, env = slurm
    res = run({**env, **change})
    assert res.returncode == 2 and message in res.stderr
    assert not (tmp / "srun.args").exists()


def test_outside_a_job_without_dry_run_refuses(slurm):
    _, env = slurm
    env = {k: v for k, v in env.items() if k != "SLURM_JOB_ID"}
    res = run(env)
    assert res.returncode == 2 and "not inside a Slurm job" in res.stderr
