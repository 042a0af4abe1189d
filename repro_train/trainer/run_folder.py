"""The run folder: one run at a time, a new run never mixed into another's files, a resume that says what
it continues and refuses what it would silently change.

    folder = open_run_folder(cfg)   # main rank, before any model loads: the lock, then the decisions
    rt = build_runtime(cfg)
    state = folder.load(rt)         # every rank: the agreed checkpoint restored; main: the folder prepared
    ...
    folder.close()                  # the lock released

Every decision (train.resume null / auto / DIR, train.overwrite, train.resume_changes) is taken before anything
in the folder is written or removed, and only the entries `run_files` lists are ever deleted. The lock, the
decisions and the logs cut back on resume: docs/reliability.md, sections 9 and 10.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field

import yaml

from ..algos.advantages import estimator_facts
from ..core.redact import REDACTED
from ..core.typed_config import ConfigError, dump_yaml
from ..models.loading import model_folder
from .checkpoint import PATTERN, WriteFailed, list_checkpoints, load_checkpoint, resolve_resume, step_of
from .inputs import tensor_shapes
from .manifest import verify
from .preempt import MARKER, clear_marker

LOCK = "run.lock"
RESUMES = "resumes.jsonl"
LOGS = ("metrics.jsonl", "samples.jsonl")
RUN_FILES = ("config.yaml", *LOGS, RESUMES, MARKER, "wandb")
"""What a run writes into its folder besides its checkpoint-N folders (and their .tmp while writing)."""

# ----------------------------------------------------------------------------------------------
# the run's own files
# ----------------------------------------------------------------------------------------------


def run_files(folder: str) -> list[str]:
    """Names in `folder` that a run wrote: checkpoint-N (and .tmp) folders and RUN_FILES (the lock not counted)."""
    if not os.path.isdir(folder):
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        is_ckpt = PATTERN.match(name.removesuffix(".tmp")) and os.path.isdir(path) and not os.path.islink(path)
        if is_ckpt or name in RUN_FILES:
            out.append(name)
    return out


def holds_run(folder: str) -> bool:
    """The folder holds a run that trained: a checkpoint (or one being written), or a logged step. An attempt that
    stopped before its first step (config.yaml, empty logs) does not count: a new run may start there."""
    for name in run_files(folder):
        path = os.path.join(folder, name)
        if name.startswith("checkpoint-") or (name in LOGS and os.path.getsize(path) > 0):
            return True
    return False


def remove_run_files(folder: str, also: tuple[str, ...] = ()) -> list[str]:
    """Delete the run's own files in `folder` (run_files, plus the caller's own names in `also`) and nothing
    else; a symlink is removed, never followed. Returns the names removed."""
    names = run_files(folder) + [n for n in also if os.path.lexists(os.path.join(folder, n))]
    for name in names:
        path = os.path.join(folder, name)
        _remove(path)
    return names


def _remove(path: str) -> None:
    """A folder with its contents, or a file or symlink (never what a symlink points to)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


# ----------------------------------------------------------------------------------------------
# the lock
# ----------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields from field 3 (state) on; None without /proc or the process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _me() -> dict:
    stat = _proc_stat(os.getpid())
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": stat[19] if stat else None,  # field 22, starttime: tells a reused pid apart
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join(sys.argv),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def _alive(pid: int, start: str | None) -> bool:
    """The process `pid` (this host) still runs, and is the one that started at `start`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True
    return stat[0] != "Z" and (start is None or stat[19] == start)  # a zombie has ended


def stale_reason(holder: dict | None, me: dict) -> str | None:
    """Why a lock's holder cannot be running (the lock is stale), or None when it may be."""
    if holder is None:
        return "an unreadable lock file"
    if holder.get("host") == me["host"]:
        if _alive(int(holder["pid"]), holder.get("start")):
            return None
        return f"pid {holder['pid']}, started {holder.get('started')}, is no longer running"
    job = holder.get("slurm_job_id")
    if job and job == me["slurm_job_id"]:
        return f"written by an earlier attempt of Slurm job {job} on {holder['host']} (this is its requeued attempt)"
    return None


def _busy(folder: str, holder: dict, me: dict) -> str:
    who = f"pid {holder['pid']}, started {holder.get('started')} ({holder.get('command')})"
    if holder.get("host") == me["host"]:
        return (
            f"train.output_dir = {folder} is in use by another run: {who}. Wait for it to end, stop it, or choose "
            "another train.output_dir"
        )
    return (
        f"train.output_dir = {folder} is locked by a run on host {holder.get('host')}: {who}. This host "
        f"({me['host']}) cannot tell whether it still runs. If it does, choose another train.output_dir; if it does "
        f"not (its node failed), delete {os.path.join(folder, LOCK)} and start again"
    )


def _read(path: str) -> dict | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) and "pid" in data else None
    except (OSError, ValueError):
        return None


@dataclass
class RunLock:
    path: str
    me: dict

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        held = _read(self.path)
        if held is not None and held.get("pid") == self.me["pid"] and held.get("start") == self.me["start"]:
            os.remove(self.path)


def acquire_lock(folder: str) -> RunLock:
    """Create <folder>/run.lock for this process; a live holder raises ConfigError, a stale one is taken over."""
    os.makedirs(folder, exist_ok=True)
    path, me = os.path.join(folder, LOCK), _me()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None and time.time() - _mtime(path) < 5:
                time.sleep(0.5)  # being written by a run starting this very moment: read it again
                continue
            why = stale_reason(holder, me)
            if why is None:
                raise ConfigError(_busy(folder, holder, me)) from None
            if _take_over(path, holder):
                print(f"repro-train: removed a stale lock {path}: {why}", file=sys.stderr, flush=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return RunLock(path, me)
    holder = _read(path)
    raise ConfigError(_busy(folder, holder, me) if holder else f"could not take the lock {path}; try again")


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def _take_over(path: str, holder: dict | None) -> bool:
    """Remove a stale lock unless another starter replaced it meanwhile (renamed aside, compared, put back)."""
    aside = f"{path}.stale-{os.getpid()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # another starter took it first
    if _read(aside) != holder:  # a fresh lock of someone else: put it back where it was
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    os.remove(aside)
    return True


# ----------------------------------------------------------------------------------------------
# what a resume may change
# ----------------------------------------------------------------------------------------------

FREE_KEYS = (
    "train.steps",
    "train.resume",
    "train.resume_changes",
    "train.overwrite",
    "train.save_every",
    "train.keep_last",
    "train.keep_optimizer_state_last",
    "train.max_bad_steps",
    "train.output_dir",
    "train.device",
    "train.deterministic",
    "log.",
    "dist.collective_timeout_s",
    "reward.num_workers",
    "reward.timeout_s",
    "reward.on_error",
    "rollout.generation_batch_size",
    "rollout.vllm.gpu_memory_utilization",
    "rollout.vllm.sleep_level",
    "rollout.vllm.cuda_graphs",
    "rollout.vllm.max_num_seqs",
    "rollout.vllm.max_num_batched_tokens",
    "model.gradient_checkpointing",
    "model.attn_implementation",
    "model.fused_ops",
)
"""Settings a resume may change freely: run length and bookkeeping, logging, fault policies, memory and speed
knobs that compute the same thing. train.steps only under a constant learning rate (a linear or cosine schedule
runs over train.steps). Every other key changes what is trained."""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(a, b) -> bool:
    """Equal, where a redacted secret (on either side, at any depth) matches any value."""
    if REDACTED in (a, b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def changed_settings(saved: dict, now: dict) -> dict[str, tuple]:
    """{key: (saved value, value now)} of the settings that change what is trained (both configs as config.yaml
    holds them; keys only one of them has, and redacted secrets, are not compared)."""
    a, b = _flat(saved), _flat(now)
    constant_lr = a.get("optim.scheduler") == b.get("optim.scheduler") == "constant"
    out = {}
    for k in sorted(a.keys() & b.keys()):
        free = any(k == f or (f.endswith(".") and k.startswith(f)) for f in FREE_KEYS)
        if k == "train.steps":
            free = constant_lr
        if not free and not _same(a[k], b[k]):
            out[k] = (a[k], b[k])
    return out


def _short(v) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(changes: dict[str, tuple]) -> str:
    lines = [f"  {k}: {_short(a)} -> {_short(b)}" for k, (a, b) in changes.items()]
    if "train.steps" in changes:
        lines.append("  (the learning-rate schedule, optim.scheduler, runs over train.steps)")
    return "\n".join(lines)


def shape_differences(ckpt: dict, model: dict) -> list[str]:
    """The tensors whose shapes differ, or that only one side has (a tied lm_head aside)."""
    out = [
        f"{k} {list(ckpt[k])} vs {list(model[k])}" for k in sorted(ckpt.keys() & model.keys()) if ckpt[k] != model[k]
    ]
    for name, only in (("the checkpoint", ckpt.keys() - model.keys()), ("model.path", model.keys() - ckpt.keys())):
        out += [f"{k} only in {name}" for k in sorted(only - {"lm_head.weight"})]
    return out


def incompatible(cfg, ckpt: str) -> str | None:
    """Why `ckpt` cannot be continued with `cfg` at all (critic layout, weight shapes), or None."""
    had = os.path.isdir(os.path.join(ckpt, "critic"))
    needs = estimator_facts(cfg.algo.estimator).needs_critic
    if had != needs:
        return (
            f"it was trained {'with' if had else 'without'} a critic, and algo.estimator = {cfg.algo.estimator} "
            f"{'needs one' if needs else 'has none'}"
        )
    folder = model_folder(cfg.model.path)
    if os.path.isdir(folder) and os.path.isdir(os.path.join(ckpt, "policy")):
        diff = shape_differences(tensor_shapes(os.path.join(ckpt, "policy")), tensor_shapes(folder))
        if diff:
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            return f"its policy has other weights than model.path = {cfg.model.path}: {'; '.join(diff[:3])}{more}"
    return None


def saved_config(ckpt: str) -> dict | None:
    path = os.path.join(ckpt, "config.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return yaml.safe_load(fh)


# ----------------------------------------------------------------------------------------------
# the folder of one run
# ----------------------------------------------------------------------------------------------


@dataclass
class RunFolder:
    path: str
    lock: RunLock | None = None
    """Held by the main rank from open_run_folder to close."""
    resume: str | None = None
    """The checkpoint to continue from (main rank; the others learn it in `load`)."""
    changes: dict[str, tuple] = field(default_factory=dict)
    """Changed settings applied by the resume (train.resume_changes=allow)."""
    remove: list[str] = field(default_factory=list)
    """Files and folders a new run or a resume replaces (train.overwrite), removed in `load`."""

    def load(self, rt) -> dict:
        """Every rank: restore the agreed checkpoint (its trainer_state, {} for a new run). Main rank: then
        prepare the folder (removals, logs cut back, config.yaml, the resume printed and recorded)."""
        d = rt.dist
        resume = d.gather_objects(self.resume if d.is_main else None)[0] if d.world > 1 else self.resume
        state = load_checkpoint(rt, resume) if resume else {}
        if d.is_main:
            try:
                self._begin(rt, state)
            except OSError as e:
                raise WriteFailed(f"could not prepare the run folder {self.path}: {e}") from None
        return state

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _begin(self, rt, state: dict) -> None:
        cfg, step = rt.cfg, state.get("step", 0)
        if self.remove:
            for name in self.remove:
                _remove(os.path.join(self.path, name))
            print(f"repro-train: train.overwrite: removed {', '.join(self.remove)} from {self.path}", flush=True)
        if cfg.train.resume is not None:
            cut_logs(self.path, step)
        _write_atomic(os.path.join(self.path, "config.yaml"), dump_yaml(cfg))
        if self.resume:
            self._announce(rt, state)
        clear_marker(self.path)

    def _announce(self, rt, state: dict) -> None:
        """Print and record what the resume continues (and the settings it changes)."""
        step, wandb_id = state["step"], state.get("wandb_id")
        print(
            f"repro-train: resuming run {self.path} from {self.resume}: step {step} done, training steps "
            f"{step + 1}-{rt.cfg.train.steps}" + (f" (wandb run {wandb_id})" if wandb_id else ""),
            flush=True,
        )
        if self.changes:
            print(
                f"repro-train: train.resume_changes=allow: from step {step + 1} on, changed settings apply:\n"
                + describe(self.changes),
                flush=True,
            )
        entry = {
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "checkpoint": self.resume,
            "step": step,
            "changes": {k: [a, b] for k, (a, b) in self.changes.items()},
        }
        with open(os.path.join(self.path, RESUMES), "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def _write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def cut_logs(folder: str, step: int) -> None:
    """Keep only the lines of metrics.jsonl and samples.jsonl up to `step` (the resume point); lines of later steps,
    logged by an attempt that ended before its next checkpoint, and unreadable ones (cut off mid-write) go."""
    for name in LOGS:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        kept = dropped = 0
        with open(path) as src, open(path + ".tmp", "w") as dst:
            for line in src:
                try:
                    keep = json.loads(line)["step"] <= step
                except (ValueError, KeyError, TypeError):
                    keep = False
                if keep:
                    dst.write(line)
                kept, dropped = kept + keep, dropped + (not keep)
        os.replace(path + ".tmp", path)
        if dropped:
            print(
                f"repro-train: {name}: removed {dropped} line(s) logged after step {step} (those steps run again)",
                flush=True,
            )


def open_run_folder(cfg) -> RunFolder:
    """The main rank (RANK 0) takes the folder's lock and decides what the run may do there (module docstring);
    raises ConfigError, with the folder untouched, when it may not. Other ranks get an empty RunFolder."""
    folder = RunFolder(cfg.train.output_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        return folder
    folder.lock = acquire_lock(folder.path)
    try:
        _decide(folder, cfg)
    except BaseException:
        folder.close()
        raise
    return folder


def _occupied(path: str, found: list[str]) -> str:
    names = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    return (
        f"train.output_dir = {path} holds another run ({names}); a new run there would mix its metrics and "
        "checkpoints with that one's. Continue it with train.resume=auto, choose another train.output_dir, or set "
        "train.overwrite=true to remove that run's files (only those) first"
    )


def _decide(folder: RunFolder, cfg) -> None:
    t, path = cfg.train, folder.path
    found = run_files(path)
    if t.resume is None:
        if holds_run(path) and not t.overwrite:
            raise ConfigError(_occupied(path, found))
        folder.remove = found if t.overwrite else []
        return
    resume = resolve_resume(t.resume, path)
    if resume is None:
        return  # auto, nothing to resume: step 1 (the logs are cut back to nothing)
    if os.path.realpath(os.path.dirname(os.path.normpath(resume))) == os.path.realpath(path):
        newer = [os.path.basename(p) for p in list_checkpoints(path) if step_of(p) > step_of(resume) and not verify(p)]
        if newer and not t.overwrite:
            raise ConfigError(
                f"train.resume = {resume} is older than {', '.join(newer)} of the same run: continuing from it would "
                "leave two histories in one folder (and train.resume=auto would later pick the newer one). Resume "
                "the newest with train.resume=auto, branch off into another train.output_dir, or set "
                "train.overwrite=true to remove the newer checkpoints"
            )
        folder.remove = newer
    elif holds_run(path):
        if not t.overwrite:
            raise ConfigError(_occupied(path, found))
        folder.remove = found
    _check_resume(folder, cfg, resume)


def _check_resume(folder: RunFolder, cfg, resume: str) -> None:
    """Refuse an incompatible checkpoint, and changed settings unless allowed."""
    why = incompatible(cfg, resume)
    if why is not None:
        raise ConfigError(
            f"train.resume: cannot continue {resume} with this recipe: {why}. Nothing in {folder.path} was changed. "
            f"Start a new run in another train.output_dir from its weights (model.path={resume}/policy), or resume "
            f"with its settings ({resume}/config.yaml)"
        )
    folder.resume = resume
    saved = saved_config(resume)
    if saved is None:
        print(f"repro-train: {resume} has no config.yaml: its settings cannot be compared", file=sys.stderr)
        return
    changes = changed_settings(saved, yaml.safe_load(dump_yaml(cfg)))
    step = step_of(resume) if PATTERN.match(os.path.basename(os.path.normpath(resume))) else "?"
    if changes and cfg.train.resume_changes != "allow":
        raise ConfigError(
            f"train.resume: {resume} (step {step}) was trained with other settings; changed since:\n"
            f"{describe(changes)}\n"
            "Continuing would train one run under two sets of settings. Put the checkpoint's values back (its "
            f"config.yaml), start a new run in another train.output_dir (model.path={resume}/policy starts from its "
            f"weights), or set train.resume_changes=allow to apply the changes from the next step on (recorded in "
            f"{os.path.join(folder.path, RESUMES)})"
        )
    folder.changes = changes
