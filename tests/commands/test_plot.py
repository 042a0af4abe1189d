"""`repro-train plot`: curves from metrics.jsonl, several runs in one PNG."""

import json

import pytest
import yaml

from repro_train.cli import main as cli_main
from repro_train.commands.plot import main, read_metrics, series, summary, trailing_mean


def write_run(folder, rows, repro_alpha=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if repro_alpha is not None:
        cfg = {"repro": {"enabled": repro_alpha > 0, "alpha": repro_alpha}}
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return str(folder)


def row(step, **kw):
    base = {
        "accuracy": 0.5,
        "response_length/mean": 40.0,
        "behavior/rechecks": 0.3,
        "behavior/backtracks": 0.1,
        "adv/abs_mean": 0.25,
    }
    return {"step": step, **base, **kw}


def test_trailing_mean_by_hand():
    # k = 2: [1, (1+3)/2, (3+5)/2, (5+7)/2]; k = 3: [1, 2, 3, 5]; k = 1 is the identity
    assert trailing_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert trailing_mean([1.0, 3.0, 5.0, 7.0], 3) == [1.0, 2.0, 3.0, 5.0]
    assert trailing_mean([2.0, -1.0], 1) == [2.0, -1.0]
    assert trailing_mean([], 4) == []


def test_a_resumed_step_counts_once_and_the_process_share(tmp_path):
    # a run resumed from its step-2 checkpoint logs step 3 again: the later row wins
    rows = [
        row(1, **{"repro/J_last": -2.0, "repro/process_adv_abs": 0.5}),
        row(2, **{"repro/J_last": -1.5, "repro/process_adv_abs": 1.0}),
        row(3, accuracy=0.1),
        row(3, accuracy=0.9, **{"repro/J_last": float("nan"), "repro/process_adv_abs": 0.75}),
    ]
    folder = write_run(tmp_path / "a", rows, repro_alpha=0.1)
    got = read_metrics(folder)
    assert [r["step"] for r in got] == [1, 2, 3] and got[2]["accuracy"] == 0.9
    s = series(got, 0.1)
    assert s["accuracy"] == ([1, 2, 3], [0.5, 0.5, 0.9])
    assert s["repro/J_last"] == ([1, 2], [-2.0, -1.5])  # a NaN J is left out
    # process share = alpha * |process adv| / |adv| = 0.1 * 0.5 / 0.25, 0.1 * 1.0 / 0.25, 0.1 * 0.75 / 0.25
    assert s["process_share"][1] == pytest.approx([0.2, 0.4, 0.3])
    assert "process_share" not in series(got, None)  # RePro off: no share


def test_summary_first_and_last_windows():
    data = {"r": {"accuracy": ([1, 2, 3, 4], [0.2, 0.4, 0.6, 0.8])}}
    text = summary(data, 2)
    assert "| r | 4 | 0.300 → 0.700 | - |" in text  # (0.2 + 0.4) / 2, (0.6 + 0.8) / 2; no length logged


def test_plot_two_runs_one_png(tmp_path, capsys):
    a = write_run(tmp_path / "grpo", [row(s, accuracy=0.5 + s / 100) for s in range(1, 21)], repro_alpha=0.0)
    b = write_run(
        tmp_path / "repro",
        [row(s, **{"repro/J_last": -1.0, "repro/process_adv_abs": 0.5}) for s in range(1, 21)],
        repro_alpha=0.1,
    )
    out = tmp_path / "figs" / "curves.png"
    assert main([f"GRPO={a}", b, "--out", str(out), "--smooth", "4"]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 20000 and f"wrote {out}" in printed
    assert "| GRPO | 20 | 0.525 → 0.685 |" in printed  # 0.5 + mean(1..4)/100, 0.5 + mean(17..20)/100
    assert "| repro | 20 |" in printed and "0.20 → 0.20" in printed  # share 0.1 * 0.5 / 0.25
    # one run: the PNG goes into the run folder; the console script dispatches to the command
    assert cli_main(["plot", a]) == 0 and (tmp_path / "grpo" / "curves.png").exists()


def test_plot_errors(tmp_path, capsys):
    a = write_run(tmp_path / "a", [row(1)])
    assert main([str(tmp_path / "none")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
    assert main([f"x={a}", f"x={a}"]) == 2
    assert "label 'x' is used twice" in capsys.readouterr().err
    assert main([a, "--smooth", "0"]) == 2
    assert "--smooth must be >= 1" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    assert main([str(tmp_path / "bad")]) == 2
    assert "metrics.jsonl line 2: not valid JSON" in capsys.readouterr().err
