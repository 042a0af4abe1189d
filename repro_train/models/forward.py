"""Token log-probs and entropies of responses under a causal LM, the one forward every phase uses.

A batch of (prompt, response) pairs is packed with prompts left-padded and responses right-padded,
so response token t of every row sits at column P + t (P = widest prompt):

    seqs = pack(prompt_ids, response_ids, pad_id)
    out = forward_logprobs(model, seqs, temperature=1.0)   # out.logprobs, out.entropy: (B, R)

Only the logits that predict response tokens are computed (`logits_to_keep`), and the float32
log-softmax runs over chunks of positions, so peak memory is the model's own logits plus one chunk.
The same function serves the no-grad old-log-prob pass (optionally keeping the KV cache for the
fused RePro probe) and the update pass with gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


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

    @property
    def prompt_lens(self) -> torch.Tensor:
        return self.attention_mask[:, : self.prompt_width].sum(-1)

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    def select(self, rows: Sequence[int]) -> Sequences:
        """Rows `rows`, with padding columns no row of them uses cut off."""
        idx = torch.as_tensor(list(rows), dtype=torch.long, device=self.input_ids.device)
        att = self.attention_mask[idx]
        P = self.prompt_width
        left = int((att[:, :P].sum(-1)).max().item()) if len(rows) else 0
        right = int(self.response_mask[idx].sum(-1).max().item()) if len(rows) else 0
        right = max(right, 1)
        cols = slice(P - left, P + right)
        return Sequences(
            self.input_ids[idx, cols], att[:, cols], self.position_ids[idx, cols], left, self.response_mask[idx, :right]
        )

    def to(self, device) -> Sequences:
        return Sequences(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.prompt_width,
            self.response_mask.to(device),
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
    seqs = Sequences(ids, att, pos, P, att[:, P:].bool())
    return seqs.to(device) if device is not None else seqs


@dataclass
class LogprobOutput:
    logprobs: torch.Tensor
    """(B, R) float32 log pi(y_t | prefix) with the temperature applied; 0 on padding."""
    entropy: torch.Tensor | None
    """(B, R) float32 entropy of the distribution of y_t (temperature applied); 0 on padding."""
    cache: Any = None
    """The forward's KV cache when asked for (the fused probe reads it)."""
    values: torch.Tensor | None = None
    """(B, R) critic values V(s_t) of the state before response token t, when the model returns them."""


def logprobs_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, with_entropy: bool = True, chunk: int = 1024
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
                row_ent.append(logz - (torch.softmax(x, dim=-1) * x).sum(-1))
        lps.append(torch.cat(row_lp) if row_lp else logits.new_zeros(L, dtype=torch.float32))
        if with_entropy:
            ents.append(torch.cat(row_ent) if row_ent else logits.new_zeros(L, dtype=torch.float32))
    if B == 0:
        empty = logits.new_zeros((0, L), dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    return torch.stack(lps), (torch.stack(ents) if with_entropy else None)


def forward_logprobs(
    model,
    seqs: Sequences,
    temperature: float = 1.0,
    with_entropy: bool = True,
    use_cache: bool = False,
    chunk: int = 1024,
    **model_kw,
) -> LogprobOutput:
    """Log-probs (and entropies) of every response token in one forward of `model`.

    Extra keyword arguments go to the model (the trainer's actor-critic asks for values this way,
    so policy and critic share one forward per backward)."""
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
    lp, ent = logprobs_from_logits(logits, seqs.response_ids, temperature, with_entropy, chunk)
    mask = seqs.response_mask
    lp = lp.masked_fill(~mask, 0.0)
    if ent is not None:
        ent = ent.masked_fill(~mask, 0.0)
    values = out.get("state_values") if hasattr(out, "get") else None
    if values is not None:
        values = values[:, seqs.prompt_width - 1 : -1].float().masked_fill(~mask, 0.0)  # V before token t
    return LogprobOutput(lp, ent, out.past_key_values if use_cache else None, values)


def unwrap(model):
    """The module behind a wrapper that keeps it as `.module` (DDP, the trainer's PolicyView)."""
    return getattr(model, "module", model)


def logprob_pass(model, seqs: Sequences, temperature: float = 1.0, with_entropy: bool = True) -> LogprobOutput:
    """The old log-probs of a rollout batch: `forward_logprobs` under no_grad with the model in eval
    mode (no dropout), its train mode restored afterwards. The policy pass when RePro is off."""
    was_training = unwrap(model).training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            return forward_logprobs(model, seqs, temperature, with_entropy)
    finally:
        if was_training:
            model.train()
