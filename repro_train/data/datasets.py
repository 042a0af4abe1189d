"""Prompts with ground-truth answers, and the order they are visited in.

    prompts = load_prompts(cfg.data, tokenizer)       # PromptSet: token ids, answers, other columns
    sampler = PromptSampler(len(prompts), seed, shuffle)
    idx = sampler.take(prompts_per_step)              # crosses epoch boundaries; state_dict() resumes exactly

Sources: 'toy' (the embedded arithmetic task), a local .jsonl/.json/.parquet/.csv file, or a
`datasets` hub name. Missing columns are reported at start-up with the columns that exist.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..config_base import ConfigError
from .prompts import RowError, encode_prompt
from ..tasks.arithmetic import generate

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class PromptSet:
    prompt_ids: list[list[int]]
    prompts: list[str]
    """Decoded prompt text (what reward functions receive)."""
    answers: list[str]
    columns: dict[str, list] = field(default_factory=dict)
    """Every other column, for custom reward functions."""
    dropped_too_long: int = 0

    def __len__(self) -> int:
        return len(self.prompt_ids)


def _load_rows(cfg) -> list[dict]:
    if cfg.source == "toy":
        return generate(cfg.toy_size, cfg.toy_seed, cfg.toy, with_traces=False)
    ext = os.path.splitext(cfg.source)[1].lower()
    import datasets
    datasets.disable_progress_bars()
    if ext in LOCAL_FORMATS:
        if not os.path.exists(cfg.source):
            raise ConfigError(f"'data.source': file {cfg.source} does not exist")
        ds = datasets.load_dataset(LOCAL_FORMATS[ext], data_files=cfg.source, split="train")
    else:
        try:
            ds = datasets.load_dataset(cfg.source, split=cfg.split)
        except Exception as e:  # noqa: BLE001 - report any loader failure as a config error
            raise ConfigError(f"'data.source': could not load dataset {cfg.source!r} split {cfg.split!r} "
                              f"(a local file needs one of {', '.join(LOCAL_FORMATS)}; hub names need network): {e}") from None
    return ds.to_list()


def load_prompts(cfg, tokenizer) -> PromptSet:
    """Read, check and tokenize the prompts of `cfg` (a DataConfig)."""
    rows = _load_rows(cfg)
    if not rows:
        raise ConfigError(f"'data.source' {cfg.source!r} has no rows")
    cols = sorted(rows[0])
    if cfg.answer_field not in rows[0]:
        raise ConfigError(f"'data.answer_field' = {cfg.answer_field!r} is not a column of {cfg.source!r}; columns: {cols}")
    if cfg.prompt_field not in rows[0] and cfg.question_field not in rows[0]:
        raise ConfigError(f"neither 'data.prompt_field' = {cfg.prompt_field!r} nor 'data.question_field' = "
                          f"{cfg.question_field!r} is a column of {cfg.source!r}; columns: {cols}")
    out = PromptSet([], [], [], {k: [] for k in cols if k not in (cfg.answer_field, cfg.prompt_field, cfg.question_field)})
    for i, row in enumerate(rows):
        view = {"prompt": row.get(cfg.prompt_field), "question": row.get(cfg.question_field)}
        try:
            ids = encode_prompt(tokenizer, view, cfg.system_prompt, where=f"{cfg.source} row {i}")
        except RowError as e:
            raise ConfigError(str(e)) from None
        if len(ids) > cfg.max_prompt_tokens:
            out.dropped_too_long += 1
            continue
        out.prompt_ids.append(ids)
        out.prompts.append(tokenizer.decode(ids, skip_special_tokens=False))
        ans = row.get(cfg.answer_field)
        out.answers.append(None if ans is None else str(ans))
        for k in out.columns:
            out.columns[k].append(row.get(k))
    if not out.prompt_ids:
        raise ConfigError(f"every prompt of {cfg.source!r} is longer than 'data.max_prompt_tokens' = {cfg.max_prompt_tokens}")
    return out


class PromptSampler:
    """Visits prompt indices in a seeded per-epoch order; its state resumes exactly."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.pos = 0, 0

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        """The next k indices, continuing into the next epoch when this one runs out."""
        out: list[int] = []
        while len(out) < k:
            order = self._order(self.epoch)
            need = k - len(out)
            out += order[self.pos:self.pos + need]
            self.pos += need
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(f"checkpoint's data order was for {state['n']} prompts with seed {state['seed']}, "
                             f"this run has {self.n} prompts with seed {self.seed}: resume with the same data and train.seed")
        self.epoch, self.pos = state["epoch"], state["pos"]
