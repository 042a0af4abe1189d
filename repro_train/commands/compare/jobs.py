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
from ...trainer.preempt import REQUEUE_EXIT
from .config import CompareConfig, arm_overrides, base_path, eval_sets

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
    first_set: str = ""
    """The first held-out set's name ("" = the one set, whose files are in eval/ itself)."""
    time_limit_s: float = 0.0
    """train.time_limit_s of the training run (a checkpoint at the end of the step that passes it), whose checkpoint
    is then evaluated; 0 = none."""

    @property
    def summary(self) -> str:
        return os.path.join(self.folder, "eval", self.first_set, "summary.json")


def eval_command(cfg: CompareConfig, label: str, model: str, out: str, think_end: str = "</think>") -> list[str]:
    e = cfg.eval
    sets = eval_sets(cfg)
    data = [a for name, src in sets.items() for a in ("--data", f"{name}={src}" if name else src)]
    engine = ["--engine", e.engine, "--dtype", e.dtype]
    if e.engine == "vllm":
        engine += ["--vllm-memory", str(e.vllm_memory)]
        engine += ["--vllm-kv-gb", str(e.vllm_kv_cache_gb)] if e.vllm_kv_cache_gb is not None else []
        engine += [] if e.vllm_cuda_graphs else ["--vllm-eager"]
    return [
        sys.executable,
        "-m",
        "repro_train",
        "eval",
        "--model",
        f"{label}={model}",
        *data,
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
        *engine,
        "--out",
        out,
    ]


def make_jobs(cfg: CompareConfig, out: str, time_limit_s: float = 0.0) -> list[Job]:
    """Every (arm, seed) job, and the base model's evaluation when asked for. A trained policy is evaluated from its
    run folder: `repro-train eval` takes its latest checkpoint (the last step's, or the one a time limit wrote)."""
    jobs, first = [], next(iter(eval_sets(cfg)))
    if cfg.eval.base_model:
        base = load(base_path(cfg), list(cfg.overrides)).model
        folder = os.path.join(out, "base")
        evaluate = eval_command(cfg, "base", base.path, os.path.join(folder, "eval"), base.think_end)
        jobs.append(Job("base", "base", None, folder, [evaluate], first))
    for arm in cfg.arms:
        recipe = load(base_path(cfg), arm_overrides(cfg, arm))
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
                *([f"train.time_limit_s={time_limit_s:g}"] if time_limit_s > 0 else []),
            ]
            evaluate = eval_command(cfg, label, run_dir, os.path.join(folder, "eval"), recipe.model.think_end)
            jobs.append(Job(label, arm.name, seed, folder, [train, evaluate], first, time_limit_s))
    return jobs


def job_script(job: Job) -> str:
    """One shell line: the job's commands in order, each logged, stopping at the first failure; a training run that
    stopped at its time limit (exit 75, a checkpoint written) goes on to its evaluation."""
    logs = ["train.log", "eval.log"] if len(job.commands) == 2 else ["eval.log"]
    lines = [
        f"{shlex.join(c)} > {shlex.quote(os.path.join(job.folder, log))} 2>&1" for c, log in zip(job.commands, logs)
    ]
    if len(lines) == 2 and job.time_limit_s > 0:
        lines[0] = f"{{ {lines[0]}; rc=$?; [ $rc -eq 0 ] || [ $rc -eq {REQUEUE_EXIT} ]; }}"
    return " && ".join(lines)


def run_jobs(jobs: list[Job], parallel: int, log=print, stagger_s: float = 0.0) -> dict[str, int]:
    """Run the jobs, `parallel` at a time (one CPU thread each), starts `stagger_s` apart; returns {label: exit code}.
    One line per start and end."""
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

    codes = run_all(
        [job_script(j) for j in jobs], parallel, env=env, stagger_s=stagger_s, on_start=started, on_end=ended
    )
    return {j.label: c for j, c in zip(jobs, codes)}
