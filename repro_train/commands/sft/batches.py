"""Batch order, batches and learning-rate schedule shared by both `repro-train sft` recipes (the tiny reasoner's and
a pretrained model's): length-bucketed batches over reshuffled epochs, right-padded batches with the loss on the
response only, linear warmup then cosine decay."""

from __future__ import annotations

import math

import torch


def batch_indices(lengths: list[int], batch_size: int, steps: int, bucket: int, generator: torch.Generator):
    """Yield `steps` index lists over range(len(lengths)), epoch after reshuffled epoch.

    Length bucketing: each epoch's permutation is cut into windows of `bucket` batches, each
    window is sorted by length and cut into batches, and the batches are shuffled; so a batch
    holds similar lengths and pads little (bucket = 1: plain shuffled batches). A batch never
    spans two epochs; each epoch drops its last len(lengths) % batch_size indices.
    """
    batches: list[list[int]] = []
    for _ in range(steps):
        if not batches:
            order = torch.randperm(len(lengths), generator=generator).tolist()
            window = bucket * batch_size
            for w in range(0, len(order), window):
                chunk = sorted(order[w : w + window], key=lengths.__getitem__)
                batches += [
                    chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size) if b + batch_size <= len(chunk)
                ]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        yield batches.pop()


def lr_factor(step: int, t) -> float:
    """Multiplier of t.lr at `step` (0-based): linear warmup, then cosine to t.min_lr_ratio (t: a train section with
    steps, warmup_steps and min_lr_ratio)."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 on prompt and padding (loss on the response only)."""
    T = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros_like(input_ids)  # (B, T)
    labels = torch.full_like(input_ids, -100)  # (B, T)
    for b, (ids, n_prompt) in enumerate(examples):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention_mask[b, : len(ids)] = 1
        labels[b, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
