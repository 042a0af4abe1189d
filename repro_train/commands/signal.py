"""`repro-train signal --config recipes/X.yaml [--steps 2] [key=value ...]`: is there anything to learn?

Runs a recipe's first steps with its initial policy and no update: `make_experience` (rollouts, outcome rewards,
shapers, forwards, advantages, exactly as `train` computes them) on the prompts training would see first. It prints a
row per step and their mean: accuracy, flat groups (all G rewards equal: a group-relative estimator cannot tell their
samples apart), lengths and truncation, re-checks and backtracks, RePro's segments and cuts, the mean |advantage| and
the process term's share of it; then notes where the numbers say a run would learn little (`advice`, rules of thumb).
Per-step metrics go to OUT/signal.jsonl, the resolved recipe to OUT/config.yaml. A step costs a training step minus
the update. The columns and an example: docs/recipes.md, "Before a long run".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from tqdm import tqdm

from ..algos.advantages import estimator_facts
from ..config import load
from ..core.typed_config import ConfigError
from ..trainer.dist import finish
from ..trainer.experience import make_experience
from ..trainer.metrics import step_metrics
from ..trainer.runtime import build_runtime

COLUMNS = (  # (heading, metric, format)
    ("acc", "accuracy", ".3f"),
    ("flat", "groups/zero_std_frac", ".2f"),
    ("right", "groups/all_correct_frac", ".2f"),
    ("wrong", "groups/all_wrong_frac", ".2f"),
    ("tokens", "response_length/mean", ".1f"),
    ("trunc", "truncated_frac", ".2f"),
    ("rechk", "behavior/rechecks", ".3f"),
    ("backtr", "behavior/backtracks", ".3f"),
    ("segs", "repro/segments_per_rollout", ".2f"),
    ("cuts", "repro/cuts_per_rollout", ".2f"),
    ("adv", "adv/abs_mean", ".3f"),
    ("proc", "process", ".3f"),
    ("share", "process_share", ".2f"),
)
REPRO_ONLY = ("repro/segments_per_rollout", "repro/cuts_per_rollout", "process", "process_share")


def signal_steps(rt, steps: int, progress: bool = True) -> list[dict]:
    """Metrics of `steps` steps of rollout -> shapers -> forwards -> advantages with no update."""
    rows = []
    for step in tqdm(range(steps), desc="signal", unit="step", disable=not (progress and rt.dist.is_main)):
        batch = make_experience(rt, step)
        rows.append(step_metrics(rt, batch, {}))
    return rows


def with_process(row: dict, alpha: float) -> dict:
    """`row` plus process = alpha * repro/process_adv_abs and process_share = process / adv/abs_mean
    (absent with RePro off)."""
    out = dict(row)
    if "repro/process_adv_abs" in row:
        out["process"] = alpha * row["repro/process_adv_abs"]
        total = row.get("adv/abs_mean", 0.0)
        out["process_share"] = out["process"] / total if total > 0 else math.nan
    return out


def mean_row(rows: list[dict]) -> dict:
    """Per-key mean over the rows that have the key, skipping NaN."""
    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if k in r and not math.isnan(r[k])]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    return out


def format_table(rows: list[dict], repro_on: bool) -> str:
    """A markdown table, one line per step and a mean line."""
    cols = [c for c in COLUMNS if repro_on or c[1] not in REPRO_ONLY]
    lines = ["| step | " + " | ".join(h for h, _, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in [*((str(i + 1), r) for i, r in enumerate(rows)), ("mean", mean_row(rows))]:
        cells = [format(row[m], f) if m in row and not math.isnan(row[m]) else "-" for _, m, f in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def advice(mean: dict, cfg) -> list[str]:
    """Notes on a mean row (`mean_row` of `with_process` rows) where a run would learn little."""
    notes = []
    flat = mean.get("groups/zero_std_frac", math.nan)
    if flat >= 0.5 and estimator_facts(cfg.algo.estimator).group_relative:
        which = "all correct" if mean["groups/all_correct_frac"] >= mean["groups/all_wrong_frac"] else "all wrong"
        notes.append(
            f"{flat:.0%} of prompt groups got the same reward for every sample (mostly {which}): "
            f"{cfg.algo.estimator} cannot tell their samples apart. Data of a better-suited difficulty, a larger "
            "rollout.group_size or a higher rollout.temperature gives more mixed groups."
        )
    trunc = mean.get("truncated_frac", 0.0)
    if trunc >= 0.1:
        notes.append(
            f"{trunc:.0%} of responses stopped at rollout.max_new_tokens={cfg.rollout.max_new_tokens}: "
            "the reward sees cut answers; raise it."
        )
    if cfg.repro.enabled:
        cuts = mean.get("repro/cuts_per_rollout", math.nan)
        if cuts < 2:
            notes.append(
                f"RePro scores {cuts:.2f} cuts per rollout: with so few, its process reward has little to "
                "tell apart. Longer reasoning, or a repro.segment_delimiter that splits these responses "
                "finer, gives it more."
            )
        share = mean.get("process_share", math.nan)
        if share < 0.1:
            notes.append(
                f"The process term is {share:.0%} of the advantage (alpha {cfg.repro.alpha}): a larger "
                "repro.alpha gives it more weight."
            )
    return notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="repro-train signal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=None, help="recipe YAML (default: the embedded toy recipe's defaults)")
    p.add_argument("--steps", type=int, default=2, help="steps to sample (each with fresh prompts); default 2")
    p.add_argument(
        "--out", default=None, help="folder for signal.jsonl and config.yaml (default: <train.output_dir>-signal)"
    )
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for `train`")
    args = p.parse_args(argv)
    if args.steps < 1:
        print(f"error: --steps must be at least 1, got {args.steps}", file=sys.stderr)
        return 2
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        out = args.out or load(args.config, args.overrides, world_size=world).train.output_dir.rstrip("/") + "-signal"
        cfg = load(args.config, [*args.overrides, f"train.output_dir={out}"], world_size=world)
        rt = build_runtime(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        rows = [with_process(r, cfg.repro.alpha) for r in signal_steps(rt, args.steps, cfg.log.progress)]
    finally:
        rt.close()
    if rt.dist.is_main:
        with open(os.path.join(out, "signal.jsonl"), "w") as fh:
            for i, r in enumerate(rows):
                fh.write(json.dumps({"step": i + 1, **r}) + "\n")
        print(format_table(rows, cfg.repro.enabled))
        for note in advice(mean_row(rows), cfg):
            print(f"note: {note}")
        print(f"metrics: {os.path.join(out, 'signal.jsonl')}")
    if world > 1:
        finish(0)
    return 0
