"""The README's commands work as written, for a user who has only this repository.

Every command line of the README's code blocks is classified in COMMANDS (a new or changed line fails
`test_every_readme_command_is_classified` until it is). The CPU ones run, in the README's order, in a
temporary folder that holds links to recipes/ and examples/, as the console script does (`python -m
repro_train`), with HF_HUB_OFFLINE=1 as the README exports:

  RUN    as written;
  SHORT  as written plus the arguments given here: training runs stop after 2 steps of 4 prompts (and a
         later command's checkpoint-000200 is then checkpoint-000002), evaluation answers 8 problems;
  CHECK  too long for a test or needs a GPU or a cluster: its recipe (comparison file, model name) loads and
         validates with the line's overrides and, under torchrun, its number of processes;
  SKIP   the make targets (CI runs them; tests/commands/test_demo.py runs the demo shrunk), the shell's own
         lines, the package install and lines with a placeholder (RECIPE).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import REPO

README = os.path.join(REPO, "README.md")
SHORT_TRAIN = ("train.steps=2", "rollout.prompts_per_step=4")
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "make demo": ("SKIP", ()),
    "make test": ("SKIP", ()),
    ". .venv/bin/activate": ("SKIP", ()),
    "export HF_HUB_OFFLINE=1": ("SKIP", ()),  # the test's environment sets it
    "repro-train train --config recipes/toy/grpo_repro.yaml": ("SHORT", SHORT_TRAIN),
    "repro-train train --config recipes/toy/ppo_repro.yaml repro.alpha=0.2": ("SHORT", SHORT_TRAIN),
    "repro-train plot runs/toy/grpo_repro runs/toy/ppo_repro --out curves.png": ("RUN", ()),
    "repro-train inspect --run runs/toy/grpo_repro": ("RUN", ()),
    "repro-train eval --model before=toy --model after=runs/toy/grpo_repro/checkpoint-000200/policy --data toy": (
        "SHORT",
        ("--n-problems", "8"),
    ),
    "repro-train inspect --recipe recipes/toy/grpo_repro.yaml --input examples/inspect/rows.jsonl --output out.jsonl "
    "--plot plots/": ("RUN", ()),
    "repro-train signal --config recipes/toy/grpo_repro.yaml --steps 2": ("RUN", ()),
    "repro-train train --config recipes/toy/grpo_authors.yaml": ("SHORT", SHORT_TRAIN),
    "repro-train data list": ("RUN", ()),
    "repro-train compare --config recipes/compare/toy.yaml --out runs/compare/toy --parallel 2": ("CHECK", ()),
    "repro-train prepare-model smollm2-135m-instruct": ("CHECK", ()),
    "repro-train train --config recipes/smollm2/grpo_repro.yaml train.steps=2 train.device=cpu "
    "rollout.prompts_per_step=2 rollout.group_size=4 rollout.max_new_tokens=24 algo.micro_batch_size=8": ("CHECK", ()),
    "repro-train train --config recipes/smollm2/grpo_repro.yaml": ("CHECK", ()),
    "torchrun --standalone --nproc_per_node 8 -m repro_train train --config "
    "recipes/math/r1_distill_qwen_1.5b_grpo_repro.yaml": ("CHECK", ()),
    "accelerate launch --config_file launch/accelerate/zero3.yaml -m repro_train train --config RECIPE": ("SKIP", ()),
    "sbatch launch/slurm/train.sbatch": ("SKIP", ()),
    "pip install -e '.[vllm]'": ("SKIP", ()),
    "repro-train train --config recipes/toy/grpo_repro.yaml rollout.engine=vllm rollout.per_prompt_seed=true": (
        "CHECK",
        (),
    ),
}
STARTS = ("repro-train ", "make ", "torchrun ", "accelerate ", "sbatch ", "pip ", ". ", "export ", "python", "bash ")


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's indented code blocks, in order: comments after '  #' dropped,
    continuation lines (ending in a backslash) joined, repeated lines kept once."""
    out, pending = [], ""
    for line in text.splitlines():
        if not line.startswith("    "):
            pending = ""
            continue
        body = pending + line.strip()
        if body.endswith("\\"):
            pending = body[:-1].rstrip() + " "
            continue
        pending = ""
        body = re.split(r"\s{2,}#|^#", body)[0].strip()
        if body.startswith(STARTS) and body not in out:
            out.append(body)
    return out


def test_readme_commands_parse():
    text = "    a\n    repro-train x \\\n        --y 1   # note\n\n    make demo  # d\n    repro-train x --y 1\n"
    assert readme_commands(text) == ["repro-train x --y 1", "make demo"]


def test_every_readme_command_is_classified():
    with open(README) as fh:
        found = readme_commands(fh.read())
    unknown = [c for c in found if c not in COMMANDS]
    assert not unknown, "classify these README lines in COMMANDS:\n" + "\n".join(unknown)
    gone = [c for c in COMMANDS if c not in found]
    assert not gone, "these COMMANDS are no longer in the README:\n" + "\n".join(gone)


def test_the_sections_the_code_names_exist():
    """Error messages that point at a README section ('GPU install') point at one that exists."""
    from repro_train.rollout.vllm import INSTALL_HINT

    with open(README) as fh:
        headings = [line.lstrip("#").strip() for line in fh if line.startswith("#")]
    for name in re.findall(r"README '([^']+)'", INSTALL_HINT):
        assert any(h.startswith(name) for h in headings), name


def check(cmd: str) -> None:
    """A CHECK line: its recipe, comparison file or model name is valid, with its overrides and world size."""
    from repro_train.commands.compare.config import load_compare
    from repro_train.config import load
    from repro_train.models.zoo import MODELS

    args = shlex.split(cmd)
    if "prepare-model" in args:
        assert args[-1] in MODELS
        return
    path = os.path.join(REPO, args[args.index("--config") + 1])
    if "compare" in args:
        load_compare(path)
        return
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    world = int(args[args.index("--nproc_per_node") + 1]) if "--nproc_per_node" in args else 1
    load(path, overrides, world_size=world)


def test_readme_cpu_commands_run_as_written(tmp_path):
    """Every RUN and SHORT line in order in a fresh folder (each one's output feeds the next), every CHECK line."""
    with open(README) as fh:
        found = readme_commands(fh.read())
    for name in ("recipes", "examples"):
        os.symlink(os.path.join(REPO, name), tmp_path / name)
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    shortened = False
    for cmd in found:
        kind, extra = COMMANDS[cmd]
        if kind == "CHECK":
            check(cmd)
        if kind not in ("RUN", "SHORT"):
            continue
        args = shlex.split(cmd)[1:] + list(extra)
        if shortened:  # the training runs before stopped after 2 steps
            args = [a.replace("checkpoint-000200", "checkpoint-000002") for a in args]
        shortened = shortened or extra == SHORT_TRAIN
        res = subprocess.run(
            [sys.executable, "-m", "repro_train", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert (tmp_path / "curves.png").stat().st_size > 20000
    assert (tmp_path / "runs" / "toy" / "grpo_repro" / "inspect.jsonl").exists()
    assert sorted(os.listdir(tmp_path / "plots")) == ["row00001.png", "row00002.png", "row00003.png"]


@pytest.mark.parametrize("cmd", [c for c, (k, _) in COMMANDS.items() if k == "CHECK"])
def test_readme_long_and_gpu_commands_validate(cmd):
    check(cmd)
