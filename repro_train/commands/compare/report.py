"""The comparison's report: one row per arm (mean and spread over seeds) from each job's eval summary, per held-out
set, as results.json, table.md, table.csv and accuracy_vs_tokens.png (one per set when there are several:
accuracy_vs_tokens_<set>.png), and the training curves of every arm (mean over seeds per step: results.json's
"curves", training_curves.png). Columns: docs/evaluation.md."""

from __future__ import annotations

import csv
import json
import os
import statistics

from ...core.typed_config import to_dict
from .config import CompareConfig, eval_sets

COLUMNS = [
    ("accuracy", "accuracy (pass@1)", 3),
    ("mean_tokens", "mean tokens", 1),
    ("tokens_correct", "tokens (correct)", 1),
    ("tokens_incorrect", "tokens (incorrect)", 1),
    ("recheck_rate", "re-checks / response", 3),
    ("backtrack_rate", "backtracks / response", 3),
    ("after_correct", "tokens after first correct", 1),
]
"""(key, column title, decimals) of the table."""


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


CURVES = [
    ("accuracy", "accuracy (on-policy)"),
    ("response_length/mean", "mean tokens (on-policy)"),
    ("behavior/rechecks", "re-checks / response"),
    ("behavior/backtracks", "backtracks / response"),
    ("repro/J_last", "J at the last cut"),
    ("repro/J_gain", "J gain (last cut - J_b)"),
]
"""(metrics.jsonl key, title) of the training curves."""


def run_metrics(folder: str, label: str, set_name: str = "") -> dict:
    """One run's row: eval summary metrics plus mean tokens of its correct and incorrect responses."""
    with open(os.path.join(folder, "eval", set_name, "summary.json")) as fh:
        s = json.load(fh)[label]
    ok, bad = [], []
    with open(os.path.join(folder, "eval", set_name, f"samples_{label}.jsonl")) as fh:
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
        "after_correct": s.get("tokens_after_first_correct"),
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
            xs = [r[key] for r in rows if r.get(key) is not None]  # a key older results lack counts as missing
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


def training_curves(out: str, labels: dict[str, list[str]]) -> dict[str, dict[str, list]]:
    """{arm: {key: [[step, mean over the arm's runs that logged it], ...]}} from each run's run/metrics.jsonl."""
    curves: dict[str, dict[str, list]] = {}
    for arm, lbs in labels.items():
        per_step: dict[str, dict[int, list[float]]] = {}
        for lb in lbs:
            path = os.path.join(out, lb, "run", "metrics.jsonl")
            if not os.path.exists(path):
                continue
            with open(path) as fh:
                for row in map(json.loads, fh):
                    for key, _ in CURVES:
                        if isinstance(row.get(key), (int, float)):
                            per_step.setdefault(key, {}).setdefault(int(row["step"]), []).append(row[key])
        if per_step:
            curves[arm] = {k: [[st, statistics.mean(v)] for st, v in sorted(d.items())] for k, d in per_step.items()}
    return curves


def plot_curves(path: str, curves: dict[str, dict[str, list]], window: int = 5) -> bool:
    """One panel per CURVES key, one line per arm ({window}-step running mean); False without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(14, 7), dpi=100)
    FigureCanvasAgg(fig)
    for ax, (key, title) in zip(fig.subplots(2, 3).flat, CURVES):
        for i, (arm, c) in enumerate(curves.items()):
            pts = c.get(key, [])
            if pts:
                ys = [statistics.mean(p[1] for p in pts[max(0, j - window + 1) : j + 1]) for j in range(len(pts))]
                ax.plot([p[0] for p in pts], ys, color=f"C{i % 10}", label=arm)
        ax.set_title(f"{title} ({window}-step mean)", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return True


def set_report(cfg: CompareConfig, out: str, set_name: str, labels: dict[str, list[str]]) -> dict:
    """{"runs", "arms", "n_seeds"} of one held-out set."""
    per_run = {}
    for lbs in labels.values():
        for lb in lbs:
            if os.path.exists(os.path.join(out, lb, "eval", set_name, "summary.json")):
                per_run[lb] = run_metrics(os.path.join(out, lb), lb, set_name)
    arms = aggregate(per_run, list(labels.items()))
    n_seeds = {arm: sum(lb in per_run for lb in labels[arm]) for arm in arms}
    return {"runs": per_run, "arms": arms, "n_seeds": n_seeds}


def report(cfg: CompareConfig, out: str, log=print) -> dict:
    """Read every finished run under `out`; write results.json, table.md, table.csv, the plots and the curves."""
    labels = {a.name: [f"{a.name}-s{s}" for s in cfg.seeds] for a in cfg.arms}
    if cfg.eval.base_model:
        labels = {"base": ["base"], **labels}
    sets = {name: set_report(cfg, out, name, labels) for name in eval_sets(cfg)}
    first = next(iter(sets.values()))
    curves = training_curves(out, {k: v for k, v in labels.items() if k != "base"})
    results = {"config": to_dict(cfg), "runs": first["runs"], "arms": first["arms"], "curves": curves}
    if len(sets) > 1:
        results["sets"] = {name: {"runs": r["runs"], "arms": r["arms"]} for name, r in sets.items()}
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    tables, drawn = [], True
    for name, r in sets.items():
        table = format_markdown(r["arms"], r["n_seeds"])
        tables.append(f"## {name}: {cfg.eval.sets[name]}\n\n{table}" if name else table)
        write_csv(os.path.join(out, f"table_{name}.csv" if name else "table.csv"), r["arms"], r["n_seeds"])
        png = f"accuracy_vs_tokens_{name}.png" if name else "accuracy_vs_tokens.png"
        drawn = plot(os.path.join(out, png), r["arms"], r["runs"], labels) and drawn
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write("\n".join(tables))
    drawn = plot_curves(os.path.join(out, "training_curves.png"), curves) and drawn if curves else drawn
    log("\n".join(tables))
    log(
        f"[compare] wrote {out}/results.json, table.md, table*.csv"
        + (
            ", accuracy_vs_tokens*.png, training_curves.png"
            if drawn
            else " (no matplotlib here: no plots; run --report-only elsewhere)"
        )
    )
    return results
