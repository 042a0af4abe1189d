"""Set-up of a run: everything the loop needs, built once from the resolved config.

rt = build_runtime(cfg)      # accelerator, models, optimizer, data, rewards, RePro, logger, resume
...
rt.close()
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..algos.advantages import estimator_facts
from ..config import Config
from ..core.text import ResponseFormat, response_format
from ..core.typed_config import ConfigError
from ..data.datasets import PromptSampler, PromptSet, load_prompts
from ..data.validate import answer_checker
from ..models.forward import fused_head_supported
from ..models.fused_ops import check_fused_ops
from ..models.loading import (
    check_model_files,
    load_policy,
    load_reference,
    load_tokenizer,
    model_folder,
    model_type_at,
)
from ..repro.pipeline import RePro
from ..repro.probe.triton.launch import unavailable as triton_unavailable
from ..rewards import OutcomeReward, RewardSpec
from ..rollout.base import NamedTensors, RolloutEngine
from ..rollout.hf import HFEngine
from ..rollout.vllm import VLLMEngine, check_vllm, hf_name
from .dist import (
    Dist,
    build_accelerator,
    full_parameters,
    gather_full_weights_on_save,
    gathered_for_generation,
    prepare_frozen,
    set_seed,
)
from .inputs import check_finite_weights, check_tokenizer, prompt_room
from .models import ActorCritic, PolicyView, load_critic
from .watchdog import start_watchdog

if TYPE_CHECKING:  # heavy third-party libraries, imported where they are used
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase


@dataclass
class Runtime:
    """Everything the loop needs, built once by `build_runtime`."""

    cfg: Config
    acc: Accelerator
    dist: Dist
    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module
    """The distributed wrapper around ActorCritic (DDP, DeepSpeed's engine, FSDP2 module): what the update trains."""
    policy: PolicyView
    ref: torch.nn.Module | None
    """The frozen reference model (KL), None when algo.kl_coef = 0."""
    has_critic: bool
    optimizer: torch.optim.Optimizer
    """As prepared by accelerate (a wrapper of AdamW, or DeepSpeed's)."""
    scheduler: torch.optim.lr_scheduler.LRScheduler
    prompts: PromptSet
    sampler: PromptSampler
    reward: OutcomeReward
    repro: RePro | None
    """The RePro hook, None when RePro is off."""
    rollout: RolloutEngine
    """The sampler (rollout.engine), behind the seam of rollout/base.py."""
    response_format: ResponseFormat
    """EOS ids and the end-of-thinking marker (model.think_end): one source for every phase."""
    head: str
    """'fused' or 'logits': how log-probs are computed (algo.logprob_head resolved, `resolve_head`)."""
    on_policy: bool
    """The update's own detached log-probs are the old ones (algo.old_logprobs resolved, `is_on_policy`)."""
    pad_id: int
    out_dir: str
    start_step: int = 0
    optimizer_steps: int = 0

    def close(self) -> None:
        self.reward.close()
        self.rollout.close()
        if self.dist.watchdog is not None:
            self.dist.watchdog.stop()

    def policy_weights(self) -> NamedTensors:
        """The policy's parameters under their Hugging Face names, whole, one at a time (critic left out)."""
        for name, t in full_parameters(self.model, self.dist.strategy):
            hf = hf_name(name)
            if hf is not None:
                yield hf, t


def grad_accum_steps(cfg: Config, world: int) -> int:
    """Micro-batches per optimizer step on each rank."""
    batch = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    mini = cfg.algo.mini_batch_size or batch
    return mini // (world * cfg.algo.micro_batch_size)


def lr_lambda(cfg: Config, total_steps: int):
    warm, kind = cfg.optim.warmup_steps, cfg.optim.scheduler

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "constant" or total_steps <= warm:
            return 1.0
        frac = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 1.0 - frac if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))

    return f


def optimizer_steps_per_rl_step(cfg: Config) -> int:
    batch = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    return cfg.algo.update_epochs * (batch // (cfg.algo.mini_batch_size or batch))


def resolve_head(cfg: Config, strategy: str, policy) -> str:
    """algo.logprob_head for this run: 'auto' = fused unless ZeRO-3 (the head's weight is sharded outside its own
    module's forward) or a head that is not a plain linear layer (logit soft-capping or scaling)."""
    want = cfg.algo.logprob_head
    if want == "logits":
        return want
    why = "dist.strategy zero3 shards the LM head outside its forward" if strategy == "zero3" else None
    if why is None and not fused_head_supported(policy):
        why = f"{type(policy).__name__}'s LM head is not a plain linear layer"
    if why is not None and want == "fused":
        raise ConfigError(f"'algo.logprob_head' = 'fused' cannot run here: {why}; use 'auto' or 'logits'")
    return "logits" if why is not None else "fused"


def is_on_policy(cfg: Config) -> bool:
    """One update epoch over one mini-batch, KL not in the reward: the update's first (and only) pass sees the
    weights that sampled, so its detached log-probs are the old ones."""
    a = cfg.algo
    batch = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    one_step = a.update_epochs == 1 and (a.mini_batch_size or batch) == batch
    kl_in_reward = a.kl_coef > 0 and a.kl_mode == "reward"
    return a.old_logprobs == "auto" and one_step and not kl_in_reward


def check_probe_attention(cfg: Config, device) -> None:
    """'repro.probe.attention: triton' on a machine that cannot run it fails at start-up, not at the
    first policy pass."""
    rc = cfg.repro
    if rc.enabled and rc.probe.impl == "fused" and rc.probe.attention == "triton":
        why = triton_unavailable(device)
        if why is not None:
            raise ConfigError(f"'repro.probe.attention' = 'triton' cannot run here: {why}; use 'auto' or 'sdpa'")


def build_repro(cfg: Config, tok, fmt: ResponseFormat, d: Dist) -> RePro | None:
    """The RePro hook with its settings bound once (None when RePro is off)."""
    if not cfg.repro.enabled:
        return None
    return RePro(cfg.repro, tok, fmt, cfg.rollout.temperature, sync_calls=d.max_int if d.sharded else None)


AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
"""dist.mixed_precision -> the dtype the trainer's forward passes run in."""


def engine_dtype(cfg: Config) -> str:
    """The vllm engine's dtype: rollout.vllm.dtype, where 'auto' is the precision the trainer's forward
    runs in (the autocast dtype under dist.mixed_precision, else model.dtype). float32 master weights
    with bf16 autocast therefore sample in bf16, as verl, TRL and OpenRLHF do; the log-prob gap metric
    and rollout.is_correction absorb the rounding difference (docs/algorithms.md)."""
    if cfg.rollout.vllm.dtype != "auto":
        return cfg.rollout.vllm.dtype
    return AUTOCAST_DTYPES.get(cfg.dist.mixed_precision, cfg.model.dtype)


def build_rollout_engine(cfg: Config, acc, wrapper, eos: list[int], pad_id: int, longest_prompt: int) -> RolloutEngine:
    """The recipe's rollout engine for this process."""
    if cfg.rollout.engine == "hf":

        @contextlib.contextmanager
        def policy_for_generation():
            with gathered_for_generation(wrapper, acc) as ac:
                yield ac.policy

        return HFEngine(policy_for_generation, cfg.rollout, eos, pad_id, acc.device)
    dtype = engine_dtype(cfg)
    if acc.is_main_process:
        print(
            f"repro-train: rollout engine vllm samples in {dtype} (rollout.vllm.dtype {cfg.rollout.vllm.dtype}; "
            f"trainer weights {cfg.model.dtype}, dist.mixed_precision {cfg.dist.mixed_precision})",
            flush=True,
        )
    return VLLMEngine(
        model_folder(cfg.model.path),
        cfg.rollout,
        eos,
        longest_prompt + cfg.rollout.max_new_tokens,
        dtype,
        acc.process_index,
        acc.num_processes,
    )


def build_runtime(cfg: Config) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    on_gpu = torch.cuda.is_available() and cfg.train.device != "cpu"
    check_vllm(cfg.rollout, world, on_gpu)  # before any model loads
    check_fused_ops(cfg.model.fused_ops, on_gpu, model_type_at(model_folder(cfg.model.path)), cfg.dist.strategy)
    tok = load_tokenizer(cfg.model)
    check_tokenizer(tok, model_folder(cfg.model.path))
    # data errors (bad rows, missing columns, gold answers the reward cannot read) surface before any model loads
    prompts = load_prompts(cfg.data, tok, answer_checker(cfg.reward), prompt_room(cfg), cfg.rollout.max_new_tokens)
    check_model_files(model_folder(cfg.model.path))
    acc, d = _build_accelerator(cfg, world)
    policy = load_policy(cfg.model, tok)
    check_finite_weights(policy, model_folder(cfg.model.path))
    wrapped, optimizer, scheduler, has_critic = _build_models(cfg, policy, acc)
    ref = None
    if cfg.algo.kl_coef > 0:
        ref = prepare_frozen(load_reference(cfg.model), acc)
    unwrapped = acc.unwrap_model(wrapped)
    sampler = PromptSampler(len(prompts), cfg.train.seed, cfg.data.shuffle)
    acc.register_for_checkpointing(sampler)
    specs = [
        RewardSpec(name=f.name, weight=f.weight, kwargs=dict(f.kwargs), correctness=f.correctness)
        for f in cfg.reward.functions
    ]
    reward = OutcomeReward(
        specs, cfg.reward.num_workers, cfg.reward.timeout_s, cfg.reward.on_error, row_label=prompts.label
    )
    out_dir = cfg.train.output_dir  # written from trainer/run_folder.py on (config.yaml, logs, checkpoints)
    if d.is_main:
        os.makedirs(out_dir, exist_ok=True)
    fmt = response_format(policy, tok, cfg.model.think_end)
    rt = Runtime(
        cfg=cfg,
        acc=acc,
        dist=d,
        tokenizer=tok,
        model=wrapped,
        policy=PolicyView(wrapped, unwrapped.policy),
        ref=ref,
        has_critic=has_critic,
        optimizer=optimizer,
        scheduler=scheduler,
        prompts=prompts,
        sampler=sampler,
        reward=reward,
        repro=build_repro(cfg, tok, fmt, d),
        rollout=build_rollout_engine(
            cfg, acc, wrapped, list(fmt.eos_ids), tok.pad_token_id, max(len(p) for p in prompts.prompt_ids)
        ),
        response_format=fmt,
        head=resolve_head(cfg, d.strategy, policy),
        on_policy=is_on_policy(cfg),
        pad_id=tok.pad_token_id,
        out_dir=out_dir,
    )
    # Everything built so far lives as long as the run: keep it out of every garbage collection (the rollout
    # engine shares this Python thread, and full collections over the models' objects stall it).
    gc.collect()
    gc.freeze()
    return rt


def _build_accelerator(cfg: Config, world: int):
    """(accelerator, Dist) for the recipe's strategy, seeded; determinism switched on if asked."""
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if not torch.cuda.is_available():  # DeepSpeed (imported by accelerate) picks the CPU anyway, with a warning
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    acc = build_accelerator(
        cfg.dist.strategy,
        cfg.dist.mixed_precision,
        grad_accum_steps(cfg, world),
        cfg.algo.micro_batch_size,
        cfg.optim.grad_clip,
        cfg.train.device,
    )
    d = Dist(acc)
    if cfg.algo.max_tokens_per_micro_batch is not None and d.strategy in ("zero2", "zero3"):
        raise ConfigError(
            f"'algo.max_tokens_per_micro_batch' cannot run under DeepSpeed ({d.strategy}: its gradient accumulation "
            "is fixed at start-up); use algo.micro_batch_size, or dist.strategy ddp / fsdp2"
        )
    d.watchdog = start_watchdog(cfg.dist.collective_timeout_s, d)
    check_probe_attention(cfg, acc.device)
    set_seed(cfg.train.seed)
    if d.strategy == "zero3":
        gather_full_weights_on_save(acc)
    return acc, d


def _build_models(cfg: Config, policy, acc):
    """(the wrapped ActorCritic, optimizer, scheduler, has_critic): one optimizer with a parameter
    group per model, prepared by the accelerator; the scheduler is checkpointed with it."""
    has_critic = estimator_facts(cfg.algo.estimator).needs_critic
    critic = load_critic(cfg.model, cfg.critic) if has_critic else None
    model = ActorCritic(policy, critic)
    groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": cfg.optim.lr}]
    if critic is not None:
        groups.append({"params": [p for p in critic.parameters() if p.requires_grad], "lr": cfg.critic.lr})
    optimizer = torch.optim.AdamW(
        groups, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay
    )
    total = cfg.train.steps * optimizer_steps_per_rl_step(cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total))
    wrapped, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)
    return wrapped, optimizer, scheduler, has_critic
