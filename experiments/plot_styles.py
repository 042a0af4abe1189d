"""Figure docs/img/toy_styles_J.png: RePro's J and per-step r for one toy problem written three ways.

    python3 experiments/plot_styles.py [--out docs/img/toy_styles_J.png] [--seed 7]

Draws a 3-operation problem, writes it as a direct, a re-check and a backtrack trace
(tasks/arithmetic.make_trace), scores all three with the shipped tiny reasoner exactly as
`repro-train inspect` does (commands/inspect.py, repro_rows), and plots J along each response with the
process reward of each step.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/img/toy_styles_J.png")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repro_train.commands.inspect import repro_rows
    from repro_train.data.prompts import encode_prompt
    from repro_train.models.loading import load_for_inference
    from repro_train.repro.config import ReProConfig
    from repro_train.tasks.arithmetic import TaskConfig, make_problem, make_trace
    from repro_train.tasks.reasoner import TOY_PROBE_PREFIX

    rng = random.Random(a.seed)
    problem = make_problem(rng, TaskConfig())
    while len(problem.ops) != 3:
        problem = make_problem(rng, TaskConfig())
    model, tok = load_for_inference("toy")
    styles = ["direct", "recheck", "backtrack"]
    rows = [
        {
            "prompt_ids": encode_prompt(tok, {"question": problem.question}),
            "response_ids": tok(make_trace(problem, s, random.Random(3)), add_special_tokens=False).input_ids,
            "answer": problem.answer,
            "group": s,
        }
        for s in styles
    ]
    results = repro_rows(model, tok, ReProConfig(probe_prefix=TOY_PROBE_PREFIX), rows, 1.0)
    fig, axes = plt.subplots(2, 3, figsize=(13, 5.5), sharey="row", gridspec_kw={"height_ratios": [3, 2]})
    for col, (style, r) in enumerate(zip(styles, results)):
        ax, bx = axes[0, col], axes[1, col]
        ax.plot([0] + r["cuts"], [r["J_b"]] + r["J"], "o-", color="C0")
        ax.axhline(r["J_b"], color="C7", ls=":")
        ax.set_title(f"{style} trace", fontsize=10)
        prev = 0
        for c, rv in zip(r["cuts"], r["r"]):
            bx.bar(
                prev,
                rv,
                width=c - prev,
                align="edge",
                color="C2" if rv > 0.05 else "C3",
                alpha=0.75,
                edgecolor="k",
                lw=0.5,
            )
            step = tok.decode(r["response_ids"][prev:c]).strip().split("\n")[0][:26]
            bx.text(prev + (c - prev) / 2, max(rv, 0) + 0.02, step, ha="center", va="bottom", fontsize=6, rotation=90)
            prev = c
        bx.axhline(0, color="k", lw=0.8)
        bx.set_xlabel("response token")
        bx.set_ylim(-0.05, 0.9)
        print(style, "r =", r["r"])
    axes[0, 0].set_ylabel("J = mean log p(answer)")
    axes[1, 0].set_ylabel("process reward r")
    fig.suptitle(f"The shipped tiny reasoner scored by RePro: '{problem.question}' written three ways", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=90)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
