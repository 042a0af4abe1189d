"""SmolLM2-135M-Instruct: which task gives GRPO and RePro something to learn from? (`repro-train signal`)

    python3 experiments/smollm2_signal.py --model models/smollm2-135m-instruct --out runs/smollm2-signal

Runs `repro-train signal` (a recipe's first steps with no update) on recipes/smollm2/grpo_repro.yaml
for each candidate task below: the shipped task (two one-digit terms), harder sums, a system prompt
that asks the model to check its result, and GSM8K-100. Each gets --steps steps of --prompts
prompts x 8 samples at temperature 0.7. Writes OUT/<candidate>/signal.jsonl, OUT/results.json and
OUT/table.md (the mean of the steps per candidate, the columns of `repro-train signal`), and prints
the table. On a 2-core CPU the default (6 candidates x 2 steps of 6 x 8) took 556 s
(docs/results.md section 7).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RECIPE = "recipes/smollm2/grpo_repro.yaml"
CHAIN = "reasoning-gym:chain_sum?size=100&seed=1&min_terms={t}&max_terms={t}&min_digits={d}&max_digits={d}"
CHECK_SYSTEM = (
    "Solve the arithmetic problem. Write the steps, one per line. Then check your result on its own line, "
    "and end with a line of the form 'Final answer: <number>'."
)
GSM_SYSTEM = (
    "Solve the problem step by step, one short step per line. End with a line of the form 'Final answer: <number>'."
)
CANDIDATES = {
    "2term": [],  # the shipped recipe's task
    "3term": [f"data.source={CHAIN.format(t=3, d=1)}"],
    "2term-2digit": [f"data.source={CHAIN.format(t=2, d=2)}"],
    "2term-check": [f'data.system_prompt="{CHECK_SYSTEM}"'],
    "3term-check": [f"data.source={CHAIN.format(t=3, d=1)}", f'data.system_prompt="{CHECK_SYSTEM}"'],
    "gsm8k-100": ["data.source=gsm8k-100", f'data.system_prompt="{GSM_SYSTEM}"', "rollout.max_new_tokens=256"],
}
"""Candidate name -> overrides of RECIPE."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the prepared folder (repro-train prepare-model ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--prompts", type=int, default=6, help="prompts per step (8 samples each)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="*", choices=sorted(CANDIDATES), help="a subset of the candidates")
    args = p.parse_args(argv)
    from repro_train.commands.signal import COLUMNS, advice, mean_row
    from repro_train.config import load

    os.makedirs(args.out, exist_ok=True)
    common = [
        f"model.path={args.model}",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.generation_batch_size={args.prompts * 8}",
        "algo.micro_batch_size=16",
        f"train.device={args.device}",
        "log.wandb=false",
    ]
    results = {}
    for name in args.only or CANDIDATES:
        overrides = [*common, *CANDIDATES[name]]
        out = os.path.join(args.out, name)
        cmd = [sys.executable, "-m", "repro_train", "signal", "--config", RECIPE, "--steps", str(args.steps)]
        cmd += ["--out", out, *overrides]
        t0 = time.time()
        print(f"== {name}", flush=True)
        code = subprocess.call(cmd, cwd=REPO)
        rows = []
        if code == 0:
            with open(os.path.join(out, "signal.jsonl")) as fh:
                rows = [json.loads(line) for line in fh]
        cfg = load(os.path.join(REPO, RECIPE), overrides)
        mean = mean_row(rows) if rows else {}
        results[name] = {
            "overrides": CANDIDATES[name],
            "code": code,
            "elapsed_s": round(time.time() - t0, 1),
            "mean": mean,
            "notes": advice(mean, cfg) if rows else [],
        }
    head = "| candidate | " + " | ".join(h for h, _, _ in COLUMNS) + " | time (s) |"
    lines = [head, "|---" * (len(COLUMNS) + 2) + "|"]
    for name, r in results.items():
        m = r["mean"]
        cells = [format(m[k], f) if k in m and m[k] == m[k] else "-" for _, k, f in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['elapsed_s']:.0f} |")
    table = "\n".join(lines)
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump({"args": vars(args), "results": results}, fh, indent=1)
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    return max((r["code"] for r in results.values()), default=0)


if __name__ == "__main__":
    sys.exit(main())
