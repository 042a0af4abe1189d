"""A fresh vLLM process with a recipe's rollout options: the rollout engine's own speed, to set against the
in-trainer engine (`bench_step.py --fresh-engine`).

    python bench/vllm_alone.py RECIPE [--repeats 2]      # prints one JSON line last: tok_s, tokens, wall_s

The engine is repro_train's VLLMEngine (the same LLM options, sampling parameters, per-prompt seeds and log-probs as
in training), built in this process alone, on the recipe's model folder (its weights: no push needed), sampling the
recipe's first prompts_per_step prompts rollout.group_size times each; the first call is a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, installed or not

import torch  # noqa: E402

from repro_train.config import load  # noqa: E402
from repro_train.core.text import response_format  # noqa: E402
from repro_train.data.datasets import load_prompts  # noqa: E402
from repro_train.models.loading import load_tokenizer, model_folder  # noqa: E402
from repro_train.rollout.vllm import VLLMEngine  # noqa: E402
from repro_train.trainer.runtime import engine_dtype  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe")
    p.add_argument("--repeats", type=int, default=2, help="timed generations after the warm-up")
    args = p.parse_args(argv)
    cfg = load(args.recipe)
    tok = load_tokenizer(cfg.model)
    prompts = load_prompts(cfg.data, tok).prompt_ids[: cfg.rollout.prompts_per_step]
    fmt = response_format(None, tok, cfg.model.think_end)
    engine = VLLMEngine(
        model_folder(cfg.model.path),
        cfg.rollout,
        fmt.eos_ids,
        max(len(q) for q in prompts) + cfg.rollout.max_new_tokens,
        engine_dtype(cfg),
        0,
        1,
    )
    engine.version = 0  # dummy weights (load_format="dummy"): the speed does not depend on them
    rows = []
    for i in range(args.repeats + 1):
        seeds = [1000 * i + j for j in range(len(prompts))]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = engine.sample(prompts, cfg.rollout.group_size, seeds)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tokens = sum(len(r) for g in out.token_ids for r in g)
        if i:
            rows.append((tokens, dt))
        print(f"[vllm alone] {'warm-up' if i == 0 else f'run {i}'}: {tokens} tokens in {dt:.2f} s", flush=True)
    tokens, wall = sum(t for t, _ in rows), sum(d for _, d in rows)
    result = {"tok_s": tokens / wall, "tokens": tokens, "wall_s": wall, "dtype": engine_dtype(cfg)}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
