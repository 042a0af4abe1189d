"""Triton kernels on the CPU: the `test_interp_*` tests of a file run in a child pytest under Triton's interpreter
(TRITON_INTERPRET=1 must be set before triton is first imported, so not in this process)."""

import os
import re
import subprocess
import sys


def run_interpreter_tests(test_file: str, names, timeout: int) -> None:
    """Run `test_file`'s `test_interp_*` tests in a child pytest with TRITON_INTERPRET=1; every one must pass, none
    skip, and there must be more passes than test functions (they are parametrised). `names`: the file's globals."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, "-k", "test_interp_"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    tail = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    n = sum(1 for name in names if name.startswith("test_interp_"))
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) > n and "skipped" not in run.stdout, tail
