"""Length of the thinking traces (repro_train/tasks/thinking/) in a model's tokens, clean vs overthinking.

    repro-train prepare-model smollm2-135m-instruct          # once: writes models/smollm2-135m-instruct
    python tools/thinking_lengths.py --model models/smollm2-135m-instruct --n 1000 --seed 0

Prints, per split and per family, the token counts of the `response` column (no special tokens)
for the clean rows and the rows with habits: min, p10, median, p90, max, mean; and the mean tokens
after the first correct answer (from `answer_char`). The numbers in docs/models-and-data.md
("Thinking traces") come from this script.
"""

from __future__ import annotations

import argparse
import bisect

from repro_train.tasks.thinking import FAMILIES, SPLITS, generate


def summary(xs: list[int]) -> str:
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return "none"
    pick = [xs[0], xs[n // 10], xs[n // 2], xs[(9 * n) // 10], xs[-1]]
    return f"n={n:4d}  min/p10/median/p90/max = {'/'.join(map(str, pick))}  mean={sum(xs) / n:.0f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/smollm2-135m-instruct", help="folder with the tokenizer")
    p.add_argument("--n", type=int, default=1000, help="rows per split")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    for split in SPLITS:
        groups: dict[tuple[str, str], list[int]] = {}
        after: dict[str, list[int]] = {}
        for row in generate(args.n, args.seed, split=split):
            enc = tok(row["response"], add_special_tokens=False, return_offsets_mapping=True)
            starts = [s for s, _ in enc["offset_mapping"]]
            kind = "overthinking" if row["habits"] else "clean"
            for fam in (row["family"], "all"):
                groups.setdefault((fam, kind), []).append(len(starts))
            after.setdefault(kind, []).append(len(starts) - bisect.bisect_left(starts, row["answer_char"]))
        print(f"\nsplit={split} (n={args.n}, seed={args.seed})")
        for fam in ("all", *FAMILIES):
            for kind in ("clean", "overthinking"):
                print(f"  {fam:8s} {kind:12s} {summary(groups.get((fam, kind), []))}")
        for kind, xs in after.items():
            print(f"  tokens after the first correct answer, {kind}: mean {sum(xs) / len(xs):.0f}")


if __name__ == "__main__":
    main()
