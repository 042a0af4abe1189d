"""`repro-train demo` (what `make demo` runs): what GRPO does and what RePro adds, on the shipped tiny reasoner, CPU.

    repro-train demo [--out runs/demo] [--steps N] [--problems 64] [--samples 4] [--parallel 2]

Trains the tiny reasoner twice from recipes/toy/demo.yaml with one budget and seed (GRPO, GRPO + RePro),
evaluates the base model and both policies on the same held-out problems, prints the table and one response
the RePro run trained on, step by step, and draws the curves. It writes only its own files into --out and
downloads nothing. What it prints and writes: docs/evaluation.md, "The demo".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import threading
import time

import torch
from tqdm import tqdm

from ..config import load
from ..core.typed_config import ConfigError
from ..eval.detectors import classify_paragraph
from ..models.loading import load_tokenizer_at
from ..repro.scores import token_process_advantages
from .compare.config import ArmConfig, CompareConfig, CompareEvalConfig
from .compare.jobs import make_jobs, run_jobs
from .inspect import plot_row, short, step_texts
from .plot import plot_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_RECIPE = os.path.join(REPO, "recipes", "toy", "demo.yaml")
MARKER = ".repro-train-demo"
"""The file that marks a folder as a demo's output (so a later demo may replace its entries)."""
OWN = re.compile(r"^(base|grpo-s\d+|grpo_repro-s\d+|results\.json|table\.md|curves\.png|example\.png)$")
"""The entries a demo writes besides the marker: the only ones a later demo removes."""
ARMS = (ArmConfig("grpo", ("repro.enabled=false",)), ArmConfig("grpo_repro", ()))
NAMES = {"base": "base model", "grpo": "GRPO", "grpo_repro": "GRPO + RePro"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="repro-train demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help="training recipe (default: recipes/toy/demo.yaml)")
    p.add_argument("--out", default="runs/demo", help="output folder: new, empty, or a previous demo's")
    p.add_argument("--steps", type=int, default=None, help="RL steps per arm (default: the recipe's)")
    p.add_argument("--problems", type=int, default=64, help="held-out toy problems to evaluate")
    p.add_argument("--samples", type=int, default=4, help="samples per problem (temperature 1)")
    p.add_argument("--seed", type=int, default=0, help="evaluation sampling seed")
    p.add_argument("--parallel", type=int, default=2, help="processes at once (default 2: the two arms together)")
    return p


# ---------------------------------------------------------------------------------------------
# the output folder
# ---------------------------------------------------------------------------------------------


def prepare_out(out: str) -> list[str]:
    """Make `out` ready for a demo: a new or empty folder, or a previous demo's output (marker present), whose own
    entries (OWN) are removed; returns their names. Anything else in a folder without the marker: ConfigError."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} is a file; give a folder")
    entries = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if entries and MARKER not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(
            f"--out {out} holds files the demo did not write ({shown}); the demo writes only into a new or empty "
            "folder, or over a previous demo's output: give another --out"
        )
    removed = [e for e in entries if OWN.match(e)]
    for name in removed:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, MARKER), "w") as fh:
        json.dump({"written_by": "repro-train demo", "started": time.strftime("%Y-%m-%d %H:%M:%S")}, fh)
    return removed


# ---------------------------------------------------------------------------------------------
# the runs
# ---------------------------------------------------------------------------------------------


def demo_compare(args, recipe) -> CompareConfig:
    """The demo as a comparison: GRPO and GRPO + RePro from the demo recipe (its seed), and the base model, all
    evaluated on the same held-out toy problems with the same sampling seeds."""
    return CompareConfig(
        base=os.path.abspath(args.recipe),
        overrides=(f"train.steps={args.steps}",) if args.steps is not None else (),
        seeds=(recipe.train.seed,),
        arms=ARMS,
        eval=CompareEvalConfig(
            data="toy",
            n_problems=args.problems,
            toy_seed=777,  # never in the training set (data.toy_seed 1234)
            samples=args.samples,
            temperature=recipe.rollout.temperature,
            max_new_tokens=recipe.rollout.max_new_tokens,
            reward="exact_match",
            seed=args.seed,
        ),
    )


def run_with_progress(jobs, parallel: int, steps: int) -> dict[str, int]:
    """Run the jobs (compare's runner) while a bar counts the training steps the arms have logged."""
    codes: dict[str, int] = {}
    log = lambda msg, **_: tqdm.write(msg.replace("[compare]", "[demo]"))  # noqa: E731
    worker = threading.Thread(target=lambda: codes.update(run_jobs(jobs, parallel, log=log)))
    trained = [os.path.join(j.folder, "run", "metrics.jsonl") for j in jobs if j.seed is not None]
    total, t0, tenths = steps * len(trained), time.perf_counter(), 0
    bar = tqdm(total=total, desc="training (both arms)", unit="step", disable=None)
    worker.start()
    while worker.is_alive():
        worker.join(1.0)
        done = sum(_count_lines(p) for p in trained)
        bar.update(done - bar.n)
        if bar.disable and done * 10 // total > tenths:  # no terminal (a log file): a line every tenth
            tenths = done * 10 // total
            print(f"[demo] {done}/{total} training steps, {time.perf_counter() - t0:.0f} s", flush=True)
    bar.close()
    return codes


def _count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as fh:
        return sum(1 for _ in fh)


# ---------------------------------------------------------------------------------------------
# the table and the sentence
# ---------------------------------------------------------------------------------------------

ROWS = (
    ("accuracy (pass@1)", "pass@1", "{:.3f}"),
    ("mean response tokens", "mean_tokens", "{:.1f}"),
    ("re-checks per response", "recheck_rate", "{:.3f}"),
    ("backtracks per response", "backtrack_rate", "{:.3f}"),
    ("tokens after first correct answer", "tokens_after_first_correct", "{:.1f}"),
)


def table(summaries: dict[str, dict]) -> str:
    """A markdown table: one row per metric, one column per arm (base, grpo, grpo_repro)."""
    cols = list(summaries)
    fmt = lambda f, v: "-" if v is None else f.format(v)  # noqa: E731
    lines = [
        f"| {'':34} | " + " | ".join(f"{NAMES[c]:>12}" for c in cols) + " |",
        f"|{'-' * 36}|" + "|".join("-" * 14 for _ in cols) + "|",
    ]
    for name, key, f in ROWS:
        lines.append(f"| {name:34} | " + " | ".join(f"{fmt(f, summaries[c].get(key)):>12}" for c in cols) + " |")
    return "\n".join(lines)


def differences(base: dict, grpo: dict, repro: dict) -> str:
    """What GRPO changed against the base model, and what RePro changed on top of GRPO, in words."""

    def change(key: str, a: dict, b: dict, f: str) -> str:
        d = b[key] - a[key]
        rel = f" ({d / a[key]:+.0%})" if a[key] else ""
        return f"{a[key]:{f}} -> {b[key]:{f}}{rel}"

    return (
        f"GRPO alone, against the base model: re-checks per response {change('recheck_rate', base, grpo, '.3f')}, "
        f"backtracks {change('backtrack_rate', base, grpo, '.3f')}, tokens {change('mean_tokens', base, grpo, '.1f')},"
        f" accuracy {change('pass@1', base, grpo, '.3f')}.\n"
        f"RePro's share, GRPO + RePro against GRPO: re-checks {change('recheck_rate', grpo, repro, '.3f')}, "
        f"backtracks {change('backtrack_rate', grpo, repro, '.3f')}, tokens {change('mean_tokens', grpo, repro, '.1f')}"
        f", accuracy {change('pass@1', grpo, repro, '.3f')}.\n"
        "One seed and a few dozen problems: docs/results.md (sections 1-2) has the same comparison over 3 seeds."
    )


# ---------------------------------------------------------------------------------------------
# one response as the trainer scored it
# ---------------------------------------------------------------------------------------------


def logged_view(row: dict, tokenizer) -> dict | None:
    """A samples.jsonl row of a RePro run in `repro-train inspect`'s layout: its steps' text beside J, r and r' as
    the trainer logged them, and A_tilde from the logged r' by the trainer's own function (spec 11). None for a row
    RePro did not score."""
    if not row.get("cuts") or "r_norm" not in row or "response_ids" not in row:
        return None
    m, n = len(row["cuts"]), len(row["response_ids"])
    adv = token_process_advantages(
        torch.tensor([row["r_norm"]], dtype=torch.float64),
        torch.tensor([row["cuts"]]),
        torch.ones(1, m, dtype=torch.bool),
        n,
    )[0]
    res = {**row, "S": [None] * m, "A_tilde": adv.tolist(), "segments": [], "thinking_end": None}
    res["steps"] = step_texts(tokenizer, res)
    for s in res["steps"]:
        s["kind"] = classify_paragraph(s["text"]) if "J" in s else None
    return res


def recheck_stats(views: list[dict]) -> dict:
    """Over every scored step of the views, for re-check paragraphs and for the other steps: how many, the mean
    normalised reward r' of the step and the mean process advantage A_tilde of its tokens, and the share of
    re-checks with r' < 0 and with A_tilde < 0."""
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    out = {}
    for name, keep in (("recheck", lambda k: k == "recheck"), ("other", lambda k: k is None)):
        steps = [s for v in views for s in v["steps"] if "J" in s and keep(s["kind"])]
        out[name] = {
            "n": len(steps),
            "r_norm": mean([s["r_norm"] for s in steps]),
            "A_tilde": mean([s["A_tilde"] for s in steps]),
            "r_norm_negative": mean([float(s["r_norm"] < 0) for s in steps]),
            "A_tilde_negative": mean([float(s["A_tilde"] < 0) for s in steps]),
        }
    return out


def pick_example(views: list[dict]) -> dict | None:
    """The first logged response (by step) with a re-check whose tokens got a negative process advantage."""
    for v in views:
        if any(s.get("kind") == "recheck" and s["A_tilde"] < 0 for s in v["steps"]):
            return v
    return None


def format_example(v: dict) -> str:
    question = v["prompt"].split("Question: ")[-1].split("\n")[0]
    lines = [
        f"Step {v['step']} of the GRPO + RePro run, one sampled response as the trainer scored it (samples.jsonl):",
        f"  {question}  (answer {v['answer']}, reward {v['reward']})",
        f"  J_b = {v['J_b'] if v['J_b'] is None else round(v['J_b'], 3)}: log-prob of the answer with no reasoning;"
        " J after each step:",
        f"  {'J':>8} {'r':>8} {'r_norm':>7} {'A_tilde':>7}  step text",
    ]
    for s in v["steps"]:
        if "J" not in s:
            lines.append(f"  {'':>8} {'':>8} {'':>7} {'':>7}  {short(s['text'])}  (after the last cut)")
            continue
        mark = "  <- re-check" if s["kind"] == "recheck" else ("  <- backtrack" if s["kind"] == "backtrack" else "")
        lines.append(
            f"  {s['J']:>8.3f} {s['r']:>+8.3f} {s['r_norm']:>+7.2f} {s['A_tilde']:>+7.2f}  {short(s['text'])}{mark}"
        )
    lines.append(
        "  r: the step's gain in process score S (from J); r_norm: r normalised over all steps of the prompt's group\n"
        "  of rollouts; A_tilde: the process advantage of the step's tokens, the sum of r_norm from this step on,\n"
        "  added x alpha to GRPO's advantage. A re-check leaves J where it was: r ~ 0, below the group's mean, so\n"
        "  r_norm < 0; its tokens' A_tilde is negative unless productive steps follow it."
    )
    return "\n".join(lines)


def show_example(run_dir: str, out: str, model_path: str) -> str:
    """The example and the re-check statistics of the RePro run's logged samples; draws example.png."""
    tok = load_tokenizer_at(model_path)
    with open(os.path.join(run_dir, "samples.jsonl")) as fh:
        views = [v for v in (logged_view(json.loads(line), tok) for line in fh) if v is not None]
    stats, ex = recheck_stats(views), pick_example(views)
    text = format_example(ex) if ex is not None else "(no logged response with a re-check: nothing to show)"
    if ex is not None:
        plot_row(ex, os.path.join(out, "example.png"), f"step {ex['step']}: answer {ex['answer']!r}")
    rc, ot = stats["recheck"], stats["other"]
    return text + (
        f"\nOver the run's {len(views)} logged responses: {rc['n']} re-check paragraphs, r_norm {rc['r_norm']:+.2f} on "
        f"average (negative for {rc['r_norm_negative']:.0%}), A_tilde {rc['A_tilde']:+.2f} (negative for "
        f"{rc['A_tilde_negative']:.0%}); the {ot['n']} other steps: r_norm {ot['r_norm']:+.2f}, A_tilde "
        f"{ot['A_tilde']:+.2f}."
    )


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def load_settings(args):
    """(the demo recipe, its comparison); ConfigError on bad options."""
    if not os.path.exists(args.recipe):
        raise ConfigError(f"recipe {args.recipe} not found (run from the repository, or pass --recipe)")
    for flag in ("problems", "samples", "parallel"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    recipe = load(args.recipe, [f"train.steps={args.steps}"] if args.steps is not None else [])
    return recipe, demo_compare(args, recipe)


def report(out: str, jobs, steps: int, model_path: str) -> None:
    """Print and write the table, the sentence, the example; draw the curves."""
    labels = {j.arm: j for j in jobs}
    summaries = {}
    for arm in ("base", "grpo", "grpo_repro"):
        with open(labels[arm].summary) as fh:
            summaries[arm] = json.load(fh)[labels[arm].label]
    text = table(summaries) + "\n\n" + differences(summaries["base"], summaries["grpo"], summaries["grpo_repro"])
    runs = {NAMES[a]: os.path.join(labels[a].folder, "run") for a in ("grpo", "grpo_repro")}
    plot_runs(runs, os.path.join(out, "curves.png"), title=f"the demo's two arms, {steps} steps, one seed")
    text += "\n\n" + show_example(runs["GRPO + RePro"], out, model_path)
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(summaries, fh, indent=2)
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(text + "\n")
    print("\n" + text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        recipe, compare = load_settings(args)
        removed = prepare_out(args.out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0, steps = time.perf_counter(), recipe.train.steps
    print(
        f"repro-train demo: GRPO and GRPO + RePro on the shipped tiny reasoner, {steps} steps each on the CPU, seed "
        f"{recipe.train.seed}; then the base model and both policies on {args.problems} held-out problems x "
        f"{args.samples} samples.\n  recipe {os.path.relpath(args.recipe)}; output {args.out}"
        + (f" (replacing a previous demo's {len(removed)} entries)" if removed else ""),
        flush=True,
    )
    jobs = make_jobs(compare, args.out)
    jobs = sorted(jobs, key=lambda j: ["grpo_repro", "grpo", "base"].index(j.arm))  # the slowest first
    codes = run_with_progress(jobs, args.parallel, steps)
    failed = [label for label, c in codes.items() if c != 0]
    if failed:
        print(f"error: {', '.join(failed)} failed; see {args.out}/<name>/*.log", file=sys.stderr)
        return 1
    report(args.out, jobs, steps, recipe.model.path)
    print(
        f"\ncurves: {args.out}/curves.png (`repro-train plot RUN...`), the example: {args.out}/example.png; runs: "
        f"{args.out}/<arm>-s{recipe.train.seed}/run (metrics.jsonl, samples.jsonl; look inside one with "
        f"`repro-train inspect --run DIR`), trained policies: .../run/checkpoint-{steps:06d}/policy\n"
        f"done in {time.perf_counter() - t0:.0f} s"
    )
    return 0
