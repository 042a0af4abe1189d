"""Hang watchdog (repro_train/trainer/watchdog.py): 2 gloo ranks, one stuck outside the collective;
both print their Python stacks and exit with HANG_EXIT instead of waiting forever."""

import os
import subprocess
import sys

import pytest

from repro_train.trainer.watchdog import HANG_EXIT, Watchdog
from tests.helpers.trainer_utils import REPO

SCRIPT = """
import sys, time, torch
from repro_train.trainer.dist import Dist, build_accelerator
from repro_train.trainer.watchdog import start_watchdog
d = Dist(build_accelerator("auto", "no", 1, 1, 1.0, "cpu"))
d.watchdog = start_watchdog(float(sys.argv[1]), d)
assert d.sum(torch.ones(1)).item() == 2  # a collective that finishes
def stuck_outside_the_collective():
    time.sleep(300)
if d.rank == 1:
    stuck_outside_the_collective()
d.sum(torch.ones(1))
print("rank", d.rank, "got past the hung collective", flush=True)
"""


@pytest.mark.distributed
def test_a_hung_collective_dumps_every_ranks_stack_and_exits(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    err = res.stderr
    assert res.returncode != 0 and "got past" not in res.stdout
    assert "rank 0: all_reduce(sum) did not finish in 3 s (dist.collective_timeout_s)" in err, err[-4000:]
    assert "rank 1: another rank reported a hang (rank 0: all_reduce(sum)" in err, err[-4000:]
    # each rank's stack: rank 0 waits in Dist.sum, rank 1 is where it got stuck
    assert "Python stacks of rank 0" in err and "Python stacks of rank 1" in err
    assert "in stuck_outside_the_collective" in err and "in sum" in err
    assert err.count(f"exits with code {HANG_EXIT}") == 2


def test_guard_times_only_the_outermost_section():
    wd = Watchdog(100.0, rank=0)
    with wd.guard("outer"):
        since = wd._since
        with wd.guard("inner"):
            assert wd._what == "outer" and wd._since == since
        assert wd._what == "outer"
    assert wd._what is None
