"""Phase 2 of the Triton path replayed from a CUDA graph: its few hundred small kernels in one launch, so the device no
longer waits on the host to issue them (docs/performance.md, item 7 of the design; numbers in sections 3 and 4).

`GraphCache.run(fn, key, inputs)` returns fn(*inputs). The first call under a key runs fn as it is (which compiles the
kernels and warms cuBLAS); the second captures fn over copies of the inputs that the graph owns, on a side stream and
with no host sync, and replays it; later calls copy their inputs into those (one multi-tensor copy) and replay. The key
holds all that fn bakes in: the inputs' shapes and dtypes and the address of every weight fn reads
(`layers.ModelFacts.graph_key`). Weights are read where they lie, so an in-place optimizer step is seen; the phase-1
cache enters only through its table (`triton/attention.py` `KVTable`). Up to `keep` graphs per device share one memory
pool (least recently used dropped): they replay one at a time on one stream, each output copied out before the next.
A capture that fails turns graphs off for that device, with a warning.
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Callable, Sequence

import torch


class _Device:
    """Per-device state: the side stream and memory pool of every capture, the graphs, the keys seen once."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: collections.OrderedDict = collections.OrderedDict()
        self.seen: set = set()
        self.broken: str | None = None
        self.captures = self.replays = 0


class GraphCache:
    """The CUDA graphs of phase 2, per device (`run`).

    keep: graphs kept per device. Training meets a handful of keys: the answer length and block
    count of a micro-batch vary a little, the rest is fixed by the recipe."""

    SEEN_SIZE = 1024
    """Keys remembered as seen once; keys that never come back are forgotten when the set is full."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self.devices: dict[torch.device, _Device] = {}

    def _state(self, device: torch.device) -> _Device:
        st = self.devices.get(device)
        if st is None:
            st = self.devices[device] = _Device(device)
        return st

    def run(self, fn: Callable[..., torch.Tensor], key: tuple, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """fn(*inputs) (CUDA tensors), from a graph from the second call under `key` on. Returns a
        tensor of the caller's own (a replay's output is copied out)."""
        st = self._state(inputs[0].device)
        g = st.graphs.get(key)
        if g is None:
            if st.broken is not None or key not in st.seen:
                if len(st.seen) > self.SEEN_SIZE:
                    st.seen.clear()
                st.seen.add(key)
                return fn(*inputs)
            g = _capture(st, fn, inputs)
            if g is None:
                return fn(*inputs)
            st.graphs[key] = g
            while len(st.graphs) > self.keep:
                st.graphs.popitem(last=False)
        st.graphs.move_to_end(key)
        graph, static, out = g
        torch._foreach_copy_(static, list(inputs))
        graph.replay()
        st.replays += 1
        return out.clone()


def _capture(st: _Device, fn, inputs):
    """(graph, its inputs, its output), or None (and graphs off for the device) when the capture fails."""
    static = [t.clone() for t in inputs]
    cur = torch.cuda.current_stream(inputs[0].device)
    st.stream.wait_stream(cur)  # the copies above, queued on the caller's stream
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(st.stream):
            graph.capture_begin(pool=st.pool, capture_error_mode="thread_local")
            try:
                out = fn(*static)
            finally:
                graph.capture_end()
    except Exception as e:  # an op the graph cannot hold
        st.broken = f"{type(e).__name__}: {e}"
        warnings.warn(
            f"probe phase 2: CUDA graph capture failed ({st.broken[:200]}); phase 2 runs without graphs on this device",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    cur.wait_stream(st.stream)
    st.captures += 1
    return graph, static, out
