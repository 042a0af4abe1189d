"""Short tables of the thinker runs (docs/results.md, "The thinker"), printed last by bench/thinker_device.sh.

    python3 bench/thinker_summary.py thinker --eval DIR --sft MODEL_DIR [--out FILE.md]   # call A: the thinker
    python3 bench/thinker_summary.py compare DIR [--out FILE.md]                         # call B: the experiment

`thinker`: the SFT run (steps, time, losses, tokens/s from MODEL_DIR/sft_result.json) and `repro-train eval`'s
summaries in DIR/<set>/summary.json (recipes/thinker/eval.sh: the thinker and the 'reference' trace mix), then the
issue's bar for the thinker: re-check or backtrack rate >= 0.3 per response at accuracy >= 0.3 (held-out test).
`compare`: `repro-train compare`'s results.json in DIR (one table per set: mean ± std over seeds), the steps each run
made and its median step time, and the goal: GRPO + RePro at least 20% fewer tokens than GRPO at equal or better
accuracy. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

COLS = [
    ("pass@1", "accuracy", 3),
    ("mean_tokens", "mean tokens", 1),
    ("recheck_rate", "re-checks / resp.", 3),
    ("backtrack_rate", "backtracks / resp.", 3),
    ("tokens_after_first_correct", "tokens after first correct", 1),
    ("frac_finished", "finished", 3),
]
ARM_COLS = [
    ("accuracy", "accuracy", 3),
    ("mean_tokens", "mean tokens", 1),
    ("recheck_rate", "re-checks / resp.", 3),
    ("backtrack_rate", "backtracks / resp.", 3),
    ("after_correct", "tokens after first correct", 1),
]
BAR_RATE, BAR_ACC, GOAL_CUT = 0.3, 0.3, 0.20


def fmt(x, d: int) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def thinker_report(eval_dir: str, sft_dir: str) -> str:
    lines = []
    path = os.path.join(sft_dir, "sft_result.json")
    if os.path.exists(path):
        with open(path) as fh:
            r = json.load(fh)
        stop = f", stopped early at {r['stopped_early_at']} (time limit)" if r.get("stopped_early_at") else ""
        lines += [
            f"SFT: {r['steps']} steps in {r['train_s']:.0f} s ({r['epochs']:.2f} epochs of {r['n_examples']} traces"
            f"{stop}); final loss {r['final_loss']:.4f}, held-out loss {r['eval_loss']:.4f}; "
            f"{r['padded_tokens'] / max(r['train_s'], 1e-9):,.0f} padded tokens/s; {r['device']}, "
            f"bf16 autocast {r['bf16_autocast']}",
            "",
        ]
    else:
        lines += [f"SFT: no {path}", ""]
    head = "| set | model | " + " | ".join(t for _, t, _ in COLS) + " |"
    lines += [head, "|" + "---|" * (len(COLS) + 2)]
    test = None
    for name in sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []:
        f = os.path.join(eval_dir, name, "summary.json")
        if not os.path.exists(f):
            continue
        with open(f) as fh:
            summ = json.load(fh)
        for label, s in summ.items():
            lines.append(f"| {name} | {label} | " + " | ".join(fmt(s.get(k), d) for k, _, d in COLS) + " |")
            if name == "test" and label != "reference":
                test = s
    if test is not None:
        rate = max(test["recheck_rate"], test["backtrack_rate"])
        ok = rate >= BAR_RATE and test["pass@1"] >= BAR_ACC
        lines += [
            "",
            f"bar (held-out test): re-check or backtrack rate {rate:.3f} >= {BAR_RATE} and accuracy "
            f"{test['pass@1']:.3f} >= {BAR_ACC}: {'PASS' if ok else 'FAIL'}",
        ]
    return "\n".join(lines)


def run_steps(cmp_dir: str, label: str) -> tuple[int | None, float | None]:
    """(last step, median time/step_s) of a run's metrics.jsonl."""
    f = os.path.join(cmp_dir, label, "run", "metrics.jsonl")
    if not os.path.exists(f):
        return None, None
    with open(f) as fh:
        rows = [json.loads(x) for x in fh if x.strip()]
    times = [r["time/step_s"] for r in rows if "time/step_s" in r]
    return (rows[-1]["step"] if rows else None), (statistics.median(times) if times else None)


def arm_table(arms: dict) -> list[str]:
    head = "| arm | " + " | ".join(t for _, t, _ in ARM_COLS) + " |"
    lines = [head, "|" + "---|" * (len(ARM_COLS) + 1)]
    for arm, m in arms.items():
        cells = []
        for key, _, d in ARM_COLS:
            v = m.get(key, {})
            cells.append("-" if v.get("mean") is None else f"{v['mean']:.{d}f} ± {v['std']:.{d}f} (n={v['n']})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def goal_line(name: str, arms: dict) -> str:
    g, r = arms.get("grpo"), arms.get("grpo_repro")
    if not g or not r or g["mean_tokens"]["mean"] is None or r["mean_tokens"]["mean"] is None:
        return f"goal ({name}): not measured (an arm is missing)"
    cut = 1 - r["mean_tokens"]["mean"] / g["mean_tokens"]["mean"]
    dacc = r["accuracy"]["mean"] - g["accuracy"]["mean"]
    ok = cut >= GOAL_CUT and dacc >= 0
    return (
        f"goal ({name}): GRPO + RePro's mean tokens {r['mean_tokens']['mean']:.1f} against GRPO's "
        f"{g['mean_tokens']['mean']:.1f} ({cut:.1%} fewer), accuracy {dacc:+.3f}: {'MET' if ok else 'NOT MET'} "
        f"(the goal: >= {GOAL_CUT:.0%} fewer at equal or better accuracy)"
    )


def compare_report(cmp_dir: str) -> str:
    with open(os.path.join(cmp_dir, "results.json")) as fh:
        res = json.load(fh)
    sets = res.get("sets") or {"": {"runs": res["runs"], "arms": res["arms"]}}
    lines = []
    for name, r in sets.items():
        lines += [
            f"held-out {name or 'set'} (mean ± std over seeds):",
            "",
            *arm_table(r["arms"]),
            "",
            goal_line(name, r["arms"]),
            "",
        ]
    runs = sorted({lb for r in sets.values() for lb in r["runs"] if lb != "base"})
    steps = []
    for lb in runs:
        n, t = run_steps(cmp_dir, lb)
        steps.append(f"{lb} {n} steps ({'-' if t is None else f'{t:.1f} s'}/step)")
    lines.append("runs: " + "; ".join(steps))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["thinker", "compare"])
    p.add_argument("dir", nargs="?", help="compare: the comparison's output folder")
    p.add_argument("--eval", help="thinker: the eval output folder (one subfolder per set)")
    p.add_argument("--sft", help="thinker: the SFT output folder (the thinker model)")
    p.add_argument("--out", help="also write the text here")
    a = p.parse_args(argv)
    if a.what == "thinker":
        if not (a.eval and a.sft):
            p.error("thinker needs --eval and --sft")
        text = thinker_report(a.eval, a.sft)
    else:
        if not a.dir or not os.path.exists(os.path.join(a.dir, "results.json")):
            p.error(f"compare needs the comparison folder with results.json, got {a.dir}")
        text = compare_report(a.dir)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
