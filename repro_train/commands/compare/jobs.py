"""The comparison's jobs: each (arm, seed) is `repro-train train` then `repro-train eval` of its final policy, one
shell line with its logs; run `parallel` at a time by core/jobs.py."""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass

from ...config import load
from ...core.jobs import run_all
from .config import CompareConfig, arm_overrides, base_path

# ---------------------------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    label: str
    """'<arm>-s<seed>', or 'base'."""
    arm: str
    seed: int | None
    folder: str
    commands: list[list[str]]
    """Run in order (train, then eval)."""

    @property
    def summary(self) -> str:
        return os.path.join(self.folder, "eval", "summary.json")


def eval_command(cfg: CompareConfig, label: str, model: str, out: str, think_end: str = "</think>") -> list[str]:
    e = cfg.eval
    return [
        sys.executable,
        "-m",
        "repro_train",
        "eval",
        "--model",
        f"{label}={model}",
        "--data",
        e.data,
        "--n-problems",
        str(e.n_problems),
        "--toy-seed",
        str(e.toy_seed),
        "--samples",
        str(e.samples),
        "--temperature",
        str(e.temperature),
        "--max-new-tokens",
        str(e.max_new_tokens),
        "--reward",
        e.reward,
        "--seed",
        str(e.seed),
        "--k",
        "1",
        *(["--system-prompt", e.system_prompt] if e.system_prompt else []),
        "--think-end",
        think_end,
        "--out",
        out,
    ]


def make_jobs(cfg: CompareConfig, out: str) -> list[Job]:
    """Every (arm, seed) job, and the base model's evaluation when asked for."""
    jobs = []
    if cfg.eval.base_model:
        base = load(base_path(cfg), list(cfg.overrides)).model
        folder = os.path.join(out, "base")
        evaluate = eval_command(cfg, "base", base.path, os.path.join(folder, "eval"), base.think_end)
        jobs.append(Job("base", "base", None, folder, [evaluate]))
    for arm in cfg.arms:
        recipe = load(base_path(cfg), arm_overrides(cfg, arm))
        steps = recipe.train.steps
        for seed in cfg.seeds:
            label = f"{arm.name}-s{seed}"
            folder = os.path.join(out, label)
            run_dir = os.path.join(folder, "run")
            train = [
                sys.executable,
                "-m",
                "repro_train",
                "train",
                "--config",
                base_path(cfg),
                *arm_overrides(cfg, arm),
                f"train.seed={seed}",
                f"train.output_dir={run_dir}",
                "train.save_every=0",
                "train.resume=null",
                "train.overwrite=true",  # an interrupted job starts its arm again, replacing its partial run
                "log.wandb=false",
                "log.progress=false",
            ]
            policy = os.path.join(run_dir, f"checkpoint-{steps:06d}", "policy")
            jobs.append(
                Job(
                    label,
                    arm.name,
                    seed,
                    folder,
                    [train, eval_command(cfg, label, policy, os.path.join(folder, "eval"), recipe.model.think_end)],
                )
            )
    return jobs


def job_script(job: Job) -> str:
    """One shell line: the job's commands in order, each logged, stopping at the first failure."""
    logs = ["train.log", "eval.log"] if len(job.commands) == 2 else ["eval.log"]
    return " && ".join(
        f"{shlex.join(c)} > {shlex.quote(os.path.join(job.folder, log))} 2>&1" for c, log in zip(job.commands, logs)
    )


def run_jobs(jobs: list[Job], parallel: int, log=print) -> dict[str, int]:
    """Run the jobs, `parallel` at a time (one CPU thread each); returns {label: exit code}. One line per start and
    end."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    for job in jobs:
        os.makedirs(job.folder, exist_ok=True)
    t0, n, done = time.time(), len(jobs), []

    def started(i: int) -> None:
        log(f"[compare] start {jobs[i].label} ({i + 1}/{n} started)", flush=True)

    def ended(i: int, code: int, seconds: float) -> None:
        done.append(i)
        job = jobs[i]
        how = "done" if code == 0 else f"FAILED (exit {code}; see {job.folder}/*.log)"
        log(
            f"[compare] {how}: {job.label} in {seconds:.0f} s; {len(done)}/{n} finished, "
            f"{time.time() - t0:.0f} s elapsed",
            flush=True,
        )

    codes = run_all([job_script(j) for j in jobs], parallel, env=env, on_start=started, on_end=ended)
    return {j.label: c for j, c in zip(jobs, codes)}
