"""Check every distributed strategy on GPUs against one process: DDP, ZeRO-2, ZeRO-3, FSDP2.

    python3 bench/check_strategies.py --out DIR [--strategies ddp,zero2,zero3,fsdp2] [--nproc 2]

A random tiny Llama (float32) trains 2 steps of GRPO + RePro, and 1 of PPO + RePro (critic) under
ZeRO-3, through the shipped `launch/accelerate/*.yaml` configs. Rollouts are seeded per prompt, so
every run starts from the same batch. The check: the weights after the first update match a
single-process run: max abs diff below 1e-4, or (Adam's first step is +-lr per weight, see
`step1_diff`) an update that differs by less than 1% of its size. The CPU test suite covers DDP,
ZeRO-2 and ZeRO-3 with gloo; this covers NCCL, GPU generation under each wrapper, and FSDP2, which
accelerate runs only on GPUs.
Prints a table last.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

REWARD = """
def digit_frac(prompts, completions, answers, **columns):
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in completions]
"""


def recipe(out: str, estimator: str) -> str:
    with open(os.path.join(out, "digit_reward.py"), "w") as fh:
        fh.write(REWARD)
    r = {
        "model": {"path": os.path.join(out, "model")},
        "data": {"source": "toy", "toy_size": 64},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 16, "per_prompt_seed": True},
        "reward": {"functions": [{"name": os.path.join(out, "digit_reward.py") + ":digit_frac"}], "num_workers": 1},
        "algo": {"estimator": estimator, "micro_batch_size": 2},
        "repro": {"probe_prefix": "\n\nFinal answer: "},
        "optim": {"lr": 1.0e-3},
        "train": {"steps": 2, "save_every": 1, "keep_last": 3, "device": "auto"},
        "log": {"wandb": False, "progress": False},
    }
    path = os.path.join(out, f"recipe-{estimator}.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(r, fh)
    return path


def run(cmd: list[str], env: dict, log: str) -> tuple[int, float, str]:
    t0 = time.time()
    with open(log, "w") as fh:
        p = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    text = open(log).read()
    line = next((ln for ln in text.splitlines() if ln.startswith("repro-train:")), "")
    return p.returncode, time.time() - t0, line


def step1_diff(a: str, b: str, init: str) -> tuple[float, float] | None:
    """(max |w_a - w_b|, ||u_a - u_b|| / ||u_b||) after the first update, u = w - w_init.

    The relative update difference is the robust measure: Adam's first step moves each weight by
    about +-lr, so a gradient near zero whose sign differs in the last bits moves a weight by 2 lr
    in one run and not the other (max abs diff = 2 lr) while the update as a whole agrees."""
    from safetensors.torch import load_file

    pa, pb = (os.path.join(d, "checkpoint-000001", "policy", "model.safetensors") for d in (a, b))
    if not (os.path.exists(pa) and os.path.exists(pb)):
        return None
    x, y, w0 = load_file(pa), load_file(pb), load_file(os.path.join(init, "model.safetensors"))
    mx = max((x[k].float() - y[k].float()).abs().max().item() for k in x)
    num = sum(((x[k].float() - y[k].float()) ** 2).sum() for k in x).sqrt()
    den = sum(((y[k].float() - w0[k].float()) ** 2).sum() for k in y).sqrt()
    return mx, (num / den).item() if den > 0 else float("nan")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--strategies", default="ddp,zero2,zero3,fsdp2")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--estimators", default="grpo,gae")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    from repro_train.testing import build_tiny_model

    build_tiny_model(os.path.join(a.out, "model"), layers=2, hidden=64)
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    rows = []
    for est in a.estimators.split(","):
        rec = recipe(a.out, est)
        single = os.path.join(a.out, f"single-{est}")
        rc, s, line = run(
            [sys.executable, "-m", "repro_train", "train", "--config", rec, f"train.output_dir={single}"],
            dict(env, CUDA_VISIBLE_DEVICES="0"),
            single + ".log",
        )
        rows.append((f"1 process ({est})", rc, s, line, (0.0, 0.0) if rc == 0 else None))
        for strat in a.strategies.split(","):
            if est == "gae" and strat != "zero3":
                continue  # the critic path is checked under the most intrusive wrapper only
            out = os.path.join(a.out, f"{strat}-{est}")
            rc, s, line = run(
                launcher
                + [
                    "--config_file",
                    os.path.join(REPO, "launch/accelerate", f"{strat}.yaml"),
                    "--num_processes",
                    str(a.nproc),
                    "-m",
                    "repro_train",
                    "train",
                    "--config",
                    rec,
                    f"train.output_dir={out}",
                ],
                env,
                out + ".log",
            )
            rows.append(
                (
                    f"{strat} x{a.nproc} ({est})",
                    rc,
                    s,
                    line,
                    step1_diff(out, single, os.path.join(a.out, "model")) if rc == 0 else None,
                )
            )
    print(
        "\n| run | rc | s | set up | step-1 weights: max abs diff vs 1 process | update: relative diff |\n"
        "|---|---|---|---|---|---|"
    )
    ok = True
    for name, rc, s, line, d in rows:
        ok &= rc == 0 and d is not None and (d[0] < 1e-4 or d[1] < 1e-2)
        print(
            f"| {name} | {rc} | {s:.0f} | {line.split(':', 1)[-1].split(';')[0].strip()} | "
            f"{'-' if d is None else f'{d[0]:.1e}'} | {'-' if d is None else f'{d[1]:.1e}'} |"
        )
    print("all match (max abs < 1e-4 or relative update diff < 1e-2): " + ("PASS" if ok else "FAIL"))
    keys = [
        "reward/mean",
        "adv/abs_mean",
        "values/mean",
        "repro/J_b",
        "train/pg_loss",
        "train/value_loss",
        "train/grad_norm",
    ]
    print("\nstep-1 metrics | " + " | ".join(keys))
    for name in sorted(os.listdir(a.out)):
        f = os.path.join(a.out, name, "metrics.jsonl")
        if os.path.isdir(os.path.join(a.out, name)) and os.path.exists(f):
            import json

            first = json.loads(open(f).readline())
            print(f"{name} | " + " | ".join(f"{first[k]:.6g}" if k in first else "-" for k in keys))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
