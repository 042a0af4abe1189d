"""Helpers for trainer tests: tiny recipes, in-process runs, reading checkpoints."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch
import yaml

from tests.helpers import REPO

DIGIT_REWARD = """
def digit_frac(prompts, completions, answers, **columns):
    \"\"\"Share of digits in the completion: a reward a random tiny model gets varied values of.\"\"\"
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in completions]
"""


def make_recipe(tmp_path, model_dir, data_path, **sections) -> str:
    """A small CPU recipe (2 prompts x 4 samples, 12 new tokens) with a digit-share reward."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    reward_file = tmp_path / "digit_reward.py"
    reward_file.write_text(DIGIT_REWARD)
    recipe = {
        "model": {"path": model_dir},
        "data": {"source": data_path},
        "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 12, "per_prompt_seed": True},
        "reward": {"functions": [{"name": f"{reward_file}:digit_frac"}], "num_workers": 1},
        "algo": {"micro_batch_size": 4},
        "optim": {"lr": 1e-3},
        "train": {"steps": 3, "save_every": 0, "output_dir": str(tmp_path / "run"), "device": "cpu"},
        "log": {"wandb": False, "progress": False},
    }
    for sec, vals in sections.items():
        recipe.setdefault(sec, {}).update(vals)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def reset_accelerate() -> None:
    """accelerate keeps process-wide singletons; a second in-process run needs them cleared."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run_inprocess(recipe: str, *overrides: str) -> str:
    """trainer.loop.train on the recipe with overrides, in this process: the run folder."""
    from repro_train.trainer.loop import train

    return _clean_run(train, recipe, overrides)


def run_cli_inprocess(recipe: str, *overrides: str) -> int:
    """`repro-train train` as the console runs it (messages and exit code), in this process."""
    from repro_train.commands.train import run

    return _clean_run(run, recipe, overrides)


def _clean_run(fn, recipe: str, overrides):
    """fn(load(recipe, overrides)) between two resets of accelerate's process-wide state."""
    from repro_train.config import load

    reset_accelerate()
    try:
        return fn(load(recipe, list(overrides)))
    finally:
        reset_accelerate()


BLOCKER = """
import importlib.abc, os, sys
BLOCKED = set(os.environ.get("REPRO_TEST_BLOCK_IMPORTS", "").split(","))
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked by the test (the code path must not import it)")
sys.meta_path.insert(0, _Block())
"""


def run_cli(
    args: list[str],
    launcher: list[str] | None = None,
    timeout: int = 600,
    block_imports: tuple[str, ...] = (),
    tmp_path=None,
) -> subprocess.CompletedProcess:
    """`python -m repro_train ARGS`, or `LAUNCHER ARGS` (a launcher ends with `-m repro_train`).

    `block_imports`: top-level packages whose import must fail in the child (needs `tmp_path`)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    if block_imports:
        (tmp_path / "sitecustomize.py").write_text(BLOCKER)
        env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
        env["REPRO_TEST_BLOCK_IMPORTS"] = ",".join(block_imports)
    cmd = (launcher or [sys.executable, "-m", "repro_train"]) + list(args)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def last_checkpoint(run_dir: str) -> str:
    from repro_train.trainer.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir)
    assert found, f"no checkpoint in {run_dir}"
    return found[-1]


def policy_weights(ckpt: str, name: str = "policy") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(ckpt, name, "model.safetensors"))


def trainer_state(ckpt: str) -> tuple[dict, dict]:
    """(model state, optimizer state) as saved for exact resume."""
    state = os.path.join(ckpt, "state")
    model = torch.load(os.path.join(state, "pytorch_model.bin"), map_location="cpu", weights_only=False)
    optim = torch.load(os.path.join(state, "optimizer.bin"), map_location="cpu", weights_only=False)
    return model, optim


def metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def all_finite(row: dict, allow_nan: tuple[str, ...] = ()) -> list[str]:
    """Names of metrics that are not finite numbers."""
    return [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v) and k not in allow_nan]
