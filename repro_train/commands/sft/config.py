"""The `repro-train sft` recipe: the sections of recipes/toy/sft.yaml, their checks and loading.

cfg = load("recipes/toy/sft.yaml", ["train.steps=50"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ...core.typed_config import ConfigError, apply_overrides, build
from ...tasks.arithmetic import TaskConfig


@dataclass(frozen=True)
class SFTDataConfig:
    """Training set and tokenizer."""

    n_train: int = 40000
    """Toy rows generated for training (questions repeat: the task space is small)."""
    seed: int = 0
    """Seed of the training rows (`arithmetic.generate`)."""
    vocab_size: int = 512
    """BPE vocabulary cap; the toy corpus saturates below it (about 400 tokens)."""


@dataclass(frozen=True)
class SFTModelConfig:
    """Llama dimensions (from scratch, input and output embeddings tied)."""

    layers: int = 4
    """Decoder layers."""
    hidden: int = 256
    """Hidden size."""
    heads: int = 4
    """Attention heads (head dim = hidden / heads)."""
    kv_heads: int = 4
    """Key/value heads (grouped-query attention when < heads)."""
    intermediate: int = 768
    """MLP inner size."""
    context_length: int = 512
    """max_position_embeddings; a longer training sequence is an error."""
    save_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of the saved weights."""


@dataclass(frozen=True)
class SFTTrainConfig:
    """Optimisation."""

    steps: int = 1500
    """Optimiser steps (the data is cycled in reshuffled epochs)."""
    batch_size: int = 64
    """Sequences per step."""
    bucket: int = 16
    """Length bucketing: batches are cut from windows of `bucket` batches sorted by length."""
    lr: float = 2e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at min_lr_ratio * lr."""
    warmup_steps: int = 100
    """Linear warmup from lr / warmup_steps to lr."""
    weight_decay: float = 0.1
    """AdamW weight decay (on matrices only; not on norms)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 = no clipping."""
    seed: int = 0
    """Seed of initialisation, data order and evaluation sampling."""
    threads: int = 2
    """torch.set_num_threads: results are bitwise reproducible only at the same count."""
    log_every: int = 10
    """Write a line to sft_log.jsonl every N steps."""
    progress: bool = True
    """Show a tqdm progress bar."""


@dataclass(frozen=True)
class SFTEvalConfig:
    """Held-out evaluation at the end (written to RECORD.md)."""

    n_problems: int = 500
    """Held-out problems for greedy decoding; 0 = no evaluation."""
    seed: int = 1
    """Seed of the held-out problems (questions that occur in the training set are skipped)."""
    sampled_problems: int = 200
    """The first N held-out problems are also sampled at temperature 1."""
    samples: int = 4
    """Samples per problem at temperature 1."""
    max_new_tokens: int = 256
    """Generation cap per response."""
    batch_size: int = 200
    """Sequences per generate call."""


@dataclass(frozen=True)
class SFTConfig:
    """`repro-train sft`: everything that determines the shipped tiny reasoner."""

    task: TaskConfig = field(default_factory=TaskConfig)
    """The toy task's knobs (difficulty, style ratios); held-out problems use the same."""
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    model: SFTModelConfig = field(default_factory=SFTModelConfig)
    train: SFTTrainConfig = field(default_factory=SFTTrainConfig)
    eval: SFTEvalConfig = field(default_factory=SFTEvalConfig)
    output_dir: str = "runs/tiny-reasoner"
    """Folder of the saved model, tokenizer, sft_log.jsonl and RECORD.md."""


def validate(cfg: SFTConfig) -> None:
    """Raise ConfigError naming the key of the first value out of range."""
    positive = {
        "data.n_train": cfg.data.n_train,
        "data.vocab_size": cfg.data.vocab_size,
        "model.layers": cfg.model.layers,
        "model.hidden": cfg.model.hidden,
        "model.heads": cfg.model.heads,
        "model.kv_heads": cfg.model.kv_heads,
        "model.intermediate": cfg.model.intermediate,
        "model.context_length": cfg.model.context_length,
        "train.steps": cfg.train.steps,
        "train.batch_size": cfg.train.batch_size,
        "train.bucket": cfg.train.bucket,
        "train.lr": cfg.train.lr,
        "train.threads": cfg.train.threads,
        "train.log_every": cfg.train.log_every,
        "eval.samples": cfg.eval.samples,
        "eval.max_new_tokens": cfg.eval.max_new_tokens,
        "eval.batch_size": cfg.eval.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"'{key}' must be > 0, got {value}")
    m = cfg.model
    if m.hidden % m.heads or m.heads % m.kv_heads:
        raise ConfigError(
            f"'model.hidden' ({m.hidden}) must be divisible by 'model.heads' "
            f"({m.heads}), and heads by 'model.kv_heads' ({m.kv_heads})"
        )
    if not 0 <= cfg.train.min_lr_ratio <= 1 or cfg.train.warmup_steps < 0:
        raise ConfigError("'train.min_lr_ratio' must be in [0, 1] and 'train.warmup_steps' >= 0")
    if cfg.train.weight_decay < 0 or cfg.train.grad_clip < 0:
        raise ConfigError("'train.weight_decay' and 'train.grad_clip' must be >= 0")
    if cfg.eval.n_problems < 0 or not 0 <= cfg.eval.sampled_problems <= cfg.eval.n_problems:
        raise ConfigError(
            f"need 0 <= 'eval.sampled_problems' ({cfg.eval.sampled_problems}) <= "
            f"'eval.n_problems' ({cfg.eval.n_problems})"
        )
    if cfg.data.n_train < cfg.train.batch_size:
        raise ConfigError(f"'data.n_train' ({cfg.data.n_train}) must be >= 'train.batch_size' ({cfg.train.batch_size})")
    if cfg.eval.seed == cfg.data.seed:
        raise ConfigError(
            f"'eval.seed' must differ from 'data.seed' ({cfg.data.seed}): the evaluation is on held-out problems"
        )


def load(path: str | None, overrides: list[str] = ()) -> SFTConfig:
    """Recipe YAML (optional) + dotted overrides -> a validated SFTConfig."""
    raw = {}
    if path is not None:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    cfg = build(SFTConfig, apply_overrides(raw, list(overrides)))
    validate(cfg)
    return cfg
