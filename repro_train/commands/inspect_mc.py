"""`repro-train inspect --mc-values K`: the Monte-Carlo value V of each of RePro's cuts beside J (eval/mc_values.py).

    repro-train inspect --model toy --input rows.jsonl --output out.jsonl --mc-values 16 --mc-reward exact_match
                        [--mc-max-new-tokens 128] [--mc-seed 0] [--plot DIR]

Each scored row gains V_b, V_b_se, V, V_se and r_mc (V's increments: the MC process reward per cut, before
normalisation); with --plot, DIR/rowNNNNN-mc.png shows J and V along the response and r beside r_mc. The
continuations are sampled with the hf engine from the inspected model at --temperature, with the rows' prompts.
"""

from __future__ import annotations

import argparse
import contextlib
import os

from ..config import RolloutConfig
from ..core.text import response_format
from ..eval.mc_values import add_mc_values, plot_mc_row
from ..rewards import OutcomeReward, RewardSpec
from ..rollout.hf import HFEngine


def add_mc_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mc-values",
        type=int,
        default=0,
        metavar="K",
        help="also sample K continuations from each cut's prefix and report V = share correct (default 0 = off)",
    )
    p.add_argument(
        "--mc-reward",
        default="math_verify",
        help="the reward whose full score counts as correct: a built-in (toy: exact_match) or 'file.py:fn'",
    )
    p.add_argument(
        "--mc-max-new-tokens", type=int, default=256, help="the rollouts' budget: prefix + continuation (default 256)"
    )
    p.add_argument("--mc-seed", type=int, default=0, help="prefix c of row i is sampled after mix_seed(seed, i, c)")


def inspect_mc(model, tokenizer, results: list[dict], args: argparse.Namespace) -> None:
    """Add the MC values to inspect's result rows (in place) and, with --plot, one MC plot per row."""
    if args.mc_values < 0:
        raise SystemExit(f"error: --mc-values must be >= 0, got {args.mc_values}")
    fmt = response_format(model, tokenizer, args.think_end)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cfg = RolloutConfig(temperature=args.temperature, max_new_tokens=args.mc_max_new_tokens)
    device = next(model.parameters()).device
    engine = HFEngine(lambda: contextlib.nullcontext(model), cfg, fmt.eos_ids, pad, device)
    prompts = [tokenizer.decode(r["prompt_ids"], skip_special_tokens=False) for r in results]
    with OutcomeReward([RewardSpec(args.mc_reward, correctness=True)], num_workers=1) as reward:

        def grade(rows: list[int], texts: list[str]) -> list[bool]:
            return reward([prompts[i] for i in rows], texts, [results[i]["answer"] for i in rows]).correct.tolist()

        def decode(ids: list[list[int]]) -> list[str]:
            return tokenizer.batch_decode(ids, skip_special_tokens=True)

        add_mc_values(results, engine, grade, decode, args.mc_values, args.mc_max_new_tokens, args.mc_seed)
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
        for res in results:
            i = res.get("row", 0)
            plot_mc_row(res, os.path.join(args.plot, f"row{i:05d}-mc.png"), f"row {i}: answer {res['answer']!r}")
