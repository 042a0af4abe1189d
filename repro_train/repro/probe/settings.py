"""The probe runner's settings: the `repro.probe:` section of a recipe.

These choose how J is computed, never what it is: every combination gives the same numbers (up to
floating-point rounding), which the tests check against the reference (`naive.py`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

Impl = Literal["fused", "naive"]
Forward = Literal["layers", "model"]
Attention = Literal["auto", "triton", "sdpa"]
IMPLS, FORWARDS, ATTENTIONS = typing.get_args(Impl), typing.get_args(Forward), typing.get_args(Attention)


@dataclass(frozen=True)
class ProbeSettings:
    """How the J probe runs (same numbers whatever is chosen; the runner behind `repro`)."""

    impl: Impl = "fused"
    """'fused': score all cut points in one extra forward over the log-prob pass's KV cache; 'naive': one
    teacher-forced sequence per cut point (reference)."""
    batch_size: int = 16
    """Naive probe only: teacher-forced sequences per forward."""
    forward: Forward = "layers"
    """Fused probe only: 'layers' runs the probe forward layer by layer with fused kernels (Llama, Mistral, Qwen2,
    Qwen3 with whole weights; other models, and ZeRO-3/FSDP2, fall back to 'model'); 'model': the model's own
    forward. Same numbers."""
    attention: Attention = "auto"
    """Fused probe, 'layers' forward only: 'triton' attends each probe block over exactly its prefix with the project's
    Triton kernel (CUDA); 'sdpa' uses SDPA with a mask over the whole cache; 'auto' = triton on a GPU with Triton
    installed, else sdpa. Same numbers."""
    cuda_graph: bool = True
    """Fused probe on the Triton path: replay phase 2 from a CUDA graph (captured on the second micro-batch of a shape,
    at most 4 kept per GPU; not under autocast, nor for a model whose projections are not plain nn.Linear), so its
    few hundred small kernels cost one launch. false: issue them one by one. Same numbers."""

    def __post_init__(self):
        if self.impl not in IMPLS:
            raise ValueError(f"probe impl must be 'fused' or 'naive', got {self.impl!r}")
        if self.forward not in FORWARDS:
            raise ValueError(f"probe forward must be 'layers' or 'model', got {self.forward!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"probe attention must be one of {ATTENTIONS}, got {self.attention!r}")
