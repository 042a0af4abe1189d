"""`repro-train data`: the named datasets (repro_train/data/named.py).

    repro-train data list [--all]                  # named sets; --all: every reasoning-gym task too
    repro-train data export NAME --out FILE.jsonl [--exclude TRAIN.jsonl] [--unique]

NAME is any `data.source` name, with parameters: 'gsm8k-100',
'reasoning-gym:chain_sum?size=200&seed=1&min_terms=2&max_terms=2&max_digits=1' (quote it in a shell).
--exclude drops the problems whose question occurs in another JSONL file (held-out splits);
--unique keeps one row per question (generators repeat problems when the space is small).
An exported file is itself a valid data.source, and needs no reasoning-gym to load.
"""

from __future__ import annotations

import argparse
import sys

from ..core.typed_config import ConfigError
from ..data.jsonl import iter_jsonl
from ..data.named import NAMED, RG_PREFIX, disjoint, load_named, unique
from ..tasks.arithmetic import write_jsonl


def _list(show_all: bool) -> None:
    for name, d in NAMED.items():
        print(f'{name:34s} {d.description} [{d.license}]\n{"":34s} e.g. data.source: "{d.example}"')
    if show_all:
        try:
            from reasoning_gym.factory import DATASETS
        except ImportError:
            print("(reasoning-gym is not installed: pip install reasoning-gym==0.1.25)")
            return
        print("\nreasoning-gym tasks (" + RG_PREFIX + "TASK):\n  " + "\n  ".join(sorted(DATASETS)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="repro-train data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("list", help="the named datasets")
    pl.add_argument("--all", action="store_true", help="also every reasoning-gym task")
    pe = sub.add_parser("export", help="write a named dataset as JSONL")
    pe.add_argument("name")
    pe.add_argument("--out", required=True)
    pe.add_argument("--exclude", action="append", default=[], help="JSONL file(s) whose questions to drop")
    pe.add_argument("--unique", action="store_true", help="keep only the first row of each question")
    args = p.parse_args(argv)
    if args.cmd == "list":
        _list(args.all)
        return 0
    try:
        rows = load_named(args.name)
        for path in args.exclude:
            rows = disjoint(rows, [r for _, r, _ in iter_jsonl(path) if r is not None])
        if args.unique:
            rows = unique(rows)
    except ConfigError as e:
        print(f"repro-train data: {e}", file=sys.stderr)
        return 1
    write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
