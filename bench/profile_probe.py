"""Profile phase 2 of the fused J probe (one cell of bench_probe.py) with torch.profiler.

    python bench/profile_probe.py [--model 1.5b] [--length 4096] [--cuts 10] [--out DIR]

Prints the wall time of the probe forward (CUDA events), the summed GPU kernel time (if far below
the wall time, the forward is launch/CPU-bound) and the top kernels and ops; writes a Chrome trace.
Then the host syncs inside the trainer's policy pass (with the Python stack of each), what that
pass adds to the plain log-prob forward (wall time against GPU kernel time, and the added GPU time
by kernel), and where the device sits idle inside the pass.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.bench_probe import BenchOptions, build_model, kernel_ms, make_blocks, make_inputs, one_cell_args  # noqa: E402
from repro_train.models.forward import forward_logprobs  # noqa: E402
from repro_train.repro.probe import ProbeRunner  # noqa: E402
from repro_train.repro.probe.attention import probe_cache  # noqa: E402
from repro_train.repro.probe.blocks import Blocks, probe_layout  # noqa: E402
from repro_train.repro.types import ProbeRequest  # noqa: E402

ENGINE = ProbeRunner()  # one engine for the run: graphs and launch tables persist between calls


def main() -> None:
    a = one_cell_args()
    dev = torch.device("cuda")
    o = BenchOptions()
    model = build_model(a.model, torch.bfloat16, dev)
    inp = make_inputs(model.config.vocab_size, a.length, o, dev)
    blocks = make_blocks(a.length, a.cuts, o)
    with torch.no_grad():
        room = probe_layout(a.cuts + 1, max(len(x) for x in inp.answers), len(inp.forcing))[1]
        lp = forward_logprobs(model, inp.seqs, use_cache=True, past_key_values=probe_cache(room))
        n = lp.cache.get_seq_length()

        def call():
            out = ENGINE.fused(model, inp.seqs, lp.cache, Blocks.from_lists(blocks, inp.answers, inp.forcing, 0, dev))
            if lp.cache.get_seq_length() > n:  # drop the probe blocks again (the SDPA path appends them)
                lp.cache.crop(-(lp.cache.get_seq_length() - n))
            return out

        for _ in range(3):
            call()
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        walls = []
        for _ in range(10):
            s.record()
            call()
            e.record()
            torch.cuda.synchronize()
            walls.append(s.elapsed_time(e))
        walls.sort()
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                call()
            torch.cuda.synchronize()
    prof.export_chrome_trace(os.path.join(a.out, "probe_trace.json"))
    # Host syncs inside the trainer's pass: each one stops the host from queueing phase 2 early.
    import traceback
    import warnings

    rows = [ProbeRequest(tuple([0] + bl[1:-1]), tuple(bl[1:]), tuple(x)) for bl, x in zip(blocks, inp.answers)]
    syncs = []  # the Python stack at each sync: torch reports a sync as a warning, raised in the caller's thread

    def note(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            syncs.append(
                [
                    f"{f.filename}:{f.lineno} {f.name}"
                    for f in traceback.extract_stack()[:-1]
                    if "warnings" not in f.filename
                ][-4:]
            )

    with torch.no_grad():
        ENGINE.run(model, inp.seqs, rows, inp.forcing, top_k=a.cuts)  # warm
        torch.cuda.synchronize()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = note
            torch.cuda.set_sync_debug_mode("warn")
            try:
                ENGINE.run(model, inp.seqs, rows, inp.forcing, top_k=a.cuts)
            finally:
                torch.cuda.set_sync_debug_mode(0)
    print(f"host syncs in one policy pass: {len(syncs)} (innermost frames last)")
    for stack in syncs:
        print("  - " + "\n    ".join(stack))
    ka = prof.key_averages()
    with torch.no_grad():  # kernels only: the table's operator rows repeat their kernels' time
        gpu_total = sum(kernel_ms(call, 3).values())
    print(
        f"probe forward wall median {walls[len(walls) // 2]:.2f} ms (min {walls[0]:.2f}); "
        f"summed GPU kernel time {gpu_total:.2f} ms per call"
    )
    print(ka.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=60))
    print(ka.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    pass_cost(model, inp, rows, a.cuts)


def pass_cost(model, inp, rows, cuts: int) -> None:
    """What the trainer's pass adds to the plain log-prob forward, wall time against GPU kernel
    time: if the pass's extra wall time exceeds its extra kernel time, the device sat idle."""
    calls = {
        "forward": lambda: forward_logprobs(model, inp.seqs),
        "pass": lambda: ENGINE.run(model, inp.seqs, rows, inp.forcing, top_k=cuts),
    }
    per, wall = {}, {}
    with torch.no_grad():
        for name, call in calls.items():
            call()
            per[name] = kernel_ms(call, 3)
            times = []
            for _ in range(5):
                torch.cuda.synchronize()
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                call()
                e.record()
                torch.cuda.synchronize()
                times.append(s.elapsed_time(e))
            wall[name] = sorted(times)[2]
    gpu = {n: sum(v.values()) for n, v in per.items()}
    print(
        f"pass extra: wall {wall['pass'] - wall['forward']:.2f} ms (median of 5 each), GPU kernel time "
        f"{gpu['pass'] - gpu['forward']:.2f} ms; forward wall {wall['forward']:.2f} / GPU {gpu['forward']:.2f} ms, "
        f"pass wall {wall['pass']:.2f} / GPU {gpu['pass']:.2f} ms"
    )
    diff = sorted(
        ((per["pass"].get(k, 0) - per["forward"].get(k, 0), k) for k in set(per["pass"]) | set(per["forward"])),
        reverse=True,
    )
    print("GPU time the pass adds, by kernel (ms per call):")
    for d, k in diff[:16] + diff[-4:]:
        print(f"  {d:+8.3f}  {k[:90]}")
    idle_gaps(calls["pass"])


def idle_gaps(call, floor_us: float = 10.0) -> None:
    """Where the device sits idle inside one call: gaps between consecutive kernels longer than
    `floor_us`, the largest first, with the kernels on either side."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
    ks = sorted(
        (e.time_range.start, e.time_range.end, e.name)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    gaps = [(b[0] - a[1], i, a[2], b[2]) for i, (a, b) in enumerate(zip(ks, ks[1:])) if b[0] - a[1] > floor_us]
    span_ms = (ks[-1][1] - ks[0][0]) / 1e3
    print(
        f"device idle inside one pass: {sum(g[0] for g in gaps) / 1e3:.2f} ms in {len(gaps)} gaps over "
        f"{floor_us:.0f} us ({len(ks)} kernels over {span_ms:.1f} ms); largest:"
    )
    for g, i, before, after in sorted(gaps, reverse=True)[:8]:
        print(f"  {g:8.1f} us after kernel {i} of {len(ks)}: {before[:50]} -> {after[:50]}")


if __name__ == "__main__":
    main()
