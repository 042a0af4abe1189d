"""SmolLM2-135M-Instruct: GRPO vs GRPO + RePro, 3 seeds, the same budget, on one GPU.

    # once, where gguf and reasoning-gym are installed (`make setup`):
    repro-train prepare-model smollm2-135m-instruct --out models/smollm2-135m-instruct
    python3 experiments/smollm2_repro.py --export-data data/smollm2
    # then, on the GPU machine (needs neither gguf nor reasoning-gym):
    python3 experiments/smollm2_repro.py --model models/smollm2-135m-instruct --data-dir data/smollm2 --out DIR \
        --engine vllm
    # on the lent device: bash bench/vllm_device.sh smollm2 OUTDIR (what to carry: its header)
    # another training set (held-out sets still drop its questions), fewer evaluation sets:
    python3 experiments/smollm2_repro.py --export-data data/smollm2-3term \
        --train-source 'reasoning-gym:chain_sum?size=100&seed=1&min_terms=3&max_terms=3&min_digits=1&max_digits=1'
    python3 experiments/smollm2_repro.py ... --data-dir data/smollm2-3term --eval-sets heldout_3term,heldout_2term

Every arm is a shipped recipe (recipes/smollm2/<arm>.yaml: same budget, RePro on or off) trained
with `repro-train train` (the hf rollout engine, or with --engine vllm an in-process vLLM engine per
run, --vllm-share of the GPU each, started --stagger seconds apart) from the prepared model, with the training set
read from DIR/train.jsonl (the recipe's data.source, exported), then evaluated with
`repro-train eval` on three sets: heldout_2term (the two-term one-digit chain_sum problems the
training set does not contain), heldout_3term (three terms: harder than training) and gsm8k-100,
greedy (one argmax response per problem: batched, so the evaluation takes seconds), with the
recipe's system prompt. The base model is evaluated once. The six runs go in parallel, as
processes on the one GPU. Writes DIR/<arm>-s<seed>/ (run folder, eval_<set>/summary.json),
DIR/results.json, DIR/table.md (held-out accuracy, mean tokens, re-check and backtrack rates:
mean ± std over seeds; on-policy training metrics) and DIR/curves.png, and prints the table.

Budget (default): 40 steps of 16 prompts x 8 samples x at most 96 tokens per run, sized for about
8 minutes on one H200 by estimate, not yet measured (--steps sets it; the time is printed). On a CPU,
`--device cpu --steps 1 --tiny` is a dry run of the whole pipeline (a few minutes); the CPU pilot of
docs/results.md (section 6: 16 steps of 6 prompts x 8 samples x 64 tokens, --parallel 2, --problems 100)
took 5,142 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
from repro_train.core.jobs import run_all  # noqa: E402

sys.path.insert(0, REPO)
EVAL_SETS = {"heldout_2term": 96, "heldout_3term": 96, "gsm8k-100": 256}
"""Evaluation sets (files in --data-dir) and their max new tokens."""
HELDOUT = {
    "heldout_2term": "reasoning-gym:chain_sum?size=1000&seed=1001&min_terms=2&max_terms=2&min_digits=1&max_digits=1",
    "heldout_3term": "reasoning-gym:chain_sum?size=300&seed=1002&min_terms=3&max_terms=3&min_digits=1&max_digits=1",
}
GSM_SYSTEM = (
    "Solve the problem step by step, one short step per line. End with a line of the form 'Final answer: <number>'."
)
METRICS = [
    ("pass@1", "accuracy", 3),
    ("mean_tokens", "mean tokens", 1),
    ("recheck_rate", "re-checks / resp.", 3),
    ("backtrack_rate", "backtracks / resp.", 3),
]
TRAIN = [
    ("accuracy", "accuracy"),
    ("response_length/mean", "mean tokens"),
    ("behavior/rechecks", "re-checks"),
    ("behavior/backtracks", "backtracks"),
    ("repro/J_last", "J at last cut"),
]
CURVES = [
    "reward/mean",
    "response_length/mean",
    "behavior/rechecks",
    "behavior/backtracks",
    "repro/J_b",
    "repro/J_last",
]
TINY = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=2",
    "rollout.max_new_tokens=16",
    "rollout.generation_batch_size=4",
    "algo.micro_batch_size=4",
    "reward.num_workers=1",
]
"""--tiny: overrides for a CPU dry run."""


def recipe(arm: str) -> str:
    return os.path.join(REPO, "recipes", "smollm2", f"{arm}.yaml")


def read_yaml(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def read_jsonl(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(x) for x in fh]


def write_json(obj, path: str) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1)


def export_data(folder: str, source: str | None = None) -> None:
    """train.jsonl (`source`; default the recipes' data.source), the held-out sets without the training
    questions, and gsm8k-100, as JSONL (needs reasoning-gym)."""
    from repro_train.data.named import disjoint, load_named, unique
    from repro_train.tasks.arithmetic import write_jsonl

    if source is None:
        source = read_yaml(recipe("grpo_repro"))["data"]["source"]
        for arm in ("grpo", "grpo_repro"):
            assert read_yaml(recipe(arm))["data"]["source"] == source, f"{arm}.yaml trains on other data"
    train = load_named(source)
    sets = {
        "train": train,
        "heldout_2term": unique(disjoint(load_named(HELDOUT["heldout_2term"]), train)),
        "heldout_3term": unique(disjoint(load_named(HELDOUT["heldout_3term"]), train)),
        "gsm8k-100": load_named("gsm8k-100"),
    }
    for name, rows in sets.items():
        write_jsonl(rows, os.path.join(folder, f"{name}.jsonl"))
        print(f"{folder}/{name}.jsonl: {len(rows)} rows")
    write_json({"train": source, **HELDOUT, "gsm8k-100": "gsm8k-100"}, os.path.join(folder, "sources.json"))


def q(xs: list[str]) -> str:
    return " ".join("'" + x.replace("'", "'\\''") + "'" for x in xs)


def eval_cmds(label: str, model: str, out: str, a) -> list[str]:
    system = read_yaml(recipe("grpo_repro"))["data"]["system_prompt"]
    cmds = []
    for name in a.eval_sets.split(","):
        tokens = EVAL_SETS[name]
        ev = [
            sys.executable,
            "-m",
            "repro_train",
            "eval",
            "--model",
            f"{label}={model}",
            "--data",
            os.path.join(a.data_dir, f"{name}.jsonl"),
            "--greedy",
            "--reward",
            "last_number",  # the recipes' check (math_verify is gamed by restated problems: docs/results.md)
            "--max-new-tokens",
            str(16 if a.tiny else tokens),
            "--device",
            a.device,
            "--system-prompt",
            GSM_SYSTEM if name == "gsm8k-100" else system,
            "--out",
            os.path.join(out, f"eval_{name}"),
        ]
        if a.problems:
            ev += ["--n-problems", str(a.problems)]
        cmds.append(f"{q(ev)} >> '{out}.eval.log' 2>&1")
    return cmds


def engine_overrides(a) -> list[str]:
    """--engine vllm: every run samples with its own in-process vLLM engine, a share of the one GPU each."""
    if a.engine == "hf":
        return []
    return ["rollout.engine=vllm", f"rollout.vllm.gpu_memory_utilization={a.vllm_share}"]


def job(arm: str, seed: int, a) -> tuple[str, str]:
    """Shell command that trains one run, then evaluates its final policy; returns (folder, command)."""
    out = os.path.join(a.out, f"{arm}-s{seed}")
    train = [
        sys.executable,
        "-m",
        "repro_train",
        "train",
        "--config",
        recipe(arm),
        f"model.path={a.model}",
        f"data.source={os.path.join(a.data_dir, 'train.jsonl')}",
        f"train.seed={seed}",
        f"train.steps={a.steps}",
        f"train.output_dir={out}",
        "train.save_every=0",
        f"train.device={a.device}",
        "log.wandb=false",
        "log.progress=false",
        *(TINY if a.tiny else []),
        *engine_overrides(a),
        *a.override,
    ]
    policy = os.path.join(out, f"checkpoint-{a.steps:06d}", "policy")
    return out, " && ".join([f"{q(train)} > '{out}.train.log' 2>&1", *eval_cmds(f"{arm}-s{seed}", policy, out, a)])


def mean_std(xs: list[float]) -> dict:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def summarize(runs: dict[str, str], arms: list[str]) -> dict:
    """Per run and per arm (mean/std over seeds) evaluation metrics of each set."""
    res: dict = {"runs": {}, "arms": {}}
    for name, folder in runs.items():
        for s in EVAL_SETS:
            path = os.path.join(folder, f"eval_{s}", "summary.json")
            if os.path.exists(path):
                with open(path) as fh:
                    res["runs"].setdefault(name, {})[s] = next(iter(json.load(fh).values()))
    for arm in ["base", *arms]:
        vals = [v for k, v in res["runs"].items() if k == arm or k.rsplit("-s", 1)[0] == arm]
        for s in EVAL_SETS:
            for key, *_ in METRICS:
                xs = [v[s][key] for v in vals if s in v and v[s].get(key) is not None]
                if xs:
                    res["arms"].setdefault(arm, {}).setdefault(s, {})[key] = mean_std(xs)
    return res


def table(res: dict) -> str:
    head = "| set | arm | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for s in EVAL_SETS:
        for arm, per in res["arms"].items():
            if s not in per:
                continue
            cells = []
            for key, _, d in METRICS:
                m = per[s].get(key)
                cells.append(
                    "-"
                    if m is None
                    else f"{m['mean']:.{d}f} ± {m['std']:.{d}f}"
                    if m["n"] > 1
                    else f"{m['mean']:.{d}f}"
                )
            lines.append(f"| {s} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_table(runs: dict[str, str], arms: list[str], k: int = 10) -> tuple[dict, str]:
    """On-policy training metrics: mean of the first and last k steps of each run, mean ± std over seeds."""
    out = {}
    for arm in arms:
        per: dict = {}
        for name, folder in runs.items():
            f = os.path.join(folder, "metrics.jsonl")
            if name.rsplit("-s", 1)[0] != arm or not os.path.exists(f):
                continue
            rows = read_jsonl(f)
            for key, _ in TRAIN:
                v = [r[key] for r in rows if key in r]
                if v:
                    per.setdefault(key, []).append((statistics.mean(v[:k]), statistics.mean(v[-k:])))
        out[arm] = {
            key: {"first": statistics.mean(x[0] for x in v), **mean_std([x[1] for x in v])} for key, v in per.items()
        }
    lines = ["| arm | " + " | ".join(label for _, label in TRAIN) + " |", "|" + "---|" * (len(TRAIN) + 1)]
    for arm, m in out.items():
        cells = [
            f"{m[key]['first']:.3f} → {m[key]['mean']:.3f} ± {m[key]['std']:.3f}" if key in m else "-"
            for key, _ in TRAIN
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return out, "\n".join(lines)


def curves(runs: dict[str, str], arms: list[str], path: str, k: int = 5) -> None:
    try:
        import matplotlib
    except ImportError:  # the GPU image has none: the figure is drawn later with --summarize-only
        print(f"matplotlib is not installed: no {path}; draw it with --summarize-only --out DIR where it is")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    labelled = set()
    for name, folder in runs.items():
        arm = name.rsplit("-s", 1)[0]
        f = os.path.join(folder, "metrics.jsonl")
        if arm not in arms or not os.path.exists(f):
            continue
        rows = read_jsonl(f)
        for ax, key in zip(axes.flat, CURVES):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            w = min(k, len(pts))
            if pts:
                xs = [p[0] for p in pts][w - 1 :]
                ys = [sum(p[1] for p in pts[i - w + 1 : i + 1]) / w for i in range(w - 1, len(pts))]
                ax.plot(
                    xs,
                    ys,
                    color=f"C{arms.index(arm)}",
                    alpha=0.7,
                    marker="." if len(xs) < 3 else None,
                    label=None if arm in labelled else arm,
                )
                labelled.add(arm)
            ax.set_title(f"{key} ({k}-step mean)", fontsize=9)
    if labelled:
        axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-data", metavar="DIR", help="write the data sets as JSONL to DIR and stop")
    p.add_argument(
        "--train-source",
        metavar="SOURCE",
        help="--export-data: the training set's data.source (default: the recipes'), e.g. three-term sums",
    )
    p.add_argument("--model", help="the folder made by `repro-train prepare-model smollm2-135m-instruct`")
    p.add_argument("--data-dir", help="the folder written by --export-data")
    p.add_argument("--out", help="results folder")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="grpo,grpo_repro")
    p.add_argument("--parallel", type=int, default=7, help="processes at once (6 runs + the base evaluation)")
    p.add_argument(
        "--eval-sets",
        default=",".join(EVAL_SETS),
        help=f"evaluation sets, comma-separated (default: {','.join(EVAL_SETS)})",
    )
    p.add_argument("--problems", type=int, default=None, help="first N problems of each evaluation set (default: all)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="rollout engine of every run")
    p.add_argument("--vllm-share", type=float, default=0.1, help="--engine vllm: GPU memory share of each run's engine")
    p.add_argument(
        "--stagger", type=float, default=None, help="seconds between job starts (default: 45 with vllm, else 0)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="CPU dry run: 2 prompts x 2 samples x 16 tokens, 16-token evaluation"
    )
    p.add_argument("--override", action="append", default=[], help="key=value for every run, e.g. optim.lr=5.0e-6")
    p.add_argument(
        "--summarize-only", action="store_true", help="rebuild results.json, table.md, curves.png from --out"
    )
    return p


def budget_line(args: dict) -> str:
    """The run's budget as table.md states it, from its arguments (`results.json`'s "args")."""
    return (
        f"{args['steps']} steps x {len(args['seeds'].split(','))} seeds per arm; recipes/smollm2/<arm>.yaml, "
        f"{args.get('engine', 'hf')} engine"
        + (" with --tiny" if args.get("tiny") else "")
        + (f", overrides {args['override']}" if args.get("override") else "")
    )


def main() -> int:
    p = parser()
    a = p.parse_args()
    if a.train_source and not a.export_data:
        p.error("--train-source goes with --export-data DIR (the run reads DIR/train.jsonl)")
    if a.export_data:
        export_data(a.export_data, a.train_source)
        return 0
    if a.engine == "vllm" and a.device == "cpu":
        p.error("--engine vllm needs a GPU: use --device cuda (or auto), or --engine hf on a CPU")
    if not (a.model and a.data_dir and a.out):
        p.error("--model, --data-dir and --out are needed (or --export-data DIR)")
    unknown = sorted(set(a.eval_sets.split(",")) - set(EVAL_SETS))
    if unknown:
        p.error(f"--eval-sets: unknown {unknown}; choices: {','.join(EVAL_SETS)}")
    for f in ["train", *a.eval_sets.split(",")]:
        if not os.path.exists(os.path.join(a.data_dir, f"{f}.jsonl")):
            p.error(
                f"{a.data_dir}/{f}.jsonl is missing: run "
                f"`python3 experiments/smollm2_repro.py --export-data {a.data_dir}`"
            )
    if not os.path.exists(os.path.join(a.model, "config.json")):
        p.error(
            f"--model {a.model} is not a model folder: repro-train prepare-model smollm2-135m-instruct --out {a.model}"
        )
    a.out, a.model, a.data_dir = (os.path.abspath(x) for x in (a.out, a.model, a.data_dir))
    os.makedirs(a.out, exist_ok=True)
    arms = a.arms.split(",")
    runs, cmds = {}, []
    for arm in arms:
        for seed in map(int, a.seeds.split(",")):
            runs[f"{arm}-s{seed}"], cmd = job(arm, seed, a)
            cmds.append(cmd)
    base = os.path.join(a.out, "base")
    os.makedirs(base, exist_ok=True)
    cmds.append(" && ".join(eval_cmds("base", a.model, base, a)))
    runs["base"] = base
    t0 = time.time()
    stagger = a.stagger if a.stagger is not None else 45.0 if a.engine == "vllm" else 0.0
    codes = [None] * len(cmds) if a.summarize_only else run_all(cmds, a.parallel, REPO, stagger_s=stagger)
    res = summarize(runs, arms)
    trained = {k: v for k, v in runs.items() if k != "base"}
    res["training"], ttable = train_table(trained, arms)
    res.update(args=vars(a), codes=dict(zip(runs, codes)), elapsed_s=time.time() - t0)
    previous = os.path.join(a.out, "results.json")
    if a.summarize_only and os.path.exists(previous):  # keep the run's own arguments, exit codes and time
        with open(previous) as fh:
            res.update({k: v for k, v in json.load(fh).items() if k in ("args", "codes", "elapsed_s")})
    write_json(res, os.path.join(a.out, "results.json"))
    budget = budget_line(res["args"])
    with open(os.path.join(a.out, "table.md"), "w") as fh:
        fh.write(
            f"SmolLM2-135M-Instruct, {budget}.\n\nHeld-out evaluation, greedy (mean ± std over seeds):\n\n"
            + table(res)
            + "\n\nOn-policy training metrics, first 10 steps → last 10 steps (mean ± std over seeds):\n\n"
            + ttable
            + "\n"
        )
    curves(trained, arms, os.path.join(a.out, "curves.png"))
    print(ttable + "\n\n" + table(res))
    print(f"exit codes: {res['codes']}; {res['elapsed_s']:.0f} s; wrote {a.out}/table.md, results.json, curves.png")
    return 0 if a.summarize_only or all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
