"""Fused decoder ops for the trainer's passes (model.fused_ops): transformers' Llama-family layers run RMSNorm in
float32, the rotary embedding and the SiLU gate as separate kernels; fusing them saves memory traffic per token.

    check_fused_ops(cfg.model.fused_ops, on_gpu, model_type)   # at start-up, before any model loads
    apply_fused_ops(policy, cfg.model.fused_ops)               # once, on the loaded model

'compile': each decoder layer's forward goes through `torch.compile(dynamic=True)` (one graph for every layer and
sequence length), for calls without a KV cache only: the update, the KL reference pass, log-prob passes without
RePro. A call with a cache (generation, RePro's phase 1 and its model-forward fallback) runs the layer as loaded:
the cache's per-layer state would recompile the layer once per layer index, past dynamo's limit of 8. RePro's
layer-by-layer probe reads the weights and never calls a layer's forward, so its J is unchanged either way. 'liger':
Liger-Kernel's RMSNorm, rotary and SwiGLU patches (GPU only; they replace those classes and the rotary function in
transformers' modeling module for the whole process). docs/performance.md has the measurements.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import types

import torch
from torch import nn

from ..core.typed_config import ConfigError

FUSED_OPS = ("none", "compile", "liger")
LIGER_PIN = "liger-kernel==0.8.5"
"""The Liger-Kernel release checked here: BSD-2-Clause, pure Python + Triton, needs transformers >= 5."""
LIGER_PATCHES = {
    "llama": "apply_liger_kernel_to_llama",
    "mistral": "apply_liger_kernel_to_mistral",
    "qwen2": "apply_liger_kernel_to_qwen2",
    "qwen3": "apply_liger_kernel_to_qwen3",
}
"""model_type -> Liger's patch function (the architectures the probe's layer-by-layer path also covers)."""
CACHE_KWARGS = ("past_key_values", "past_key_value", "layer_past")
"""The names transformers' decoder layers take a KV cache under."""


def check_fused_ops(
    mode: str, on_gpu: bool, model_type: str | None = None, strategy: str = "auto", cxx: str | None = None
) -> None:
    """ConfigError for a model.fused_ops that cannot run here, before any model loads. `model_type`: the model
    folder's config.json model_type (None: not known yet; `apply_fused_ops` checks it). `strategy`: dist.strategy.
    `cxx`: the C++ compiler inductor uses on the CPU (None: $CXX or g++)."""
    if mode not in FUSED_OPS:
        raise ConfigError(f"'model.fused_ops' = {mode!r}: choose one of {', '.join(FUSED_OPS)}")
    if mode == "compile":
        if strategy == "zero3":
            raise ConfigError(
                "'model.fused_ops' = 'compile' is not supported under dist.strategy zero3 (ZeRO-3 gathers each "
                "projection's weight in hooks inside the layer, which torch.compile would have to trace; untested): "
                "use model.fused_ops liger or none, or dist.strategy zero2, ddp or fsdp2"
            )
        if on_gpu and not installed("triton"):
            raise ConfigError(
                "'model.fused_ops' = 'compile' needs Triton on the GPU (torch.compile's inductor writes Triton "
                "kernels): pip install triton, or set model.fused_ops: none"
            )
        cxx = cxx or os.environ.get("CXX") or "g++"
        if not on_gpu and shutil.which(cxx) is None:
            raise ConfigError(
                f"'model.fused_ops' = 'compile' on the CPU needs a C++ compiler for torch.compile's inductor ({cxx} "
                "was not found): install one (apt-get install g++, or set CXX), or set model.fused_ops: none"
            )
    if mode == "liger":
        if not on_gpu:
            raise ConfigError(
                "'model.fused_ops' = 'liger' needs a CUDA GPU (Liger-Kernel is Triton kernels): run on a GPU, or "
                "set model.fused_ops: compile or none"
            )
        if not installed("liger_kernel"):
            raise ConfigError(
                f"'model.fused_ops' = 'liger' but liger-kernel is not installed: pip install --no-deps {LIGER_PIN}, "
                "or set model.fused_ops: compile or none"
            )
        if model_type is not None and model_type not in LIGER_PATCHES:
            raise ConfigError(
                f"'model.fused_ops' = 'liger' covers model_type {', '.join(LIGER_PATCHES)}, not {model_type!r}; set "
                "model.fused_ops: compile or none"
            )


def installed(package: str) -> bool:
    """Whether `package` can be imported here (without importing it)."""
    return importlib.util.find_spec(package) is not None


def apply_fused_ops(model: nn.Module, mode: str, backend: str = "inductor") -> nn.Module:
    """`model` (a *ForCausalLM) with its decoder layers' ops fused as `mode` says, in place; returned for chaining.
    `backend`: torch.compile's backend for mode 'compile' (tests pass 'aot_eager': the same graphs, no codegen)."""
    if mode == "none":
        return model
    if mode == "compile":
        for layer in decoder_layers(model):
            if "forward" in vars(layer):
                raise ValueError(f"{type(layer).__name__} already has its own forward (fused ops applied twice?)")
            # bound to the layer, so a deep copy of the model rebinds it to the copy's layer
            layer.forward = types.MethodType(functools.partial(_cache_free_compiled, backend), layer)
        return model
    if mode == "liger":
        return _liger(model)
    raise ConfigError(f"'model.fused_ops' = {mode!r}: choose one of {', '.join(FUSED_OPS)}")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a *ForCausalLM (model.get_decoder().layers); ConfigError where there is no such list."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ConfigError(
            f"'model.fused_ops' = 'compile' needs a decoder with a list of layers (model.get_decoder().layers); "
            f"{type(model).__name__} has none: set model.fused_ops: none"
        )
    return layers


def _cache_free_compiled(backend: str, layer: nn.Module, *args, **kwargs):
    """The layer's forward: compiled for a call without a KV cache (hidden states the only positional argument, as
    transformers' decoders call their layers), as loaded otherwise."""
    forward = type(layer).forward  # the class's (with transformers' gradient checkpointing where it wraps forward)
    if len(args) > 1 or any(kwargs.get(k) is not None for k in CACHE_KWARGS):
        return forward(layer, *args, **kwargs)
    return _compiled(forward, backend)(layer, *args, **kwargs)


@functools.cache
def _compiled(forward, backend: str):
    """One compiled function per layer class and backend, shared by every layer: dynamo keeps one graph per grad mode
    and autocast state, with dynamic sizes (batch and sequence length), not one per layer or length."""
    return torch.compile(forward, dynamic=True, backend=backend)


def _liger(model: nn.Module) -> nn.Module:
    """Liger-Kernel's RMSNorm, rotary and SwiGLU on `model` (its own fused linear cross-entropy stays off: the
    trainer's log-prob head is models.logprobs)."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    check_fused_ops("liger", True, kind)
    import liger_kernel.transformers as lk

    patch = getattr(lk, LIGER_PATCHES[kind])
    patch(rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False, model=model)
    return model
