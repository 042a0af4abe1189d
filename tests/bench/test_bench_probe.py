"""bench/bench_probe.py on the CPU: the --smoke sweep, one cell through run_cell, the timing rule."""

import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_probe.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_probe", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def test_smoke_sweep_every_cell_finite_and_fused_equals_naive(bench, tmp_path):
    out = tmp_path / "smoke.json"
    t0 = time.monotonic()
    bench.main(["--smoke", "--out", str(out)])
    assert time.monotonic() - t0 < 30
    res = json.loads(out.read_text())
    assert res["complete"] and res["machine"]["torch"] == torch.__version__
    assert res["args"]["dtype"] == "float32" and res["args"]["device"] == "cpu"
    cells = res["cells"]
    assert [(c["model"], c["length"], c["cuts"]) for c in cells] == [
        ("tiny", 64, 3),
        ("tiny", 64, 5),
        ("tiny", 128, 3),
        ("tiny", 128, 5),
    ]
    for c in cells:
        assert (c["status_forward"], c["status_fused"], c["status_naive"]) == ("ok", "ok", "ok")
        for k in ("forward_ms", "forward_cache_ms", "fused_ms", "naive_ms", "fused_over_forward", "naive_over_forward"):
            assert math.isfinite(c[k]) and c[k] > 0, k
        assert math.isfinite(c["fused_total_extra_over_forward"])
        pairs = c["pass_extra_paired_samples"]  # pass - forward, timed in alternation
        assert len(pairs) >= 1 and c["pass_extra_paired_ms"] == statistics.median(pairs)
        assert c["pass_extra_paired_over_forward"] == pytest.approx(c["pass_extra_paired_ms"] / c["forward_ms"])
        assert c["probe_points"] == c["cuts"] + 1
        assert c["max_abs_dJ"] < 1e-4  # float32: fused and naive J agree
        assert c["cache_restore"] == "crop" and c["fused_repeat_max_abs_diff"] < 1e-6
        # random init (std 0.02): next-token distributions are near uniform over the 512 ids
        assert c["J_fused_mean"] == pytest.approx(-math.log(512), abs=0.1)


def test_run_cell_skips_naive_above_token_limit(bench):
    model = bench.build_model("tiny", torch.float32, torch.device("cpu"))
    opts = bench.BenchOptions(prompt_len=8, repeats=1, warmup=1, naive_max_tokens=1)
    cell = bench.run_cell(model, 32, 4, opts, name="tiny")
    assert cell["status_fused"] == "ok" and cell["fused_ms"] > 0 and cell["probe_points"] == 5
    assert cell["status_naive"].startswith("skipped (expected naive tokens")
    assert cell.get("naive_ms") is None and cell.get("max_abs_dJ") is None
    # 4 rollouts x (5 probe points x (8 + 5 + 16) tokens + 4 cuts x 33 / 2 mean prefix tokens)
    assert cell["naive_tokens_expected"] == 4 * (5 * 29 + 4 * 33 / 2)


def test_fp32_reference_measures_both_paths_against_float32(bench):
    model = bench.build_model("tiny", torch.bfloat16, torch.device("cpu"))
    opts = bench.BenchOptions(prompt_len=8, repeats=1, warmup=1, fp32_reference=True)
    cell = bench.run_cell(model, 32, 4, opts, name="tiny")
    assert cell["status_fp32_reference"] == "ok" and model.dtype == torch.bfloat16  # the copy, not the model
    for k in ("max_abs_dJ_fused_fp32", "max_abs_dJ_naive_fp32"):
        assert 0 < cell[k] < 1e-2, k  # bf16 rounding: present, and small
    # the three distances obey the triangle inequality
    assert cell["max_abs_dJ"] <= cell["max_abs_dJ_fused_fp32"] + cell["max_abs_dJ_naive_fp32"] + 1e-7


def test_measure_times_slow_calls_once(bench):
    o = bench.BenchOptions(repeats=3, warmup=2)
    clock = bench.Clock(torch.device("cpu"))
    calls = []
    t = bench.measure(lambda: calls.append(1), clock, o, slow_s=10.0)
    assert len(t.samples) == 3 and len(calls) == 5  # 2 warm-ups, 3 samples
    calls.clear()
    t = bench.measure(lambda: calls.append(1), clock, o, slow_s=0.0)  # "slow": the first call is the sample
    assert len(t.samples) == 1 and len(calls) == 1


def test_failed_op_is_recorded_not_raised(bench):
    assert bench.attempt(lambda: 1 / 0) == (None, "error: ZeroDivisionError: division by zero")


def test_authors_code_cells_pass_selects_the_fork_and_forced_cuts(bench, tmp_path):
    """--preset authors_code --forcing-len 0: the pass (forks scored at the fork, the last cut forced)
    scores exactly the fused cell's blocks, and fused equals naive in float32."""
    out = tmp_path / "authors.json"
    bench.main(
        [
            "--smoke",
            "--lengths",
            "64",
            "--cuts",
            "3,21",
            "--forcing-len",
            "0",
            "--preset",
            "authors_code",
            "--out",
            str(out),
        ]
    )
    res = json.loads(out.read_text())
    assert res["options"]["preset"] == "authors_code" and res["args"]["forcing_len"] == 0
    for c in res["cells"]:
        assert (c["status_fused"], c["status_naive"], c["status_pass"]) == ("ok", "ok", "ok")
        assert c["max_abs_dJ"] < 1e-5 and c["pass_vs_fused_max_abs_dJ"] == 0.0
    rows = bench.pass_requests([[0, 4, 9, 12]], [[5, 6]], "authors_code")
    assert (rows[0].seg_starts, rows[0].seg_ends, rows[0].forced_cuts) == ((4, 9), (4, 9), (12,))
