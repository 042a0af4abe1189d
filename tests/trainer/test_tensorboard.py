"""log.tensorboard: the step metrics written as TensorBoard events, read back with TensorBoard's own reader."""

import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from repro_train.tasks.arithmetic import generate, write_jsonl
from tests.helpers.trainer_utils import make_recipe, metrics, run_inprocess


def test_event_files_hold_every_step_metric(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    write_jsonl(generate(4, seed=5, with_traces=False), str(data))
    run = run_inprocess(make_recipe(tmp_path, tiny_model_dir, str(data), train={"steps": 2}), "log.tensorboard=true")
    events = EventAccumulator(os.path.join(run, "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    rows = metrics(run)
    want = {k for r in rows for k in r if k != "step"}
    assert set(events.Tags()["scalars"]) == want
    for key in ("reward/mean", "train/pg_loss", "response_length/mean", "time/step_s"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == [1, 2]
        assert [v for _, v in got] == pytest.approx([r[key] for r in rows], rel=1e-6)  # float32 in the events


def test_no_event_files_by_default(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    write_jsonl(generate(4, seed=5, with_traces=False), str(data))
    run = run_inprocess(make_recipe(tmp_path, tiny_model_dir, str(data), train={"steps": 1}))
    assert not os.path.exists(os.path.join(run, "tensorboard"))
