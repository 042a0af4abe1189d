"""`repro-train demo` (what `make demo` runs): GRPO + RePro on the shipped tiny reasoner, on the CPU.

    repro-train demo [--steps N] [--out runs/demo] [--problems 64] [--samples 4]

1. Evaluates the tiny reasoner (a 4-layer Llama trained from scratch on the toy arithmetic task,
   whose traces re-check and backtrack) on held-out problems: accuracy, length, re-check and
   backtracking rates.
2. Trains it with GRPO + RePro (`recipes/toy/demo.yaml`), with a progress bar.
3. Evaluates the trained policy on the same problems with the same sampling seeds.
4. Prints a before/after table and where the plots and logs are.

No download: the model, its tokenizer and the task ship with the project.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from ..config import load
from ..core.typed_config import ConfigError
from ..eval.runner import EvalSettings, evaluate, load_problems
from ..models.loading import load_for_inference
from ..trainer.loop import train
from .eval import format_table, write_outputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_RECIPE = os.path.join(REPO, "recipes", "toy", "demo.yaml")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="repro-train demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help="training recipe (default: recipes/toy/demo.yaml)")
    p.add_argument("--out", default="runs/demo", help="run folder (emptied first)")
    p.add_argument("--steps", type=int, default=None, help="RL steps (default: the recipe's)")
    p.add_argument("--problems", type=int, default=64, help="held-out toy problems to evaluate")
    p.add_argument("--samples", type=int, default=4, help="samples per problem (temperature 1)")
    p.add_argument("--seed", type=int, default=0, help="evaluation sampling seed")
    return p


def table(before: dict, after: dict) -> str:
    rows = [
        ("accuracy (pass@1)", "pass@1", "{:.3f}"),
        ("maj@4", "maj@4", "{:.3f}"),
        ("mean response tokens", "mean_tokens", "{:.1f}"),
        ("median response tokens", "median_tokens", "{:.1f}"),
        ("re-checks per response", "recheck_rate", "{:.3f}"),
        ("backtracks per response", "backtrack_rate", "{:.3f}"),
        ("tokens after first correct answer", "tokens_after_first_correct", "{:.1f}"),
    ]
    fmt = lambda f, v: "-" if v is None else f.format(v)  # noqa: E731
    lines = [f"| {'':34} | {'before':>8} | {'after':>8} |", f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|"]
    for name, key, f in rows:
        if key in before:
            lines.append(f"| {name:34} | {fmt(f, before.get(key)):>8} | {fmt(f, after.get(key)):>8} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    overrides = [f"train.output_dir={args.out}", "train.resume=null", "train.device=cpu"]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    try:
        if not os.path.exists(args.recipe):
            raise ConfigError(f"recipe {args.recipe} not found (run from the repository, or pass --recipe)")
        cfg = load(args.recipe, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    os.environ.setdefault("WANDB_SILENT", "true")  # wandb logs offline into the run folder, quietly

    t0 = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    print(
        f"repro-train demo: GRPO + RePro on the shipped tiny reasoner, {cfg.train.steps} steps on the CPU.\n"
        f"  recipe {os.path.relpath(args.recipe)}; run folder {args.out}\n",
        flush=True,
    )

    problems = load_problems("toy", args.problems, toy_seed=777)  # never in the training set (seed 1234)
    settings = EvalSettings(
        samples=args.samples,
        temperature=cfg.rollout.temperature,
        max_new_tokens=cfg.rollout.max_new_tokens,
        reward="exact_match",
        seed=args.seed,
        k_values=(1, args.samples),
    )

    def run_eval(path: str, label: str) -> tuple[dict, list]:
        print(f"[{label}] evaluating {len(problems)} held-out problems x {args.samples} samples ...", flush=True)
        model, tok = load_for_inference(path)
        return evaluate(model, tok, problems, settings)

    before, before_samples = run_eval("toy", "before")
    print(f"[train] GRPO + RePro (alpha {cfg.repro.alpha}, top_k {cfg.repro.top_k}, w {cfg.repro.w}) ...", flush=True)
    run = train(cfg)
    final = os.path.join(run, f"checkpoint-{cfg.train.steps:06d}", "policy")
    after, after_samples = run_eval(final, "after")
    out = os.path.join(args.out, "eval")
    write_outputs(Path(out), {"before": before, "after": after}, {"before": before_samples, "after": after_samples})
    print("\n" + table(before, after))
    print(f"\nfull table:\n{format_table({'before': before, 'after': after})}")
    print(f"\nplots: {out}/accuracy_vs_length.png, {out}/length_hist.png")
    print(f"training metrics: {run}/metrics.jsonl (RePro: repro/*), samples: {run}/samples.jsonl")
    print(f"trained policy: {final}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0
