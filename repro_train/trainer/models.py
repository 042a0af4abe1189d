"""Policy, critic and reference models.

The policy and (for PPO) the critic live in one `ActorCritic` module, so one distributed wrapper
(DDP, DeepSpeed engine, FSDP2) and one optimizer (with a parameter group per model) serve both,
and one forward gives log-probs and values for one backward. `PolicyView` lets the log-prob pass
and the RePro probe call the wrapped policy as if it were a plain Hugging Face model, so sharded
weights are gathered by the wrapper as usual.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..models.forward import HeadRequest, run_head
from ..models.loading import model_folder, quiet_transformers
from .dist import zero_


class ActorCritic(nn.Module):
    """policy(**kw) -> CausalLM output; with_values=True also puts critic values (B, L) under 'state_values'."""

    def __init__(self, policy: nn.Module, critic: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.critic = critic
        # FSDP2 auto-wrap (accelerate) shards the decoder layers it finds through this list.
        names = list(getattr(policy, "_no_split_modules", None) or [])
        names += [n for n in (getattr(critic, "_no_split_modules", None) or []) if n not in names]
        self._no_split_modules = names

    def forward(self, with_values: bool = False, values_only: bool = False, head: HeadRequest | None = None, **kw):
        """`head` given: the decoder and the fused log-prob head (`models.forward.run_head`), inside this forward so
        that a sharded wrapper (FSDP2) has the LM head's weight whole while it runs."""
        if values_only:
            return self._values(kw)
        out = run_head(self.policy, head, **kw) if head is not None else self.policy(**kw)
        if with_values:
            out["state_values"] = self._values(kw)  # not "values": that would shadow the dict method
        return out

    def _values(self, kw) -> torch.Tensor:
        if self.critic is None:
            raise RuntimeError("values were asked for but this run has no critic (algo.estimator != gae)")
        kw = {k: v for k, v in kw.items() if k in ("input_ids", "attention_mask", "position_ids")}
        return self.critic(**kw).logits.squeeze(-1)  # (B, L)


class PolicyView:
    """The policy behind a distributed wrapper of ActorCritic, usable where a HF model is expected."""

    runs_head = True
    """forward_logprobs(head="fused") passes its request through the wrapper (ActorCritic.forward)."""

    def __init__(self, wrapped, policy: nn.Module):
        self.wrapped = wrapped
        self.module = policy

    def __call__(self, **kw):
        return self.wrapped(**kw)

    @property
    def config(self):
        return self.module.config

    @property
    def training(self) -> bool:
        return self.module.training

    def eval(self):
        self.wrapped.eval()
        return self

    def train(self, mode: bool = True):
        self.wrapped.train(mode)
        return self


def load_critic(cfg_model, cfg_critic):
    """A token-level value model: the critic path's (or the policy's) weights with a 1-output head."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    path = model_folder(cfg_critic.path or cfg_model.path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=cfg_model.trust_remote_code)
    config.num_labels = 1
    config.classifier_dropout = 0.0  # values must not depend on train/eval mode
    with quiet_transformers(report=False):  # its load report lists the new head as MISSING: explained below
        critic, info = AutoModelForTokenClassification.from_pretrained(
            path,
            config=config,
            dtype=getattr(torch, cfg_model.dtype),
            output_loading_info=True,
            attn_implementation=cfg_model.attn_implementation,
            trust_remote_code=cfg_model.trust_remote_code,
            use_safetensors=True,
        )
    # A value head the checkpoint lacks starts at zero (V = 0 everywhere), not at random: a random
    # draw would depend on the device and strategy (under ZeRO-3 transformers initialises inside
    # DeepSpeed's partitioned init, on the GPU's RNG), so runs would not be comparable.
    missing = sorted(info.get("missing_keys", []))
    new = [p for n, p in critic.named_parameters() if n in set(missing)]
    if new:
        zero_(new)
    if int(os.environ.get("RANK", "0")) == 0:
        print(critic_report(cfg_critic.path or cfg_model.path, missing, sorted(info.get("unexpected_keys", []))))
    if cfg_model.gradient_checkpointing:
        critic.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return critic


def critic_report(source: str, missing: list[str], unused: list[str]) -> str:
    """One line on how the critic was built from a checkpoint (usually a language model's)."""
    line = f"critic: a value model from {source}"
    if missing:
        line += f" ({', '.join(missing)}: not in the checkpoint, starts at zero, V = 0)"
    if unused:
        shown = ", ".join(unused[:3]) + (f" and {len(unused) - 3} more" if len(unused) > 3 else "")
        line += f"; checkpoint tensors a value model has no use for: {shown}"
    return line
