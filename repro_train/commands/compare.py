"""`repro-train compare`: train a set of arms with one budget and seeds, evaluate every trained
policy on one held-out set, and write one table and one accuracy-vs-tokens plot.

    repro-train compare --config recipes/compare/toy.yaml --out runs/compare/toy --parallel 4
    repro-train compare --config recipes/compare/toy.yaml --out runs/compare/toy --seeds 0 --arms grpo,grpo_kimi
    repro-train compare --config recipes/compare/toy.yaml --out runs/compare/toy --report-only   # table + plot again

The comparison file (CompareConfig below) names a base recipe, overrides shared by every arm (the
budget), the arms (each a name and its own overrides) and the held-out evaluation. Every arm's
recipe is loaded and validated before anything runs. Each (arm, seed) is one job: `repro-train
train` with train.seed = seed, then `repro-train eval` of its final policy on the same problems
with the same sampling seeds; `--parallel N` runs N jobs at once (one process each, one CPU
thread each). A job whose eval/summary.json exists is not run again, so an interrupted comparison
resumes. Writes OUT/<arm>-s<seed>/ (run folder, train.log, eval.log, eval/), OUT/results.json,
OUT/table.md, OUT/table.csv and OUT/accuracy_vs_tokens.png. Columns: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..config import load
from ..core.typed_config import ConfigError, apply_overrides, build, to_dict

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ArmConfig:
    """One arm: a name and the recipe overrides that make it."""

    name: str = ""
    """Label in the table (letters, digits, '_', '.', '-')."""
    overrides: tuple[str, ...] = ()
    """Dotted overrides on top of the base recipe and the shared ones, e.g. ['shaping.methods=[kimi]']."""


@dataclass(frozen=True)
class CompareEvalConfig:
    """The held-out evaluation every trained policy gets (repro-train eval's options)."""

    data: str = "toy"
    """'toy' (generated with toy_seed), a named dataset (`repro-train data list`) or a JSONL file with question and
    answer fields."""
    n_problems: int = 100
    """Problems evaluated (the first n)."""
    toy_seed: int = 777
    """Seed of the generated toy problems (training uses data.toy_seed, 1234 by default)."""
    samples: int = 4
    """Responses per problem, at temperature `temperature`."""
    temperature: float = 1.0
    """Sampling temperature."""
    max_new_tokens: int = 128
    """Longest response."""
    reward: str = "exact_match"
    """Correctness check: exact_match, numeric, math_verify."""
    seed: int = 0
    """Sampling seed: every policy answers problem i with the same seed."""
    base_model: bool = True
    """Also evaluate the base recipe's initial model (a 'base' row)."""
    system_prompt: str | None = None
    """System message before each question (an instruct model's format instruction); null = none."""


@dataclass(frozen=True)
class CompareConfig:
    """A comparison: arms trained from one base recipe with one budget and seeds."""

    base: str = "recipes/toy/grpo.yaml"
    """Base recipe (path relative to the repository or absolute)."""
    overrides: tuple[str, ...] = ()
    """Overrides shared by every arm (the budget: steps, batch, lr)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """train.seed of each run of each arm."""
    arms: tuple[ArmConfig, ...] = ()
    """The arms."""
    eval: CompareEvalConfig = field(default_factory=CompareEvalConfig)
    """The held-out evaluation."""


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = [
    ("accuracy", "accuracy (pass@1)", 3),
    ("mean_tokens", "mean tokens", 1),
    ("tokens_correct", "tokens (correct)", 1),
    ("tokens_incorrect", "tokens (incorrect)", 1),
    ("recheck_rate", "re-checks / response", 3),
    ("backtrack_rate", "backtracks / response", 3),
]
"""(key, column title, decimals) of the table."""


# ---------------------------------------------------------------------------------------------
# load and check
# ---------------------------------------------------------------------------------------------


def load_compare(path: str, overrides: list[str] = ()) -> CompareConfig:
    """The comparison file -> validated CompareConfig; every arm's recipe is loaded and validated too."""
    import yaml

    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"comparison file {path} does not exist (they live in recipes/compare/)") from None
    cfg = build(CompareConfig, apply_overrides(raw, list(overrides)))
    check_compare(cfg)
    return cfg


def base_path(cfg: CompareConfig) -> str:
    return cfg.base if os.path.isabs(cfg.base) else os.path.join(REPO, cfg.base)


def arm_overrides(cfg: CompareConfig, arm: ArmConfig) -> list[str]:
    return [*cfg.overrides, *arm.overrides]


def check_compare(cfg: CompareConfig) -> None:
    """Raise ConfigError naming the field; loads each arm's recipe (so a bad override fails now)."""
    if not cfg.arms:
        raise ConfigError("'arms' must list at least one arm ({name: ..., overrides: [...]})")
    if not cfg.seeds:
        raise ConfigError("'seeds' must list at least one seed")
    names = [a.name for a in cfg.arms]
    for i, n in enumerate(names):
        if not _NAME.match(n) or n == "base":
            raise ConfigError(
                f"'arms[{i}].name' = {n!r} must be non-empty, of letters, digits, '_', '.', '-', and not 'base'"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"'arms' repeats a name: {names}")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"'seeds' repeats a seed: {list(cfg.seeds)}")
    e = cfg.eval
    if e.n_problems < 1 or e.samples < 1 or e.max_new_tokens < 1:
        raise ConfigError("'eval.n_problems', 'eval.samples' and 'eval.max_new_tokens' must be >= 1")
    for i, arm in enumerate(cfg.arms):
        try:
            load(base_path(cfg), arm_overrides(cfg, arm))
        except ConfigError as err:
            raise ConfigError(f"arm '{arm.name}' (arms[{i}]): {err}") from None


# ---------------------------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    label: str
    """'<arm>-s<seed>', or 'base'."""
    arm: str
    seed: int | None
    folder: str
    commands: list[list[str]]
    """Run in order (train, then eval)."""

    @property
    def summary(self) -> str:
        return os.path.join(self.folder, "eval", "summary.json")


def eval_command(cfg: CompareConfig, label: str, model: str, out: str) -> list[str]:
    e = cfg.eval
    return [
        sys.executable,
        "-m",
        "repro_train",
        "eval",
        "--model",
        f"{label}={model}",
        "--data",
        e.data,
        "--n-problems",
        str(e.n_problems),
        "--toy-seed",
        str(e.toy_seed),
        "--samples",
        str(e.samples),
        "--temperature",
        str(e.temperature),
        "--max-new-tokens",
        str(e.max_new_tokens),
        "--reward",
        e.reward,
        "--seed",
        str(e.seed),
        "--k",
        "1",
        *(["--system-prompt", e.system_prompt] if e.system_prompt else []),
        "--out",
        out,
    ]


def make_jobs(cfg: CompareConfig, out: str) -> list[Job]:
    """Every (arm, seed) job, and the base model's evaluation when asked for."""
    jobs = []
    if cfg.eval.base_model:
        model = load(base_path(cfg), list(cfg.overrides)).model.path
        folder = os.path.join(out, "base")
        jobs.append(Job("base", "base", None, folder, [eval_command(cfg, "base", model, os.path.join(folder, "eval"))]))
    for arm in cfg.arms:
        steps = load(base_path(cfg), arm_overrides(cfg, arm)).train.steps
        for seed in cfg.seeds:
            label = f"{arm.name}-s{seed}"
            folder = os.path.join(out, label)
            run_dir = os.path.join(folder, "run")
            train = [
                sys.executable,
                "-m",
                "repro_train",
                "train",
                "--config",
                base_path(cfg),
                *arm_overrides(cfg, arm),
                f"train.seed={seed}",
                f"train.output_dir={run_dir}",
                "train.save_every=0",
                "train.resume=null",
                "log.wandb=false",
                "log.progress=false",
            ]
            policy = os.path.join(run_dir, f"checkpoint-{steps:06d}", "policy")
            jobs.append(
                Job(
                    label,
                    arm.name,
                    seed,
                    folder,
                    [train, eval_command(cfg, label, policy, os.path.join(folder, "eval"))],
                )
            )
    return jobs


def job_script(job: Job) -> str:
    """One shell line: the job's commands in order, each logged, stopping at the first failure."""
    import shlex

    logs = ["train.log", "eval.log"] if len(job.commands) == 2 else ["eval.log"]
    return " && ".join(
        f"{shlex.join(c)} > {shlex.quote(os.path.join(job.folder, log))} 2>&1" for c, log in zip(job.commands, logs)
    )


def run_jobs(jobs: list[Job], parallel: int, log=print) -> dict[str, int]:
    """Run the jobs, `parallel` at a time; returns {label: exit code}. Prints one line per start and end."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
    )
    pending, running, codes, t0 = list(jobs), {}, {}, time.time()
    n = len(jobs)
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            os.makedirs(job.folder, exist_ok=True)
            running[job.label] = (job, subprocess.Popen(job_script(job), shell=True, cwd=REPO, env=env), time.time())
            log(f"[compare] start {job.label} ({len(codes) + len(running)}/{n} started)", flush=True)
        for label, (job, proc, started) in list(running.items()):
            if proc.poll() is not None:
                codes[label] = proc.returncode
                del running[label]
                how = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {job.folder}/*.log)"
                log(
                    f"[compare] {how}: {label} in {time.time() - started:.0f} s; {len(codes)}/{n} finished, "
                    f"{time.time() - t0:.0f} s elapsed",
                    flush=True,
                )
        time.sleep(0.5)
    return codes


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def run_metrics(folder: str, label: str) -> dict:
    """One run's row: eval summary metrics plus mean tokens of its correct and incorrect responses."""
    with open(os.path.join(folder, "eval", "summary.json")) as fh:
        s = json.load(fh)[label]
    ok, bad = [], []
    with open(os.path.join(folder, "eval", f"samples_{label}.jsonl")) as fh:
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
            xs = [r[key] for r in rows if r[key] is not None]
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


def report(cfg: CompareConfig, out: str, log=print) -> dict:
    """Read every finished run under `out`; write results.json, table.md, table.csv and the plot."""
    labels = {a.name: [f"{a.name}-s{s}" for s in cfg.seeds] for a in cfg.arms}
    if cfg.eval.base_model:
        labels = {"base": ["base"], **labels}
    per_run = {}
    for lbs in labels.values():
        for lb in lbs:
            if os.path.exists(os.path.join(out, lb, "eval", "summary.json")):
                per_run[lb] = run_metrics(os.path.join(out, lb), lb)
    arms = aggregate(per_run, list(labels.items()))
    n_seeds = {arm: sum(lb in per_run for lb in labels[arm]) for arm in arms}
    results = {"config": to_dict(cfg), "runs": per_run, "arms": arms}
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    table = format_markdown(arms, n_seeds)
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(table)
    write_csv(os.path.join(out, "table.csv"), arms, n_seeds)
    drawn = plot(os.path.join(out, "accuracy_vs_tokens.png"), arms, per_run, labels)
    log(table)
    log(
        f"[compare] wrote {out}/results.json, table.md, table.csv"
        + (", accuracy_vs_tokens.png" if drawn else " (no matplotlib here: no plot; run --report-only elsewhere)")
    )
    return results


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="repro-train compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="comparison file (recipes/compare/*.yaml)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--parallel", type=int, default=1, help="jobs at once, one process each (default 1)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds instead of the file's")
    p.add_argument("--arms", default=None, help="comma-separated arm names: run only these")
    p.add_argument("--report-only", action="store_true", help="run nothing; write the table and plot of finished runs")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the comparison file, e.g. eval.n_problems=20")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    over = list(args.overrides)
    if args.seeds:
        over.append(f"seeds=[{args.seeds}]")
    try:
        cfg = load_compare(args.config, over)
        if args.arms:
            keep = args.arms.split(",")
            unknown = [a for a in keep if a not in {x.name for x in cfg.arms}]
            if unknown:
                raise ConfigError(f"--arms: unknown arm(s) {unknown}; the file has {[a.name for a in cfg.arms]}")
            cfg = CompareConfig(
                cfg.base, cfg.overrides, cfg.seeds, tuple(a for a in cfg.arms if a.name in keep), cfg.eval
            )
        if args.parallel < 1:
            raise ConfigError(f"--parallel must be >= 1, got {args.parallel}")
    except ConfigError as e:
        print(f"repro-train compare: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    if not args.report_only:
        jobs = make_jobs(cfg, args.out)
        todo = [j for j in jobs if not os.path.exists(j.summary)]
        print(
            f"[compare] {len(cfg.arms)} arm(s) x {len(cfg.seeds)} seed(s) from {cfg.base}; {len(todo)} of "
            f"{len(jobs)} job(s) to run, {args.parallel} at a time; output {args.out}",
            flush=True,
        )
        codes = run_jobs(todo, args.parallel)
        failed = [lb for lb, c in codes.items() if c != 0]
        if failed:
            print(f"[compare] {len(failed)} job(s) failed: {', '.join(failed)}", file=sys.stderr)
    else:
        failed = []
    report(cfg, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
