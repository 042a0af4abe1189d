"""Sampling responses with transformers `generate`: the `hf` rollout engine (the default; runs on a CPU).

    engine = HFEngine(model_ctx, cfg.rollout, eos_ids, pad_id, device)   # model_ctx(): the policy, full weights
    out = engine.sample(prompts, group_size, seeds)    # base.Rollouts (no engine log-probs)
    responses = sample(model, prompts, group_size, cfg.rollout, eos_ids, pad_id, device, seeds)
    # responses[i][g]: sample g of prompt i, up to and including its first EOS (none when max_new_tokens is hit)

The model must hold full weights (trainer/dist.py `gathered_for_generation`). Every sampling setting is explicit in a
fresh GenerationConfig made the model's own for the call: transformers would fill an unset one from the model's
generation_config.json (top_k=50, top_p=0.8, ...) or from its global defaults, and RL would sample from a truncated
distribution while its log-probs assume the full one. With `seeds` (one per prompt) each prompt's group is sampled in
its own call after seeding, so rollouts do not depend on the batch or the ranks (docs/evaluation.md, detail 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from .base import NamedTensors, Rollouts, trim_at_eos


def generation_config(cfg, eos_ids: Sequence[int], pad_id: int):
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        max_new_tokens=cfg.max_new_tokens,  # 0 = off (None would become 50)
        min_new_tokens=getattr(cfg, "min_new_tokens", 0) or None,
        eos_token_id=list(eos_ids),
        pad_token_id=pad_id,
        num_beams=1,
        repetition_penalty=1.0,
    )


@contextlib.contextmanager
def own_generation_config(model, gen_cfg):
    """Make `gen_cfg` the model's generation config for the duration (nothing is inherited)."""
    old = model.generation_config
    model.generation_config = gen_cfg
    try:
        yield
    finally:
        model.generation_config = old


@torch.no_grad()
def _generate(model, prompts: list[list[int]], gen_cfg, pad_id: int, device) -> list[list[int]]:
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p) :] = torch.tensor(p)
        att[i, P - len(p) :] = 1
    out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=gen_cfg)
    return out[:, P:].tolist()


def sample(
    model,
    prompts: Sequence[Sequence[int]],
    group_size: int,
    cfg,
    eos_ids: Sequence[int],
    pad_id: int,
    device,
    seeds: Sequence[int] | None = None,
) -> list[list[list[int]]]:
    """`group_size` responses for each prompt."""
    gen_cfg = generation_config(cfg, eos_ids, pad_id)
    eos = set(eos_ids)
    was_training = model.training
    model.eval()
    try:
        with own_generation_config(model, gen_cfg):
            if seeds is not None:
                out = []
                for p, s in zip(prompts, seeds):
                    torch.manual_seed(s)
                    out.append(
                        [trim_at_eos(r, eos) for r in _generate(model, [list(p)] * group_size, gen_cfg, pad_id, device)]
                    )
                return out
            flat = [list(p) for p in prompts for _ in range(group_size)]
            rows: list[list[int]] = []
            for s in range(0, len(flat), cfg.generation_batch_size):
                rows += _generate(model, flat[s : s + cfg.generation_batch_size], gen_cfg, pad_id, device)
    finally:
        model.train(was_training)
    rows = [trim_at_eos(r, eos) for r in rows]
    return [rows[i * group_size : (i + 1) * group_size] for i in range(len(prompts))]


class HFEngine:
    """The `hf` engine: samples with the trainer's own model, so weights never need pushing.

    `model_ctx()` enters a context that yields the model with full weights (ZeRO-3 gathered, FSDP2
    unsharded: `dist.gathered_for_generation`)."""

    name = "hf"

    def __init__(
        self, model_ctx: Callable[[], AbstractContextManager], cfg, eos_ids: Sequence[int], pad_id: int, device
    ):
        self.model_ctx, self.cfg, self.eos_ids, self.pad_id, self.device = model_ctx, cfg, list(eos_ids), pad_id, device

    def push_weights(self, version: int, params: Callable[[], NamedTensors]) -> None:
        """Nothing to do: `generate` runs on the weights being trained."""

    def sample(self, prompts: Sequence[Sequence[int]], group_size: int, seeds: Sequence[int] | None) -> Rollouts:
        with self.model_ctx() as model:
            ids = sample(model, prompts, group_size, self.cfg, self.eos_ids, self.pad_id, self.device, seeds)
        return Rollouts(token_ids=ids)

    def release(self) -> None:
        """Nothing held between calls."""

    def close(self) -> None:
        """Nothing to free."""
