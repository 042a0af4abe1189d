"""The comparison's report: one row per arm (mean and spread over seeds) from each job's eval summary, as
results.json, table.md, table.csv and accuracy_vs_tokens.png. Columns: docs/evaluation.md."""

from __future__ import annotations

import csv
import json
import os
import statistics

from ...core.typed_config import to_dict
from .config import CompareConfig

COLUMNS = [
    ("accuracy", "accuracy (pass@1)", 3),
    ("mean_tokens", "mean tokens", 1),
    ("tokens_correct", "tokens (correct)", 1),
    ("tokens_incorrect", "tokens (incorrect)", 1),
    ("recheck_rate", "re-checks / response", 3),
    ("backtrack_rate", "backtracks / response", 3),
]
"""(key, column title, decimals) of the table."""


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def run_metrics(folder: str, label: str) -> dict:
    """One run's row: eval summary metrics plus mean tokens of its correct and incorrect responses."""
    with open(os.path.join(folder, "eval", "summary.json")) as fh:
        s = json.load(fh)[label]
    ok, bad = [], []
    with open(os.path.join(folder, "eval", f"samples_{label}.jsonl")) as fh:
        for line in fh:
            row = json.loads(line)
            (ok if row["correct"] else bad).append(row["n_tokens"])
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "accuracy": s["pass@1"],
        "mean_tokens": s["mean_tokens"],
        "tokens_correct": mean(ok),
        "tokens_incorrect": mean(bad),
        "recheck_rate": s["recheck_rate"],
        "backtrack_rate": s["backtrack_rate"],
        "n_samples": s["n_samples"],
    }


def aggregate(per_run: dict[str, dict], arms: list[tuple[str, list[str]]]) -> dict[str, dict]:
    """{arm: {key: {"mean", "std", "n"}}}: std is the sample std over seeds (0 with one seed);
    a value missing in a run (no incorrect response, say) is left out of that key's mean."""
    out = {}
    for arm, labels in arms:
        rows = [per_run[lb] for lb in labels if lb in per_run]
        if not rows:
            continue
        out[arm] = {}
        for key, _, _ in COLUMNS:
            xs = [r[key] for r in rows if r[key] is not None]
            out[arm][key] = {
                "mean": statistics.mean(xs) if xs else None,
                "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                "n": len(xs),
            }
    return out


def format_markdown(arms: dict[str, dict], n_seeds: dict[str, int]) -> str:
    head = "| arm | seeds | " + " | ".join(t for _, t, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for arm, m in arms.items():
        cells = []
        for key, _, dec in COLUMNS:
            v = m[key]
            if v["mean"] is None:
                cells.append("-")
            elif n_seeds[arm] > 1:
                cells.append(f"{v['mean']:.{dec}f} ± {v['std']:.{dec}f}")
            else:
                cells.append(f"{v['mean']:.{dec}f}")
        lines.append(f"| {arm} | {n_seeds[arm]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: str, arms: dict[str, dict], n_seeds: dict[str, int]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arm", "seeds", *(f"{k}_{s}" for k, _, _ in COLUMNS for s in ("mean", "std"))])
        for arm, m in arms.items():
            w.writerow([arm, n_seeds[arm], *(m[k][s] for k, _, _ in COLUMNS for s in ("mean", "std"))])


def plot(path: str, arms: dict[str, dict], per_run: dict[str, dict], labels: dict[str, list[str]]) -> bool:
    """Accuracy against mean tokens: each seed faint, each arm's mean with ± std bars. False
    without matplotlib (then `--report-only` on a machine that has it draws the plot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(7, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (arm, m) in enumerate(arms.items()):
        color = f"C{i % 10}"
        runs = [per_run[lb] for lb in labels[arm] if lb in per_run]
        ax.scatter([r["mean_tokens"] for r in runs], [r["accuracy"] for r in runs], color=color, alpha=0.3, s=14)
        x, y = m["mean_tokens"], m["accuracy"]
        ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], fmt="o", color=color, capsize=3, label=arm)
    ax.set_xlabel("mean response tokens (held-out)")
    ax.set_ylabel("accuracy (pass@1)")
    ax.set_title("accuracy vs tokens (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return True


def report(cfg: CompareConfig, out: str, log=print) -> dict:
    """Read every finished run under `out`; write results.json, table.md, table.csv and the plot."""
    labels = {a.name: [f"{a.name}-s{s}" for s in cfg.seeds] for a in cfg.arms}
    if cfg.eval.base_model:
        labels = {"base": ["base"], **labels}
    per_run = {}
    for lbs in labels.values():
        for lb in lbs:
            if os.path.exists(os.path.join(out, lb, "eval", "summary.json")):
                per_run[lb] = run_metrics(os.path.join(out, lb), lb)
    arms = aggregate(per_run, list(labels.items()))
    n_seeds = {arm: sum(lb in per_run for lb in labels[arm]) for arm in arms}
    results = {"config": to_dict(cfg), "runs": per_run, "arms": arms}
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    table = format_markdown(arms, n_seeds)
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(table)
    write_csv(os.path.join(out, "table.csv"), arms, n_seeds)
    drawn = plot(os.path.join(out, "accuracy_vs_tokens.png"), arms, per_run, labels)
    log(table)
    log(
        f"[compare] wrote {out}/results.json, table.md, table.csv"
        + (", accuracy_vs_tokens.png" if drawn else " (no matplotlib here: no plot; run --report-only elsewhere)")
    )
    return results
