"""Cost of RePro's J probe next to the log-prob forward it rides on (spec "Cost").

    python bench/bench_probe.py                          # Qwen2 1.5B and 7B, 2k-16k tokens, 10/20/30 cuts
    python bench/bench_probe.py --models 1.5b --lengths 4096 --cuts 10   # the bar cell only
    python bench/bench_probe.py --smoke                  # 2-layer Qwen2 on the CPU, float32, seconds
    python bench/bench_probe.py --models 1.5b --lengths 4096 --cuts 21 --forcing-len 0 --preset authors_code
                                                         # the bar cell with repro.preset authors_code's probe

For each model (Qwen2 architecture, random seeded weights, built on the device in `--dtype`), each
response length and each number of cuts (plus J_b, so cuts + 1 probe points per rollout):

    forward        forward_logprobs(model, seqs, with_entropy=True): the old-log-prob pass of an RL step
    forward+cache  the same with use_cache=True: phase 1 of the fused path
    fused_J        probe_fused over that cache (phase 2 only; the cache is cropped back after each call);
                   on a GPU's Triton path also with its CUDA graph off ("no graph": kernels issued one by one)
    naive_J        probe_naive: one teacher-forced sequence per probe point, `--naive-batch` at a time
    pass           the trainer's policy pass (phase 1 + selection + phase 2), alone and paired with forward
    fp32 J         with --fp32-reference: J from a float32 copy of the weights, the yardstick for both paths

Times are medians after warm-up (CUDA events), ratios are against `forward`, and
max_abs_dJ = max |J_fused - J_naive| over all probe points. Slow operations are timed fewer
times (`--op-budget`), naive cells above `--naive-max-tokens` are skipped, and once the run
nears `--time-budget` further naive cells are skipped too: each skipped cell says why.
Results go to `--out` (JSON, rewritten after each length); the summary table prints last.
bench/README.md lists the exact commands behind docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench the checkout, installed or not
from repro_train.models.forward import forward_logprobs, pack  # noqa: E402
from repro_train.repro.probe import ProbeRunner, ProbeSettings  # noqa: E402
from repro_train.repro.probe.attention import probe_cache  # noqa: E402
from repro_train.repro.probe.blocks import Blocks, probe_layout  # noqa: E402
from repro_train.repro.probe.fused import triton_path  # noqa: E402
from repro_train.repro.types import ProbeRequest  # noqa: E402

_ENGINES: dict[ProbeSettings, ProbeRunner] = {}


def engine(**settings) -> ProbeRunner:
    """One probe runner per settings for the whole run, so CUDA graphs and launch tables persist
    between timed calls as they do between a trainer's micro-batches."""
    key = ProbeSettings(**settings)
    if key not in _ENGINES:
        _ENGINES[key] = ProbeRunner(key, pad_id=PAD_ID)
    return _ENGINES[key]


# Real Qwen2 dimensions (no hub here: the configs are written out by hand).
MODELS = {
    "1.5b": dict(
        hidden_size=1536,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=8960,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "7b": dict(
        hidden_size=3584,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=512,
        tie_word_embeddings=True,
    ),
}
COMMON = dict(
    max_position_embeddings=32768,
    rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    rms_norm_eps=1e-6,
    use_sliding_window=False,
)
PAD_ID = 0  # every sequence is full length: padding only fills the fused path's ragged blocks
FORWARD_SLOW_S = 10.0  # a forward slower than this is timed once (its first call is the sample)
NAIVE_SLOW_S = 2.0  # likewise for the naive probe, the sweep's expensive part

FULL = dict(
    models="1.5b,7b",
    lengths="2048,4096,8192,16384",
    cuts="10,20,30",
    device="cuda",
    dtype="bfloat16",
    prompt_len=256,
    repeats=5,
    warmup=2,
    out="results.json",
)
SMOKE = dict(
    models="tiny",
    lengths="64,128",
    cuts="3,5",
    device="cpu",
    dtype="float32",
    prompt_len=16,
    repeats=2,
    warmup=1,
    out="results-smoke.json",
)


@dataclass
class BenchOptions:
    """Everything a cell needs besides the model, its length and its number of cuts."""

    rollouts: int = 4
    prompt_len: int = 256
    answer_len: int = 16
    forcing_len: int = 5
    naive_batch: int = 8
    repeats: int = 5
    """Timed calls per operation (fewer when one call is slow, see op_budget_s)."""
    warmup: int = 2
    """Untimed calls first; calls over a second get one."""
    op_budget_s: float = 5.0
    """Timed calls of one operation stop at about this many seconds (at least one call)."""
    naive_max_tokens: int = 600_000
    """Skip the naive probe when its sequences are expected to hold more tokens than this (0: never
    skip). The default skips 16k x 20 and 16k x 30 cuts: ~680k and ~1.02M tokens, 16-18x the forward's
    tokens once padded, about 70 s a call on the 7B."""
    seed: int = 0
    attention: str = "auto"
    """Phase 2's attention (repro.probe.attention): auto, triton or sdpa."""
    fp32_reference: bool = False
    """Also compute J in float32 (a float32 copy of the same weights, fused path, which equals the
    naive path to 1e-5 there) and give each low-precision path's distance to it."""
    deadline: float | None = None
    """time.monotonic() after which no further naive cell (or length) starts."""
    preset: str = "spec"
    """'authors_code': the pass cell's rollouts look like the authors' options (repro.preset): every cut
    but the last is a fork candidate scored at the fork (cut_at: fork), the last is the forced
    end-of-thinking cut (force_think_end_cut); use it with --forcing-len 0 (their probe has no
    forcing text). The fused and naive cells score the same blocks either way."""


def kernel_ms(fn: Callable[[], Any], n: int = 10) -> dict[str, float]:
    """GPU time per call of each kernel `fn` launches, from torch.profiler with CUDA activity only
    (with CPU activity too, operator rows would repeat their kernels' time). Their sum is the GPU
    time of a call, which can be far below its wall time when the call is launch-bound."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    return {k.key: k.self_device_time_total / n / 1000 for k in prof.key_averages()}


def one_cell_args(argv=None) -> argparse.Namespace:
    """--model/--length/--cuts/--out of the scripts that look at one cell on a GPU
    (profile_probe.py, bench_probe_attention.py)."""
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="1.5b", choices=sorted(MODELS))
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--cuts", type=int, default=10)
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument(
        "--triton-only",
        action="store_true",
        help="bench_probe_attention.py: only the project's kernel and its variants",
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Model and inputs
# ---------------------------------------------------------------------------------------------


def build_model(name: str, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A Qwen2 causal LM with random weights, built directly on `device` in `dtype` (no CPU copy)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(**MODELS[name], **COMMON)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    p = next(model.parameters())
    if p.device.type != device.type or p.dtype != dtype:
        raise RuntimeError(f"model built on {p.device}/{p.dtype}, wanted {device}/{dtype}")
    return model.eval()


@dataclass
class Inputs:
    seqs: Any
    """Packed (B, P + R) prompts + responses on the model's device."""
    answers: list[list[int]]
    forcing: list[int]


def make_inputs(vocab: int, length: int, o: BenchOptions, device: torch.device) -> Inputs:
    """Seeded random token ids: prompts, responses of exactly `length` tokens, answers, forcing text."""
    g = torch.Generator().manual_seed(o.seed * 1_000_003 + length)

    def ids(n):
        return torch.randint(1, vocab, (n,), generator=g).tolist()

    prompts = [ids(o.prompt_len) for _ in range(o.rollouts)]
    responses = [ids(length) for _ in range(o.rollouts)]
    answers = [ids(o.answer_len) for _ in range(o.rollouts)]
    return Inputs(pack(prompts, responses, PAD_ID, device), answers, ids(o.forcing_len))


def make_blocks(length: int, cuts: int, o: BenchOptions) -> list[list[int]]:
    """Per rollout: 0 (J_b) then `cuts` sorted distinct random cut points in 1..length."""
    if not 0 < cuts <= length:
        raise ValueError(f"cuts must be in 1..{length}, got {cuts}")
    g = torch.Generator().manual_seed(o.seed * 1_000_003 + 7919 * length + cuts)
    return [[0] + sorted((torch.randperm(length, generator=g)[:cuts] + 1).tolist()) for _ in range(o.rollouts)]


def token_counts(length: int, blocks: list[list[int]], o: BenchOptions) -> dict:
    """Tokens each path feeds the model. The naive count also comes padded (as probe_naive batches
    it) and as expected over random cuts (mean cut (length + 1) / 2), which `--naive-max-tokens`
    reads so that the skipped cells do not depend on the seed."""
    lead = 0 if o.forcing_len else 1
    cuts = len(blocks[0]) - 1
    naive = [o.prompt_len + c + o.forcing_len + o.answer_len for bl in blocks for c in bl]
    chunks = [naive[i : i + o.naive_batch] for i in range(0, len(naive), o.naive_batch)]
    per_seq = o.prompt_len + o.forcing_len + o.answer_len
    return dict(
        forward_tokens=o.rollouts * (o.prompt_len + length),
        probe_tokens=sum(len(bl) for bl in blocks) * (lead + o.forcing_len + o.answer_len - 1),
        naive_tokens=sum(naive),
        naive_padded_tokens=sum(len(ch) * max(ch) for ch in chunks),
        naive_tokens_expected=round(o.rollouts * ((cuts + 1) * per_seq + cuts * (length + 1) / 2)),
    )


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


class Clock:
    """Times one call: CUDA events on a GPU (device synchronised around the call), else perf_counter."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if not self.cuda:
            t0 = time.perf_counter()
            out = fn()
            return (time.perf_counter() - t0) * 1e3, out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end), out

    def reset_peak(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None


@dataclass
class Timing:
    ms: float
    """Median of the samples."""
    samples: list[float]
    peak_gib: float | None
    """Peak allocated memory during the first call (weights and resident tensors included)."""
    out: Any
    """The last call's output."""


def measure(
    fn: Callable[[], Any], clock: Clock, o: BenchOptions, slow_s: float, after: Callable[[Any], None] | None = None
) -> Timing:
    """Median time of fn() in ms. The first call warms up (or is the only sample when slower than
    `slow_s`); calls under a second get `warmup - 1` more; then up to `repeats` samples, fewer
    when they would take over `op_budget_s`. after(out) runs untimed after every call."""

    def call():
        ms, out = clock(fn)
        if after is not None:
            after(out)
        return ms, out

    clock.reset_peak()
    first, out = call()
    peak = clock.peak_gib()
    first_s = first / 1e3
    samples = [first] if (o.warmup == 0 or first_s > slow_s) else []
    if first_s <= slow_s:
        for _ in range(o.warmup - 1 if first_s < 1.0 else 0):
            out = None  # free the last output before the next call makes its own
            _, out = call()
        n = max(1, min(o.repeats, int(o.op_budget_s / max(first_s, 1e-6))))
        for _ in range(n - len(samples)):
            out = None
            ms, out = call()
            samples.append(ms)
    return Timing(statistics.median(samples), samples, peak, out)


def attempt(fn: Callable[[], Any]) -> tuple[Any, str]:
    """(fn(), "ok"), or (None, status) when it fails: "OOM" for CUDA out of memory, else the error.
    One failed cell must not cost the rest of the sweep; its memory is released before returning."""
    try:
        return fn(), "ok"
    except torch.cuda.OutOfMemoryError:
        status = "OOM"
    except Exception as e:  # recorded in the row and printed, never silent
        traceback.print_exc(limit=-4, file=sys.stdout)
        status = f"error: {type(e).__name__}: {str(e)[:160]}"
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # after an OOM the allocator's cached blocks are the memory we need back
    return None, status


# ---------------------------------------------------------------------------------------------
# One response length: phase 1 once, then fused and naive J for each number of cuts
# ---------------------------------------------------------------------------------------------


def run_cell(model, length: int, cuts: int, opts: BenchOptions | None = None, name: str = "") -> dict:
    """All measurements of one (model, response length, number of cuts) cell, as a flat dict."""
    return run_length(model, length, [cuts], opts or BenchOptions(), name)[0]


def run_length(model, length: int, cuts_list: list[int], o: BenchOptions, name: str = "") -> list[dict]:
    """Cells for every number of cuts at one response length, sharing the forward measurements."""
    device = next(model.parameters()).device
    clock = Clock(device)
    inp = make_inputs(model.config.vocab_size, length, o, device)
    all_blocks = [make_blocks(length, k, o) for k in cuts_list]
    cells = [
        dict(
            model=name,
            length=length,
            cuts=k,
            probe_points=k + 1,
            rollouts=o.rollouts,
            prompt_len=o.prompt_len,
            answer_len=o.answer_len,
            forcing_len=o.forcing_len,
            **token_counts(length, bl, o),
            status_forward="ok",
            status_fused="ok",
            status_naive="ok",
            status_pass="ok",
        )
        for k, bl in zip(cuts_list, all_blocks)
    ]
    if o.deadline is not None and time.monotonic() > o.deadline:
        for c in cells:
            c.update({f"status_{k}": "skipped (time budget)" for k in ("forward", "fused", "naive")})
        return cells
    with torch.no_grad():
        fwd, kept = forward_cells(model, inp, cells, clock, o)
        fused_J = [fused_cell(model, inp, c, bl, kept, clock, o) for c, bl in zip(cells, all_blocks)]
        kept = None  # the next measurements need no resident cache
        for c, bl, J in zip(cells, all_blocks, fused_J):
            pass_cell(model, inp, c, bl, J, clock, o)
        naive_J = [naive_cell(model, inp, c, bl, J, fwd, clock, o) for c, bl, J in zip(cells, all_blocks, fused_J)]
        if o.fp32_reference and next(model.parameters()).dtype != torch.float32:
            reference_cells(model, inp, cells, all_blocks, fused_J, naive_J)
    for c in cells:  # 6. Ratios against the forward.
        f = c.get("forward_ms")
        if f and c.get("fused_eager_ms") is not None:
            c["fused_eager_over_forward"] = c["fused_eager_ms"] / f
        if f and c.get("fused_ms") is not None:
            c["fused_over_forward"] = c["fused_ms"] / f
            c["fused_total_extra_over_forward"] = (c["forward_cache_ms"] - f + c["fused_ms"]) / f
        if f and c.get("naive_ms") is not None:
            c["naive_over_forward"] = c["naive_ms"] / f
        if f and c.get("pass_ms") is not None:
            c["pass_extra_over_forward"] = (c["pass_ms"] - f) / f
    return cells


def pass_cell(model, inp: Inputs, cell: dict, blocks, J_fused, clock: Clock, o: BenchOptions):
    """What training pays: the trainer's whole policy pass with RePro on (phase 1 keeping the cache,
    selection on the device, phase 2 queued behind phase 1) against the plain log-prob forward.
    Each rollout gets exactly `cuts` segments ending at the cell's cut points, so all are selected.

    Then the same difference paired: forward and pass timed in alternation, the median of
    (pass - forward) over the pairs. The two medians above are taken seconds apart, so drift in
    the GPU's clocks lands in their difference; a pair shares it."""
    rows, top_k = pass_requests(blocks, inp.answers, o.preset), cell["cuts"]
    if o.preset == "authors_code":
        top_k = max(1, top_k - 1)  # the last cut is forced, not selected

    def one_pass():
        return engine(impl="fused", attention=o.attention).run(model, inp.seqs, rows, inp.forcing, top_k=top_k)

    res, cell["status_pass"] = attempt(lambda: measure(one_pass, clock, o, FORWARD_SLOW_S))
    if res is None:
        return
    J_pass = torch.stack([torch.cat([torch.tensor([p.J_b]), p.J]) for p in res.out.probes])
    cell.update(
        pass_ms=res.ms,
        pass_samples=res.samples,
        peak_gib_pass=res.peak_gib,
        pass_probe_device_ms=res.out.probe_s * 1000,
        pass_vs_fused_max_abs_dJ=_max_diff(J_pass, J_fused.cpu()) if J_fused is not None else None,
    )
    res = None
    f = cell.get("forward_ms")
    if not f:
        return
    n = max(1, min(o.repeats, int(o.op_budget_s * 1e3 / (f + cell["pass_ms"]))))

    def pairs():
        out = []
        for _ in range(n):
            out.append(-clock(lambda: forward_logprobs(model, inp.seqs, with_entropy=True))[0] + clock(one_pass)[0])
        return out

    diffs, st = attempt(pairs)
    if diffs is not None:
        extra = statistics.median(diffs)
        cell.update(
            pass_extra_paired_ms=extra, pass_extra_paired_samples=diffs, pass_extra_paired_over_forward=extra / f
        )


def pass_requests(blocks, answers, preset: str = "spec") -> list[ProbeRequest]:
    """Requests whose selection gives exactly each rollout's cuts `bl[1:]`. spec: segments ending at
    the cuts; authors_code: forks at bl[1:-1] scored at the fork, and the last cut forced."""
    if preset == "authors_code":
        return [ProbeRequest(tuple(bl[1:-1]), tuple(bl[1:-1]), tuple(a), (bl[-1],)) for bl, a in zip(blocks, answers)]
    return [ProbeRequest(tuple([0] + bl[1:-1]), tuple(bl[1:]), tuple(a)) for bl, a in zip(blocks, answers)]


class KeptCache:
    """Phase 1's KV cache, put back to its length after each probe_fused call (which appends its
    blocks to it): cropped when the cache allows it, else recomputed (untimed)."""

    def __init__(self, model, seqs, cache, timing: Timing, room: int):
        self.model, self.seqs, self.cache, self.timing, self.room = model, seqs, cache, timing, room
        self.length = cache.get_seq_length()
        self.reruns = 0

    def restore(self, _=None):
        try:
            extra = self.cache.get_seq_length() - self.length
            if extra > 0:
                self.cache.crop(-extra)  # a negative count removes that many tokens (transformers 4.x and 5.x)
            if self.cache.get_seq_length() == self.length:
                return
        except Exception:
            pass
        self.rebuild()

    def rebuild(self, room: int | None = None):
        """Phase 1 again (untimed), leaving `room` probe columns as the trainer's policy pass does."""
        self.room = self.room if room is None else room
        self.cache = None
        self.cache = forward_logprobs(
            self.model, self.seqs, with_entropy=True, use_cache=True, past_key_values=probe_cache(self.room)
        ).cache
        self.reruns += 1


def probe_room(model, inp: Inputs, cuts: int, o: BenchOptions) -> int:
    """Probe columns phase 1 leaves for phase 2, as the policy pass does: none on the Triton path (which
    appends nothing), else the columns `cuts` cut points (+ J_b) per rollout fill."""
    eng = engine(attention=o.attention)
    if triton_path(model, inp.seqs.input_ids.device, eng.settings, eng.facts):
        return 0
    return probe_layout(cuts + 1, max(len(a) for a in inp.answers), len(inp.forcing))[1]


def forward_cells(model, inp: Inputs, cells: list[dict], clock: Clock, o: BenchOptions):
    """1-2. The log-prob forward without and with the KV cache (with the room phase 2 needs, as the
    trainer's policy pass leaves it: none on the Triton path); returns (forward timing, kept cache)."""
    seqs = inp.seqs
    room = probe_room(model, inp, max(c["cuts"] for c in cells), o)
    fwd, st = attempt(
        lambda: measure(lambda: forward_logprobs(model, seqs, with_entropy=True), clock, o, FORWARD_SLOW_S)
    )
    fwc, st_c = (
        (None, st)
        if fwd is None
        else attempt(
            lambda: measure(
                lambda: forward_logprobs(
                    model, seqs, with_entropy=True, use_cache=True, past_key_values=probe_cache(room)
                ),
                clock,
                o,
                FORWARD_SLOW_S,
            )
        )
    )
    for c in cells:
        c.update(
            forward_ms=fwd and fwd.ms,
            forward_samples=fwd and fwd.samples,
            peak_gib_forward=fwd and fwd.peak_gib,
            forward_cache_ms=fwc and fwc.ms,
            forward_cache_samples=fwc and fwc.samples,
            cache_extra_ms=fwc and fwc.ms - fwd.ms,
            status_forward=st if fwd is None else st_c,
        )
    if fwc is None:
        return fwd, None
    kept = KeptCache(model, seqs, fwc.out.cache, fwc, room)
    fwc.out = None
    return fwd, kept


def fused_cell(model, inp: Inputs, cell: dict, blocks, kept: KeptCache | None, clock: Clock, o: BenchOptions):
    """3. Fused J over the kept cache; returns J per rollout (or None)."""
    if kept is None or kept.cache is None:
        why = cell["status_forward"] if kept is None else "its rebuild after a failed probe failed"
        cell["status_fused"] = f"no phase-1 cache ({why})"
        return None
    room = probe_room(model, inp, cell["cuts"], o)
    if kept.room != room:  # phase 1 leaves exactly the room this cell's probe fills (as in training)
        _, st = attempt(lambda: kept.rebuild(room))
        if st != "ok":
            cell["status_fused"] = f"phase-1 rebuild failed ({st})"
            kept.cache = None
            return None
        kept.reruns -= 1  # a planned rebuild, not a failed crop
    seen = []  # J of every call: a cropped (or rebuilt) cache must give the same values again

    def after(J):
        seen.append(J)
        kept.restore()

    def timed(graph: bool):
        return attempt(
            lambda: measure(
                lambda: engine(attention=o.attention, cuda_graph=graph).fused(
                    model,
                    inp.seqs,
                    kept.cache,
                    Blocks.from_lists(blocks, inp.answers, inp.forcing, PAD_ID, inp.seqs.input_ids.device),
                ),
                clock,
                o,
                FORWARD_SLOW_S,
                after=after,
            )
        )

    fus, cell["status_fused"] = timed(True)
    if fus is None:  # a failed call may have appended to some layers only
        _, st = attempt(kept.rebuild)
        if st != "ok":
            kept.cache = None
        return None
    cell.update(
        fused_ms=fus.ms,
        fused_samples=fus.samples,
        peak_gib_forward_cache_fused=_max(kept.timing.peak_gib, fus.peak_gib),
        cache_restore="crop" if kept.reruns == 0 else "rerun phase 1",
        fused_repeat_max_abs_diff=_max_diff(seen[0], seen[-1]),
        J_fused_mean=_mean(fus.out),
    )
    if clock.cuda and probe_room(model, inp, cell["cuts"], o) == 0:  # the Triton path
        # the same phase 2 with its kernels issued one by one (repro.probe.cuda_graph: false)
        eager, st = timed(False)
        cell.update(
            fused_eager_ms=eager and eager.ms,
            fused_eager_samples=eager and eager.samples,
            status_fused_eager=st,
            graph_vs_eager_max_abs_dJ=eager and _max_diff(fus.out, eager.out),
        )
    return fus.out


def naive_cell(model, inp: Inputs, cell: dict, blocks, J_fused, fwd: Timing | None, clock: Clock, o: BenchOptions):
    """4. Naive J, unless too large or too late; max|J_fused - J_naive|. Returns J_naive (or None)."""
    if fwd is None:
        cell["status_naive"] = f"no forward ({cell['status_forward']})"
        return None
    skip = _naive_skip(cell, fwd.ms, o)
    if skip:
        cell["status_naive"] = skip
        return None
    nai, cell["status_naive"] = attempt(
        lambda: measure(
            lambda: engine(impl="naive", batch_size=o.naive_batch).naive(
                model, inp.seqs, Blocks.from_lists(blocks, inp.answers, inp.forcing, PAD_ID, inp.seqs.input_ids.device)
            ),
            clock,
            o,
            NAIVE_SLOW_S,
        )
    )
    if nai is None:
        return None
    cell.update(
        naive_ms=nai.ms,
        naive_samples=nai.samples,
        peak_gib_naive=nai.peak_gib,
        max_abs_dJ=_max_diff(J_fused, nai.out) if J_fused is not None else None,
    )
    return nai.out


def reference_cells(model, inp: Inputs, cells: list[dict], all_blocks, fused_J, naive_J) -> None:
    """5. J in float32 from a float32 copy of the same weights: how far each low-precision path's J
    is from it (max_abs_dJ_fused_fp32, max_abs_dJ_naive_fp32). The fused-vs-naive distance alone
    cannot say which of the two carries the rounding error."""

    def run():
        ref = copy.deepcopy(model).float()
        try:
            s = inp.seqs  # phase 1 for its cache only: no float32 logits over the responses
            cache = ref(
                input_ids=s.input_ids,
                attention_mask=s.attention_mask,
                position_ids=s.position_ids,
                use_cache=True,
                past_key_values=probe_cache(0),
                logits_to_keep=1,
            ).past_key_values
            return [
                engine().fused(
                    ref,
                    inp.seqs,
                    cache,
                    Blocks.from_lists(bl, inp.answers, inp.forcing, PAD_ID, inp.seqs.input_ids.device),
                )
                for bl in all_blocks
            ]
        finally:
            del ref

    refs, status = attempt(run)
    for i, c in enumerate(cells):
        c["status_fp32_reference"] = status
        if refs is not None:
            c.update(
                max_abs_dJ_fused_fp32=_max_diff(fused_J[i], refs[i]) if fused_J[i] is not None else None,
                max_abs_dJ_naive_fp32=_max_diff(naive_J[i], refs[i]) if naive_J[i] is not None else None,
            )


def _naive_skip(cell: dict, forward_ms: float, o: BenchOptions) -> str | None:
    if o.naive_max_tokens and cell["naive_tokens_expected"] > o.naive_max_tokens:
        return (
            f"skipped (expected naive tokens {cell['naive_tokens_expected']} > --naive-max-tokens {o.naive_max_tokens})"
        )
    # Rough cost: the forward's time per token times the naive path's padded tokens.
    est_s = forward_ms / 1e3 * cell["naive_padded_tokens"] / cell["forward_tokens"]
    if o.deadline is not None and time.monotonic() + est_s > o.deadline:
        return f"skipped (time budget: would need ~{est_s:.0f} s)"
    return None


def _max(*xs):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| of two (B, nb) J tensors (invalid blocks are 0 in both)."""
    return (a.float() - b.float()).abs().max().item()


def _mean(J: torch.Tensor) -> float:
    return J.float().mean().item()


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def log(*a):
    print(*a, flush=True)


def _f(x, spec=".1f", none="-"):
    return none if x is None else format(x, spec)


def _status(cell: dict, key: str) -> str | None:
    """Short table text for a failed or skipped measurement, None when it ran."""
    s = cell.get(f"status_{key}", "ok")
    if s == "ok":
        return None
    return "skip" if s.startswith("skipped") else ("OOM" if s == "OOM" else "n/a" if s.startswith("no ") else "err")


def _col(cell: dict, key: str, field: str, spec: str) -> str:
    return _status(cell, key) or _f(cell.get(field), spec)


def cell_line(c: dict) -> str:
    return (
        f"  k={c['cuts']:<2} fused {_col(c, 'fused', 'fused_ms', '.1f')} ms "
        f"({_col(c, 'fused', 'fused_over_forward', '.3f')}x fwd, total extra "
        f"{_col(c, 'fused', 'fused_total_extra_over_forward', '.3f')}x)  naive "
        f"{_col(c, 'naive', 'naive_ms', '.0f')} ms ({_col(c, 'naive', 'naive_over_forward', '.1f')}x)  "
        f"max|dJ| {_col(c, 'naive', 'max_abs_dJ', '.1e')}"
    )


def table(cells: list[dict], full: bool) -> str:
    """Markdown table of cells; `full` adds the cache, naive time and memory columns."""
    if full:
        head = (
            "| model | len | cuts | fwd ms | +cache ms | fused ms | fused/fwd | no graph/fwd | extra/fwd | pass ms "
            "| pass extra/fwd | paired | naive ms | naive/fwd | max abs dJ | peak GiB fwd / +fused / naive |"
        )
    else:
        head = "| model | len | cuts | fwd ms | fused ms | fused/fwd | naive/fwd | max abs dJ |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        fwd = _col(c, "forward", "forward_ms", ".1f")
        fused = [_col(c, "fused", "fused_ms", ".2f"), _col(c, "fused", "fused_over_forward", ".4f")]
        naive_r, dJ = _col(c, "naive", "naive_over_forward", ".2f"), _col(c, "naive", "max_abs_dJ", ".1e")
        if full:
            cache = _status(c, "fused") or _f(c.get("cache_extra_ms"), "+.1f")
            peaks = " / ".join(
                _f(c.get(k), ".1f") for k in ("peak_gib_forward", "peak_gib_forward_cache_fused", "peak_gib_naive")
            )
            row = [
                c["model"],
                c["length"],
                c["cuts"],
                fwd,
                cache,
                fused[0],
                fused[1],
                _col(c, "fused_eager", "fused_eager_over_forward", ".4f"),
                _col(c, "fused", "fused_total_extra_over_forward", ".4f"),
                _col(c, "pass", "pass_ms", ".1f"),
                _col(c, "pass", "pass_extra_over_forward", ".4f"),
                _col(c, "pass", "pass_extra_paired_over_forward", ".4f"),
                _col(c, "naive", "naive_ms", ".0f"),
                naive_r,
                dJ,
                peaks,
            ]
        else:
            row = [c["model"], c["length"], c["cuts"], fwd, fused[0], fused[1], naive_r, dJ]
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines)


def bar_lines(cells: list[dict], bar_ratio: float = 0.05, bar_dJ: float = 2e-2) -> list[str]:
    """The probe's cost bar (docs/spec/repro-method.md, "Cost and the bar for this project") on every
    4,096-token, 10-cut cell: fused/fwd <= 0.05 and max|dJ| <= 2e-2."""
    out = []
    for c in cells:
        if c["length"] != 4096 or c["cuts"] != 10:
            continue
        r, e, d = c.get("fused_over_forward"), c.get("pass_extra_over_forward"), c.get("max_abs_dJ")
        ep = c.get("pass_extra_paired_over_forward")
        ref = ""
        if c.get("max_abs_dJ_fused_fp32") is not None:
            ref = (
                f" (from float32 J: fused {_f(c['max_abs_dJ_fused_fp32'], '.1e')}, "
                f"naive {_f(c.get('max_abs_dJ_naive_fp32'), '.1e')})"
            )
        ok = lambda v, bar: "n/a" if v is None else ("PASS" if v <= bar else "FAIL")  # noqa: E731
        out.append(
            f"bar {c['model']} 4096 tokens, 11 probe points: fused/fwd {_f(r, '.4f')} <= {bar_ratio} "
            f"{ok(r, bar_ratio)} (no graph {_f(c.get('fused_eager_over_forward'), '.4f')}); "
            f"pass extra/fwd {_f(e, '.4f')} <= {bar_ratio} {ok(e, bar_ratio)}; "
            f"paired {_f(ep, '.4f')} {ok(ep, bar_ratio)}; max|dJ| {_f(d, '.1e')} <= {bar_dJ} {ok(d, bar_dJ)}{ref}"
        )
    return out


def placeholder_cells(name: str, args, status: str) -> list[dict]:
    """Cells of a model that was not measured, each saying why."""
    return [
        dict(
            model=name,
            length=L,
            cuts=k,
            probe_points=k + 1,
            status_forward=status,
            status_fused=status,
            status_naive=status,
        )
        for L in args.lengths
        for k in args.cuts
    ]


def machine_info(device: torch.device) -> dict:
    import accelerate
    import transformers

    info = dict(
        torch=torch.__version__,
        transformers=transformers.__version__,
        accelerate=accelerate.__version__,
        cuda=torch.version.cuda,
        python=platform.python_version(),
        platform=platform.platform(),
        device=str(device),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name, gpu_mem_gib=round(props.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count()
        )
    else:
        info["cpu_threads"] = torch.get_num_threads()
    return info


def write_json(path: str, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    d = BenchOptions()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", help=f"comma list of {sorted(MODELS)} (default {FULL['models']})")
    p.add_argument("--lengths", help=f"response lengths in tokens (default {FULL['lengths']})")
    p.add_argument("--cuts", help=f"cut points per rollout, J_b not counted (default {FULL['cuts']})")
    p.add_argument("--rollouts", type=int, default=d.rollouts)
    p.add_argument("--prompt-len", type=int, help=f"default {FULL['prompt_len']}")
    p.add_argument("--answer-len", type=int, default=d.answer_len)
    p.add_argument("--forcing-len", type=int, default=d.forcing_len)
    p.add_argument("--dtype", help=f"default {FULL['dtype']}")
    p.add_argument("--device", help=f"default {FULL['device']}")
    p.add_argument("--naive-batch", type=int, default=d.naive_batch)
    p.add_argument(
        "--naive-max-tokens",
        type=int,
        default=d.naive_max_tokens,
        help="skip naive J above this many expected tokens (0: never skip)",
    )
    p.add_argument("--repeats", type=int, help=f"default {FULL['repeats']}")
    p.add_argument("--warmup", type=int, help=f"default {FULL['warmup']}")
    p.add_argument("--op-budget", type=float, default=d.op_budget_s, help="seconds of timed calls per op")
    p.add_argument(
        "--time-budget", type=float, default=480.0, help="seconds after which no naive cell (or length) starts; 0: none"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--attention",
        default=d.attention,
        choices=["auto", "triton", "sdpa"],
        help="phase 2's attention (repro.probe.attention)",
    )
    p.add_argument(
        "--preset",
        default=d.preset,
        choices=["spec", "authors_code"],
        help="the pass cell's cut placement: spec (segment ends) or authors_code (forks + a forced "
        "last cut; pair it with --forcing-len 0 and --cuts = top_k + 1, e.g. 21)",
    )
    p.add_argument(
        "--fp32-reference",
        action="store_true",
        help="also J from a float32 copy of the weights: each path's distance to it",
    )
    p.add_argument("--out", help=f"JSON results (default {FULL['out']}, {SMOKE['out']} with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny 2-layer Qwen2 on the CPU in float32 (tests)")
    args = p.parse_args(argv)
    for k, v in (SMOKE if args.smoke else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.lengths = [int(x) for x in args.lengths.split(",")]
    args.cuts = [int(x) for x in args.cuts.split(",")]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    if min(args.cuts) < 1 or max(args.cuts) > min(args.lengths):
        p.error(f"--cuts must lie in 1..{min(args.lengths)} (the shortest length)")
    if not isinstance(getattr(torch, args.dtype, None), torch.dtype):
        p.error(f"unknown dtype {args.dtype!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("CUDA is not available here: use --device cpu, or --smoke")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.monotonic()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    opts = BenchOptions(
        rollouts=args.rollouts,
        prompt_len=args.prompt_len,
        answer_len=args.answer_len,
        forcing_len=args.forcing_len,
        naive_batch=args.naive_batch,
        repeats=args.repeats,
        warmup=args.warmup,
        op_budget_s=args.op_budget,
        naive_max_tokens=args.naive_max_tokens,
        seed=args.seed,
        attention=args.attention,
        fp32_reference=args.fp32_reference,
        preset=args.preset,
        deadline=t_start + args.time_budget if args.time_budget > 0 else None,
    )
    payload = dict(
        machine=machine_info(device),
        args=vars(args),
        options=asdict(opts),
        models={m: dict(MODELS[m], **COMMON) for m in args.models},
        cells=[],
        complete=False,
    )
    payload["options"].pop("deadline")
    m = payload["machine"]
    log(
        f"bench_probe: {m.get('gpu', 'cpu')} | torch {m['torch']} | transformers {m['transformers']} | {args.dtype}"
        f" | {args.rollouts} rollouts, prompt {args.prompt_len}, answer {args.answer_len}, forcing {args.forcing_len}"
    )
    for name in args.models:
        payload["cells"] += sweep_model(name, args, opts, device, dtype, payload, t_start)
    payload.update(complete=True, elapsed_s=round(time.monotonic() - t_start, 1))
    write_json(args.out, payload)
    print_summary(payload, args)
    return payload


def sweep_model(name: str, args, opts: BenchOptions, device, dtype, payload: dict, t_start: float) -> list[dict]:
    """Build one model, measure every (length, cuts) cell, print its table, free it."""
    if opts.deadline is not None and time.monotonic() > opts.deadline:
        log(f"[{name}] skipped: time budget spent")
        return placeholder_cells(name, args, "skipped (time budget)")
    t0 = time.monotonic()
    model, st = attempt(lambda: build_model(name, dtype, device, args.seed))
    if model is None:
        log(f"[{name}] could not be built: {st}")
        return placeholder_cells(name, args, f"no model ({st})")
    log(
        f"[{name}] built in {time.monotonic() - t0:.1f} s: "
        f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters"
    )
    cells = []
    for L in args.lengths:
        new = run_length(model, L, args.cuts, opts, name)
        log(
            f"[{name} L={L}] fwd {_col(new[0], 'forward', 'forward_ms', '.1f')} ms, fwd+cache "
            f"{_f(new[0].get('forward_cache_ms'))} ms, peak {_f(new[0].get('peak_gib_forward'))} GiB "
            f"({time.monotonic() - t_start:.0f} s)"
        )
        for c in new:
            log(cell_line(c))
        cells += new
        write_json(args.out, dict(payload, cells=payload["cells"] + cells))  # partial results survive a kill
    log(f"\n### {name}\n{table(cells, full=False)}\n")
    model = None  # free this model before the next one is built
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return cells


def print_summary(payload: dict, args):
    """The markdown summary, printed last: the lead's log keeps only the tail."""
    m = payload["machine"]
    log(
        f"## bench_probe summary: {m.get('gpu', 'cpu')}, {args.dtype}, {args.rollouts} rollouts, prompt "
        f"{args.prompt_len}, answer {args.answer_len}, forcing {args.forcing_len}, naive batch {args.naive_batch}"
    )
    log(table(payload["cells"], full=True))
    for c in payload["cells"]:
        if c.get("status_naive", "ok") != "ok":
            log(f"naive {c['model']}/{c['length']}/{c['cuts']}: {c['status_naive']}")
    for line in bar_lines(payload["cells"]):
        log(line)
    log(f"elapsed {payload['elapsed_s']} s; JSON: {args.out}")


if __name__ == "__main__":
    main()
