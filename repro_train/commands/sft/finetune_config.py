"""The `repro-train sft` recipe for a pretrained model (recipes/thinker/sft.yaml): fine-tune a Hugging Face causal LM
folder on prompt/response pairs. A recipe whose `model` section names a `path` is one of these; the tiny reasoner's
recipe (recipes/toy/sft.yaml, config.py) builds a model from scratch and has no path.

cfg = load_finetune(raw_recipe("recipes/thinker/sft.yaml", ["train.steps=50"]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...core.typed_config import ConfigError, apply_overrides, build


@dataclass(frozen=True)
class FTModelConfig:
    """The pretrained model."""

    path: str = ""
    """A Hugging Face model folder with a tokenizer (`repro-train prepare-model smollm2-135m-instruct` makes one)."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    """Attention kernel."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about a third more time)."""
    save_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    """Dtype of the saved weights (training keeps float32 master weights either way)."""
    think_end: str = "</think>"
    """The end-of-thinking marker of the responses (a recipe's model.think_end): the generation eval's detectors read
    the response before it."""


@dataclass(frozen=True)
class FTDataConfig:
    """Prompt/response pairs."""

    source: str = ""
    """A JSONL file, or a named set with a response column (`thinking:...`; `repro-train data list`)."""
    question_field: str = "question"
    """Column with a question, wrapped in the tokenizer's chat template (the prompt RL and eval build alike)."""
    prompt_field: str = "prompt"
    """Column with raw prompt text, used as is when a row has it (instead of a question)."""
    response_field: str = "response"
    """Column with the target response; EOS is appended. The loss is on these tokens only."""
    answer_field: str = "answer"
    """Column with the gold answer (the generation eval only)."""
    system_prompt: str | None = None
    """System message before each question (null: the chat template's default)."""
    max_tokens: int = 2048
    """Longest example (prompt + response + EOS); longer ones are dropped and counted."""
    eval_source: str | None = None
    """Held-out rows (same format); null: the last eval_rows rows of `source` are held out."""
    eval_rows: int = 200
    """Held-out rows for the held-out loss (the first N of eval_source)."""


@dataclass(frozen=True)
class FTTrainConfig:
    """Optimisation: AdamW on float32 master weights, bf16 autocast on a GPU."""

    steps: int = 1000
    """Optimiser steps (the data is cycled in reshuffled epochs)."""
    batch_size: int = 32
    """Sequences per optimiser step."""
    micro_batch_tokens: int = 16384
    """Most padded tokens per forward: a step's sequences, sorted by length, are cut into micro-batches under it."""
    bucket: int = 16
    """Length bucketing: a step's sequences come from a window of `bucket` batches sorted by length."""
    lr: float = 2e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at min_lr_ratio * lr."""
    warmup_steps: int = 50
    """Linear warmup from lr / warmup_steps to lr."""
    weight_decay: float = 0.0
    """AdamW weight decay (matrices only)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 = no clipping."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """'bf16': autocast to bfloat16 over float32 master weights; 'fp32': none; 'auto': bf16 on a GPU, fp32 on a CPU."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda'."""
    seed: int = 0
    """Seed of data order and dropout."""
    log_every: int = 10
    """Write a line to sft_log.jsonl every N steps."""
    eval_every: int = 100
    """Held-out loss every N steps (and after the last); 0 = after the last only."""
    time_limit_s: float = 0.0
    """Stop after the first step that ends past this many seconds of training, and save (0 = no limit): a safety net
    for a lent machine's time limit; the learning-rate schedule is then cut short (the record says so)."""
    progress: bool = True
    """Show a tqdm progress bar."""


@dataclass(frozen=True)
class FTEvalConfig:
    """Generation on held-out problems after training (accuracy, tokens, re-check and backtrack rates)."""

    problems: int = 0
    """Held-out problems answered greedily (the first N rows of the held-out set); 0 = none."""
    max_new_tokens: int = 1024
    """Generation cap per response."""
    batch_size: int = 64
    """Problems per generate call."""
    reward: str = "numeric"
    """Correctness check (repro-train eval's --reward)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """`repro-train sft` of a pretrained model."""

    model: FTModelConfig = field(default_factory=FTModelConfig)
    data: FTDataConfig = field(default_factory=FTDataConfig)
    train: FTTrainConfig = field(default_factory=FTTrainConfig)
    eval: FTEvalConfig = field(default_factory=FTEvalConfig)
    output_dir: str = "runs/sft"
    """Folder of the saved model (weights, tokenizer with its chat template, generation_config.json with EOS),
    sft_log.jsonl, sft_config.yaml and sft_result.json."""


def validate_finetune(cfg: FinetuneConfig) -> None:
    """Raise ConfigError naming the key of the first value out of range."""
    if not cfg.model.path:
        raise ConfigError(
            "'model.path' is empty: give a model folder (repro-train prepare-model smollm2-135m-instruct)"
        )
    if not cfg.data.source:
        raise ConfigError("'data.source' is empty: give a JSONL file or a named set such as thinking:all?n=2000")
    positive = {
        "data.max_tokens": cfg.data.max_tokens,
        "data.eval_rows": cfg.data.eval_rows,
        "train.steps": cfg.train.steps,
        "train.batch_size": cfg.train.batch_size,
        "train.micro_batch_tokens": cfg.train.micro_batch_tokens,
        "train.bucket": cfg.train.bucket,
        "train.lr": cfg.train.lr,
        "train.log_every": cfg.train.log_every,
        "eval.max_new_tokens": cfg.eval.max_new_tokens,
        "eval.batch_size": cfg.eval.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"'{key}' must be > 0, got {value}")
    t = cfg.train
    if t.micro_batch_tokens < cfg.data.max_tokens:
        raise ConfigError(
            f"'train.micro_batch_tokens' ({t.micro_batch_tokens}) must be >= 'data.max_tokens' "
            f"({cfg.data.max_tokens}): the longest example must fit one micro-batch"
        )
    if not 0 <= t.min_lr_ratio <= 1 or t.warmup_steps < 0:
        raise ConfigError("'train.min_lr_ratio' must be in [0, 1] and 'train.warmup_steps' >= 0")
    if t.weight_decay < 0 or t.grad_clip < 0 or t.eval_every < 0 or t.time_limit_s < 0 or cfg.eval.problems < 0:
        raise ConfigError(
            "'train.weight_decay', 'train.grad_clip', 'train.eval_every', 'train.time_limit_s' and 'eval.problems' "
            "must be >= 0"
        )
    if t.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"'train.device' must be auto, cpu or cuda, got {t.device!r}")


def is_finetune(raw: dict) -> bool:
    """A recipe (after overrides) whose model section names a path fine-tunes that model."""
    model = raw.get("model") or {}
    return isinstance(model, dict) and "path" in model


def load_finetune(raw: dict) -> FinetuneConfig:
    """The recipe's raw mapping (overrides applied) -> a validated FinetuneConfig."""
    cfg = build(FinetuneConfig, raw)
    validate_finetune(cfg)
    return cfg


def raw_recipe(path: str | None, overrides: list[str]) -> dict:
    """The recipe YAML (optional) with dotted overrides applied, before building either config."""
    import yaml

    raw = {}
    if path is not None:
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
    return apply_overrides(raw, list(overrides))
