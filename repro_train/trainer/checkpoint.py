"""Checkpoints: Hugging Face folders for users, trainer state for exact resume.

    <output_dir>/checkpoint-000040/
        policy/             your model in its own dtype + tokenizer (from_pretrained, or `repro-train export`)
        critic/             the value model (PPO)
        state/              accelerate.save_state for an exact resume (the newest train.keep_optimizer_state_last)
        trainer_state.json  config.yaml  manifest.json (written last, trainer/manifest.py)

Written into `checkpoint-N.tmp` and renamed when complete; a write that fails raises WriteFailed; only the last
`keep_last` are kept. What each file holds, verification and write failures: docs/reliability.md, sections 4,
13 and 14.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

import torch

from ..config import check_resume_folder
from ..core.typed_config import ConfigError, dump_yaml
from ..models.loading import model_folder, save_pretrained
from .manifest import drop_from_manifest, listed, newest_valid, verify, write_manifest

PATTERN = re.compile(r"^checkpoint-(\d+)$")
NOT_RESUMABLE = "it holds only the policy (its trainer state was removed: train.keep_optimizer_state_last)"


class WriteFailed(RuntimeError):
    """A checkpoint, metrics or samples file could not be written; the message names the path and why."""


def list_checkpoints(out_dir: str) -> list[str]:
    """Complete checkpoint folders of out_dir, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    found = [
        (int(m.group(1)), name)
        for name in os.listdir(out_dir)
        if (m := PATTERN.match(name)) and os.path.isdir(os.path.join(out_dir, name))
    ]
    return [os.path.join(out_dir, name) for _, name in sorted(found)]


def step_of(path: str) -> int:
    return int(PATTERN.match(os.path.basename(os.path.normpath(path))).group(1))


def resumable(path: str) -> bool:
    """The checkpoint keeps the trainer state a resume loads (state/ in its manifest)."""
    return any(rel.startswith("state/") for rel in listed(path))


def _problem(path: str) -> str | None:
    """Why a checkpoint cannot be resumed from (None: it can)."""
    problem = verify(path)
    if problem is None and not resumable(path):
        problem = NOT_RESUMABLE
    return problem


def resolve_resume(resume: str | None, out_dir: str, dist=None) -> str | None:
    """The checkpoint folder to resume from: 'auto' = the latest in out_dir that verifies against its
    manifest and keeps its trainer state (None if there is none); the main rank checks and tells the others."""
    if dist is not None and dist.world > 1:
        return dist.gather_objects(resolve_resume(resume, out_dir) if dist.is_main else None)[0]
    if resume is None:
        return None
    if resume == "auto":
        found, skipped = newest_valid(list_checkpoints(out_dir), _problem)
        for path, problem in skipped:
            print(
                f"repro-train: checkpoint {path} cannot be used: {problem}; trying the one before",
                file=sys.stderr,
                flush=True,
            )
        if skipped and found is None:
            raise ConfigError(
                f"train.resume = auto: no checkpoint in {out_dir} can be resumed ({skipped[-1][0]}: "
                f"{skipped[-1][1]}); remove the broken ones to start fresh"
            )
        return found
    check_resume_folder(resume)  # (config.validate checked it at start-up; the folder may have changed since)
    problem = _problem(resume)
    if problem is not None:
        raise ConfigError(f"train.resume = {resume!r} cannot be used: {problem}")
    return resume


def resume_hint(out_dir: str) -> str:
    """Where a stopped run continues from: the newest complete checkpoint, or none yet."""
    found = list_checkpoints(out_dir)
    if not found:
        return "no checkpoint was written yet (train.resume=auto starts the run again at step 1)"
    return f"the last checkpoint is {found[-1]} (step {step_of(found[-1])}); train.resume=auto continues from it"


# ----------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------


def save_checkpoint(rt, step: int, wandb_id: str | None = None) -> str:
    """Write checkpoint-<step> (every rank must call this); WriteFailed when any rank's write fails."""
    d = rt.dist
    final = os.path.join(rt.out_dir, f"checkpoint-{step:06d}")
    tmp = final + ".tmp"
    _agree(rt, step, tmp, _attempt(_prepare_tmp, tmp) if d.is_main else None)
    _agree(rt, step, tmp, _attempt(rt.acc.save_state, os.path.join(tmp, "state"), safe_serialization=False))
    full = rt.acc.get_state_dict(rt.model)  # gathered on the main rank under ZeRO-3 / FSDP2
    _agree(rt, step, tmp, _attempt(_write_models, rt, tmp, full, step, wandb_id) if d.is_main else None)
    _agree(rt, step, tmp, _attempt(_complete, tmp, final) if d.is_main else None)
    if d.is_main:
        prune(rt.out_dir, step, rt.cfg.train.keep_last, rt.cfg.train.keep_optimizer_state_last)
    d.barrier()
    return final


def _attempt(fn, *args, **kwargs) -> str | None:
    """None when fn(*args) succeeds, else why it failed, with the path when the error names one."""
    try:
        fn(*args, **kwargs)
        return None
    except Exception as e:  # noqa: BLE001 - every write failure becomes one message (OSError, torch's RuntimeError)
        if isinstance(e, OSError) and e.filename:
            return f"{e.filename}: {e.strerror or e}"
        return f"{type(e).__name__}: {e}"


def _agree(rt, step: int, tmp: str, err: str | None) -> None:
    """Every rank learns whether any rank's write failed; then all raise WriteFailed (one all-reduce)."""
    d = rt.dist
    failed = d.max_int(int(err is not None)) if d.world > 1 else int(err is not None)
    if not failed:
        return
    where = _last_written(tmp) if err is not None else ""
    if d.is_main and os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)  # our own half-written folder; never a file that was in the way
    raise WriteFailed(
        f"could not write checkpoint {step} into {tmp}: {err or 'it failed on another rank'}{where}. The run "
        f"stopped; {resume_hint(rt.out_dir)}. Free space or remove what is in the way, then resume"
    )


def _last_written(tmp: str) -> str:
    """' (last file written: state/x.bin, 4 kB; 12.0 GB free on that disk)': what a failed save was doing."""
    files = [os.path.join(r, n) for r, _, names in os.walk(tmp) for n in names] if os.path.isdir(tmp) else []
    parts = []
    if files:
        last = max(files, key=os.path.getmtime)
        parts.append(f"last file written: {os.path.relpath(last, tmp)}, {os.path.getsize(last) / 1e3:.0f} kB")
    try:
        parts.append(f"{shutil.disk_usage(os.path.dirname(tmp) or '.').free / 1e9:.1f} GB free on that disk")
    except OSError:
        pass
    return f" ({'; '.join(parts)})" if parts else ""


def _prepare_tmp(tmp: str) -> None:
    """An empty checkpoint-N.tmp/state; a leftover folder of a killed run is removed, anything else refused."""
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp)
    elif os.path.lexists(tmp):
        raise FileExistsError(17, "a file that is not a checkpoint folder is in the way", tmp)
    os.makedirs(os.path.join(tmp, "state"))  # before any rank writes its shard into it


def saved_dtype(cfg_model) -> torch.dtype | None:
    """The dtype the model came in (its config.json's dtype / torch_dtype); None when it does not say."""
    path = os.path.join(model_folder(cfg_model.path), "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        conf = json.load(fh)
    name = conf.get("dtype") or conf.get("torch_dtype")
    return getattr(torch, name, None) if isinstance(name, str) else None


def _write_models(rt, tmp: str, full: dict, step: int, wandb_id: str | None) -> None:
    """policy/ and critic/ in the model's own dtype, trainer_state.json and config.yaml (main rank)."""
    unwrapped = rt.acc.unwrap_model(rt.model)
    dtype = saved_dtype(rt.cfg.model)
    for name, module, tok in (("policy", unwrapped.policy, rt.tokenizer), ("critic", unwrapped.critic, None)):
        if module is None:
            continue
        sub = {k[len(name) + 1 :]: v for k, v in full.items() if k.startswith(name + ".")}
        if dtype is not None:
            sub = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sub.items()}
        save_pretrained(module, sub, os.path.join(tmp, name), tok)
        if dtype is not None:
            set_config_dtype(os.path.join(tmp, name), dtype)
    state = {
        "step": step,
        "optimizer_steps": rt.optimizer_steps,
        "wandb_id": wandb_id,
        "sampler": rt.sampler.state_dict(),
    }
    with open(os.path.join(tmp, "trainer_state.json"), "w") as fh:
        json.dump(state, fh, indent=1)
    with open(os.path.join(tmp, "config.yaml"), "w") as fh:
        fh.write(dump_yaml(rt.cfg))


def set_config_dtype(folder: str, dtype: torch.dtype) -> None:
    """config.json says the dtype its weights are stored in (save_pretrained writes the live model's)."""
    path = os.path.join(folder, "config.json")
    with open(path) as fh:
        conf = json.load(fh)
    conf["dtype"] = str(dtype).removeprefix("torch.")
    conf.pop("torch_dtype", None)
    with open(path, "w") as fh:
        json.dump(conf, fh, indent=2, sort_keys=True)


def _complete(tmp: str, final: str) -> None:
    """Manifest last, then the rename that makes the checkpoint visible."""
    write_manifest(tmp)  # last: a checkpoint without one is incomplete
    if os.path.lexists(final) and not os.path.isdir(final):
        raise FileExistsError(17, "a file that is not a checkpoint folder is in the way", final)
    shutil.rmtree(final, ignore_errors=True)  # the same step of an abandoned attempt
    os.replace(tmp, final)


def prune(out_dir: str, step: int, keep_last: int, keep_state: int) -> None:
    """Keep the newest `keep_last` checkpoints up to `step` (the newest `keep_state` with their trainer state);
    a failure here is reported, not fatal: the new checkpoint is complete."""
    mine = [p for p in list_checkpoints(out_dir) if step_of(p) <= step]
    kept = mine[-max(keep_last, 1) :]
    try:
        for old in mine[: -max(keep_last, 1)]:
            shutil.rmtree(old)
        for old in kept[: -max(keep_state, 1)]:
            strip_state(old)
    except OSError as e:
        print(f"repro-train: could not remove an old checkpoint's files ({e}); they stay", file=sys.stderr, flush=True)


def strip_state(path: str) -> None:
    """Remove state/ from a checkpoint: the manifest first (so a crash in between leaves a valid one)."""
    if os.path.isdir(os.path.join(path, "state")):
        drop_from_manifest(path, "state/")
        shutil.rmtree(os.path.join(path, "state"))


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def load_checkpoint(rt, path: str) -> dict:
    """Restore weights, optimizer, scheduler, RNG and data position; returns trainer_state. The recipe's
    optimizer settings then replace the checkpoint's (they differ only under train.resume_changes=allow)."""
    rt.acc.load_state(os.path.join(path, "state"))
    with open(os.path.join(path, "trainer_state.json")) as fh:
        state = json.load(fh)
    rt.start_step = state["step"]
    rt.optimizer_steps = state["optimizer_steps"]
    apply_optimizer_settings(rt)
    return state


def apply_optimizer_settings(rt) -> None:
    """The recipe's learning rates, betas, eps and weight decay into the restored optimizer and scheduler (the
    checkpoint's came back with load_state); a no-op when they are the same."""
    o, sched = rt.cfg.optim, rt.scheduler
    lrs = [o.lr] + ([rt.cfg.critic.lr] if rt.has_critic else [])
    for i, (group, lr) in enumerate(zip(rt.optimizer.param_groups, lrs)):
        for key, want in (("betas", tuple(o.betas)), ("eps", o.eps), ("weight_decay", o.weight_decay)):
            if key in group and group[key] != want:
                group[key] = want
        if sched.base_lrs[i] != lr:
            sched.base_lrs[i] = group["initial_lr"] = lr
            group["lr"] = lr * sched.lr_lambdas[i](sched.last_epoch)  # LambdaLR: base lr x the schedule's factor
    sched._last_lr = [g["lr"] for g in rt.optimizer.param_groups]  # what get_last_lr() reports (logged as train/lr)
