"""Phase timing, the one place that measures time.

with phase_timer(batch.timings, "forward_s", device) as elapsed:   # wall seconds of the block,
    ...                                                            # the device's queue included
span = DeviceSpan(device); span.mark(); ...; span.mark()          # device time between two points
span.seconds()                                                     # (read after a sync)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch


@contextlib.contextmanager
def phase_timer(
    timings: dict[str, float], key: str, device: torch.device | None = None
) -> Iterator[Callable[[], float]]:
    """timings[key] = wall seconds of the block. With a CUDA `device` the block ends by waiting for
    it, so the time holds the phase's queued work, not only its queueing. Yields a function that
    gives the seconds so far."""
    t0 = time.perf_counter()
    yield lambda: time.perf_counter() - t0
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[key] = time.perf_counter() - t0


class DeviceSpan:
    """Time between two points of the device's queue: CUDA events on a GPU, the host clock on CPU
    (where work runs when it is issued). Read `seconds` only after a sync."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.marks = []

    def mark(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> float:
        a, b = self.marks
        return a.elapsed_time(b) / 1000.0 if self.cuda else b - a
