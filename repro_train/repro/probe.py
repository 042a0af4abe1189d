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

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..modeling import LogprobOutput, Sequences, forward_logprobs, logprobs_from_logits
from .select import fork_entropies, select_cuts


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
    """Wall time of cut selection and phase 2 (RePro's own cost on top of the log-prob pass)."""


def _unwrap(model):
    return getattr(model, "module", model)


def _attn_impl(model) -> str:
    cfg = getattr(_unwrap(model), "config", None)
    return getattr(cfg, "_attn_implementation", None) or "sdpa"


def _answer_logprobs(logits: torch.Tensor, targets: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
    """Mean float32 log-prob of the valid targets per row: logits (N, Q, V), targets/tmask (N, Q)."""
    lp, _ = logprobs_from_logits(logits, targets, 1.0, with_entropy=False)
    m = tmask.to(lp.dtype)
    return (lp * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def _compute_dtype(cache, model) -> torch.dtype:
    """The dtype attention runs in: that of the cached keys (autocast included), else the weights'."""
    layers = getattr(cache, "layers", None)
    keys = getattr(layers[0], "keys", None) if layers else None
    if isinstance(keys, torch.Tensor):
        return keys.dtype
    return next(_unwrap(model).parameters()).dtype


def _padded(rows: Sequence[Sequence[int]], width: int, fill: int) -> torch.Tensor:
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


def probe_fused(model, seqs: Sequences, cache, blocks: Sequence[Sequence[int]],
                answers: Sequence[Sequence[int] | None], forcing: Sequence[int], pad_id: int) -> list[torch.Tensor | None]:
    """J at each block's cut for every row, in one forward over the phase-1 KV cache.

    blocks[b] lists the cuts to score for row b (0 = J_b); returns a (len(blocks[b]),) float32 CPU
    tensor per row, or None for a row with no blocks. Block k of row b holds [lead] + f + q[:-1] at
    positions plen_b + c - lead + (0, 1, ...) and sees cache columns < P + c - lead (its prefix)
    and, causally, its own earlier tokens; `lead` re-feeds the prefix's last token when f is empty."""
    device = seqs.input_ids.device
    B, Kc = seqs.input_ids.shape
    P = seqs.prompt_width
    F = len(forcing)
    lead = 0 if F else 1
    answers = [a if (a and bl) else () for a, bl in zip(answers, blocks)]
    Q = max([len(a) for a in answers] + [1])
    nb = max([len(bl) for bl in blocks] + [1])
    Lb = lead + F + Q - 1  # block length
    Lp = nb * Lb
    C = _padded(blocks, nb, 0).to(device)  # (B, nb) cut of each block
    valid = (torch.arange(nb).view(1, -1) < torch.tensor([len(bl) for bl in blocks]).view(-1, 1)).to(device)
    A = _padded(answers, Q, pad_id).to(device)  # (B, Q)
    alen = torch.tensor([len(a) for a in answers], device=device)
    plen = seqs.prompt_lens.to(device)
    parts = []  # (B, nb, Lb) block tokens: [lead] + f + q[:-1]
    if lead:
        parts.append(seqs.input_ids.gather(1, (P + C - 1).clamp(min=0)).unsqueeze(-1))
    if F:
        parts.append(torch.tensor(list(forcing), device=device).view(1, 1, F).expand(B, nb, F))
    parts.append(A[:, None, :Q - 1].expand(B, nb, Q - 1))
    ids = torch.cat(parts, dim=-1).reshape(B, Lp)
    pos = (plen.view(B, 1, 1) + C.unsqueeze(-1) - lead + torch.arange(Lb, device=device)).reshape(B, Lp)
    limit = torch.where(valid, P + C - lead, torch.zeros_like(C))  # cache columns < limit are visible
    cols = torch.arange(Kc, device=device)
    see_cache = seqs.attention_mask.bool().unsqueeze(1) & (cols.view(1, 1, -1) < limit.unsqueeze(-1))  # (B, nb, Kc)
    see_cache = see_cache.unsqueeze(2).expand(B, nb, Lb, Kc).reshape(B, Lp, Kc)
    u = torch.arange(Lp, device=device)
    see_probe = ((u // Lb).view(-1, 1) == (u // Lb).view(1, -1)) & (u.view(1, -1) <= u.view(-1, 1))  # (Lp, Lp)
    allowed = torch.cat([see_cache, see_probe.expand(B, Lp, Lp)], dim=-1).unsqueeze(1)  # (B, 1, Lp, Kc + Lp)
    dtype = _compute_dtype(cache, model)
    # One additive mask in the attention's dtype: SDPA and eager both take it without a per-layer cast.
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=device)
    mask = torch.where(allowed, torch.zeros((), dtype=dtype, device=device), blocked)
    keep = (torch.arange(nb, device=device).view(-1, 1) * Lb + lead + F - 1 + torch.arange(Q, device=device)).reshape(-1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                use_cache=True, logits_to_keep=keep)
    targets = A.unsqueeze(1).expand(B, nb, Q).reshape(B * nb, Q)
    tmask = ((torch.arange(Q, device=device).view(1, 1, -1) < alen.view(-1, 1, 1)) & valid.unsqueeze(-1)).reshape(B * nb, Q)
    J = _answer_logprobs(out.logits.reshape(B * nb, Q, -1), targets, tmask).view(B, nb).float().cpu()
    return [J[b, :len(bl)].clone() if len(bl) else None for b, bl in enumerate(blocks)]


def probe_naive(model, seqs: Sequences, blocks: Sequence[Sequence[int]],
                answers: Sequence[Sequence[int] | None], forcing: Sequence[int], pad_id: int,
                batch_size: int = 16, sync_calls: Callable[[int], int] | None = None) -> list[torch.Tensor | None]:
    """Same result as `probe_fused`, from one teacher-forced sequence p + y[:c] + f + q per cut
    (sorted by length before batching, so little padding)."""
    device = seqs.input_ids.device
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
    J = [torch.zeros(len(bl)) for bl in blocks]
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
                J[b][k] = vals[j]
    return [J[b] if len(bl) else None for b, bl in enumerate(blocks)]


def score_pass(model, seqs: Sequences, rows: Sequence[ProbeRow | None] | None, forcing: Sequence[int],
               top_k: int, temperature: float = 1.0, impl: str = "fused", pad_id: int = 0,
               naive_batch_size: int = 16, sync_calls: Callable[[int], int] | None = None,
               with_entropy: bool = True) -> ScoredBatch:
    """Phase 1 (log-probs, entropies), cut selection and phase 2 (J) for one micro-batch.

    rows=None: phase 1 only (RePro off). Otherwise rows[b] is the rollout's ProbeRow or None
    (skipped: no J). Runs under no_grad with the model in eval mode (no dropout; HF keeps the
    cache even with gradient checkpointing on)."""
    if impl not in ("fused", "naive"):
        raise ValueError(f"probe impl must be 'fused' or 'naive', got {impl!r}")
    was_training = _unwrap(model).training
    model.eval()
    try:
        with torch.no_grad():
            fused = rows is not None and impl == "fused"
            lp = forward_logprobs(model, seqs, temperature, with_entropy or rows is not None, use_cache=fused)
            if rows is None:
                return ScoredBatch(lp)
            ent = lp.entropy.float().cpu()  # waits for phase 1, so the clock below starts after it
            t0 = time.perf_counter()
            sel = []
            for b, row in enumerate(rows):
                if row is None:
                    sel.append(None)
                    continue
                H = fork_entropies(ent[b], row.seg_starts)
                flags, cuts = select_cuts(row.seg_starts, row.seg_ends, H, top_k)
                sel.append((H, flags, cuts))
            blocks = [[0] + s[2] if s is not None else [] for s in sel]
            answers = [row.answer_ids if row is not None else None for row in rows]
            if fused:
                J = probe_fused(model, seqs, lp.cache, blocks, answers, forcing, pad_id)
            else:
                J = probe_naive(model, seqs, blocks, answers, forcing, pad_id, naive_batch_size, sync_calls)
            lp.cache = None
            probe_s = time.perf_counter() - t0  # J is on the CPU already: the device is synchronised
    finally:
        model.train(was_training)
    probes = [None if s is None else RowProbe(H=s[0], selected=s[1], cuts=s[2], J_b=float(j[0]), J=j[1:])
              for s, j in zip(sel, J)]
    return ScoredBatch(lp, probes, probe_s)
