"""The probe runner: the policy pass of a micro-batch with J at every selected cut (spec 3-5; docs/repro.md, step 5).

    runner = ProbeRunner(ProbeSettings(), pad_id=0)
    out = runner.run(model, seqs, requests, forcing_ids, top_k, temperature)   # a ProbePass

`run` is the pass that the trainer (through `RePro.policy_pass`) and `repro-train inspect` make per micro-batch:
phase 1, one forward over prompt + response (old log-probs and entropies, keeping the KV cache when impl = "fused");
selection, fork entropies -> top-k cut points plus forced cuts (select.py); phase 2, J at c = 0 and every cut, "fused"
(fused.py, one forward over the probe blocks) or "naive" (naive.py, the reference). The runner owns what it learns
between passes (the Triton launch table, the CUDA graphs, `layers.ModelFacts`); a new one starts with none. Under
ZeRO-3 and FSDP every forward is a collective: phase 2 runs once per call (a dummy block when nothing needs scoring),
and the naive path pads its forwards to `sync_calls(n)`, the maximum over ranks, which the caller supplies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ...core.timing import DeviceSpan
from ...models.forward import LogprobOutput, Sequences, forward_logprobs, index_on, unwrap
from ..select import add_forced_cuts, select_cuts_batched
from ..types import ProbeRequest, ProbeResult
from .attention import probe_cache
from .blocks import Blocks, padded, probe_layout
from .fused import probe_fused, triton_path
from .graphs import GraphCache
from .layers import ModelFacts
from .naive import probe_naive
from .settings import ProbeSettings
from .triton.ops import Kernels


@dataclass
class ProbePass:
    """What one policy pass with the probe returns."""

    lp: LogprobOutput
    """Phase 1: old log-probs and entropies of the response tokens (both None when not asked for)."""
    probes: list[ProbeResult | None] = field(default_factory=list)
    """Per rollout: selection and J, None where the rollout was skipped."""
    probe_s: float = 0.0
    """RePro's own cost in this pass: the device time from the end of phase 1 to the end of phase 2
    (selection + probe), measured with CUDA events so that no extra sync is needed."""


class ProbeRunner:
    """Runs the probe with `settings`; `pad_id` pads the naive probe's sequences and `sync_calls`
    (under ZeRO-3/FSDP) agrees the number of its forwards across ranks."""

    def __init__(
        self, settings: ProbeSettings | None = None, pad_id: int = 0, sync_calls: Callable[[int], int] | None = None
    ):
        self.settings = settings if settings is not None else ProbeSettings()
        self.pad_id = pad_id
        self.sync_calls = sync_calls
        self.kernels = Kernels()
        self.graphs = GraphCache()
        self.facts = ModelFacts()

    def fused(self, model, seqs: Sequences, cache, blocks: Blocks) -> torch.Tensor:
        """J (B, nb) of `blocks` over the phase-1 `cache`, on the device (`fused.probe_fused`)."""
        return probe_fused(model, seqs, cache, blocks, self.settings, self.kernels, self.graphs, self.facts)

    def naive(self, model, seqs: Sequences, blocks: Blocks) -> torch.Tensor:
        """J (B, nb) of `blocks`, one teacher-forced sequence per block (`naive.probe_naive`)."""
        return probe_naive(model, seqs, blocks, self.pad_id, self.settings.batch_size, self.sync_calls)

    def run(
        self,
        model,
        seqs: Sequences,
        requests: Sequence[ProbeRequest | None],
        forcing: Sequence[int],
        top_k: int,
        temperature: float = 1.0,
        head: str = "logits",
        logprobs: bool = True,
    ) -> ProbePass:
        """Phase 1 (log-probs, entropies), cut selection and phase 2 (J) for one micro-batch.

        `head`: how phase 1 computes log-probs and entropies (`models.forward.forward_logprobs`). `logprobs` False:
        phase 1 computes the fork entropies only (the segment starts' entropies; the trainer's on-policy step takes
        its old log-probs from the update), so `lp` holds no log-probs; J is the same either way.

        requests[b] is the rollout's ProbeRequest, or None (skipped: no J). Selection and the fused
        probe run on the device without waiting for it, so the host queues phase 2 while phase 1 is
        still computing; the results come back in one copy. Runs under no_grad with the model in
        eval mode (no dropout; HF keeps the cache even with gradient checkpointing on)."""
        was_training = unwrap(model).training
        if was_training:  # (eval() walks every module: host time, docs/performance.md)
            model.eval()
        try:
            with torch.no_grad():
                lp, on_device, probe_s = self._on_device(
                    model, seqs, requests, forcing, top_k, temperature, head, logprobs
                )
                if was_training:  # back to train mode while the device still computes, not after the sync
                    model.train()
                    was_training = False
                # the one host sync of the pass: one copy back
                H, selected, cuts, cut_valid, J = _to_host(on_device)
                probe_s = probe_s.seconds()
        finally:
            if was_training:
                model.train()
        return ProbePass(lp, _results(requests, H, selected, cuts, cut_valid, J), probe_s)

    def _phase1(self, model, seqs, answers, nb, n_forcing, temperature, head, at) -> LogprobOutput:
        """Phase 1: log-probs and entropies of the response (or, with `at`, the entropies at the segment starts),
        keeping a KV cache with exactly the room phase 2 fills when impl = "fused" (none for the Triton path)."""
        s, kw = self.settings, {}
        if s.impl == "fused":
            triton = triton_path(model, seqs.input_ids.device, s, self.facts)
            kw["past_key_values"] = probe_cache(
                0 if triton else probe_layout(nb, max([len(a) for a in answers] + [1]), n_forcing)[1]
            )
        at2 = None if at is None else at[:2]
        return forward_logprobs(model, seqs, temperature, True, use_cache=s.impl == "fused", head=head, at=at2, **kw)

    def _on_device(self, model, seqs, requests, forcing, top_k, temperature, head="logits", logprobs=True):
        """Phase 1, selection and phase 2 queued on the device: (phase 1's output, the device
        tensors (H, selected, cuts, cut_valid, J), the span of selection + phase 2)."""
        s = self.settings
        device = seqs.input_ids.device
        answers = [r.answer_ids if r is not None else () for r in requests]
        F = max([len(r.forced_cuts) for r in requests if r is not None] + [0])  # forced cuts per row
        nb = 1 + min(top_k, max([len(r.seg_starts) for r in requests if r is not None] + [1])) + F
        span = DeviceSpan(device)
        at = None if logprobs else _start_positions(requests)  # only the fork entropies
        lp = self._phase1(model, seqs, answers, nb, len(forcing), temperature, head, at)
        span.mark()
        # Phase 1 is queued; the probe's inputs are built while the device computes it, and go
        # over in one pinned copy queued behind it (made before phase 1, they kept the device
        # idle while the host built them; a pageable copy here would wait for phase 1).
        live, starts, ends, seg_valid, A, alen, forcing_t, *forced = _to_device(
            [
                torch.tensor([r is not None for r in requests]),
                *_segment_tensors(requests),
                padded(answers, max([len(a) for a in answers] + [1]), self.pad_id),
                torch.tensor([len(a) for a in answers]),
                torch.tensor(list(forcing), dtype=torch.long),
                *(_forced_tensors(requests, F) if F else ()),
            ],
            device,
        )
        if at is None:
            H = lp.entropy.gather(1, starts)  # (B, S) fork entropies
        else:  # (N,) entropies at the valid starts, back to (B, S)
            H = lp.entropy.new_zeros(starts.shape).index_put(
                (index_on(at[0], device), index_on(at[2], device)), lp.entropy
            )
            lp = LogprobOutput(None, None, lp.cache)
        selected, cuts, cut_valid = select_cuts_batched(H, seg_valid, ends, top_k)
        if F:
            cuts, cut_valid = add_forced_cuts(cuts, cut_valid, *forced)
        blocks = Blocks(
            torch.cat([torch.zeros_like(cuts[:, :1]), cuts], dim=1),
            torch.cat([live.view(-1, 1), cut_valid & live.view(-1, 1)], dim=1),
            A,
            alen,
            forcing_t,
        )
        J = self.fused(model, seqs, lp.cache, blocks) if s.impl == "fused" else self.naive(model, seqs, blocks)
        lp.cache = None
        span.mark()
        return lp, [H.float(), selected, cuts, cut_valid, J.float()], span


def _start_positions(requests: Sequence[ProbeRequest | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, response indices, segment slots) of every requested rollout's segment starts: where the fork
    entropies are read. Host long tensors."""
    rows, idx, slot = [], [], []
    for b, r in enumerate(requests):
        for s, start in enumerate(r.seg_starts if r is not None else ()):
            rows.append(b), idx.append(start), slot.append(s)
    return tuple(torch.tensor(x, dtype=torch.long) for x in (rows, idx, slot))


def _results(requests, H, selected, cuts, cut_valid, J) -> list[ProbeResult | None]:
    """Per-rollout results from the batch's host tensors (Python lists taken once for the batch:
    the loop runs after the sync, with the device idle)."""
    sel, cut, n_cuts, J_b = selected.tolist(), cuts.tolist(), cut_valid.sum(1).tolist(), J[:, 0].tolist()
    probes = []
    for b, req in enumerate(requests):
        if req is None:
            probes.append(None)
            continue
        n, m = len(req.seg_starts), n_cuts[b]
        probes.append(
            ProbeResult(H=H[b, :n], selected=sel[b][:n], cuts=cut[b][:m], J_b=J_b[b], J=J[b, 1 : 1 + m].clone())
        )
    return probes


def _segment_tensors(requests: Sequence[ProbeRequest | None]):
    """(starts, ends, valid) of every row's segments, padded to (B, S), on the host."""
    S = max([len(r.seg_starts) for r in requests if r is not None] + [1])
    starts = padded([r.seg_starts if r else () for r in requests], S, 0)
    ends = padded([r.seg_ends if r else () for r in requests], S, 0)
    valid = torch.arange(S).view(1, -1) < torch.tensor([len(r.seg_starts) if r else 0 for r in requests]).view(-1, 1)
    return starts, ends, valid


def _forced_tensors(requests: Sequence[ProbeRequest | None], F: int):
    """(forced cuts, valid) of every row, padded to (B, F), on the host."""
    forced = padded([r.forced_cuts if r else () for r in requests], F, 0)
    valid = torch.arange(F).view(1, -1) < torch.tensor([len(r.forced_cuts) if r else 0 for r in requests]).view(-1, 1)
    return forced, valid


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
