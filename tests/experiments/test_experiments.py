"""The experiment scripts' plumbing: the job runner (core/jobs.py) and the SmolLM2 experiment's commands."""

import json
import shlex
import sys
from pathlib import Path

import pytest

from repro_train.core import jobs

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import rescore_eval  # noqa: E402
import smollm2_repro  # noqa: E402


def test_run_all_returns_exit_codes_in_order(tmp_path):
    codes = jobs.run_all(["exit 3", "true", "sh -c 'exit 7'"], parallel=2, cwd=str(tmp_path), poll_s=0.01)
    assert codes == [3, 0, 7]


def test_run_all_never_runs_more_than_parallel(tmp_path):
    # each job appends +1 when it starts and -1 when it ends; the running sum never exceeds 2
    log = tmp_path / "log"
    cmd = f"echo 1 >> {log}; sleep 0.2; echo -1 >> {log}"
    assert jobs.run_all([cmd] * 5, parallel=2, cwd=str(tmp_path), poll_s=0.01) == [0] * 5
    running, peak = 0, 0
    for line in log.read_text().split():
        running += int(line)
        peak = max(peak, running)
    assert peak == 2 and running == 0


class FakeProcess:
    returncode = 0

    def poll(self):
        return 0


def test_run_all_spaces_the_starts_by_stagger(monkeypatch):
    starts = []

    def popen(cmd, shell, cwd, env):
        starts.append(jobs.time.monotonic())
        return FakeProcess()

    monkeypatch.setattr(jobs.subprocess, "Popen", popen)
    assert jobs.run_all(["a", "b", "c"], parallel=3, cwd=".", poll_s=0.01, stagger_s=0.15) == [0, 0, 0]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) == 2 and min(gaps) >= 0.15


def args(*argv):
    return smollm2_repro.parser().parse_args(["--model", "m", "--data-dir", "d", "--out", "o", *argv])


def train_words(a) -> list[str]:
    _, cmd = smollm2_repro.job("grpo_repro", 1, a)
    return shlex.split(cmd.split(" > ")[0])


def test_the_vllm_engine_reaches_every_run_and_explicit_overrides_come_last():
    a = args("--engine", "vllm", "--vllm-share", "0.12", "--override", "rollout.vllm.gpu_memory_utilization=0.2")
    words = train_words(a)
    assert "rollout.engine=vllm" in words and "train.seed=1" in words
    shares = [w for w in words if w.startswith("rollout.vllm.gpu_memory_utilization=")]
    assert shares == ["rollout.vllm.gpu_memory_utilization=0.12", "rollout.vllm.gpu_memory_utilization=0.2"]
    assert not any(w.startswith("rollout.engine") for w in train_words(args()))  # hf: the recipe's default


def test_vllm_on_a_cpu_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["smollm2_repro.py", "--engine", "vllm", "--device", "cpu"])
    with pytest.raises(SystemExit):
        smollm2_repro.main()
    assert "--engine vllm needs a GPU" in capsys.readouterr().err


def test_summarize_only_keeps_the_runs_own_arguments_codes_and_time(tmp_path, monkeypatch):
    # a results folder as it comes back from the device: results.json from the run, no checkpoints
    data, model, out = tmp_path / "data", tmp_path / "model", tmp_path / "out"
    for d in (data, model, out):
        d.mkdir()
    for name in ["train", *smollm2_repro.EVAL_SETS]:
        (data / f"{name}.jsonl").write_text("")
    (model / "config.json").write_text("{}")
    run_args = {"steps": 40, "seeds": "0,1,2", "engine": "vllm", "tiny": False, "override": ["optim.lr=2.0e-6"]}
    smollm2_repro.write_json({"args": run_args, "codes": {"base": 0}, "elapsed_s": 321.0}, str(out / "results.json"))
    argv = ["x", "--model", str(model), "--data-dir", str(data), "--out", str(out), "--summarize-only"]
    monkeypatch.setattr(sys, "argv", argv)
    assert smollm2_repro.main() == 0
    res = json.loads((out / "results.json").read_text())
    assert res["args"] == run_args and res["codes"] == {"base": 0} and res["elapsed_s"] == 321.0
    head = (out / "table.md").read_text().split("\n")[0]
    assert "40 steps x 3 seeds" in head and "vllm engine" in head and "optim.lr=2.0e-6" in head


def test_export_with_another_training_set_keeps_the_held_out_sets_disjoint(tmp_path):
    pytest.importorskip("reasoning_gym")
    source = "reasoning-gym:chain_sum?size=40&seed=1&min_terms=3&max_terms=3&min_digits=1&max_digits=1"
    smollm2_repro.export_data(str(tmp_path), source)
    read = {
        f: [json.loads(x) for x in (tmp_path / f"{f}.jsonl").read_text().splitlines()]
        for f in ("train", "heldout_3term")
    }
    assert len(read["train"]) == 40
    assert all(r["question"].count("+") + r["question"].count("-") >= 2 for r in read["train"])  # three terms
    train_q = {r["question"] for r in read["train"]}
    assert read["heldout_3term"] and not train_q & {r["question"] for r in read["heldout_3term"]}
    assert json.loads((tmp_path / "sources.json").read_text())["train"] == source


def test_train_source_without_export_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["smollm2_repro.py", "--train-source", "gsm8k-100", "--model", "m"])
    with pytest.raises(SystemExit):
        smollm2_repro.main()
    assert "--train-source goes with --export-data" in capsys.readouterr().err


def test_rescore_eval_counts_restated_problems_as_wrong(tmp_path):
    """Two seeds of one arm and the base model; the stored verdicts are math_verify's, gamed by restatements."""

    def write(run: str, rows: list[tuple[str, str, bool]]) -> None:
        d = tmp_path / run / "eval_heldout_3term"
        d.mkdir(parents=True)
        lines = [json.dumps({"question": "q", "completion": c, "gold": g, "correct": ok}) for c, g, ok in rows]
        (d / f"samples_{run}.jsonl").write_text("\n".join(lines) + "\n")

    hack = ("The final answer is 3 - 7 - 7 = 3.", "-11", True)
    write("grpo-s0", [hack, ("3 - 7 - 7 = -11", "-11", True)])  # last_number: 0, 1
    write("grpo-s1", [hack, hack, hack, ("Final answer: 4", "5", False)])  # 0, 0, 0, 0
    write("base", [("The final answer is 3.", "-11", False)])
    res = rescore_eval.rescore(str(tmp_path), "last_number")
    assert res["heldout_3term"]["grpo"] == {"stored": [1.0, 0.75], "rescored": [0.5, 0.0], "disagree": [0.5, 0.75]}
    assert res["heldout_3term"]["base"] == {"stored": [0.0], "rescored": [0.0], "disagree": [0.0]}
    assert "| heldout_3term | grpo | 2 | 0.875 ± 0.177 | 0.250 ± 0.354 | 0.625 ± 0.177 |" in rescore_eval.table(
        res, "last_number"
    )
