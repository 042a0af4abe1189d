"""The trainer's calls into the length shapers (shaping/): rewards before the estimator, advantage modifiers after it,
and their metrics. Kept thin: the methods themselves are pure functions of tensors."""

from __future__ import annotations

import torch

from ..repro.segment import TokenizerDecoder
from ..shaping import ShapeInputs, apply_advantage_shapers, apply_reward_shapers


def thinking_lengths(tokenizer, response_ids: list[list[int]], think_end: str, eos_ids) -> torch.Tensor:
    """Tokens before the first think_end of each response (spec 1's thinking span, as RePro cuts it). (B,)"""
    dec = TokenizerDecoder(tokenizer)
    return torch.tensor([dec.segment(ids, think_end, r"\n\n", eos_ids).T for ids in response_ids], dtype=torch.float64)


def shape_rewards(rt, batch, step: int) -> None:
    """batch.rewards <- the shaped rewards; batch.shaping <- what each shaper added (None when off)."""
    s = rt.cfg.shaping
    if not s.methods:
        return
    lengths = batch.mask.sum(-1).cpu()
    think = None
    if s.length == "thinking":
        ids = [row[:n] for row, n in zip(batch.seqs.response_ids.tolist(), lengths.tolist())]
        think = thinking_lengths(rt.tokenizer, ids, s.think_end, rt.eos_ids)
    inp = ShapeInputs(
        batch.rewards.cpu().float(),
        batch.correct.cpu().bool(),
        lengths,
        batch.truncated.cpu().bool(),
        batch.group_ids.cpu(),
        think,
        step,
    )
    batch.rewards, batch.shaping = apply_reward_shapers(s, inp)


def shape_advantages(rt, batch, adv: torch.Tensor) -> torch.Tensor:
    """The advantage modifiers of the shapers in use (identity when none). (B, T)"""
    return apply_advantage_shapers(rt.cfg.shaping, batch.shaping, adv)


def shaping_metrics(m, batch) -> None:
    """shaping/<name>: each shaper's mean R' - R over the batch (a `trainer.metrics.Meter`)."""
    for name, delta in batch.shaping.contributions.items() if batch.shaping is not None else ():
        m.mean_of(f"shaping/{name}", delta)
