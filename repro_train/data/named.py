"""Named datasets: offline problem sets usable as `data.source` (and `repro-train eval --data`), exportable to JSONL.

    rows = load_named("gsm8k-100")                                  # list of dicts
    rows = load_named("reasoning-gym:chain_sum?size=200&seed=1&min_terms=2&max_terms=2&max_digits=1")
    repro-train data export "thinking:chain,gcd?n=2000&seed=1&split=train" --out think-train.jsonl

Names: `gsm8k-100` (the 100 GSM8K test problems in repro_train/assets/gsm8k-100/), `reasoning-gym:TASK[?key=value&...]`
(problems of reasoning-gym's generator TASK, checked by the `reasoning_gym` reward with the generator's own checker)
and `thinking:FAMILIES[?key=value&...]` (long <think> traces with planted overthinking, tasks/thinking/). `disjoint`
and `unique` build held-out sets. Parameters, defaults, columns and splits: docs/models-and-data.md, "Datasets".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ..core.typed_config import ConfigError
from ..tasks.thinking import FAMILIES, HABITS, SPLITS, ThinkingConfig, generate

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
RG_PREFIX = "reasoning-gym:"
RG_DEFAULTS = {"size": 200, "seed": 0}
THINKING_PREFIX = "thinking:"
THINKING_DEFAULTS = {"n": 1000, "seed": 0, "split": "train"}
THINKING_KEYS = ("n", "seed", "split", "min_steps", "max_steps", "min_digits", "max_digits", "overthink", *HABITS)


def _json_default(obj):
    """reasoning-gym metadata holds sets, tuples and Fractions: lists, and exact strings ('3/4')."""
    return list(obj) if isinstance(obj, (set, frozenset, tuple)) else str(obj)


@dataclass(frozen=True)
class NamedDataset:
    description: str
    load: Callable[[dict], list[dict]]
    license: str
    example: str
    """A source string that works, for `data list`."""


def _gsm8k_100(params: dict) -> list[dict]:
    if params:
        raise ConfigError(f"'data.source': gsm8k-100 takes no parameters, got {sorted(params)}")
    path = os.path.join(ASSETS, "gsm8k-100", "gsm8k-100.jsonl")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_source(source: str) -> tuple[str, dict]:
    """'reasoning-gym:chain_sum?size=3&seed=1' -> ('reasoning-gym:chain_sum', {'size': 3, 'seed': 1})."""
    name, _, query = source.partition("?")
    params: dict = {}
    for key, val in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key in params:
            raise ConfigError(f"'data.source' {source!r}: parameter {key!r} is given twice")
        params[key] = _value(val)
    return name, params


def _reasoning_gym(task: str, params: dict) -> list[dict]:
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise ConfigError(
            "'data.source' reasoning-gym:... needs the reasoning-gym package: "
            "pip install reasoning-gym==0.1.25 (or export the set to JSONL where it is installed: "
            "repro-train data export ...)"
        ) from None
    if task not in DATASETS:
        import difflib

        close = difflib.get_close_matches(task, list(DATASETS), n=3)
        raise ConfigError(
            f"'data.source': reasoning-gym has no task {task!r}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + "; `repro-train data list --all` lists them"
        )
    kw = {**RG_DEFAULTS, **params}
    try:
        ds = reasoning_gym.create_dataset(task, **kw)
    except (TypeError, AssertionError, ValueError) as e:
        raise ConfigError(f"'data.source' reasoning-gym:{task} with {kw}: {e or type(e).__name__}") from None
    return [
        {
            "question": e["question"],
            "answer": str(e["answer"]),
            "rg_dataset": task,
            "rg_entry": json.dumps(e.get("metadata", {}), default=_json_default),
        }
        for e in ds
    ]


def _thinking(families: str, params: dict) -> list[dict]:
    import difflib

    fams = FAMILIES if families == "all" else tuple(families.split(","))
    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        raise ConfigError(f"'data.source' thinking:{families}: unknown families {bad}; use 'all' or some of {FAMILIES}")
    for key in params:
        if key not in THINKING_KEYS:
            close = difflib.get_close_matches(key, THINKING_KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; keys: {', '.join(THINKING_KEYS)}"
            raise ConfigError(f"'data.source' thinking:{families}: unknown parameter {key!r}{hint}")
    kw = {**THINKING_DEFAULTS, **params}
    default = ThinkingConfig()
    try:
        cfg = ThinkingConfig(
            steps=(kw.pop("min_steps", default.steps[0]), kw.pop("max_steps", default.steps[1])),
            digits=(kw.pop("min_digits", default.digits[0]), kw.pop("max_digits", default.digits[1])),
            **{k: float(kw.pop(k)) for k in ("overthink", *HABITS) if k in kw},
        )
        if kw["split"] not in SPLITS:
            raise ValueError(f"split={kw['split']!r}: choose from {SPLITS}")
        return generate(int(kw["n"]), int(kw["seed"]), fams, cfg, kw["split"])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"'data.source' thinking:{families}: {e}") from None


NAMED: dict[str, NamedDataset] = {
    "gsm8k-100": NamedDataset(
        "100 original GSM8K test problems (question, solution, answer)", _gsm8k_100, "MIT (GSM8K, OpenAI)", "gsm8k-100"
    ),
    "reasoning-gym:chain_sum": NamedDataset(
        "sums and differences of integers; difficulty: min/max_terms, min/max_digits",
        None,
        "Apache-2.0",
        "reasoning-gym:chain_sum?size=200&seed=1&min_terms=2&max_terms=2&min_digits=1&max_digits=1",
    ),
    "reasoning-gym:basic_arithmetic": NamedDataset(
        "+ - * / expressions; difficulty: min/max_terms, min/max_digits",
        None,
        "Apache-2.0",
        "reasoning-gym:basic_arithmetic?size=200&seed=1&min_terms=2&max_terms=3&min_digits=1&max_digits=2",
    ),
    "reasoning-gym:gsm_symbolic": NamedDataset(
        "GSM8K-style word problems from symbolic templates (new numbers each seed)",
        None,
        "Apache-2.0",
        "reasoning-gym:gsm_symbolic?size=100&seed=1",
    ),
    "thinking:all": NamedDataset(
        "long <think> traces with overthinking habits over chain, equation, gcd, word problems (or some: "
        "thinking:chain,gcd); split=train|test|hard",
        None,
        "Apache-2.0 (generated by this package)",
        "thinking:all?n=2000&seed=1&split=train&overthink=0.7",
    ),
}
"""What `data list` shows; any other reasoning-gym task works too (reasoning-gym:TASK)."""


def is_named(source: str) -> bool:
    return source.partition("?")[0] in NAMED or source.startswith((RG_PREFIX, THINKING_PREFIX))


def load_named(source: str) -> list[dict]:
    """Rows of a named dataset (see the module docstring); ConfigError naming the fix otherwise."""
    name, params = parse_source(source)
    if name.startswith(RG_PREFIX):
        return _reasoning_gym(name[len(RG_PREFIX) :], params)
    if name.startswith(THINKING_PREFIX):
        return _thinking(name[len(THINKING_PREFIX) :], params)
    if name not in NAMED:
        raise ConfigError(f"'data.source': unknown dataset {name!r}; named datasets: {', '.join(NAMED)}")
    return NAMED[name].load(params)


def disjoint(rows: list[dict], seen: list[dict], key: str = "question") -> list[dict]:
    """`rows` without those whose `key` occurs in `seen` (held-out sets from overlapping samples)."""
    taken = {r[key] for r in seen}
    return [r for r in rows if r[key] not in taken]


def unique(rows: list[dict], key: str = "question") -> list[dict]:
    """The first row of each distinct `key`, in order."""
    seen: set = set()
    return [r for r in rows if not (r[key] in seen or seen.add(r[key]))]
