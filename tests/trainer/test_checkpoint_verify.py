"""Checkpoint manifests (repro_train/trainer/manifest.py): verified on resume; a truncated or
corrupt latest checkpoint is reported and the previous one used; a run killed (SIGKILL) while it
writes one resumes from the one before, says so, and its metrics have each step once."""

import os
import signal
import subprocess
import sys

import pytest

from repro_train.core.typed_config import ConfigError
from repro_train.trainer.checkpoint import list_checkpoints, resolve_resume
from repro_train.trainer.manifest import verify, write_manifest
from tests.helpers.trainer_utils import REPO, make_recipe, metrics, run_inprocess


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


def test_manifest_catches_missing_truncated_and_corrupt_files(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "a.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "b.json").write_text("{}")
    assert verify(str(tmp_path)) == "no manifest.json (the checkpoint was not completed)"
    write_manifest(str(tmp_path))
    assert verify(str(tmp_path)) is None
    data = (tmp_path / "state" / "a.bin").read_bytes()
    (tmp_path / "state" / "a.bin").write_bytes(data[:100])
    assert verify(str(tmp_path)) == "state/a.bin has 100 bytes, the manifest says 2560 (truncated or overwritten)"
    (tmp_path / "state" / "a.bin").write_bytes(data[:7] + b"\xff" + data[8:])  # same size, one byte changed
    assert verify(str(tmp_path)) == "state/a.bin does not match its checksum (corrupt)"
    (tmp_path / "state" / "a.bin").unlink()
    assert verify(str(tmp_path)) == "state/a.bin is missing"
    (tmp_path / "manifest.json").write_text("{not json")
    assert verify(str(tmp_path)).startswith("manifest.json is unreadable")


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "no-manifest"])
def test_a_broken_latest_checkpoint_is_reported_and_the_previous_used(
    tmp_path, tiny_model_dir, data_path, capsys, damage
):
    recipe = make_recipe(
        tmp_path, tiny_model_dir, data_path, train={"steps": 2, "save_every": 1, "keep_optimizer_state_last": 2}
    )
    run = run_inprocess(recipe)
    first, latest = list_checkpoints(run)
    target = os.path.join(latest, "state", "optimizer.bin")
    data = open(target, "rb").read()
    if damage == "truncate":
        open(target, "wb").write(data[: len(data) // 2])
    elif damage == "corrupt":
        open(target, "wb").write(data[:-9] + bytes(9))
    else:
        os.remove(os.path.join(latest, "manifest.json"))
    assert resolve_resume("auto", run) == first
    with pytest.raises(ConfigError, match="cannot be used: state/optimizer.bin|cannot be used: no manifest"):
        resolve_resume(latest, run)
    capsys.readouterr()
    run_inprocess(recipe, "train.steps=3", "train.resume=auto")
    out = capsys.readouterr()
    assert f"checkpoint {latest} cannot be used" in out.err
    assert f"resuming run {run} from {first}: step 1 done" in out.out
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]  # resumed after step 1; step 2's first line removed
    assert verify(list_checkpoints(run)[-1]) is None


KILLER = """
import os, signal, sys
from repro_train.trainer import checkpoint
orig, calls = checkpoint.save_pretrained, []
def killing(module, state_dict, path, tokenizer=None):
    calls.append(path)
    if len(calls) == 2:  # the second checkpoint: half a weights file, then SIGKILL
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "model.safetensors"), "wb").write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(module, state_dict, path, tokenizer)
checkpoint.save_pretrained = killing
from repro_train.commands.train import main
sys.exit(main(["--config", sys.argv[1]]))
"""


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_previous(tmp_path, tiny_model_dir, data_path, capsys):
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 3, "save_every": 1})
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    res = subprocess.run(
        [sys.executable, "-c", KILLER, recipe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    run = str(tmp_path / "run")
    assert sorted(os.listdir(run)).count("checkpoint-000002.tmp") == 1
    assert [os.path.basename(p) for p in list_checkpoints(run)] == ["checkpoint-000001"]
    assert resolve_resume("auto", run).endswith("checkpoint-000001")
    assert [r["step"] for r in metrics(run)] == [1, 2]  # step 2 was logged, its checkpoint never completed
    capsys.readouterr()
    run_inprocess(recipe, "train.resume=auto")
    out = capsys.readouterr()
    assert "removed a stale lock" in out.err and "is no longer running" in out.err  # the killed run's lock
    assert f"resuming run {run} from {run}/checkpoint-000001: step 1 done, training steps 2-3" in out.out
    assert "metrics.jsonl: removed 1 line(s) logged after step 1" in out.out
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]  # no step twice, none missing
    assert [os.path.basename(p) for p in list_checkpoints(run)] == ["checkpoint-000002", "checkpoint-000003"]
    assert all(verify(p) is None for p in list_checkpoints(run))
    assert not os.path.exists(os.path.join(run, "checkpoint-000002.tmp"))
