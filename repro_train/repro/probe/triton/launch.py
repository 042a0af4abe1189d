"""Launching the probe's Triton kernels: whether they can run here (`unavailable`), the kernels module imported on
first use (`triton_module`), and `Launcher`, which calls a compiled kernel directly after its first launch.

The kernels also run under Triton's interpreter on the CPU (TRITON_INTERPRET=1, set before triton is imported;
float32 and float16 only), which is how the CPU tests check them. docs/performance.md, section 4, has the design and
the measurements.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

BLOCK_N = 64


def unavailable(device: torch.device | str) -> str | None:
    """None when the Triton path can run on `device`; otherwise why not."""
    if torch.device(device).type != "cuda" and not interpreting():
        return f"device {torch.device(device).type!r} (the Triton kernels need CUDA)"
    if not _triton_installed():
        return "triton is not installed"
    return None


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None  # (a path search: once per process)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def triton_module():
    """The module of Triton kernels, imported on first use (importing triton is slow)."""
    from . import jit

    return jit


def launch_opts(dev: torch.device, **kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None} if dev.type == "cuda" else {}


class Launcher:
    """Launches Triton kernels, remembering each compiled kernel under its key (`launch`).

    direct: whether `launch` may skip Triton's launcher after a kernel's first launch under a key
    (off: every launch goes through it; the GPU tests compare the two)."""

    TABLE_SIZE = 256
    """Compiled launches remembered; shapes change between micro-batches, so the table is cleared when full."""

    def __init__(self, direct: bool = True):
        self.direct = direct
        self.table: dict = {}

    def launch(self, kernel, grid: tuple, args: tuple, consts: dict, opts: dict, key: tuple | None) -> None:
        """`kernel[grid](*args, **consts, **opts)`, where `consts` are the kernel's remaining parameters.

        Triton's launcher binds and specialises every argument on every call, a cost of host time
        paid 5 times per layer in phase 2 (docs/performance.md). After the first launch under a key,
        later ones with the same key call the compiled kernel directly. `key` must hold everything in
        `args` that the compiled kernel depends on besides the pointers' addresses: the integers
        (Triton specialises on them), each pointer's 16-byte alignment and dtype, the device; the
        kernel, grid, constants and launch options are added here. Only Tritons whose compiled kernel
        takes every parameter, constants included (3.3 on), launch directly; a launcher that refuses
        the call turns it off for good."""
        if key is not None:
            key = (kernel, grid, key, tuple(consts.items()), tuple(opts.items()))
        run = self.table.get(key) if key is not None and self.direct else None
        if run is not None:
            try:
                run[0](*args, *run[1])
                return
            except TypeError:  # its arguments were refused before any launch
                self.direct = False
        compiled = kernel[grid](*args, **consts, **opts)
        names = list(getattr(kernel, "arg_names", ()))
        if (
            key is not None
            and self.direct
            and not interpreting()
            and names[len(args) :] == list(consts)
            and len(getattr(getattr(compiled, "src", None), "signature", ())) == len(names)
        ):
            if len(self.table) > self.TABLE_SIZE:
                self.table.clear()
            self.table[key] = (compiled[tuple(grid) + (1,) * (3 - len(grid))], tuple(consts.values()))


def aligned(*tensors: torch.Tensor) -> tuple:
    """What Triton specialises a tensor argument on besides its dtype: 16-byte alignment."""
    return tuple((t.data_ptr() % 16 == 0, t.dtype) for t in tensors)


def n_sm(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4
