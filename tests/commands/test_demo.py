"""`repro-train demo` (what `make demo` runs) end to end, shrunk: 1 RL step, 2 problems."""

import json
import os

from repro_train.commands.demo import main


def test_demo_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--steps", "1", "--problems", "2", "--samples", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("accuracy (pass@1)", "mean response tokens", "re-checks per response", "backtracks per response"):
        assert row in text
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert set(summary) == {"before", "after"}
    assert summary["before"]["n_samples"] == summary["after"]["n_samples"] == 4
    assert os.path.getsize(out / "eval" / "accuracy_vs_length.png") > 1000
    assert (out / "checkpoint-000001" / "policy" / "model.safetensors").exists()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["repro/cuts_per_rollout"] > 0  # RePro scored the tiny reasoner's rollouts
