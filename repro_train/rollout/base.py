"""The rollout engine seam: what the loop asks of whatever samples the responses.

    engine = build_rollout_engine(cfg, ...)           # trainer/runtime.py: 'hf' (transformers generate) or 'vllm'
    engine.push_weights(version, params)              # before sampling: the policy's weights at `version`
    out = engine.sample(prompt_ids, group_size, seeds)  # token ids in, token ids (+ log-probs) out
    engine.release()                                  # before the forward and update phases: free memory
    engine.close()

The loop calls only these four methods and never asks which engine runs. Token ids travel both
ways (no detokenisation round trip); a response ends with its first EOS id, or is `max_new_tokens`
long without one. Seeds are one per prompt: a prompt's group then does not depend on which rank
samples it, nor on what else is in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

NamedTensors = Iterable[tuple[str, torch.Tensor]]
"""(Hugging Face parameter name, full tensor) pairs, yielded one at a time."""


@dataclass
class Rollouts:
    """Responses of one sample() call, in prompt order, G per prompt."""

    token_ids: list[list[list[int]]]
    """token_ids[i][g]: response g of prompt i, up to and including its first EOS id."""
    logprobs: list[list[list[float]]] | None = None
    """The engine's log-prob of each sampled token (after temperature), same layout; None when the
    engine does not report them ('hf')."""


class RolloutEngine(Protocol):
    """What the loop needs from a sampler; `hf.HFEngine` and `vllm.VLLMEngine` implement it."""

    name: str

    def push_weights(self, version: int, params: Callable[[], NamedTensors]) -> None:
        """Sample from the policy's weights at `version` (the trainer's optimizer-step count). Cheap
        when the engine holds them already; otherwise `params()` yields them one at a time (full
        tensors, Hugging Face names). Every rank calls it at the same point (gathers are collectives)."""

    def sample(self, prompts: Sequence[Sequence[int]], group_size: int, seeds: Sequence[int] | None) -> Rollouts:
        """`group_size` responses per prompt; `seeds` one per prompt (None: the global torch seed)."""

    def release(self) -> None:
        """Free the engine's memory for the forward and update phases (a no-op where nothing is held)."""

    def close(self) -> None:
        """Free everything; the engine is not used again."""


def trim_at_eos(row: Sequence[int], eos: set[int]) -> list[int]:
    """`row` up to and including its first EOS id (all of it when there is none)."""
    for i, t in enumerate(row):
        if t in eos:
            return list(row[: i + 1])
    return list(row)
