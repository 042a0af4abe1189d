"""Token log-probs and entropies of responses under a causal LM, the one forward every phase uses.

A batch of (prompt, response) pairs is packed with prompts left-padded and responses right-padded, so response token
t of every row sits at column P + t (P = widest prompt):

    seqs = pack(prompt_ids, response_ids, pad_id)
    out = forward_logprobs(model, seqs, temperature=1.0, head="fused")   # out.logprobs, out.entropy: (B, R)

head "logits": the model's own LM head over the response positions (`logits_to_keep`), then a float32 log-softmax
a chunk at a time (`logprobs_from_logits`, the reference). head "fused": the decoder's hidden states at the real
response positions only, through `models.logprobs.token_logprobs`, which never keeps the logits (docs/performance.md).
`at=(rows, idx)` scores only the given (row, response index) pairs (RePro's fork entropies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .logprobs import token_logprobs


def index_on(rows, device) -> torch.Tensor:
    """A long index tensor of `rows` (a sequence or a host tensor) on `device`, copied without making the host wait
    for the device: a pageable host-to-device copy waits for the stream, a pinned non-blocking one does not."""
    t = torch.as_tensor(rows, dtype=torch.long)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclass
class Sequences:
    """Packed prompt + response token ids."""

    input_ids: torch.Tensor
    """(B, P + R) prompt left-padded to P columns, response right-padded to R columns."""
    attention_mask: torch.Tensor
    """(B, P + R) 1 on real tokens."""
    position_ids: torch.Tensor
    """(B, P + R) 0 at each row's first real token."""
    prompt_width: int
    """P: response token t of every row is at column P + t."""
    response_mask: torch.Tensor
    """(B, R) True on real response tokens."""
    prompt_lengths: tuple[int, ...] | None = None
    """Each row's prompt length, on the host (None: read from the device when needed)."""
    response_lengths: tuple[int, ...] | None = None
    """Each row's response length, on the host."""

    @property
    def prompt_lens(self) -> torch.Tensor:
        return self.attention_mask[:, : self.prompt_width].sum(-1)

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    def host_lengths(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(prompt lengths, response lengths) on the host: kept from `pack`, else read once (a device sync)."""
        if self.prompt_lengths is None or self.response_lengths is None:
            self.prompt_lengths = tuple(self.prompt_lens.tolist())
            self.response_lengths = tuple(self.response_mask.sum(-1).tolist())
        return self.prompt_lengths, self.response_lengths

    def select(self, rows: Sequence[int]) -> Sequences:
        """Rows `rows`, with padding columns no row of them uses cut off (widths from the host lengths: no sync)."""
        rows = list(rows)
        plens, rlens = self.host_lengths()
        pl, rl = tuple(plens[i] for i in rows), tuple(rlens[i] for i in rows)
        idx = index_on(rows, self.input_ids.device)
        P = self.prompt_width
        left = max(pl, default=0)
        right = max(max(rl, default=0), 1)
        cols = slice(P - left, P + right)
        return Sequences(
            self.input_ids[idx, cols],
            self.attention_mask[idx, cols],
            self.position_ids[idx, cols],
            left,
            self.response_mask[idx, :right],
            pl,
            rl,
        )

    def response_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, response indices) of every real response token, host long tensors in row order."""
        _, rlens = self.host_lengths()
        rows = torch.repeat_interleave(torch.arange(len(rlens)), torch.tensor(rlens, dtype=torch.long))
        idx = torch.cat([torch.arange(n) for n in rlens]) if rlens else torch.zeros(0, dtype=torch.long)
        return rows, idx

    def to(self, device) -> Sequences:
        return Sequences(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.prompt_width,
            self.response_mask.to(device),
            self.prompt_lengths,
            self.response_lengths,
        )


def pack(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, device: Any = None
) -> Sequences:
    """Left-pad prompts and right-pad responses into one (B, P + R) batch."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    P = max((len(p) for p in prompts), default=0)
    R = max(max((len(r) for r in responses), default=0), 1)
    B = len(prompts)
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    att = torch.zeros((B, P + R), dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        if len(p):
            ids[b, P - len(p) : P] = torch.as_tensor(list(p), dtype=torch.long)
            att[b, P - len(p) : P] = 1
        if len(r):
            ids[b, P : P + len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            att[b, P : P + len(r)] = 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    lengths = (tuple(len(p) for p in prompts), tuple(len(r) for r in responses))
    seqs = Sequences(ids, att, pos, P, att[:, P:].bool(), *lengths)
    return seqs.to(device) if device is not None else seqs


@dataclass
class LogprobOutput:
    logprobs: torch.Tensor
    """(B, R) float32 log pi(y_t | prefix) with the temperature applied; 0 on padding ((N,) with `at`)."""
    entropy: torch.Tensor | None
    """(B, R) float32 entropy of the distribution of y_t (temperature applied); 0 on padding ((N,) with `at`)."""
    cache: Any = None
    """The forward's KV cache when asked for (the fused probe reads it)."""
    values: torch.Tensor | None = None
    """(B, R) critic values V(s_t) of the state before response token t, when the model returns them."""


def logprobs_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = True,
    chunk: int = 1024,
    entropy_grad: bool = True,
):
    """Float32 log-softmax of `logits / temperature` gathered at `targets`, and entropy.

    logits (B, L, V) any dtype and layout (a sliced view is not copied), targets (B, L) ->
    (B, L) float32 each; `chunk` positions of one row at a time, so only one float32 chunk of
    vocab-sized rows exists at once."""
    B, L, _ = logits.shape
    lps, ents = [], []
    for b in range(B):
        row_lp, row_ent = [], []
        for s in range(0, L, chunk):
            x = logits[b, s : s + chunk].float()
            if temperature != 1.0:
                x = x / temperature
            logz = torch.logsumexp(x, dim=-1)
            row_lp.append(x.gather(-1, targets[b, s : s + chunk].unsqueeze(-1)).squeeze(-1) - logz)
            if with_entropy:
                with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):  # a metric: keep no graph
                    row_ent.append(logz - (torch.softmax(x, dim=-1) * x).sum(-1))
        lps.append(torch.cat(row_lp) if row_lp else logits.new_zeros(L, dtype=torch.float32))
        if with_entropy:
            ents.append(torch.cat(row_ent) if row_ent else logits.new_zeros(L, dtype=torch.float32))
    if B == 0:
        empty = logits.new_zeros((0, L), dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    return torch.stack(lps), (torch.stack(ents) if with_entropy else None)


HEADS = ("logits", "fused")


@dataclass
class HeadRequest:
    """Which hidden states the fused head scores: `cols` (N,) of rows `rows` (N,) predict `targets` (N,)."""

    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    temperature: float = 1.0
    with_entropy: bool = True


def fused_head_supported(model) -> bool:
    """Whether `run_head` computes what the model's own head does: a plain linear LM head over the decoder's output
    (no logit soft-capping or scaling)."""
    model = unwrap(model)
    cfg = getattr(model, "config", None)
    if not (hasattr(model, "get_decoder") and hasattr(model, "get_output_embeddings")) or cfg is None:
        return False
    scaled = [getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")]
    return all(v in (None, 1, 1.0) for v in scaled)


def run_head(causal_lm, head: HeadRequest, **kw) -> dict:
    """The decoder's forward, then the fused log-prob head at the requested positions: {"logprobs", "entropy"
    (N,) float32, "past_key_values"}. Called inside the trainer's wrapped forward (ActorCritic) so that sharded
    weights are whole while it runs, or directly on a plain Hugging Face model."""
    out = causal_lm.get_decoder()(**kw)
    h = out.last_hidden_state[head.rows, head.cols]  # (N, H)
    lm = causal_lm.get_output_embeddings()
    lp, ent = token_logprobs(h, lm.weight, head.targets, head.temperature, head.with_entropy, bias=lm.bias)
    return {"logprobs": lp, "entropy": ent, "past_key_values": out.past_key_values if kw.get("use_cache") else None}


def forward_logprobs(
    model,
    seqs: Sequences,
    temperature: float = 1.0,
    with_entropy: bool = True,
    use_cache: bool = False,
    chunk: int = 1024,
    head: str = "logits",
    at: tuple[torch.Tensor, torch.Tensor] | None = None,
    entropy_grad: bool = True,
    **model_kw,
) -> LogprobOutput:
    """Log-probs (and entropies) of every response token in one forward of `model`; with `at` = (rows, response
    indices) (host long tensors), of those tokens only, as flat (N,) tensors. `entropy_grad` False: the entropy is a
    metric only (detached; the logits path keeps no graph for it).

    Extra keyword arguments go to the model (the trainer's actor-critic asks for values this way, so policy and
    critic share one forward per backward)."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}: choose one of {HEADS}")
    if head == "fused":
        out = _fused_logprobs(model, seqs, temperature, with_entropy, use_cache, at, model_kw)
        if out.entropy is not None and not entropy_grad:
            out.entropy = out.entropy.detach()
        return out
    R = seqs.response_mask.shape[1]
    out = model(
        input_ids=seqs.input_ids,
        attention_mask=seqs.attention_mask,
        position_ids=seqs.position_ids,
        use_cache=use_cache,
        logits_to_keep=R + 1,
        **model_kw,
    )
    logits = out.logits[:, :-1]  # (B, R, V): column P - 1 + t predicts response token t
    lp, ent = logprobs_from_logits(logits, seqs.response_ids, temperature, with_entropy, chunk, entropy_grad)
    mask = seqs.response_mask
    lp = lp.masked_fill(~mask, 0.0)
    if ent is not None:
        ent = ent.masked_fill(~mask, 0.0)
    values = out.get("state_values") if hasattr(out, "get") else None
    if values is not None:
        values = values[:, seqs.prompt_width - 1 : -1].float().masked_fill(~mask, 0.0)  # V before token t
    if at is not None:
        rows, idx = (t.to(lp.device) for t in at)
        lp, ent = lp[rows, idx], (ent[rows, idx] if ent is not None else None)
    return LogprobOutput(lp, ent, out.past_key_values if use_cache else None, values)


def _fused_logprobs(model, seqs, temperature, with_entropy, use_cache, at, model_kw) -> LogprobOutput:
    """forward_logprobs with head "fused": the head runs on the real response positions only (or `at`)."""
    dev = seqs.input_ids.device
    rows, idx = at if at is not None else seqs.response_positions()
    rows_d, idx_d = index_on(rows, dev), index_on(idx, dev)
    P = seqs.prompt_width
    req = HeadRequest(rows_d, P - 1 + idx_d, seqs.input_ids[rows_d, P + idx_d], temperature, with_entropy)
    kw = dict(
        input_ids=seqs.input_ids,
        attention_mask=seqs.attention_mask,
        position_ids=seqs.position_ids,
        use_cache=use_cache,
        **model_kw,
    )
    out = model(head=req, **kw) if getattr(model, "runs_head", False) else run_head(unwrap(model), req, **kw)
    lp, ent = out["logprobs"], out["entropy"]
    mask = seqs.response_mask
    values = out.get("state_values")
    if values is not None:
        values = values[:, P - 1 : -1].float().masked_fill(~mask, 0.0)  # V before token t
    if at is None:  # back to (B, R), zeros on padding; differentiable (index_put)
        B, R = mask.shape
        lp = lp.new_zeros(B, R).index_put((rows_d, idx_d), lp)
        ent = ent.new_zeros(B, R).index_put((rows_d, idx_d), ent) if ent is not None else None
    return LogprobOutput(lp, ent, out.get("past_key_values"), values)


def unwrap(model):
    """The module behind a wrapper that keeps it as `.module` (DDP, the trainer's PolicyView)."""
    return getattr(model, "module", model)


def logprob_pass(
    model, seqs: Sequences, temperature: float = 1.0, with_entropy: bool = True, head: str = "logits"
) -> LogprobOutput:
    """The old log-probs of a rollout batch: `forward_logprobs` under no_grad with the model in eval
    mode (no dropout), its train mode restored afterwards (a model already in eval mode is left so).
    The policy pass when RePro is off."""
    was_training = unwrap(model).training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            return forward_logprobs(model, seqs, temperature, with_entropy, head=head)
    finally:
        if was_training:
            model.train()
