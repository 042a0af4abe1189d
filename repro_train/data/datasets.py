"""Prompts with ground-truth answers, and the order they are visited in.

    prompts = load_prompts(cfg.data, tokenizer, room=room)  # PromptSet: token ids, answers, other columns
    sampler = PromptSampler(len(prompts), seed, shuffle)
    idx = sampler.take(prompts_per_step)              # crosses epoch boundaries; state_dict() resumes exactly

Sources: 'toy' (the embedded arithmetic task), a named dataset (data/named.py: 'gsm8k-100',
'reasoning-gym:TASK?size=..&seed=..'), a local .jsonl/.json/.parquet/.csv file, or a
`datasets` hub name. Missing columns are reported at start-up with the columns that exist. A prompt
longer than data.max_prompt_tokens, or than `room` (the model's maximum positions minus
rollout.max_new_tokens), is dropped and counted with its reason in the data report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..core.typed_config import ConfigError
from ..tasks.arithmetic import generate
from .named import is_named, load_named
from .prompts import RowError, encode_prompt
from .validate import DataReport, check_file, check_row, read_json, read_json_lines

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class PromptSet:
    prompt_ids: list[list[int]]
    prompts: list[str]
    """Decoded prompt text (what reward functions receive)."""
    answers: list[str]
    columns: dict[str, list] = field(default_factory=dict)
    """Every other column, for custom reward functions."""
    report: DataReport | None = None
    """Rows read, used and skipped per reason (data/validate.py)."""
    where: list[str] = field(default_factory=list)
    """Each prompt's source row ('d.jsonl line 7'), for messages about it."""
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    """Prompt text -> its first index (built by `label` on first use)."""

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def label(self, prompt: str) -> str | None:
        """'d.jsonl line 7 (prompt 5)' for a prompt text of this set (None when it is not one)."""
        if not self._index:
            for i, p in enumerate(self.prompts):
                self._index.setdefault(p, i)
        i = self._index.get(prompt)
        return None if i is None else f"{self.where[i]} (prompt {i})"


def _load_rows(cfg, report: DataReport) -> list[tuple[str, dict]]:
    """[(where, row)]: where names the file and line (or row) for error messages."""
    if cfg.source == "toy":
        rows = generate(cfg.toy_size, cfg.toy_seed, cfg.toy, with_traces=False)
        report.rows_read = len(rows)
        return [(f"toy row {i}", r) for i, r in enumerate(rows)]
    if is_named(cfg.source):  # gsm8k-100, reasoning-gym:TASK?... (data/named.py)
        rows = load_named(cfg.source)
        report.rows_read = len(rows)
        return [(f"{cfg.source} row {i}", r) for i, r in enumerate(rows)]
    ext = os.path.splitext(cfg.source)[1].lower()
    if ext == ".jsonl":  # read here, line by line, so a bad line is named (datasets would only fail)
        return read_json_lines(cfg.source, report, cfg.max_row_bytes)
    if ext == ".json":
        return read_json(cfg.source, report, cfg.max_row_bytes)
    import datasets

    datasets.disable_progress_bars()
    if ext in LOCAL_FORMATS:
        check_file(cfg.source)
        try:
            ds = datasets.load_dataset(LOCAL_FORMATS[ext], data_files=cfg.source, split="train")
        except Exception as e:  # noqa: BLE001 - an unreadable file is a data error, not a traceback
            raise ConfigError(
                f"'data.source': could not read {cfg.source} as {ext[1:]}: {type(e).__name__}: {e}"
            ) from None
    else:
        try:
            ds = datasets.load_dataset(cfg.source, split=cfg.split)
        except Exception as e:  # noqa: BLE001 - report any loader failure as a config error
            raise ConfigError(
                f"'data.source': could not load dataset {cfg.source!r} split {cfg.split!r} "
                f"(a local file needs one of {', '.join(LOCAL_FORMATS)}; hub names need network): {e}"
            ) from None
    report.rows_read = len(ds)
    return [(f"{cfg.source} row {i}", r) for i, r in enumerate(ds.to_list())]


def load_prompts(cfg, tokenizer, answer_check=None, room: int | None = None, max_new_tokens: int = 0) -> PromptSet:
    """Read, check and tokenize the prompts of `cfg` (a DataConfig); bad rows raise or are skipped
    per cfg.on_bad_row (data/validate.py). `answer_check(answer) -> why | None` vets gold answers.
    `room`: the most tokens a prompt may have with the model's positions (its maximum minus
    `max_new_tokens`); longer prompts are dropped and counted (too_long_for_model)."""
    report = DataReport(cfg.source, cfg.on_bad_row)
    rows = _load_rows(cfg, report)
    if not rows and not report.rows_read:
        raise ConfigError(f"'data.source' {cfg.source!r} has no rows")
    keys = set().union(*(r for _, r in rows)) if rows else set()
    cols = sorted(keys)
    if rows and cfg.answer_field not in keys:
        raise ConfigError(
            f"'data.answer_field' = {cfg.answer_field!r} is not a column of {cfg.source!r}; columns: {cols}"
        )
    if rows and cfg.prompt_field not in keys and cfg.question_field not in keys:
        raise ConfigError(
            f"neither 'data.prompt_field' = {cfg.prompt_field!r} nor 'data.question_field' = "
            f"{cfg.question_field!r} is a column of {cfg.source!r}; columns: {cols}"
        )
    out = PromptSet(
        [],
        [],
        [],
        {k: [] for k in cols if k not in (cfg.answer_field, cfg.prompt_field, cfg.question_field)},
        report=report,
    )
    for where, row in rows:
        if not check_row(row, where, cfg, report, answer_check):
            continue
        view = {"prompt": row.get(cfg.prompt_field), "question": row.get(cfg.question_field)}
        try:
            ids = encode_prompt(tokenizer, view, cfg.system_prompt, where=where)
        except RowError as e:
            report.bad("unusable_prompt", where, str(e).removeprefix(where + ": "))
            continue
        if not _fits(ids, where, cfg, report, room, max_new_tokens):
            continue
        out.prompt_ids.append(ids)
        out.where.append(where)
        out.prompts.append(tokenizer.decode(ids, skip_special_tokens=False))
        out.answers.append(str(row[cfg.answer_field]))
        for k in out.columns:
            out.columns[k].append(row.get(k))
    report.rows_used = len(out.prompt_ids)
    if not out.prompt_ids:
        raise ConfigError(f"no usable row in {cfg.source!r}: {report.summary()}")
    return out


def _fits(ids: list[int], where: str, cfg, report: DataReport, room: int | None, max_new_tokens: int) -> bool:
    """True when the prompt is within data.max_prompt_tokens and the model's room; else dropped and counted."""
    if len(ids) > cfg.max_prompt_tokens:
        report.drop(
            "too_long",
            where,
            f"the prompt has {len(ids)} tokens, over data.max_prompt_tokens = {cfg.max_prompt_tokens}",
        )
        return False
    if room is not None and len(ids) > room:
        report.drop(
            "too_long_for_model",
            where,
            f"the prompt has {len(ids)} tokens; with rollout.max_new_tokens = {max_new_tokens} that is over the "
            f"model's {room + max_new_tokens} positions",
        )
        return False
    return True


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
            out += order[self.pos : self.pos + need]
            self.pos += need
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ConfigError(
                f"checkpoint's data order was for {state['n']} prompts with seed {state['seed']}, "
                f"this run has {self.n} prompts with seed {self.seed}: resume with the same data and train.seed"
            )
        self.epoch, self.pos = state["epoch"], state["pos"]
