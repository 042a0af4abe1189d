"""Writes that fail (trainer/checkpoint.py, trainer/metrics.py): a checkpoint, metrics or samples write that fails
stops the run with exit code 6 and a message naming the path and why; the previous checkpoint stays the one a resume
uses, and the resumed run logs every step once. A full disk is a real file-size limit (RLIMIT_FSIZE: writes past it
fail with EFBIG, as on a full disk) in a subprocess."""

import os
import subprocess
import sys

import pytest

from repro_train.trainer.checkpoint import list_checkpoints, resolve_resume
from repro_train.trainer.manifest import verify
from tests.helpers.trainer_utils import REPO, make_recipe, metrics, run_cli_inprocess, run_inprocess


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


def test_a_file_in_the_way_of_a_checkpoint(tmp_path, tiny_model_dir, data_path, capsys):
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 3, "save_every": 1})
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint-000002.tmp").write_text("not ours")
    assert run_cli_inprocess(recipe) == 6
    err = capsys.readouterr().err
    assert f"could not write checkpoint 2 into {run}/checkpoint-000002.tmp: {run}/checkpoint-000002.tmp: a file " in err
    assert f"the last checkpoint is {run}/checkpoint-000001 (step 1); train.resume=auto continues from it" in err
    assert (run / "checkpoint-000002.tmp").read_text() == "not ours"  # never deleted
    assert resolve_resume("auto", str(run)).endswith("checkpoint-000001")
    os.remove(run / "checkpoint-000002.tmp")
    run_inprocess(recipe, "train.resume=auto")
    assert [r["step"] for r in metrics(str(run))] == [1, 2, 3]


DISK_FULL = """
import os, resource, sys
from repro_train.trainer import experience
orig = experience.rollout_phase
def rollout(rt, step):
    if step + 1 == 2:  # the disk fills up during step 2
        what = os.environ["REPRO_TEST_FULL"]
        metrics = os.path.join(rt.out_dir, "metrics.jsonl")
        limit = os.path.getsize(metrics) + 10 if what == "metrics" else 1 << 16
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return orig(rt, step)
experience.rollout_phase = rollout
from repro_train.commands.train import main
sys.exit(main(["--config", sys.argv[1]]))
"""


@pytest.mark.parametrize("what", ["metrics", "checkpoint"])
def test_a_full_disk(tmp_path, tiny_model_dir, data_path, what):
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 3, "save_every": 1})
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=REPO, REPRO_TEST_FULL=what)
    res = subprocess.run(
        [sys.executable, "-c", DISK_FULL, recipe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 6, res.stderr[-3000:]
    run = str(tmp_path / "run")
    if what == "metrics":
        assert f"error: could not write step 2 to {run}/metrics.jsonl: File too large" in res.stderr
    else:
        assert f"error: could not write checkpoint 2 into {run}/checkpoint-000002.tmp: " in res.stderr
        assert not os.path.exists(f"{run}/checkpoint-000002.tmp")  # the half-written folder is removed
    assert "Traceback" not in res.stderr
    assert [os.path.basename(p) for p in list_checkpoints(run)] == ["checkpoint-000001"]
    assert verify(list_checkpoints(run)[0]) is None
    run_inprocess(recipe, "train.resume=auto")  # space again: the resume cuts the log back (a cut-off line too)
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
