"""Preemption: SIGTERM or SIGUSR1 ends the run at a step boundary with a checkpoint, and an exit
code that asks for a requeue.

    stop = Preemption().install()       # at the start of train(); restore() at its end
    ...                                  # each step, after the update:
    if stop.agreed(dist):                # all ranks: MAX of "got a signal" -> the same step everywhere
        save_checkpoint(...); stop.mark(out_dir, step); raise Preempted(...)

Slurm sends SIGTERM before it preempts a job or kills it at its time limit (and SIGUSR1 when
asked to with `#SBATCH --signal=B:USR1@<seconds>`, which launch/slurm/train.sbatch forwards);
torchrun passes SIGTERM on to its workers. The step in progress is finished, not cut short, so the
checkpoint is an ordinary one; the signal handler only sets a flag. Repeats are ignored (under
Slurm a rank may get SIGTERM both from slurmstepd and from torchrun); SIGINT and SIGKILL still end
the process at once. torchrun waits TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (30 by default; the
sbatch template sets 280) for its workers before it kills them.

The exit code is REQUEUE_EXIT (75, EX_TEMPFAIL), and the main rank writes `<output_dir>/PREEMPTED`
(the step and the signal): a launcher such as torchrun reports its own exit code when a worker
fails, so the marker is what train.sbatch reads to requeue the job; the requeued job resumes with
train.resume=auto.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

REQUEUE_EXIT = 75
"""Exit code of a preempted run: checkpoint written, resume with train.resume=auto."""
MARKER = "PREEMPTED"
"""File in the run folder written after the preemption checkpoint (removed by the next start)."""
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint."""

    def __init__(self, step: int, checkpoint: str, signal_name: str):
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name
        super().__init__(
            f"stopped by {signal_name} after step {step}; checkpoint {checkpoint}; "
            f"resume with train.resume=auto (exit code {REQUEUE_EXIT} = requeue)"
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
        if self.received is not None:  # Slurm and torchrun may both pass the same preemption on
            return
        self.received = name
        print(
            f"repro-train: got {name}: finishing this step, then writing a checkpoint and exiting "
            f"(code {REQUEUE_EXIT})",
            file=sys.stderr,
            flush=True,
        )

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


def clear_marker(out_dir: str) -> None:
    """A (re)started run removes the previous job's marker."""
    try:
        os.remove(os.path.join(out_dir, MARKER))
    except FileNotFoundError:
        pass
