"""The toy-task experiment of docs/results.md: GRPO vs GRPO + RePro vs PPO vs PPO + RePro, 3 seeds.

    python3 experiments/toy_repro.py --out DIR [--steps 200] [--seeds 0,1,2] [--parallel 12]
        [--problems 200] [--samples 4] [--arms grpo,grpo_repro,ppo,ppo_repro] [--override k=v ...]

Every arm is a shipped recipe (recipes/toy/<arm>.yaml: same budget, RePro on or off) trained with
`repro-train train` from the shipped tiny reasoner, then evaluated with `repro-train eval` on the
same held-out problems (toy seed 777, never trained on) with the same sampling seeds; the base
model is evaluated once. Runs go in parallel (one process each). Writes DIR/<arm>-s<seed>/ (run
folder, eval/summary.json), DIR/results.json (per run and mean/std per arm), DIR/table.md, and
DIR/curves.png (training curves: reward, response length, re-checks, backtracks, J_b, J_last).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
from repro_train.core.jobs import run_all  # noqa: E402

METRICS = [
    ("pass@1", "accuracy (pass@1)"),
    ("maj@4", "maj@4"),
    ("mean_tokens", "mean tokens"),
    ("recheck_rate", "re-checks / response"),
    ("backtrack_rate", "backtracks / response"),
    ("tokens_after_first_correct", "tokens after first correct"),
]
CURVES = [
    "reward/mean",
    "response_length/mean",
    "behavior/rechecks",
    "behavior/backtracks",
    "repro/J_b",
    "repro/J_last",
]


def job(arm: str, seed: int, a) -> tuple[str, str]:
    """Shell command that trains one run and evaluates its final policy; returns (folder, command)."""
    out = os.path.join(a.out, f"{arm}-s{seed}")
    py = sys.executable
    train = [
        py,
        "-m",
        "repro_train",
        "train",
        "--config",
        os.path.join(REPO, "recipes", "toy", f"{arm}.yaml"),
        f"train.seed={seed}",
        f"train.steps={a.steps}",
        f"train.output_dir={out}",
        "train.save_every=0",
        "log.wandb=false",
        "log.progress=false",
        *a.override,
    ]
    policy = os.path.join(out, f"checkpoint-{a.steps:06d}", "policy")
    ev = [
        py,
        "-m",
        "repro_train",
        "eval",
        "--model",
        f"{arm}-s{seed}={policy}",
        "--data",
        "toy",
        "--n-problems",
        str(a.problems),
        "--samples",
        str(a.samples),
        "--seed",
        "0",
        "--reward",
        "exact_match",
        "--max-new-tokens",
        "128",
        "--out",
        os.path.join(out, "eval"),
    ]
    q = lambda xs: " ".join(f"'{x}'" for x in xs)  # noqa: E731
    return out, f"{q(train)} > '{out}.train.log' 2>&1 && {q(ev)} > '{out}.eval.log' 2>&1"


def summarize(a, runs: dict[str, str]) -> dict:
    res = {"runs": {}, "arms": {}}
    for name, folder in runs.items():
        path = os.path.join(folder, "eval", "summary.json")
        if os.path.exists(path):
            res["runs"][name] = next(iter(json.load(open(path)).values()))
    for arm in ["base"] + a.arms.split(","):
        vals = [v for k, v in res["runs"].items() if k == arm or k.startswith(arm + "-s")]
        if not vals:
            continue
        res["arms"][arm] = {}
        for key, _ in METRICS:
            xs = [v[key] for v in vals if v.get(key) is not None]
            if xs:
                res["arms"][arm][key] = {
                    "mean": statistics.mean(xs),
                    "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                    "n": len(xs),
                }
    return res


TRAIN = [
    ("accuracy", "accuracy"),
    ("response_length/mean", "mean tokens"),
    ("behavior/rechecks", "re-checks / response"),
    ("behavior/backtracks", "backtracks / response"),
    ("repro/J_last", "J at last cut"),
]


def train_table(a, runs: dict[str, str], last: int = 50, first: int = 10) -> tuple[dict, str]:
    """On-policy training metrics: mean of the first `first` and last `last` steps of every run,
    then mean and std over seeds per arm."""
    out = {}
    for arm in a.arms.split(","):
        per = {}
        for name, folder in runs.items():
            f = os.path.join(folder, "metrics.jsonl")
            if name.rsplit("-s", 1)[0] != arm or not os.path.exists(f):
                continue
            rows = [json.loads(x) for x in open(f)]
            for key, _ in TRAIN:
                v = [r[key] for r in rows if key in r]
                if v:
                    per.setdefault(key, []).append((statistics.mean(v[:first]), statistics.mean(v[-last:]), len(v)))
        out[arm] = {
            k: {
                "first": statistics.mean(x[0] for x in v),
                "last": statistics.mean(x[1] for x in v),
                "last_std": statistics.stdev([x[1] for x in v]) if len(v) > 1 else 0.0,
                "n": len(v),
                "steps": min(x[2] for x in v),
            }
            for k, v in per.items()
        }
    head = "| arm | steps | " + " | ".join(label for _, label in TRAIN) + " |"
    lines = [head, "|" + "---|" * (len(TRAIN) + 2)]
    for arm, m in out.items():
        cells = [
            f"{m[k]['first']:.3f} → {m[k]['last']:.3f} ± {m[k]['last_std']:.3f}" if k in m else "-" for k, _ in TRAIN
        ]
        steps = min((v["steps"] for v in m.values()), default=0)
        lines.append(f"| {arm} | {steps} | " + " | ".join(cells) + " |")
    return out, "\n".join(lines)


def table(res: dict) -> str:
    head = "| arm | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for arm, m in res["arms"].items():
        cells = []
        for key, _ in METRICS:
            if key in m:
                d = 3 if key in ("pass@1", "maj@4", "recheck_rate", "backtrack_rate") else 1
                cells.append(
                    f"{m[key]['mean']:.{d}f} ± {m[key]['std']:.{d}f}" if m[key]["n"] > 1 else f"{m[key]['mean']:.{d}f}"
                )
            else:
                cells.append("-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves(a, runs: dict[str, str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    colors = {arm: f"C{i}" for i, arm in enumerate(a.arms.split(","))}
    for name, folder in runs.items():
        arm = name.rsplit("-s", 1)[0]
        f = os.path.join(folder, "metrics.jsonl")
        if not os.path.exists(f):
            continue
        rows = [json.loads(x) for x in open(f)]
        for ax, key in zip(axes.flat, CURVES):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                k = 10  # moving average over 10 steps
                xs = [p[0] for p in pts][k - 1 :]
                ys = [sum(p[1] for p in pts[i - k + 1 : i + 1]) / k for i in range(k - 1, len(pts))]
                ax.plot(
                    xs,
                    ys,
                    color=colors[arm],
                    alpha=0.7,
                    label=arm if name.endswith("-s" + a.seeds.split(",")[0]) else None,
                )
            ax.set_title(key + " (10-step mean)", fontsize=9)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="grpo,grpo_repro,ppo,ppo_repro")
    p.add_argument("--parallel", type=int, default=12)
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--override", action="append", default=[], help="key=value for every run, e.g. optim.lr=1.0e-4")
    p.add_argument("--summarize-only", action="store_true", help="rebuild results.json, table.md, curves.png from DIR")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    runs, cmds = {}, []
    for arm in a.arms.split(","):
        for seed in map(int, a.seeds.split(",")):
            folder, cmd = job(arm, seed, a)
            runs[f"{arm}-s{seed}"] = folder
            cmds.append(cmd)
    base = os.path.join(a.out, "base")
    cmds.append(
        f"'{sys.executable}' -m repro_train eval --model base=toy --data toy --n-problems {a.problems} "
        f"--samples {a.samples} --seed 0 --reward exact_match --max-new-tokens 128 --out '{base}/eval' "
        f"> '{base}.eval.log' 2>&1"
    )
    runs["base"] = base
    os.makedirs(base, exist_ok=True)
    t0 = time.time()
    codes = [None] * len(cmds) if a.summarize_only else run_all(cmds, a.parallel, REPO)
    res = summarize(a, runs)
    res.update(args=vars(a), codes=dict(zip(list(runs), codes)), elapsed_s=time.time() - t0)
    res["training"], ttable = train_table(a, {k: v for k, v in runs.items() if k != "base"})
    json.dump(res, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    open(os.path.join(a.out, "table.md"), "w").write(
        "Held-out evaluation (mean ± std over seeds):\n\n" + table(res) + "\n\n"
        "On-policy training metrics, first 10 steps → last 50 steps (mean ± std over seeds):\n\n" + ttable + "\n"
    )
    print(ttable)
    curves(a, {k: v for k, v in runs.items() if k != "base"}, os.path.join(a.out, "curves.png"))
    print(table(res))
    print(f"exit codes: {res['codes']}; {res['elapsed_s']:.0f} s")
    return 0 if a.summarize_only or all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
