"""Preemption and Ctrl-C: SIGTERM or SIGUSR1 ends the run at a step boundary with a checkpoint, exit code
REQUEUE_EXIT (75) and a `<output_dir>/PREEMPTED` marker that asks for a requeue; SIGINT (Ctrl-C) does the
same with INTERRUPT_EXIT (130) and no marker, and a second Ctrl-C stops at once (no checkpoint).

    stop = Preemption().install()       # at the start of train(); restore() at its end
    ...                                  # each step, after the update:
    if stop.agreed(dist):                # all ranks: MAX of "got a signal" -> the same step everywhere
        save_checkpoint(...); stop.mark(out_dir, step); raise Preempted(...)

The signal handler only sets a flag. Slurm, torchrun, launch/slurm/train.sbatch and a reward function still
running when the flag is set: docs/reliability.md, section 2.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from .checkpoint import list_checkpoints, resume_hint

REQUEUE_EXIT = 75
"""Exit code of a preempted run: checkpoint written, resume with train.resume=auto."""
INTERRUPT_EXIT = 130
"""Exit code of a run stopped by Ctrl-C (128 + SIGINT), gracefully or at once."""
MARKER = "PREEMPTED"
"""File in the run folder written after the preemption checkpoint (removed by the next start)."""
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint (or, with `detail`, after abandoning a step)."""

    def __init__(self, step: int, checkpoint: str | None, signal_name: str, detail: str | None = None):
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name
        self.exit_code = INTERRUPT_EXIT if signal_name == "SIGINT" else REQUEUE_EXIT
        what = "requeue" if self.exit_code == REQUEUE_EXIT else "Ctrl-C"
        super().__init__(
            detail
            or f"stopped by {signal_name} after step {step}; checkpoint {checkpoint}; "
            f"resume with train.resume=auto (exit code {self.exit_code} = {what})"
        )


class Preemption:
    """A flag set by SIGTERM / SIGUSR1, or by a time limit running out (train.time_limit_s, seconds from its
    creation), and the step all ranks agree to stop at."""

    def __init__(self, signals=SIGNALS, time_limit_s: float = 0.0):
        self.signals = tuple(signals)
        self.received: str | None = None
        self._old: dict = {}
        self.deadline = time.monotonic() + time_limit_s if time_limit_s > 0 else None

    def install(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread only
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handler(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            if name == "SIGINT":  # Ctrl-C again: the user does not want to wait for the step
                raise KeyboardInterrupt
            return  # Slurm and torchrun may both pass the same preemption on
        self.received = name
        if name == "SIGINT":
            print(
                f"repro-train: got Ctrl-C (SIGINT): finishing this step, then writing a checkpoint and exiting "
                f"(code {INTERRUPT_EXIT}); press Ctrl-C again to stop at once, without a checkpoint",
                file=sys.stderr,
                flush=True,
            )
            return
        print(
            f"repro-train: got {name}: finishing this step, then writing a checkpoint and exiting "
            f"(code {REQUEUE_EXIT})",
            file=sys.stderr,
            flush=True,
        )

    def requested(self) -> bool:
        """A stop was asked for on this rank (what a running reward function polls)."""
        return self.received is not None

    @property
    def requeue(self) -> bool:
        """The stop asks for a requeue (SIGTERM/SIGUSR1, or a signal on another rank), not Ctrl-C."""
        return self.received != "SIGINT"

    def agreed(self, dist) -> bool:
        """True on every rank when any rank got a signal or ran out of time (one all-reduce MAX per step)."""
        if self.received is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.received = "time limit"  # train.time_limit_s: stop like a preemption, checkpoint and exit 75
        got = 1 if self.received is not None else 0
        return bool(dist.max_int(got)) if dist.world > 1 else bool(got)

    @property
    def name(self) -> str:
        return self.received or "a signal on another rank"

    def mark(self, out_dir: str, step: int, checkpoint: str) -> None:
        """Write the PREEMPTED marker (main rank, after the checkpoint is complete)."""
        with open(os.path.join(out_dir, MARKER), "w") as fh:
            json.dump({"step": step, "signal": self.name, "checkpoint": checkpoint}, fh)


def abandoned_step(rt, step: int, preempt: Preemption, why: Exception) -> Preempted:
    """A stop came while a reward function was still running in step `step` (0-based): that step is not
    finished, so no checkpoint is written for it; the run stops with the last one (the marker asks for a
    requeue as usual)."""
    found = list_checkpoints(rt.out_dir)
    path = found[-1] if found else None
    if rt.dist.is_main and preempt.requeue:
        preempt.mark(rt.out_dir, step, path)
    exit_code = INTERRUPT_EXIT if preempt.received == "SIGINT" else REQUEUE_EXIT
    return Preempted(
        step,
        path,
        preempt.name,
        f"stopped by {preempt.name} during step {step + 1}: {why}; that step was abandoned and "
        f"{resume_hint(rt.out_dir)} "
        f"(exit code {exit_code})",
    )


def clear_marker(out_dir: str) -> None:
    """A (re)started run removes the previous job's marker."""
    try:
        os.remove(os.path.join(out_dir, MARKER))
    except FileNotFoundError:
        pass
