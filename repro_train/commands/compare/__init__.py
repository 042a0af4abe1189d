"""`repro-train compare`: train a set of arms with one budget and seeds, evaluate every trained policy on one held-out
set, and write one table and one accuracy-vs-tokens plot (docs/evaluation.md, "Comparisons").

    repro-train compare --config recipes/compare/toy.yaml --out runs/compare/toy --parallel 4
    repro-train compare --config recipes/compare/toy.yaml --out runs/compare/toy --seeds 0 --arms grpo,grpo_kimi
    repro-train compare --config recipes/compare/toy.yaml --out runs/compare/toy --report-only   # table + plot again
    repro-train compare --config recipes/compare/thinker.yaml --out runs/compare/thinker --parallel 10 --stagger 2 \\
        --time-limit 270                                         # one GPU, vLLM engines: docs/results.md, "The thinker"

Each (arm, seed) is one job, `repro-train train` then `repro-train eval` of its final policy; a finished job is
not run again. config.py reads the comparison file (CompareConfig), jobs.py runs the jobs, report.py writes
OUT/results.json, the tables and the plots.
"""

from __future__ import annotations

import argparse
import os
import sys

from ...core.typed_config import ConfigError
from .config import CompareConfig, load_compare
from .jobs import make_jobs, run_jobs
from .report import report

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
    p.add_argument("--stagger", type=float, default=0.0, help="seconds between job starts (default 0)")
    p.add_argument(
        "--time-limit",
        type=float,
        default=0.0,
        help="stop each training job this many seconds after its start, with a checkpoint, and evaluate that (0: none)",
    )
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
        if args.parallel < 1 or args.stagger < 0 or args.time_limit < 0:
            raise ConfigError("--parallel must be >= 1, --stagger and --time-limit >= 0")
    except ConfigError as e:
        print(f"repro-train compare: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    if not args.report_only:
        jobs = make_jobs(cfg, args.out, args.time_limit)
        todo = [j for j in jobs if not os.path.exists(j.summary)]
        print(
            f"[compare] {len(cfg.arms)} arm(s) x {len(cfg.seeds)} seed(s) from {cfg.base}; {len(todo)} of "
            f"{len(jobs)} job(s) to run, {args.parallel} at a time; output {args.out}",
            flush=True,
        )
        codes = run_jobs(todo, args.parallel, stagger_s=args.stagger)
        failed = [lb for lb, c in codes.items() if c != 0]
        if failed:
            print(f"[compare] {len(failed)} job(s) failed: {', '.join(failed)}", file=sys.stderr)
    else:
        failed = []
    report(cfg, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
