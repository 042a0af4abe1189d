"""Plots of evaluation summaries (PNG, matplotlib's Agg canvas; no pyplot global state).

plot_accuracy_vs_length({"base": summarize(a), "repro": summarize(b)}, "acc_vs_len.png")
plot_length_histograms({"base": [812, 640, ...], "repro": [...]}, "lengths.png")
"""

from __future__ import annotations

from pathlib import Path


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")


def plot_accuracy_vs_length(summaries: dict[str, dict], path: str | Path) -> None:
    """One labelled point per model/checkpoint: x = mean response tokens, y = pass@1.

    summaries: label -> `metrics.summarize` output (reads "mean_tokens" and "pass@1")."""
    fig, ax = _figure()
    for label, s in summaries.items():
        ax.scatter(s["mean_tokens"], s["pass@1"])
        ax.annotate(label, (s["mean_tokens"], s["pass@1"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("mean response tokens")
    ax.set_ylabel("pass@1")
    ax.set_title("accuracy vs length")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_length_histograms(lengths: dict[str, list[int]], path: str | Path, bins: int = 30) -> None:
    """Overlaid histograms of response lengths (tokens), one per label, on shared bins."""
    import numpy as np

    fig, ax = _figure()
    everything = [x for xs in lengths.values() for x in xs]
    edges = np.histogram_bin_edges(everything if everything else [0], bins=bins)
    for label, xs in lengths.items():
        ax.hist(xs, bins=edges, alpha=0.5, label=label)
    ax.set_xlabel("response tokens")
    ax.set_ylabel("responses")
    ax.legend()
    _save(fig, path)
