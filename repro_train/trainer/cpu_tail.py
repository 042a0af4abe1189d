"""The step's CPU tail off the critical path (rollout.overlap_cpu_tail): decoding the responses, the outcome rewards
and RePro's plan run on two background threads while the main thread drives the GPU's forward passes.

    tail = CpuTail(overlap=True)
    f = tail.submit("outcome", "decode_s", decode, ids)   # a Future: the job runs on the 'outcome' thread
    ...                                                  # the main thread queues GPU work meanwhile
    texts = tail.wait(f)                                 # its result, or its exception re-raised here
    tail.close(batch.timings)                            # threads joined (queued jobs cancelled), times added

Each thread runs its jobs in order: 'outcome' (decoding, then the reward functions that time their own items) and
'plan' (RePro's plan, a micro-batch at a time). With overlap off every job runs at once on the calling thread, in
the order the step calls them. What overlaps, what cannot and why: docs/performance.md, "The CPU tail".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

LANES = ("outcome", "plan")
"""The background threads, one per kind of job."""


class CpuTail:
    """One batch's CPU tail: jobs on the LANES' threads (or inline with overlap off), the futures the phases read,
    and the seconds each kind of job took against the seconds the main thread spent on them."""

    def __init__(self, overlap: bool):
        self.overlap = overlap
        self._lanes = (
            {lane: ThreadPoolExecutor(1, thread_name_prefix=f"repro-train-{lane}") for lane in LANES} if overlap else {}
        )
        self._lock = threading.Lock()
        self.work: dict[str, float] = {}
        """Seconds of each kind of job (decode_s, reward_s, plan_s), on whichever thread it ran."""
        self.exposed = 0.0
        """The main thread's seconds on the tail: its waits for jobs, and the jobs it ran itself."""
        self.texts: Future | None = None  # the decoded responses (experience.start_outcome)
        self.outcome: Future | None = None  # OutcomeReward.prefetch's result
        self.plans: list[Future] = []  # RePro's plan of each micro-batch of the forward phase, in its order

    def submit(self, lane: str, key: str | None, fn: Callable, *args) -> Future:
        """fn(*args) on `lane`'s thread, after the jobs submitted there before, its seconds counted under `key`
        (None: not counted). With overlap off it runs here and now, and what it raises is raised here."""
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}; choices: {', '.join(LANES)}")
        if self.overlap:
            return self._lanes[lane].submit(self._timed, key, fn, *args)
        done: Future = Future()
        done.set_result(self.run_here(key, fn, *args))
        return done

    def run_here(self, key: str | None, fn: Callable, *args):
        """fn(*args) on the calling (main) thread, counted under `key` and as exposed."""
        t0 = time.perf_counter()
        try:
            return self._timed(key, fn, *args)
        finally:
            self.exposed += time.perf_counter() - t0

    def wait(self, future: Future):
        """The job's result; its exception is raised here, its traceback still starting in the job."""
        t0 = time.perf_counter()
        try:
            return future.result()
        finally:
            self.exposed += time.perf_counter() - t0

    def close(self, timings: dict[str, float] | None = None) -> None:
        """Join the threads: queued jobs are cancelled, a running one ends on its own (a reward's deadlines and
        math_verify's watchdog bound it). Then `timings` gets each kind's seconds, cpu_tail_s (their sum) and
        cpu_tail_hidden_s (the part the main thread did not spend: it ran beside the GPU's passes)."""
        for pool in self._lanes.values():
            pool.shutdown(wait=True, cancel_futures=True)
        if timings is not None:
            timings.update(self.work)
            total = sum(self.work.values())
            timings["cpu_tail_s"] = total
            timings["cpu_tail_hidden_s"] = max(0.0, total - self.exposed)

    def _timed(self, key: str | None, fn: Callable, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            if key is not None:
                with self._lock:
                    self.work[key] = self.work.get(key, 0.0) + time.perf_counter() - t0
