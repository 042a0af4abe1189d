"""Hang watchdog: a collective that does not finish within dist.collective_timeout_s dumps every
rank's Python stack and ends the run with HANG_EXIT instead of waiting forever.

    wd = start_watchdog(cfg.dist.collective_timeout_s, dist)   # None on one process or when 0
    dist.watchdog = wd                                          # Dist's collectives run inside wd.guard(name)
    with wd.guard("backward"): ...                              # any other blocking section
    wd.stop()

A daemon thread per rank watches the section in progress and tells the other ranks through the process group's
store, so a rank that never reached the collective prints its stacks too: docs/reliability.md, section 5.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
import time

HANG_EXIT = 4
"""Exit code of a rank that gave up on a hung collective."""
KEY = "repro_train/hang"


class Watchdog:
    def __init__(self, timeout_s: float, rank: int, store=None, poll_s: float | None = None):
        self.timeout_s = float(timeout_s)
        self.rank = rank
        self.store = store
        self.poll_s = poll_s if poll_s is not None else min(1.0, self.timeout_s / 4)
        self._what: str | None = None
        self._since = 0.0
        self._depth = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="repro-train-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @contextlib.contextmanager
    def guard(self, what: str):
        """Time the enclosed blocking section (nested sections count as the outer one)."""
        if self._depth == 0:
            self._what, self._since = what, time.monotonic()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._what = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            what = self._what
            if what is not None and time.monotonic() - self._since > self.timeout_s:
                self._fire(
                    f"rank {self.rank}: {what} did not finish in {self.timeout_s:g} s (dist.collective_timeout_s)",
                    tell_others=True,
                )
            peer = self._peer_report()
            if peer is not None:
                self._fire(f"rank {self.rank}: another rank reported a hang ({peer})", tell_others=False)

    def _peer_report(self) -> str | None:
        if self.store is None:
            return None
        try:
            if self.store.check([KEY]):
                return self.store.get(KEY).decode()
        except Exception:  # noqa: BLE001 - the store is gone (its host exited): nothing more to learn
            self.store = None
        return None

    def _fire(self, reason: str, tell_others: bool) -> None:
        sys.stderr.write(f"repro-train watchdog: {reason}; Python stacks of rank {self.rank} follow\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.write(f"repro-train watchdog: rank {self.rank} exits with code {HANG_EXIT}\n")
        sys.stderr.flush()
        if tell_others and self.store is not None:
            try:
                self.store.set(KEY, reason)
                time.sleep(
                    3 * max(self.poll_s, 1.0)
                )  # the others poll once a second; the store may live in this process
            except Exception:  # noqa: BLE001 - exit anyway
                pass
        os._exit(HANG_EXIT)


def start_watchdog(timeout_s: float, dist) -> Watchdog | None:
    """A running watchdog for this rank, or None on one process or when timeout_s is 0."""
    if timeout_s <= 0 or dist.world <= 1:
        return None
    store = None
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        store = _get_default_store()
    except Exception:  # noqa: BLE001 - without the store each rank still reports its own hang
        pass
    return Watchdog(timeout_s, dist.rank, store).start()
