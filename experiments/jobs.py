"""Shell jobs run `parallel` at a time, for the experiment scripts of this folder.

from jobs import run_all
codes = run_all(["python -m repro_train train ... > a.log 2>&1", ...], parallel=4, cwd=REPO)
"""

from __future__ import annotations

import subprocess
import time


def run_all(cmds: list[str], parallel: int, cwd: str, poll_s: float = 1.0) -> list[int]:
    """Each command through the shell, at most `parallel` at once; their exit codes, in order."""
    pending, running, codes = list(enumerate(cmds)), {}, [None] * len(cmds)
    while pending or running:
        while pending and len(running) < parallel:
            i, c = pending.pop(0)
            running[i] = subprocess.Popen(c, shell=True, cwd=cwd)
        for i, p in list(running.items()):
            if p.poll() is not None:
                codes[i] = p.returncode
                del running[i]
        time.sleep(poll_s)
    return codes
