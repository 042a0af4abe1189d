"""Learning curves of toy GRPO + RePro sampled by the vllm and the hf engines (docs/results.md).

    python experiments/plot_engines.py bench/results/2026-12-04-h200-vllm docs/img/engines_toy.png

Reads metrics-{engine}-{seed}.jsonl (bench/vllm_device.sh learn) and plots accuracy, mean response
tokens and the trainer-vs-engine log-prob gap per step, a 5-step moving average per seed.
"""

from __future__ import annotations

import glob
import json
import os
import sys


def moving(xs: list[float], k: int = 5) -> list[float]:
    return [sum(xs[max(0, i - k + 1) : i + 1]) / len(xs[max(0, i - k + 1) : i + 1]) for i in range(len(xs))]


def main(folder: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    colors = {"hf": "tab:blue", "vllm": "tab:orange"}
    for path in sorted(glob.glob(os.path.join(folder, "metrics-*.jsonl"))):
        engine, seed = os.path.basename(path)[len("metrics-") : -len(".jsonl")].split("-")
        rows = [json.loads(line) for line in open(path)]
        steps = [r["step"] for r in rows]
        style = dict(color=colors.get(engine), ls="-" if seed == "0" else "--", label=f"{engine} seed {seed}")
        axes[0].plot(steps, moving([r["accuracy"] for r in rows]), **style)
        axes[1].plot(steps, moving([r["response_length/mean"] for r in rows]), **style)
        if "rollout/logprob_gap/mean" in rows[0]:
            axes[2].plot(steps, [r["rollout/logprob_gap/mean"] for r in rows], **style)
    for ax, title in zip(
        axes, ("accuracy (5-step mean)", "response tokens (5-step mean)", "rollout/logprob_gap/mean (vllm)")
    ):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
