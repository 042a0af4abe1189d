"""Score an experiment's saved evaluation responses again with another correctness check.

    python3 experiments/rescore_eval.py DIR [--reward last_number]

DIR is an experiment folder of experiments/smollm2_repro.py: DIR/<arm>-s<seed>/eval_<set>/samples_*.jsonl
(and DIR/base/...), each row a response with the check's verdict (`correct`). Every response is
scored again with --reward (a built-in of repro_train.rewards) against the row's gold answer; the
table gives accuracy by the stored verdict and by the new one, mean ± std over seeds, and the share
of responses the two checks disagree on. Writes DIR/rescored_<reward>.md and .json.

Why: a check can be gamed. math_verify reads "The final answer is 3 - 7 - 7 = 3." as the expression
3 - 7 - 7 and scores it right; last_number reads 3 (docs/results.md, section 8).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rescore(folder: str, reward: str) -> dict:
    """{set: {arm: {"stored": [acc per seed], "rescored": [...], "disagree": [...]}}} from the saved samples."""
    from repro_train.rewards import OutcomeReward, RewardSpec

    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    paths = sorted(glob.glob(os.path.join(folder, "*", "eval_*", "samples_*.jsonl")))
    if not paths:
        raise SystemExit(f"no {folder}/*/eval_*/samples_*.jsonl: is {folder} an experiment folder?")
    with OutcomeReward([RewardSpec(reward, correctness=True)], num_workers=1) as check:
        for path in paths:
            rows = [json.loads(line) for line in open(path)]
            run, set_name = path.split(os.sep)[-3], path.split(os.sep)[-2].removeprefix("eval_")
            arm = run.rsplit("-s", 1)[0] if "-s" in run else run
            new = check([r["question"] for r in rows], [r["completion"] for r in rows], [r["gold"] for r in rows])
            ok = [bool(x) for x in new.correct.tolist()]
            cell = out[set_name][arm]
            cell["stored"].append(statistics.mean(r["correct"] for r in rows))
            cell["rescored"].append(statistics.mean(ok))
            cell["disagree"].append(statistics.mean(r["correct"] != o for r, o in zip(rows, ok)))
    return {s: {a: dict(v) for a, v in arms.items()} for s, arms in out.items()}


def fmt(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


def table(res: dict, reward: str) -> str:
    lines = [
        f"| set | arm | seeds | accuracy, stored check | accuracy, {reward} | responses the checks disagree on |",
        "|---|---|---|---|---|---|",
    ]
    for s, arms in res.items():
        for arm, v in arms.items():
            cells = [s, arm, str(len(v["stored"])), fmt(v["stored"]), fmt(v["rescored"]), fmt(v["disagree"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--reward", default="last_number", help="a built-in correctness reward (default last_number)")
    a = p.parse_args()
    res = rescore(a.folder, a.reward)
    md = table(res, a.reward)
    with open(os.path.join(a.folder, f"rescored_{a.reward}.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    with open(os.path.join(a.folder, f"rescored_{a.reward}.md"), "w") as fh:
        fh.write(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
