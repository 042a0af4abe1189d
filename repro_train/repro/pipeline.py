"""RePro for one batch of rollouts: plan (segments, answers) -> policy pass with the J probe ->
process advantages.

    repro = RePro(cfg.repro, tokenizer, fmt, temperature=cfg.rollout.temperature)   # fmt: core.text.ResponseFormat
    plan = repro.plan(response_ids, answers, correct)          # CPU: segmentation, skip reasons
    out = repro.policy_pass(model, seqs, plan.requests)         # per micro-batch: log-probs and J
    adv = repro.advantages(plan, out.probes, group_ids, R)      # (N, R) A_tilde and every score
    # the same as: s = repro.rewards(plan, out.probes); adv = repro.normalise(s, s.r, group_ids, R)

Nothing here knows which RL algorithm runs: the trainer folds `alpha * out.process_adv` into its estimator's
advantage (`scores.fold`). Degenerate rollouts get zero process advantage, stay out of the normalisation pools
and are counted in `out.skipped` by reason: docs/repro.md, "Degenerate rollouts never crash a step".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..core.text import ResponseFormat, TokenizerDecoder
from ..models.forward import Sequences
from .probe import ProbePass, ProbeRunner
from .scores import (
    magnitude,
    normalize_rewards,
    pool_stats,
    process_rewards,
    process_score,
    stability,
    token_process_advantages,
)
from .segment import Segmentation, segment_response
from .types import MCValues, ProbeRequest, ProbeResult

SKIP_REASONS = ("no_answer", "empty_answer_tokens", "no_segment", "zero_baseline", "apply_to", "truncated")


@dataclass
class Plan:
    """Per-rollout inputs of the probe, computed before any forward."""

    requests: list[ProbeRequest | None]
    segmentations: list[Segmentation | None]
    skip: list[str | None]
    """Skip reason per rollout (None = scored)."""


def merge_plans(parts: Sequence[tuple[Sequence[int], Plan]], n: int) -> Plan:
    """The plan of n rollouts put together from plans of its parts: (rows, the plan of those rows in that order)
    for a partition of range(n). `RePro.plan` treats each rollout alone, so the trainer's plan a micro-batch at a time
    merges to exactly the plan of the whole batch."""
    requests: list[ProbeRequest | None] = [None] * n
    segmentations: list[Segmentation | None] = [None] * n
    skip: list[str | None] = [None] * n
    covered = sorted(i for rows, _ in parts for i in rows)
    if covered != list(range(n)):
        raise ValueError(f"the parts' rows must cover 0..{n - 1} once each, got {covered}")
    for rows, p in parts:
        for j, i in enumerate(rows):
            requests[i], segmentations[i], skip[i] = p.requests[j], p.segmentations[j], p.skip[j]
    return Plan(requests, segmentations, skip)


@dataclass
class ReProOutput:
    """Every RePro quantity of a batch, padded to M = most cuts; zeros where `mask` is False."""

    process_adv: torch.Tensor
    """(N, R) A_tilde, the token process advantage (spec 11), over the batch's R response columns."""
    J_b: torch.Tensor
    """(N,) J with no reasoning; NaN for rollouts skipped before probing."""
    J: torch.Tensor
    cuts: torch.Tensor
    mask: torch.Tensor
    S_magn: torch.Tensor
    S_stab: torch.Tensor
    S: torch.Tensor
    r: torch.Tensor
    r_norm: torch.Tensor
    skipped: dict[str, int] = field(default_factory=dict)
    n_segments: list[int] = field(default_factory=list)
    mc: MCValues | None = None
    """Monte-Carlo values at the same cuts when the step rewards r are their increments (process.source: mc_value;
    repro/mc.py); None for J's rewards."""

    @property
    def scored(self) -> torch.Tensor:
        """(N,) True for rollouts that received a process advantage."""
        return self.mask.any(-1)


def first_token_id(tokenizer, text: str) -> int | None:
    """The first token id of `text` tokenized alone without special tokens (None for "" or no tokens):
    how the authors' code names `</think>` and its boundary strings."""
    ids = tokenizer(text, add_special_tokens=False).input_ids if text else []
    return ids[0] if ids else None


class RePro:
    """The RePro plug-in for one tokenizer; `cfg` is a `repro.config.ReProConfig`, `fmt` the model's EOS ids and
    end-of-thinking marker (`core.text.ResponseFormat`). `temperature` is the
    sampling temperature of phase 1's log-probs; `sync_calls` agrees the naive probe's number of
    forwards across ranks under ZeRO-3/FSDP (`ProbeRunner`)."""

    def __init__(
        self,
        cfg,
        tokenizer,
        fmt: ResponseFormat,
        temperature: float = 1.0,
        sync_calls: Callable[[int], int] | None = None,
    ):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.temperature = temperature
        pad_id = getattr(tokenizer, "pad_token_id", None)
        pad_id = pad_id if pad_id is not None else 0
        self.probe = ProbeRunner(cfg.probe, pad_id, sync_calls)
        self.decoder = TokenizerDecoder(tokenizer)
        # probe_scored 'all': the forcing text is scored too, tokenized with the answer as one string
        self.forcing_ids = (
            () if cfg.probe_scored == "all" else tuple(tokenizer(cfg.probe_prefix, add_special_tokens=False).input_ids)
        )
        self.think_end_id = first_token_id(tokenizer, fmt.think_end) if cfg.think_end_match == "first_token" else None
        self.boundary_ids = (
            None
            if cfg.boundary == "regex"
            else frozenset(i for i in (first_token_id(tokenizer, t) for t in cfg.boundary_tokens) if i is not None)
        )

    def answer_ids(self, answer) -> tuple[int, ...] | None:
        """Token ids q of the scored probe text (None when there is no answer): the formatted
        ground-truth answer, after probe_prefix when probe_scored = 'all' (spec 5)."""
        if answer is None or str(answer).strip() == "":
            return None
        text = self.cfg.probe_answer_format.replace("{answer}", str(answer).strip())
        if self.cfg.probe_scored == "all":
            text = self.cfg.probe_prefix + text
        return tuple(self.tokenizer(text, add_special_tokens=self.cfg.probe_special_tokens).input_ids)

    def request(self, seg: Segmentation, q: tuple[int, ...]) -> ProbeRequest | None:
        """The probe request of one segmented rollout (None: nothing to score). cut_at 'segment_end':
        every segment is a candidate and its cut is its end; 'fork': every segment but the first is a
        candidate and its cut is its start. force_think_end_cut adds seg.think_end_cut."""
        if self.cfg.cut_at == "fork":
            starts = ends = tuple(seg.starts[1:])
        else:
            starts, ends = seg.starts, seg.ends
        forced = (seg.think_end_cut,) if self.cfg.force_think_end_cut and seg.think_end_cut > 0 else ()
        if not starts and not forced:
            return None
        return ProbeRequest(starts, ends, q, forced)

    def plan(
        self,
        responses: Sequence[Sequence[int]],
        answers: Sequence[object],
        correct: Sequence[bool] | None = None,
        excluded: Sequence[bool] | None = None,
    ) -> Plan:
        """Segments and probe requests per rollout; `excluded` rollouts (the trainer's truncated ones under
        algo.mask_truncated) are skipped as 'truncated'."""
        rows, segs, skip = [], [], []
        for i, (y, a) in enumerate(zip(responses, answers)):
            reason, row, seg = None, None, None
            if excluded is not None and excluded[i]:
                reason = "truncated"
            elif (
                self.cfg.apply_to != "all"
                and correct is not None
                and bool(correct[i]) != (self.cfg.apply_to == "correct")
            ):
                reason = "apply_to"
            else:
                q = self.answer_ids(a)
                if q is None:
                    reason = "no_answer"
                elif len(q) == 0:
                    reason = "empty_answer_tokens"
                else:
                    seg = segment_response(
                        list(y),
                        self.decoder.decode,
                        self.fmt.think_end,
                        self.cfg.segment_delimiter,
                        self.fmt.eos_ids,
                        self.decoder.piece,
                        self.think_end_id,
                        self.boundary_ids,
                    )
                    row = self.request(seg, q)
                    if row is None:
                        reason = "no_segment"
            rows.append(row)
            segs.append(seg)
            skip.append(reason)
        return Plan(rows, segs, skip)

    def policy_pass(
        self,
        model,
        seqs: Sequences,
        requests: Sequence[ProbeRequest | None],
        head: str = "logits",
        logprobs: bool = True,
    ) -> ProbePass:
        """The policy pass of one micro-batch with J at the selected cuts of each requested rollout; `head` and
        `logprobs` as `ProbeRunner.run` takes them (logprobs False: only what selecting the cuts needs)."""
        return self.probe.run(model, seqs, requests, self.forcing_ids, self.cfg.top_k, self.temperature, head, logprobs)

    def advantages(
        self,
        plan: Plan,
        probes: Sequence[ProbeResult | None],
        group_ids: torch.Tensor | None,
        n_tokens: int,
        batch_stats: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> ReProOutput:
        """Scores, rewards, normalisation and token process advantages for the batch (spec 6-11).

        `batch_stats` all-reduces `pool_stats` across ranks when process_norm = 'batch'."""
        out = self.rewards(plan, probes)
        return self.normalise(out, out.r, group_ids, n_tokens, batch_stats)

    def rewards(self, plan: Plan, probes: Sequence[ProbeResult | None]) -> ReProOutput:
        """Scores and process rewards r of the batch (spec 6-9); r_norm is zero and process_adv empty, (N, 0),
        until `normalise` fills them. Every quantity of a rollout that is not scored is zero (mask False)."""
        c = self.cfg
        N = len(probes)
        skip = list(plan.skip)
        for i, p in enumerate(probes):
            if p is not None and p.J_b == 0.0:
                skip[i] = "zero_baseline"
        M = max([len(p.cuts) for i, p in enumerate(probes) if p is not None and skip[i] is None] + [1])
        J = torch.zeros(N, M, dtype=torch.float64)
        cuts = torch.zeros(N, M, dtype=torch.long)
        mask = torch.zeros(N, M, dtype=torch.bool)
        J_b = torch.full((N,), float("nan"), dtype=torch.float64)
        for i, p in enumerate(probes):
            if p is None:
                continue
            J_b[i] = p.J_b
            if skip[i] is None and p.cuts:
                m = len(p.cuts)
                J[i, :m] = p.J.double()
                cuts[i, :m] = torch.tensor(p.cuts)
                mask[i, :m] = True
        J_b_safe = torch.nan_to_num(J_b, nan=-1.0)
        S_magn = magnitude(J, J_b_safe, c.magnitude_eps, c.magnitude_form) * mask
        S_stab = stability(J, J_b_safe, c.stability_ema) * mask
        S = process_score(S_magn, S_stab, c.w, c.stability) * mask
        r = process_rewards(S, mask, c.w, c.first_step_baseline, c.stability)
        counts = Counter(s for s in skip if s is not None)
        return ReProOutput(
            process_adv=torch.zeros(N, 0),
            J_b=J_b,
            J=J,
            cuts=cuts,
            mask=mask,
            S_magn=S_magn,
            S_stab=S_stab,
            S=S,
            r=r,
            r_norm=torch.zeros_like(r),
            skipped={k: counts.get(k, 0) for k in SKIP_REASONS},
            n_segments=[len(s.starts) if s is not None else 0 for s in plan.segmentations],
        )

    def normalise(
        self,
        out: ReProOutput,
        r: torch.Tensor,
        group_ids: torch.Tensor | None,
        n_tokens: int,
        batch_stats: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> ReProOutput:
        """`out` with its per-step process rewards set to `r` (N, M) and normalised over RePro's pools into r'
        and A_tilde (spec 10-11): one path for J's rewards and for any other source of step rewards on the same
        cuts (repro/mc.py). `batch_stats` all-reduces `pool_stats` across ranks when process_norm = 'batch'."""
        c = self.cfg
        r = torch.where(out.mask, r, torch.zeros_like(r))
        stats = None
        if c.process_norm == "batch":
            stats = pool_stats(r, out.mask, c.norm_extra_zero)
            if batch_stats is not None:
                stats = batch_stats(stats)
        r_norm = normalize_rewards(
            r, out.mask, group_ids, c.process_norm, c.norm_eps, stats, c.norm_std, c.norm_extra_zero
        )
        adv = token_process_advantages(r_norm, out.cuts, out.mask, n_tokens).float()
        return replace(out, r=r, r_norm=r_norm, process_adv=adv)
