"""Shell commands run `parallel` at a time, for `repro-train compare` and the experiment scripts.

    codes = run_all(["python -m repro_train train ... > a.log 2>&1", ...], parallel=4)

`stagger_s` spaces the starts: vLLM engines that start together on one GPU profile its memory at the same time and
each sees the others' allocations come and go. `on_start(i)` and `on_end(i, code, seconds)` report progress.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def run_all(
    cmds: list[str],
    parallel: int,
    cwd: str | None = None,
    env: dict | None = None,
    poll_s: float = 0.5,
    stagger_s: float = 0.0,
    on_start: Callable[[int], None] | None = None,
    on_end: Callable[[int, int, float], None] | None = None,
) -> list[int]:
    """Each command through the shell, at most `parallel` at once, starts at least `stagger_s` apart; their exit
    codes, in order."""
    pending, running, codes = list(enumerate(cmds)), {}, [None] * len(cmds)
    last_start = -float("inf")
    while pending or running:
        if pending and len(running) < parallel and time.monotonic() - last_start >= stagger_s:
            i, c = pending.pop(0)
            if on_start is not None:
                on_start(i)
            running[i] = (subprocess.Popen(c, shell=True, cwd=cwd, env=env), time.monotonic())
            last_start = time.monotonic()
            continue
        for i, (p, started) in list(running.items()):
            if p.poll() is not None:
                codes[i] = p.returncode
                del running[i]
                if on_end is not None:
                    on_end(i, p.returncode, time.monotonic() - started)
        time.sleep(poll_s)
    return codes
