"""Token log-probs and entropies from the LM head: today's logits path against the chunked function.

    python bench/bench_logprobs.py --out bench/results/logprobs.json       # one H100/H200: about a minute
    python bench/bench_logprobs.py --device cpu --tiny                     # seconds: shapes and imports only
    TRITON_INTERPRET=1 python bench/bench_logprobs.py --device cpu --tiny  # the same with the kernels interpreted

Qwen2-1.5B's head (H 1536, V 151936, bf16 random weights, no model) at N = 4 x 1024, 4 x 4096 and
1 x 8192 response tokens, temperature 0.7, log-probs and entropies, a per-token upstream gradient
for both (the loss's shape in the update: sum g1 * lp + g2 * ent). Variants:

    today    `modeling.forward_logprobs`' path: the LM head writes (B, R + 1, V) bf16 logits, sliced
             to (B, R, V), then `modeling.logprobs_from_logits` (float32 row chunks of 1,024); the
             backward goes through the logits
    torch    `models.logprobs.token_logprobs(impl="torch")`: chunks of `--chunk` positions, the row
             pass in plain torch, logits recomputed in the backward
    triton   the same with the Triton row pass (`impl="triton"`)

"fwd" is the no-grad pass (the old log-probs); "fwd+bwd" the forward with autograd and the gradient
w.r.t. hidden and weight. Times are medians of CUDA-event timings; peak memory is what the call adds
above its inputs (torch.cuda.max_memory_allocated). Ratios are today's / the variant's. Prints a
table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from repro_train.models import logprobs  # noqa: E402
from repro_train.models.forward import logprobs_from_logits  # noqa: E402
from repro_train.models.logprobs import token_logprobs  # noqa: E402

FULL = dict(H=1536, V=151936, shapes=[(4, 1024), (4, 4096), (1, 8192)])
TINY = dict(H=32, V=1000, shapes=[(2, 16), (1, 40)])
TEMPERATURE = 0.7


def today(hidden, weight, targets):
    """forward_logprobs as it is: the model's LM head over R + 1 positions, the last one dropped."""
    logits = torch.nn.functional.linear(hidden, weight)[:, :-1]  # (B, R, V) in the weights' dtype
    return logprobs_from_logits(logits, targets, TEMPERATURE, True, chunk=1024)


def chunked(impl, chunk):
    def fn(hidden, weight, targets):
        return token_logprobs(hidden[:, :-1], weight, targets, TEMPERATURE, True, impl=impl, chunk_tokens=chunk)

    return fn


def inputs(B, R, H, V, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, R + 1, H, generator=g).to(device, dtype)
    weight = (torch.randn(V, H, generator=g) * 2.0 / H**0.5).to(device, dtype)  # logits of std ~2
    targets = torch.randint(0, V, (B, R), generator=g).to(device)
    g1, g2 = torch.randn(B, R, generator=g).to(device), torch.randn(B, R, generator=g).to(device)
    return hidden, weight, targets, g1, g2


def run_once(fn, hidden, weight, targets, g1, g2, with_grad):
    if not with_grad:
        with torch.no_grad():
            return fn(hidden, weight, targets)
    h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    lp, ent = fn(h, w, targets)
    return torch.autograd.grad((lp * g1 + ent * g2).sum(), (h, w))


def measure(fn, args, with_grad, device, repeats):
    """(median ms, peak MB above the inputs or None on the CPU)."""
    cuda = device.type == "cuda"
    run_once(fn, *args, with_grad)  # warm-up (Triton compiles on its first call)
    peak = None
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run_once(fn, *args, with_grad)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    times = []
    for _ in range(repeats):
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            run_once(fn, *args, with_grad)
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            run_once(fn, *args, with_grad)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), peak


def max_diff(a, b):
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b))


def bench_case(B, R, H, V, variants, dtype, device, repeats):
    args = inputs(B, R, H, V, dtype, device)
    with torch.no_grad():
        ref = today(*args[:3])
    row = dict(B=B, R=R, N=B * R, H=H, V=V, dtype=str(dtype).removeprefix("torch."), variants={})
    for name, fn in variants.items():
        with torch.no_grad():
            lp, ent = fn(*args[:3])
        fwd_ms, fwd_mb = measure(fn, args, False, device, repeats)
        bwd_ms, bwd_mb = measure(fn, args, True, device, repeats)
        row["variants"][name] = dict(
            fwd_ms=fwd_ms,
            fwd_peak_mb=fwd_mb,
            fwd_bwd_ms=bwd_ms,
            fwd_bwd_peak_mb=bwd_mb,
            max_abs_diff_lp_vs_today=max_diff([lp], [ref[0]]),
            max_abs_diff_ent_vs_today=max_diff([ent], [ref[1]]),
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()  # each variant's peak from the same floor
    return row


def table(rows) -> str:
    def ratio(a, b):
        return f"{a / b:6.2f}x" if a is not None and b else "     -"

    def mb(x):
        return f"{x:9.0f}" if x is not None else "        -"

    lines = [
        f"{'N':>11} {'variant':>7} | {'fwd ms':>8} {'x':>7} {'MB':>9} {'x':>7} | "
        f"{'f+b ms':>8} {'x':>7} {'MB':>9} {'x':>7} | {'|dlp|':>8} {'|dent|':>8}"
    ]
    for row in rows:
        base = row["variants"]["today"]
        for name, v in row["variants"].items():
            lines.append(
                f"{row['B']:>4} x {row['R']:<4} {name:>7} | {v['fwd_ms']:8.2f} {ratio(base['fwd_ms'], v['fwd_ms'])} "
                f"{mb(v['fwd_peak_mb'])} {ratio(base['fwd_peak_mb'], v['fwd_peak_mb'])} | "
                f"{v['fwd_bwd_ms']:8.2f} {ratio(base['fwd_bwd_ms'], v['fwd_bwd_ms'])} "
                f"{mb(v['fwd_bwd_peak_mb'])} {ratio(base['fwd_bwd_peak_mb'], v['fwd_bwd_peak_mb'])} | "
                f"{v['max_abs_diff_lp_vs_today']:8.1e} {v['max_abs_diff_ent_vs_today']:8.1e}"
            )
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="H 32, V 1000, a few dozen tokens (CPU smoke)")
    p.add_argument("--chunk", type=int, default=1024, help="chunk_tokens of the chunked variants")
    p.add_argument("--block", type=int, default=logprobs.BLOCK, help="the kernels' vocabulary tile (power of 2)")
    p.add_argument("--warps", type=int, default=logprobs.NUM_WARPS, help="the kernels' num_warps")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--variants", default="today,torch,triton")
    p.add_argument("--out", default=None, help="JSON results path")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    logprobs.BLOCK, logprobs.NUM_WARPS = a.block, a.warps  # read at each launch
    dims = TINY if a.tiny else FULL
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    every = dict(today=today, torch=chunked("torch", a.chunk), triton=chunked("triton", a.chunk))
    names = a.variants.split(",")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1" and "triton" in names:
        print("no CUDA (and no TRITON_INTERPRET=1): the triton variant is skipped")
        names.remove("triton")
    variants = {n: every[n] for n in ["today"] + [n for n in names if n != "today"]}
    rows = [bench_case(B, R, dims["H"], dims["V"], variants, dtype, device, a.repeats) for B, R in dims["shapes"]]
    result = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch=torch.__version__,
        triton=_version("triton"),
        temperature=TEMPERATURE,
        chunk_tokens=a.chunk,
        block=a.block,
        num_warps=a.warps,
        repeats=a.repeats,
        rows=rows,
    )
    print(table(rows))
    print("x: today's / the variant's (time, peak memory); |dlp|, |dent|: max abs difference from today's values")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
