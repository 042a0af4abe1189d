"""The J probe: the policy's confidence in the ground-truth answer after each cut (spec 3-5).

J(c) = (1/|q|) sum_i log pi(q_i | p + y[:c] + f + q[:i]), f = forcing ids (probe_prefix),
q = answer ids; J_b = J(0). Log-softmax in float32, no temperature, no gradient.

`score_pass` is the two-phase pass the trainer and `repro-train inspect` run per micro-batch:

    phase 1  one forward over prompt + response -> log-probs and entropies of every response token
             (the old log-probs of the RL step), keeping the KV cache when impl = "fused";
    select   fork entropies at segment starts -> top-k segments -> cut points (select.py);
    phase 2  J at c = 0 and at every cut:
             "fused": one extra forward over probe blocks only. Each (rollout, cut) gets a block
                 f + q[:-1] placed after the cached sequence, at the positions that follow the
                 prefix p + y[:c]; a 4D mask lets the block see the cached prefix columns and,
                 causally, itself. Only the |q| positions per block that predict answer tokens go
                 through the LM head (`logits_to_keep`).
             "naive": one teacher-forced sequence p + y[:c] + f + q per (rollout, cut), batched
                 (the reference the fused path is checked against).

Under ZeRO-3 and FSDP every forward is a collective, so phase 2 always runs once per call (with a
dummy block when nothing needs scoring) and the naive path pads its number of forwards to
`sync_calls(n)`, the maximum over ranks, which the caller supplies.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..modeling import LogprobOutput, Sequences, forward_logprobs
from . import probe_graph, probe_kernels, probe_layers
from .probe_layers import _unwrap
from .probe_attention import (ATTENTION, _probe_attention_on, _probe_mask, _sdpa_attend, _triton_path, _use_triton,
                              probe_cache)
from .select import select_cuts_batched


@dataclass(frozen=True)
class ProbeRow:
    """What the probe needs of one rollout; `None` in its place skips the rollout."""

    seg_starts: tuple[int, ...]
    seg_ends: tuple[int, ...]
    answer_ids: tuple[int, ...]


@dataclass
class RowProbe:
    """Selection and J of one rollout."""

    H: torch.Tensor
    """(n_segments,) fork entropies at the segment starts."""
    selected: list[bool]
    cuts: list[int]
    """c_1 < ... < c_m (response-token indices, exclusive ends of the selected segments)."""
    J_b: float
    J: torch.Tensor
    """(m,) J at each cut, float32 on the CPU."""


@dataclass
class ScoredBatch:
    lp: LogprobOutput
    probes: list[RowProbe | None] = field(default_factory=list)
    probe_s: float = 0.0
    """RePro's own cost in this pass: the device time from the end of phase 1 to the end of phase 2
    (selection + probe), measured with CUDA events so that no extra sync is needed."""


def _answer_logprobs(logits: torch.Tensor, targets: torch.Tensor, tmask: torch.Tensor, chunk: int = 1024,
                     kernel: bool = False) -> torch.Tensor:
    """Mean float32 log-prob of the valid targets per row: logits (N, Q, V), targets/tmask (N, Q).

    kernel=True: `probe_kernels.target_logprobs` (Triton), which reads each row once and writes
    one float per row. Otherwise one float32 log-softmax kernel per `chunk` positions (bounded
    memory), reading the logits in their own dtype."""
    N, Q, V = logits.shape
    flat, tgt = logits.reshape(N * Q, V), targets.reshape(N * Q, 1)
    if kernel:
        lp = probe_kernels.target_logprobs(flat, tgt.view(-1)).view(N, Q)
    else:
        lp = torch.cat([torch.log_softmax(flat[s:s + chunk], dim=-1, dtype=torch.float32).gather(-1, tgt[s:s + chunk])
                        for s in range(0, N * Q, chunk)]).view(N, Q)
    m = tmask.to(lp.dtype)
    return (lp * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def _padded(rows: Sequence[Sequence[int]], width: int, fill: int) -> torch.Tensor:
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


@dataclass
class Blocks:
    """The probe blocks of a micro-batch as device tensors (nb blocks per row, Q answer columns)."""

    cuts: torch.Tensor
    """(B, nb) cut of each block; block 0 is c = 0 (J_b)."""
    valid: torch.Tensor
    """(B, nb) True for blocks to score."""
    answers: torch.Tensor
    """(B, Q) answer ids, padded."""
    answer_len: torch.Tensor
    """(B,) answer lengths (0 for skipped rows)."""
    forcing: torch.Tensor
    """(F,) forcing ids (probe_prefix)."""

    @classmethod
    def from_lists(cls, blocks: Sequence[Sequence[int]], answers: Sequence[Sequence[int] | None],
                   forcing: Sequence[int], pad_id: int, device=None) -> "Blocks":
        """blocks[b] = cuts to score for row b (0 = J_b), answers[b] its answer ids (or None)."""
        answers = [a if (a and bl) else () for a, bl in zip(answers, blocks)]
        nb = max([len(bl) for bl in blocks] + [1])
        Q = max([len(a) for a in answers] + [1])
        valid = torch.arange(nb).view(1, -1) < torch.tensor([len(bl) for bl in blocks]).view(-1, 1)
        return cls(_padded(blocks, nb, 0).to(device), valid.to(device), _padded(answers, Q, pad_id).to(device),
                   torch.tensor([len(a) for a in answers], device=device),
                   torch.tensor(list(forcing), dtype=torch.long, device=device))

    def to_lists(self) -> tuple[list[list[int]], list[list[int]]]:
        cuts, valid, ans, alen = self.cuts.tolist(), self.valid.tolist(), self.answers.tolist(), self.answer_len.tolist()
        blocks = [[c for c, v in zip(cr, vr) if v] for cr, vr in zip(cuts, valid)]
        return blocks, [a[:n] for a, n in zip(ans, alen)]


def probe_layout(n_blocks: int, answer_len: int, forcing_len: int) -> tuple[int, int]:
    """(block length, probe columns) of phase 2 for the most blocks and longest answer of a batch."""
    lead = 0 if forcing_len else 1
    Lb = lead + forcing_len + max(answer_len, 1) - 1
    return Lb, max(n_blocks, 1) * Lb


def probe_fused(model, seqs: Sequences, cache, blocks: Blocks, forward: str = "layers",
                attention: str = "auto", graph: bool = True) -> torch.Tensor:
    """J at every block in one forward over the phase-1 KV cache: (B, nb) float32 on the device
    (0 where the block is not valid). Nothing here waits for the device.

    forward="layers" runs that forward layer by layer (`probe_layers`) where the architecture allows;
    otherwise, or with "model", it is the model's own forward with the probe attention swapped in.
    In the layer-by-layer forward, attention="triton" (or "auto" on a GPU with Triton) attends with
    `probe_kernels.PrefixAttention`, which reads only each block's prefix and needs no mask;
    "sdpa" (and "auto" elsewhere) uses SDPA with an additive mask over the whole cache. On the
    Triton path, graph=True replays phase 2 from a CUDA graph (`probe_graph`) where the model allows
    (`probe_layers.graph_key`) and no gradient is recorded: the same kernels, issued in one launch.

    Block k of row b holds [lead] + f + q[:-1] at positions plen_b + c - lead + (0, 1, ...) and sees
    cache columns < P + c - lead (its prefix) and, causally, its own earlier tokens; `lead`
    re-feeds the prefix's last token when f is empty, so q_0 is still predicted from the prefix."""
    device = seqs.input_ids.device
    B = seqs.input_ids.shape[0]
    P = seqs.prompt_width
    C, valid, A, alen = blocks.cuts, blocks.valid, blocks.answers, blocks.answer_len
    F = blocks.forcing.numel()
    nb, Q = C.shape[1], A.shape[1]
    Lb, Lp = probe_layout(nb, Q, F)
    plen = seqs.prompt_lens.to(device)
    last = None if F else seqs.input_ids.gather(1, (P + C - 1).clamp(min=0))  # the token before each cut
    layers = forward == "layers" and probe_layers.unsupported(model) is None
    if layers and _use_triton(attention, device):  # as _triton_path, without a second model check
        kv = probe_kernels.kv_table([(layer.keys, layer.values) for layer in cache.layers], P)
        fn = functools.partial(_triton_J, model, Lb, kv.layout, kv.aligned)
        inputs = (C, valid, A, alen, blocks.forcing, plen, kv.table) + ((last,) if last is not None else ())
        key = probe_layers.graph_key(model) if graph and device.type == "cuda" and not torch.is_grad_enabled() \
            else None
        if key is None:
            return fn(*inputs)
        return probe_graph.run(fn, (key, Lb, kv.layout, kv.aligned, *((t.shape, t.dtype) for t in inputs)),
                               inputs)
    ids, pos, _, limit, keep, targets, tmask = _block_inputs(C, valid, A, alen, blocks.forcing, plen, P, last, Lb)
    mask = _probe_mask(model, seqs, cache, limit, Lb, Lp)
    if layers:
        logits = probe_layers.forward(model, ids, pos, _sdpa_attend(cache, mask), keep)
    else:
        with _probe_attention_on(model):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                           use_cache=True, logits_to_keep=keep).logits
    J = _answer_logprobs(logits.reshape(B * nb, Q, -1), targets, tmask).view(B, nb)
    return torch.where(valid, J, torch.zeros_like(J))


def _block_inputs(C, valid, A, alen, forcing, plen, P, last, Lb: int):
    """Phase 2's inputs from the blocks (cuts C and valid (B, nb), answers A (B, Q) and their lengths,
    forcing ids, prompt lengths; P, the prompt width, an int or a 0-d tensor on the device; `last`
    (B, nb) the token before each cut, re-fed when there are no forcing ids, else None): the
    blocks' tokens and positions (B, Lp), the first visible cache column of each row (B,) (rows
    are left-padded), each block's end of visible cache columns (B, nb), the positions that
    predict answer tokens, and the targets with their mask (B * nb, Q)."""
    B, nb = C.shape
    Q, F = A.shape[1], forcing.numel()
    lead = 0 if F else 1
    device = C.device
    parts = []  # (B, nb, Lb) block tokens: [lead] + f + q[:-1]
    if lead:
        parts.append(last.unsqueeze(-1))
    if F:
        parts.append(forcing.view(1, 1, F).expand(B, nb, F))
    parts.append(A[:, None, :Q - 1].expand(B, nb, Q - 1))
    ids = torch.cat(parts, dim=-1).reshape(B, nb * Lb)
    pos = (plen.view(B, 1, 1) + C.unsqueeze(-1) - lead + torch.arange(Lb, device=device)).reshape(B, nb * Lb)
    limit = torch.where(valid, P + C - lead, torch.zeros_like(C))  # cache columns < limit are visible
    keep = (torch.arange(nb, device=device).view(-1, 1) * Lb + lead + F - 1 + torch.arange(Q, device=device)).reshape(-1)
    targets = A.unsqueeze(1).expand(B, nb, Q).reshape(B * nb, Q)
    tmask = ((torch.arange(Q, device=device).view(1, 1, -1) < alen.view(-1, 1, 1)) & valid.unsqueeze(-1)).reshape(B * nb, Q)
    return ids, pos, P - plen, limit, keep, targets, tmask


def _triton_J(model, Lb: int, kv_layout: tuple, kv_aligned: bool, C, valid, A, alen, forcing, plen, table,
              last=None) -> torch.Tensor:
    """Phase 2 on the Triton path, from the blocks to J (B, nb): what `probe_graph` captures. The
    phase-1 cache is `table` with kv_layout and kv_aligned (`probe_kernels.KVTable`), which also
    holds the prompt width."""
    ids, pos, lo, limit, keep, targets, tmask = _block_inputs(C, valid, A, alen, forcing, plen, table[3], last, Lb)
    attn = probe_kernels.PrefixAttention(lo, limit, Lb, probe_kernels.KVTable(table, kv_layout, kv_aligned))
    logits = probe_layers.forward(model, ids, pos, attn.layer, keep, probe_kernels)
    B, nb = valid.shape
    J = _answer_logprobs(logits.reshape(B * nb, A.shape[1], -1), targets, tmask, kernel=True).view(B, nb)
    return torch.where(valid, J, torch.zeros_like(J))


def probe_naive(model, seqs: Sequences, blocks: Blocks, pad_id: int, batch_size: int = 16,
                sync_calls: Callable[[int], int] | None = None) -> torch.Tensor:
    """Same result as `probe_fused`, from one teacher-forced sequence p + y[:c] + f + q per cut
    (sorted by length before batching, so little padding)."""
    device = seqs.input_ids.device
    nb = blocks.cuts.shape[1]
    forcing = blocks.forcing.tolist()
    blocks, answers = blocks.to_lists()
    P = seqs.prompt_width
    plen = seqs.prompt_lens.tolist()
    rlen = seqs.response_mask.sum(-1).tolist()
    rows = seqs.input_ids.tolist()
    items = []  # (row, block index, ids, answer)
    for b, (bl, q) in enumerate(zip(blocks, answers)):
        p, y = rows[b][P - plen[b]:P], rows[b][P:P + rlen[b]]
        for k, c in enumerate(bl):
            items.append((b, k, p + y[:c] + list(forcing) + list(q), list(q)))
    items.sort(key=lambda it: len(it[2]), reverse=True)
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    n_calls = sync_calls(len(chunks)) if sync_calls is not None else len(chunks)
    J = torch.zeros(len(blocks), nb)
    for i in range(n_calls):
        chunk = chunks[i] if i < len(chunks) else [(None, None, [pad_id, pad_id], [pad_id])]  # dummy forward
        Q = max(len(it[3]) for it in chunk)
        L = max(len(it[2]) for it in chunk)
        ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
        att = torch.zeros((len(chunk), L), dtype=torch.long)
        targets = torch.zeros((len(chunk), Q), dtype=torch.long)
        tmask = torch.zeros((len(chunk), Q), dtype=torch.bool)
        for j, (_, _, seq, q) in enumerate(chunk):
            ids[j, L - len(seq):] = torch.tensor(seq)
            att[j, L - len(seq):] = 1
            targets[j, Q - len(q):] = torch.tensor(q)  # kept column Q - |q| + i predicts q_i
            tmask[j, Q - len(q):] = True
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids.to(device), attention_mask=att.to(device), position_ids=pos.to(device),
                    use_cache=False, logits_to_keep=Q + 1)
        vals = _answer_logprobs(out.logits[:, :-1], targets.to(device), tmask.to(device)).float().cpu()
        for j, (b, k, _, _) in enumerate(chunk):
            if b is not None:
                J[b, k] = vals[j]
    return J.to(device)


class _Span:
    """Time between two points of the device's queue: CUDA events on a GPU, the host clock on CPU
    (where work runs when it is issued). Read `seconds` only after a sync."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.marks = []

    def mark(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> float:
        a, b = self.marks
        return a.elapsed_time(b) / 1000.0 if self.cuda else b - a


def _segment_tensors(rows: Sequence[ProbeRow | None]):
    """(starts, ends, valid) of every row's segments, padded to (B, S), on the host."""
    S = max([len(r.seg_starts) for r in rows if r is not None] + [1])
    starts = _padded([r.seg_starts if r else () for r in rows], S, 0)
    ends = _padded([r.seg_ends if r else () for r in rows], S, 0)
    valid = torch.arange(S).view(1, -1) < torch.tensor([len(r.seg_starts) if r else 0 for r in rows]).view(-1, 1)
    return starts, ends, valid


def _to_device(tensors: Sequence[torch.Tensor], device) -> list[torch.Tensor]:
    """Host integer/bool tensors on `device`. On a GPU: one pinned buffer, one copy queued on the
    stream without the host waiting (a pageable copy waits for the queued work, once per tensor)."""
    if torch.device(device).type != "cuda":
        return [t.to(device) for t in tensors]
    flat = torch.cat([t.reshape(-1).long() for t in tensors]).pin_memory().to(device, non_blocking=True)
    out = []
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        out.append(part.view(t.shape).to(t.dtype))
    return out


def _to_host(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Device tensors on the host in one copy (float64 carries the integers, bools and floats
    exactly), each back in its dtype."""
    flat = torch.cat([t.reshape(-1).double() for t in tensors]).cpu()
    return [part.view(t.shape).to(t.dtype) for t, part in zip(tensors, flat.split([t.numel() for t in tensors]))]


def score_pass(model, seqs: Sequences, rows: Sequence[ProbeRow | None] | None, forcing: Sequence[int],
               top_k: int, temperature: float = 1.0, impl: str = "fused", pad_id: int = 0,
               naive_batch_size: int = 16, sync_calls: Callable[[int], int] | None = None,
               with_entropy: bool = True, forward: str = "layers", attention: str = "auto",
               graph: bool = True) -> ScoredBatch:
    """Phase 1 (log-probs, entropies), cut selection and phase 2 (J) for one micro-batch.

    rows=None: phase 1 only (RePro off). Otherwise rows[b] is the rollout's ProbeRow or None
    (skipped: no J). Selection and the fused probe run on the device without waiting for it, so
    the host queues phase 2 while phase 1 is still computing; the results come back in one copy.
    Runs under no_grad with the model in eval mode (no dropout; HF keeps the cache even with
    gradient checkpointing on)."""
    if impl not in ("fused", "naive"):
        raise ValueError(f"probe impl must be 'fused' or 'naive', got {impl!r}")
    if forward not in ("layers", "model"):
        raise ValueError(f"probe forward must be 'layers' or 'model', got {forward!r}")
    if attention not in ATTENTION:
        raise ValueError(f"probe attention must be one of {ATTENTION}, got {attention!r}")
    was_training = _unwrap(model).training
    if was_training:  # (eval() walks every module, about a millisecond of host time for a 28-layer model)
        model.eval()
    try:
        with torch.no_grad():
            if rows is None:
                return ScoredBatch(forward_logprobs(model, seqs, temperature, with_entropy))
            device = seqs.input_ids.device
            answers = [r.answer_ids if r is not None else () for r in rows]
            nb = 1 + min(top_k, max([len(r.seg_starts) for r in rows if r is not None] + [1]))
            kw = {}
            if impl == "fused":  # phase 1 leaves exactly the room phase 2 fills (none for the Triton path)
                room = 0 if _triton_path(model, device, forward, attention) else \
                    probe_layout(nb, max([len(a) for a in answers] + [1]), len(forcing))[1]
                kw["past_key_values"] = probe_cache(room)
            span = _Span(device)
            lp = forward_logprobs(model, seqs, temperature, True, use_cache=impl == "fused", **kw)
            span.mark()
            # Phase 1 is queued; the probe's inputs are built while the device computes it, and go
            # over in one pinned copy queued behind it (made before phase 1, they kept the device
            # idle while the host built them; a pageable copy here would wait for phase 1).
            live, starts, ends, seg_valid, A, alen, forcing_t = _to_device(
                [torch.tensor([r is not None for r in rows]), *_segment_tensors(rows),
                 _padded(answers, max([len(a) for a in answers] + [1]), pad_id),
                 torch.tensor([len(a) for a in answers]), torch.tensor(list(forcing), dtype=torch.long)], device)
            H = lp.entropy.gather(1, starts)  # (B, S) fork entropies
            selected, cuts, cut_valid = select_cuts_batched(H, seg_valid, ends, top_k)
            blocks = Blocks(torch.cat([torch.zeros_like(cuts[:, :1]), cuts], dim=1),
                            torch.cat([live.view(-1, 1), cut_valid & live.view(-1, 1)], dim=1), A, alen, forcing_t)
            if impl == "fused":
                J = probe_fused(model, seqs, lp.cache, blocks, forward, attention, graph)
            else:
                J = probe_naive(model, seqs, blocks, pad_id, naive_batch_size, sync_calls)
            lp.cache = None
            span.mark()
            if was_training:  # back to train mode while the device still computes, not after the sync
                model.train()
                was_training = False
            # the one host sync of the pass: one copy back
            H, selected, cuts, cut_valid, J = _to_host([H.float(), selected, cuts, cut_valid, J.float()])
            probe_s = span.seconds()
    finally:
        if was_training:
            model.train()
    # per row: Python lists taken once for the batch (the loop runs after the sync, with the device idle)
    sel, cut, n_cuts, J_b = selected.tolist(), cuts.tolist(), cut_valid.sum(1).tolist(), J[:, 0].tolist()
    probes = []
    for b, row in enumerate(rows):
        if row is None:
            probes.append(None)
            continue
        n, m = len(row.seg_starts), n_cuts[b]
        probes.append(RowProbe(H=H[b, :n], selected=sel[b][:n], cuts=cut[b][:m], J_b=J_b[b], J=J[b, 1:1 + m].clone()))
    return ScoredBatch(lp, probes, probe_s)
