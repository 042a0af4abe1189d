"""Shell jobs run `parallel` at a time, for the experiment scripts of this folder.

from jobs import run_all
codes = run_all(["python -m repro_train train ... > a.log 2>&1", ...], parallel=4, cwd=REPO)

`stagger_s` spaces the starts: vLLM engines that start together on one GPU profile its memory at the
same time and each sees the others' allocations come and go.
"""

from __future__ import annotations

import subprocess
import time


def run_all(cmds: list[str], parallel: int, cwd: str, poll_s: float = 1.0, stagger_s: float = 0.0) -> list[int]:
    """Each command through the shell, at most `parallel` at once, starts at least `stagger_s` apart; their exit
    codes, in order."""
    pending, running, codes = list(enumerate(cmds)), {}, [None] * len(cmds)
    last_start = -float("inf")
    while pending or running:
        if pending and len(running) < parallel and time.monotonic() - last_start >= stagger_s:
            i, c = pending.pop(0)
            running[i] = subprocess.Popen(c, shell=True, cwd=cwd)
            last_start = time.monotonic()
            continue
        for i, p in list(running.items()):
            if p.poll() is not None:
                codes[i] = p.returncode
                del running[i]
        time.sleep(poll_s)
    return codes
