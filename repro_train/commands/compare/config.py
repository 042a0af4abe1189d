"""The comparison file (`CompareConfig`): a base recipe, overrides shared by every arm (the budget), the arms and
the held-out evaluation; loaded and checked before anything runs, every arm's recipe included."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal

from ...config import load
from ...core.typed_config import ConfigError, apply_overrides, build

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ArmConfig:
    """One arm: a name and the recipe overrides that make it."""

    name: str = ""
    """Label in the table (letters, digits, '_', '.', '-')."""
    overrides: tuple[str, ...] = ()
    """Dotted overrides on top of the base recipe and the shared ones, e.g. ['shaping.methods=[kimi]']."""


@dataclass(frozen=True)
class CompareEvalConfig:
    """The held-out evaluation every trained policy gets (repro-train eval's options)."""

    data: str = "toy"
    """'toy' (generated with toy_seed), a named dataset (`repro-train data list`) or a JSONL file with question and
    answer fields."""
    n_problems: int = 100
    """Problems evaluated (the first n)."""
    toy_seed: int = 777
    """Seed of the generated toy problems (training uses data.toy_seed, 1234 by default)."""
    samples: int = 4
    """Responses per problem, at temperature `temperature`."""
    temperature: float = 1.0
    """Sampling temperature."""
    max_new_tokens: int = 128
    """Longest response."""
    reward: str = "exact_match"
    """Correctness check: exact_match, numeric, math_verify."""
    seed: int = 0
    """Sampling seed: every policy answers problem i with the same seed."""
    base_model: bool = True
    """Also evaluate the base recipe's initial model (a 'base' row)."""
    system_prompt: str | None = None
    """System message before each question (an instruct model's format instruction); null = none."""
    sets: dict = field(default_factory=dict)
    """Several held-out sets instead of `data`, name -> source (e.g. {test: "thinking:all?split=test",
    hard: "thinking:all?split=hard"}), each with its own table; {} = the one `data` set."""
    engine: Literal["hf", "vllm"] = "hf"
    """Sampler of the evaluation: transformers generate, or the vLLM engine (GPU; one per job, every set)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype the evaluated models run in."""
    vllm_memory: float = 0.3
    """engine = vllm: share of the GPU's memory each job's engine may take (all jobs may evaluate at once)."""
    vllm_kv_cache_gb: float | None = None
    """engine = vllm: a fixed KV cache size in GiB (engines that start together do not measure each other)."""
    vllm_cuda_graphs: bool = True
    """engine = vllm: compile and capture CUDA graphs (false: eager, starts in seconds, decodes slower)."""


@dataclass(frozen=True)
class CompareConfig:
    """A comparison: arms trained from one base recipe with one budget and seeds."""

    base: str = "recipes/toy/grpo.yaml"
    """Base recipe (path relative to the repository or absolute)."""
    overrides: tuple[str, ...] = ()
    """Overrides shared by every arm (the budget: steps, batch, lr)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """train.seed of each run of each arm."""
    arms: tuple[ArmConfig, ...] = ()
    """The arms."""
    eval: CompareEvalConfig = field(default_factory=CompareEvalConfig)
    """The held-out evaluation."""


# ---------------------------------------------------------------------------------------------
# load and check
# ---------------------------------------------------------------------------------------------


def load_compare(path: str, overrides: list[str] = ()) -> CompareConfig:
    """The comparison file -> validated CompareConfig; every arm's recipe is loaded and validated too."""
    import yaml

    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"comparison file {path} does not exist (they live in recipes/compare/)") from None
    cfg = build(CompareConfig, apply_overrides(raw, list(overrides)))
    check_compare(cfg)
    return cfg


def base_path(cfg: CompareConfig) -> str:
    return cfg.base if os.path.isabs(cfg.base) else os.path.abspath(cfg.base)


def arm_overrides(cfg: CompareConfig, arm: ArmConfig) -> list[str]:
    return [*cfg.overrides, *arm.overrides]


def eval_sets(cfg: CompareConfig) -> dict[str, str]:
    """{name: source} of the held-out sets: eval.sets, or {"": eval.data} for the one set (files in eval/ itself)."""
    return dict(cfg.eval.sets) or {"": cfg.eval.data}


def check_compare(cfg: CompareConfig) -> None:
    """Raise ConfigError naming the field; loads each arm's recipe (so a bad override fails now)."""
    if not cfg.arms:
        raise ConfigError("'arms' must list at least one arm ({name: ..., overrides: [...]})")
    if not cfg.seeds:
        raise ConfigError("'seeds' must list at least one seed")
    names = [a.name for a in cfg.arms]
    for i, n in enumerate(names):
        if not _NAME.match(n) or n == "base":
            raise ConfigError(
                f"'arms[{i}].name' = {n!r} must be non-empty, of letters, digits, '_', '.', '-', and not 'base'"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"'arms' repeats a name: {names}")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"'seeds' repeats a seed: {list(cfg.seeds)}")
    e = cfg.eval
    if e.n_problems < 1 or e.samples < 1 or e.max_new_tokens < 1:
        raise ConfigError("'eval.n_problems', 'eval.samples' and 'eval.max_new_tokens' must be >= 1")
    for name, source in e.sets.items():
        if not isinstance(name, str) or not _NAME.match(name) or not isinstance(source, str) or not source:
            raise ConfigError(
                f"'eval.sets' entry {name!r}: {source!r}: a name (letters, digits, '_', '.', '-') and a source"
            )
    if e.sets and e.data != CompareEvalConfig.data:
        raise ConfigError(f"give either 'eval.data' ({e.data!r}) or 'eval.sets', not both")
    for i, arm in enumerate(cfg.arms):
        try:
            load(base_path(cfg), arm_overrides(cfg, arm))
        except ConfigError as err:
            raise ConfigError(f"arm '{arm.name}' (arms[{i}]): {err}") from None
