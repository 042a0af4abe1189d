"""The trainer's calls into the length shapers (shaping/): rewards before the estimator, advantage modifiers after it,
and their metrics. Kept thin: the methods themselves are pure functions of tensors."""

from __future__ import annotations

import torch

from ..core.text import ResponseFormat, TokenizerDecoder
from ..repro.segment import segment_response
from ..shaping import ShapeInputs, apply_advantage_shapers, apply_reward_shapers


def thinking_lengths(tokenizer, response_ids: list[list[int]], fmt: ResponseFormat) -> torch.Tensor:
    """Tokens before the first end-of-thinking marker of each response (spec 1's thinking span). (B,)"""
    dec = TokenizerDecoder(tokenizer)
    T = [segment_response(ids, dec.decode, fmt.think_end, r"\n\n", fmt.eos_ids, dec.piece).T for ids in response_ids]
    return torch.tensor(T, dtype=torch.float64)


def shape_rewards(rt, batch, step: int) -> None:
    """batch.rewards <- the shaped rewards; batch.shaping <- what each shaper added (None when off)."""
    s = rt.cfg.shaping
    if not s.methods:
        return
    lengths = batch.mask.sum(-1).cpu()
    think = None
    if s.length == "thinking":
        ids = [row[:n] for row, n in zip(batch.seqs.response_ids.tolist(), lengths.tolist())]
        think = thinking_lengths(rt.tokenizer, ids, rt.response_format)
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
