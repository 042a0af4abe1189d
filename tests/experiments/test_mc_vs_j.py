"""experiments/mc_vs_j.py: its statistics on hand-made steps, and a tiny end-to-end run on the CPU."""

import json
import math
import sys
from pathlib import Path

import pytest

from tests.helpers.trainer_utils import make_recipe

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import mc_vs_j  # noqa: E402


def step(rollout, dJ, dV, r=None, J=0.0, V=0.5, task="ops=2"):
    r = dJ if r is None else r
    return {
        "rollout": rollout,
        "task": task,
        "J": J,
        "dJ": dJ,
        "V": V,
        "dV": dV,
        "V_se": 0.1,
        "r": r,
        "r_norm": r,
        "r_mc_norm": dV,
    }


def test_statistics_by_hand():
    rows = [step(0, 1.0, 0.25), step(0, 2.0, 0.0), step(1, 3.0, -0.25, r=-1.0), step(1, 4.0, 0.5)]
    s = mc_vs_j.statistics(rows, k=4)
    # dJ ranks (1, 2, 3, 4), dV ranks (3, 2, 1, 4): 1 - 6 * (4 + 0 + 4 + 0) / (4 * 15) = 0.2
    assert s["rho_dJ_dV"] == pytest.approx(0.2)
    # V moved on 3 steps; r has its sign on steps 0, 2 (-1 vs -0.25) and 3: 3 of 3
    assert (s["sign_r_dV"], s["steps_dV_moved"]) == (1.0, 3)
    # abs(dV) >= 4 / K = 1: none
    assert s["steps_dV_big"] == 0 and math.isnan(s["sign_r_dV_big"])
    assert s["dV_zero_frac"] == 0.25 and s["rollouts"] == 2 and s["steps"] == 4


def test_bootstrap_intervals_are_seeded_and_hold_the_estimate():
    rows = [step(b, float(b % 3) - 1.0, 0.25 * ((b * 7) % 5 - 2), J=b * 0.1, V=(b % 4) / 4) for b in range(24)]
    a, b = mc_vs_j.summarize(rows, 4, 2, resamples=200), mc_vs_j.summarize(rows, 4, 2, resamples=200)
    assert json.dumps(a) == json.dumps(b)  # NaN != NaN: compare the text
    lo, hi = a["rho_J_V_ci"]
    assert lo <= a["rho_J_V"] <= hi and lo < hi


def test_a_tiny_run_end_to_end(tmp_path, tiny_model_dir):
    data = tmp_path / "toy.jsonl"
    from repro_train.tasks.arithmetic import generate, write_jsonl

    write_jsonl(generate(4, seed=3, with_traces=False), str(data))
    recipe = make_recipe(
        tmp_path,
        tiny_model_dir,
        str(data),
        repro={"probe_prefix": "\n\nFinal answer: "},
        reward={"functions": [{"name": f"{tmp_path / 'digit_reward.py'}:digit_frac", "correctness": True}]},
    )
    out = tmp_path / "out"
    args = ["--recipe", recipe, "--out", str(out), "--data", str(data), "--problems", "2", "--rollouts", "2"]
    assert mc_vs_j.main(args + ["--k", "3", "--device", "cpu"]) == 0
    res = json.loads((out / "results.json").read_text())
    rows = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert res["tasks"][str(data)]["steps"] == len(rows) > 0
    assert all(0 <= r["V"] <= 1 and round(r["V"] * 3, 9) == round(r["V"] * 3) for r in rows)
    assert res["cost"]["mc_prefixes"] >= 1 and res["cost"]["mc_tokens"] > 0
    table = (out / "table.md").read_text()
    assert table.startswith("| task |") and "Cost per scored rollout" in table
    # --report-only recomputes the same statistics from steps.jsonl
    before = res["tasks"]
    assert mc_vs_j.main(["--out", str(out), "--report-only"]) == 0
    assert json.dumps(json.loads((out / "results.json").read_text())["tasks"]) == json.dumps(before)
