"""Checkpoints: Hugging Face folders for users, trainer state for exact resume.

    <output_dir>/checkpoint-000040/
        policy/             save_pretrained weights + tokenizer (load with from_pretrained)
        critic/             the value model (PPO)
        state/              accelerate.save_state: weights, optimizer, scheduler, RNG of every rank,
                            data order position (sharded per rank under DeepSpeed)
        trainer_state.json  step, optimizer steps, wandb run id
        config.yaml         the resolved recipe
        manifest.json       every file's size and CRC-32, written last (trainer/manifest.py)

A checkpoint is written into `checkpoint-N.tmp` and renamed when complete, so a crash never leaves
a half-written checkpoint that `resume: auto` would pick up; a checkpoint that does not match its
manifest (truncated, corrupt) is reported and the previous one used. Only the last `keep_last` are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

from ..core.typed_config import ConfigError, dump_yaml
from ..models.loading import save_pretrained
from .manifest import newest_valid, verify, write_manifest

PATTERN = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(out_dir: str) -> list[str]:
    if not os.path.isdir(out_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(out_dir) if (m := PATTERN.match(name))]
    return [os.path.join(out_dir, name) for _, name in sorted(found)]


def resolve_resume(resume: str | None, out_dir: str, dist=None) -> str | None:
    """The checkpoint folder to resume from: 'auto' = the latest in out_dir that verifies against its
    manifest (None if there is none); the main rank checks and tells the others."""
    if dist is not None and dist.world > 1:
        return dist.gather_objects(resolve_resume(resume, out_dir) if dist.is_main else None)[0]
    if resume is None:
        return None
    if resume == "auto":
        found, skipped = newest_valid(list_checkpoints(out_dir))
        for path, problem in skipped:
            print(
                f"repro-train: checkpoint {path} cannot be used: {problem}; trying the one before",
                file=sys.stderr,
                flush=True,
            )
        if skipped and found is None:
            raise ConfigError(
                f"train.resume = auto: no checkpoint in {out_dir} verifies ({skipped[-1][0]}: {skipped[-1][1]}); "
                "remove the broken ones to start fresh"
            )
        return found
    if not os.path.isfile(os.path.join(resume, "trainer_state.json")):
        raise FileNotFoundError(f"train.resume = {resume!r} is not a checkpoint folder (no trainer_state.json)")
    problem = verify(resume)
    if problem is not None:
        raise ConfigError(f"train.resume = {resume!r} cannot be used: {problem}")
    return resume


def save_checkpoint(rt, step: int, wandb_id: str | None = None) -> str:
    """Write checkpoint-<step> (every rank must call this)."""
    d = rt.dist
    final = os.path.join(rt.out_dir, f"checkpoint-{step:06d}")
    tmp = final + ".tmp"
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.join(tmp, "state"))  # before any rank writes its shard into it
    d.barrier()
    rt.acc.save_state(os.path.join(tmp, "state"), safe_serialization=False)
    full = rt.acc.get_state_dict(rt.model)  # gathered on the main rank under ZeRO-3 / FSDP2
    if d.is_main:
        unwrapped = rt.acc.unwrap_model(rt.model)
        for name, module, tok in (("policy", unwrapped.policy, rt.tokenizer), ("critic", unwrapped.critic, None)):
            if module is None:
                continue
            sub = {k[len(name) + 1 :]: v for k, v in full.items() if k.startswith(name + ".")}
            save_pretrained(module, sub, os.path.join(tmp, name), tok)
        with open(os.path.join(tmp, "trainer_state.json"), "w") as fh:
            json.dump(
                {
                    "step": step,
                    "optimizer_steps": rt.optimizer_steps,
                    "wandb_id": wandb_id,
                    "sampler": rt.sampler.state_dict(),
                },
                fh,
                indent=1,
            )
        with open(os.path.join(tmp, "config.yaml"), "w") as fh:
            fh.write(dump_yaml(rt.cfg))
    d.barrier()  # every rank's files are in tmp
    if d.is_main:
        write_manifest(tmp)  # last: a checkpoint without one is incomplete
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in list_checkpoints(rt.out_dir)[: -max(rt.cfg.train.keep_last, 1)]:
            shutil.rmtree(old, ignore_errors=True)
    d.barrier()
    return final


def load_checkpoint(rt, path: str) -> dict:
    """Restore weights, optimizer, scheduler, RNG and data position; returns trainer_state."""
    rt.acc.load_state(os.path.join(path, "state"))
    with open(os.path.join(path, "trainer_state.json")) as fh:
        state = json.load(fh)
    rt.start_step = state["step"]
    rt.optimizer_steps = state["optimizer_steps"]
    return state
