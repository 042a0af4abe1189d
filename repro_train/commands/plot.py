"""`repro-train plot RUN [RUN ...]`: training curves of runs, overlaid, in one PNG (no wandb needed).

    repro-train plot runs/toy/grpo_repro                                 # -> runs/toy/grpo_repro/curves.png
    repro-train plot grpo=runs/toy/grpo repro=runs/toy/grpo_repro --out curves.png [--smooth 5]

A run is a folder with metrics.jsonl (a recipe's train.output_dir); LABEL=DIR names its curves. Panels:
accuracy, response tokens, re-checks and backtracks per response, and for RePro runs J at the last cut and
RePro's share of the advantage; each curve a trailing mean over --smooth steps. Prints each panel's first and
last means, one line per run. docs/evaluation.md, "Training curves".
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

import yaml

from ..core.typed_config import ConfigError
from ..data.jsonl import iter_jsonl
from .signal import with_process

PANELS = (  # (metric, title, format)
    ("accuracy", "accuracy", ".3f"),
    ("response_length/mean", "response tokens", ".1f"),
    ("behavior/rechecks", "re-checks per response", ".3f"),
    ("behavior/backtracks", "backtracks per response", ".3f"),
    ("repro/J_last", "J at the last cut (RePro)", ".2f"),
    ("process_share", "process share of the advantage (RePro)", ".2f"),
)
_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="repro-train plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", metavar="[LABEL=]RUN", help="run folders (with metrics.jsonl)")
    p.add_argument("--out", default=None, help="PNG to write (default: RUN/curves.png for one run, else curves.png)")
    p.add_argument("--smooth", type=int, default=None, help="steps per trailing mean (default: a tenth of the run)")
    p.add_argument("--title", default=None, help="figure title")
    return p


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def parse_runs(specs: list[str]) -> dict[str, str]:
    """{label: folder} from '[LABEL=]DIR' strings; a folder must hold metrics.jsonl."""
    runs: dict[str, str] = {}
    for spec in specs:
        label, sep, folder = spec.partition("=")
        if not sep or os.path.isdir(spec):
            label, folder = os.path.basename(os.path.normpath(spec)), spec
        if not _LABEL.match(label):
            raise ConfigError(f"{spec!r}: label {label!r} may hold only letters, digits, '_', '.', '+', '-'")
        if label in runs:
            raise ConfigError(f"{spec!r}: label {label!r} is used twice; name the runs with LABEL=DIR")
        if not os.path.isfile(os.path.join(folder, "metrics.jsonl")):
            raise ConfigError(f"{spec!r}: {folder} has no metrics.jsonl (a run folder is a recipe's train.output_dir)")
        runs[label] = folder
    return runs


def read_metrics(folder: str) -> list[dict]:
    """metrics.jsonl's rows by step; a step logged again (after a resume) keeps its last row."""
    by_step: dict[int, dict] = {}
    path = os.path.join(folder, "metrics.jsonl")
    for n, row, why in iter_jsonl(path):
        if why is not None or not isinstance(row.get("step"), int):
            raise ConfigError(f"{path} line {n}: {why or 'no integer step'}")
        by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def run_alpha(folder: str) -> float | None:
    """RePro's alpha in the run's config.yaml, None when RePro is off or the file is missing."""
    path = os.path.join(folder, "config.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        repro = (yaml.safe_load(fh) or {}).get("repro") or {}
    return float(repro.get("alpha", 0.0)) if repro.get("enabled") else None


def series(rows: list[dict], alpha: float | None) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} for each panel the rows have (process_share needs alpha); NaN values dropped."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        full = with_process(row, alpha) if alpha is not None else row
        for metric, _, _ in PANELS:
            v = full.get(metric)
            if isinstance(v, (int, float)) and not math.isnan(v):
                steps, values = out.setdefault(metric, ([], []))
                steps.append(row["step"])
                values.append(float(v))
    return out


def trailing_mean(values: list[float], k: int) -> list[float]:
    """m_i = mean(values[max(0, i - k + 1) : i + 1]): each point averages itself and the k - 1 before it."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= k:
            total -= values[i - k]
        out.append(total / min(i + 1, k))
    return out


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def plot_curves(data: dict[str, dict], path: str, smooth: int, title: str | None = None) -> None:
    """One panel per PANELS entry, one colour per run (raw faint, trailing mean solid); a panel no run has says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 7), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    for ax, (metric, name, _) in zip(axes, PANELS):
        for k, (label, curves) in enumerate(data.items()):
            if metric in curves:
                steps, values = curves[metric]
                ax.plot(steps, values, color=f"C{k}", alpha=0.25, lw=0.8)
                ax.plot(steps, trailing_mean(values, smooth), color=f"C{k}", lw=1.8, label=label)
        if not any(metric in c for c in data.values()):
            ax.text(0.5, 0.5, "not logged (RePro off)", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"training curves (solid: mean of the last {smooth} steps)", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")


def summary(data: dict[str, dict], smooth: int) -> str:
    """A markdown table: per run, the mean of each panel over its first and last `smooth` logged steps."""
    lines = ["| run | steps | " + " | ".join(name for _, name, _ in PANELS) + " |", "|---" * (len(PANELS) + 2) + "|"]
    for label, curves in data.items():
        cells = []
        for metric, _, f in PANELS:
            if metric not in curves:
                cells.append("-")
                continue
            v = curves[metric][1]
            first, last = v[:smooth], v[-smooth:]
            cells.append(f"{format(sum(first) / len(first), f)} → {format(sum(last) / len(last), f)}")
        n = max((len(c[0]) for c in curves.values()), default=0)
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_runs(runs: dict[str, str], out: str, smooth: int | None = None, title: str | None = None) -> str:
    """Read the runs, write the PNG at `out`; returns the summary table. The demo calls this too."""
    data = {label: series(read_metrics(folder), run_alpha(folder)) for label, folder in runs.items()}
    longest = max((len(s[0]) for c in data.values() for s in c.values()), default=1)
    k = smooth or max(1, round(longest / 10))
    plot_curves(data, out, k, title)
    return summary(data, k)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.smooth is not None and args.smooth < 1:
            raise ConfigError(f"--smooth must be >= 1, got {args.smooth}")
        runs = parse_runs(args.runs)
        out = args.out or (os.path.join(next(iter(runs.values())), "curves.png") if len(runs) == 1 else "curves.png")
        table = plot_runs(runs, out, args.smooth, args.title)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
