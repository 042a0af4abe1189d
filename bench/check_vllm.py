"""The vLLM engine on a GPU against the trainer's own log-probs: (a) the gap, (b) weights really move.

    python bench/check_vllm.py --sleep-level 0 --out check_vllm_s0.json
    python bench/check_vllm.py --sleep-level 2 --out check_vllm_s2.json

(a) The shipped tiny reasoner is pushed into a `VLLMEngine` (which starts from dummy weights), G
responses per toy prompt are sampled, and the engine's log-probs of the sampled tokens are compared
with the trainer's recomputation (`modeling.forward_logprobs`, float32): mean and max |gap|.
(b) One Adam step with a large learning rate on the sampled responses' NLL moves the weights far;
the engine releases its memory (sleep level `--sleep-level`), gets the new weights pushed, and
samples again with the same seeds. Its log-probs must match the trained model (gap as small as in
(a)) and differ from the old model's on the same tokens (the symptom of rollouts from stale weights).
Prints a table last and writes JSON; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, installed or not

from repro_train.config import DataConfig, RolloutConfig, VLLMConfig  # noqa: E402
from repro_train.core.text import eos_ids  # noqa: E402
from repro_train.data.datasets import load_prompts  # noqa: E402
from repro_train.models.forward import forward_logprobs, pack  # noqa: E402
from repro_train.models.loading import load_for_inference, model_folder  # noqa: E402
from repro_train.rollout.vllm import VLLMEngine  # noqa: E402

STALE_FACTOR = 10.0
"""(b) passes when the old weights' gap is at least this many times the trained weights' gap."""


def gap(model, prompts, rollouts, temperature: float, pad_id: int) -> tuple[float, float]:
    rows_p = [p for p, g in zip(prompts, rollouts.token_ids) for _ in g]
    rows_r = [r for g in rollouts.token_ids for r in g]
    seqs = pack(rows_p, rows_r, pad_id, "cuda")
    with torch.no_grad():
        lp = forward_logprobs(model, seqs, temperature, with_entropy=False).logprobs
    eng = torch.zeros_like(lp)
    for i, row in enumerate(r for g in rollouts.logprobs for r in g):
        eng[i, : len(row)] = torch.tensor(row, device=lp.device)
    d = (lp - eng).abs()[seqs.response_mask]
    return d.mean().item(), d.max().item()


def nll_step(model, prompts, rollouts, lr: float, pad_id: int) -> None:
    """One Adam step that raises the likelihood of the sampled responses (moves every weight)."""
    rows_p = [p for p, g in zip(prompts, rollouts.token_ids) for _ in g]
    rows_r = [r for g in rollouts.token_ids for r in g]
    seqs = pack(rows_p, rows_r, pad_id, "cuda")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lp = forward_logprobs(model, seqs, 1.0, with_entropy=False).logprobs
    (-(lp * seqs.response_mask).sum() / seqs.response_mask.sum()).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--sleep-level", type=int, default=0, choices=[0, 1, 2])
    p.add_argument("--dtype", default="float32", help="the engine's dtype (the trainer stays float32)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eager", action="store_true", help="no CUDA graphs")
    p.add_argument("--out", default="check_vllm.json")
    args = p.parse_args(argv)
    path = model_folder(args.model)
    model, tok = load_for_inference(args.model, "float32", "cuda")
    data = load_prompts(DataConfig(source="toy", toy_size=max(64, args.prompts)), tok)
    prompts = data.prompt_ids[: args.prompts]
    seeds = list(range(1000, 1000 + len(prompts)))
    rcfg = RolloutConfig(
        engine="vllm",
        max_new_tokens=args.new_tokens,
        temperature=args.temperature,
        vllm=VLLMConfig(sleep_level=args.sleep_level, gpu_memory_utilization=0.3, cuda_graphs=not args.eager),
    )
    eos = eos_ids(model, tok)
    t0 = time.perf_counter()
    engine = VLLMEngine(path, rcfg, eos, 512, args.dtype, 0, 1)
    res = {"engine_start_s": time.perf_counter() - t0, "sleep_level": args.sleep_level, "dtype": args.dtype}
    t0 = time.perf_counter()
    engine.push_weights(0, lambda: model.named_parameters())
    res["push_s"] = time.perf_counter() - t0
    out = engine.sample(prompts, args.group_size, seeds)
    res["tokens"] = sum(len(r) for g in out.token_ids for r in g)
    res["a_gap_mean"], res["a_gap_max"] = gap(model, prompts, out, args.temperature, tok.pad_token_id)
    old = copy.deepcopy(model)
    model.train()
    nll_step(model, prompts, out, args.lr, tok.pad_token_id)
    model.eval()
    res["weight_change_max"] = max((a - b).abs().max().item() for a, b in zip(model.parameters(), old.parameters()))
    engine.release()  # sleep as during the score and update phases
    t0 = time.perf_counter()
    engine.push_weights(1, lambda: model.named_parameters())
    res["push_after_sleep_s"] = time.perf_counter() - t0
    out2 = engine.sample(prompts, args.group_size, seeds)
    res["b_gap_trained_mean"], res["b_gap_trained_max"] = gap(model, prompts, out2, args.temperature, tok.pad_token_id)
    res["b_gap_old_mean"], res["b_gap_old_max"] = gap(old, prompts, out2, args.temperature, tok.pad_token_id)
    res["b_same_samples_as_before"] = out2.token_ids == out.token_ids
    res["pass_b"] = res["b_gap_old_mean"] >= STALE_FACTOR * res["b_gap_trained_mean"]
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"\nvLLM engine check (sleep level {args.sleep_level}, engine {args.dtype}, trainer float32)")
    for k, v in res.items():
        print(f"  {k:28s} {v:.3g}" if isinstance(v, float) else f"  {k:28s} {v}")
    engine.close()
    return 0 if res["pass_b"] else 1


if __name__ == "__main__":
    sys.exit(main())
