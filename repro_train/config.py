"""All configuration: typed, frozen dataclasses with their defaults and docs, `load` and `validate`.

A recipe is a YAML file whose sections map onto `Config`; `load(path, overrides)` builds it, checks
every key and type (unknown keys name the nearest valid one) and runs `validate`, which raises on
anything inconsistent instead of fixing it. Defaults live here once, documented by the string
under each field; `docs/recipes.md` is generated from these docstrings.

The RePro options follow `docs/spec/repro-method.md`: every choice the paper leaves open is a
named field whose default is the spec's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal

import yaml

from .algos.advantages import ESTIMATORS, estimator_facts, get_estimator
from .algos.kl import KL_ESTIMATORS
from .algos.losses import get_policy_loss
from .core.typed_config import ConfigError, apply_overrides, build, dump_yaml, to_dict
from .repro.config import ReProConfig, validate_repro
from .repro.presets import resolve_preset
from .shaping import ShapingConfig, validate_shaping
from .tasks.arithmetic import TaskConfig


@dataclass(frozen=True)
class ModelConfig:
    """The policy."""

    path: str = "toy"
    """A Hugging Face model folder (or hub name when online); 'toy' = the shipped tiny reasoner."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype as loaded (use dist.mixed_precision for autocast)."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    """Attention kernel; the fused RePro probe needs a custom 4D mask, which both support."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory on long responses)."""
    fused_ops: Literal["none", "compile", "liger"] = "none"
    """Fused decoder ops for the trainer's passes (models/fused_ops.py): 'compile' = torch.compile of each decoder
    layer, for calls without a KV cache (the update, the KL reference pass, log-prob passes without RePro; RePro's
    pass keeps a cache and runs as loaded); 'liger' = Liger-Kernel's RMSNorm, rotary and SwiGLU everywhere (GPU; pip
    install liger-kernel==0.8.5); 'none' = the model as loaded. Same math, other rounding; docs/performance.md."""
    trust_remote_code: bool = False
    """Allow model code from the model folder."""
    think_end: str = "</think>"
    """The end-of-thinking marker of the model's responses: where RePro's thinking span ends (spec 1), what the shapers'
    thinking length and the overthinking metrics count up to. Empty: no marker (the whole response is thinking)."""


@dataclass(frozen=True)
class DataConfig:
    """Prompts and ground-truth answers."""

    source: str = "toy"
    """'toy' (generated), a named dataset ('gsm8k-100', 'reasoning-gym:TASK?size=200&seed=1&...': `repro-train data
    list`), a local .jsonl/.json/.parquet/.csv file, or a datasets hub name (when online)."""
    split: str = "train"
    """Split of a hub dataset."""
    prompt_field: str = "prompt"
    """Column with raw prompt text (used as is)."""
    question_field: str = "question"
    """Column with a question, wrapped in the tokenizer's chat template when prompt_field is absent."""
    answer_field: str = "answer"
    """Column with the ground-truth answer (reward checking and RePro's J)."""
    system_prompt: str | None = None
    """System message placed before a question."""
    max_prompt_tokens: int = 1024
    """Prompts longer than this are dropped at start-up (and counted)."""
    on_bad_row: Literal["error", "skip"] = "error"
    """A bad row (unreadable line, invalid UTF-8, not an object, too large, missing/null/empty question or answer, a
    gold answer the correctness reward cannot parse): 'error' = refuse to start, naming the file, line and field;
    'skip' = drop it and count it (printed at start, logged as data/skipped/<reason>)."""
    max_row_bytes: int = 1_000_000
    """A line (row) of a local JSON/JSONL file longer than this is a bad row ('too_large')."""
    shuffle: bool = True
    """Reshuffle the prompts every epoch (seeded by train.seed and the epoch)."""
    toy: TaskConfig = field(default_factory=TaskConfig)
    """The toy task's difficulty knobs, when source = 'toy'."""
    toy_size: int = 2000
    """Problems in the generated toy training set."""
    toy_seed: int = 1234
    """Seed of the generated toy problems (evaluation sets use other seeds)."""


@dataclass(frozen=True)
class VLLMConfig:
    """The `vllm` rollout engine (rollout.engine: vllm): vLLM in-process in every training process."""

    tensor_parallel_size: int = 1
    """Ranks per engine: consecutive ranks form one tensor-parallel engine; must divide the number of processes."""
    gpu_memory_utilization: float = 0.3
    """Share of each GPU's memory vLLM may take (weights + KV cache); the trainer needs the rest unless the engine
    sleeps."""
    sleep_level: Literal[0, 1, 2] = 0
    """0 = keep the engine's memory during scoring and updates; 1 = weights to CPU, KV cache freed; 2 = both freed
    (weights pushed again)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The engine's weights' dtype: 'auto' = the precision the trainer's forward runs in, i.e. the autocast dtype
    under dist.mixed_precision (bf16 -> bfloat16, fp16 -> float16), else model.dtype."""
    cuda_graphs: bool = True
    """Capture CUDA graphs for decoding (false = eager, starts faster, decodes slower)."""
    max_num_seqs: int = 256
    """Most sequences decoded at once."""
    max_num_batched_tokens: int = 8192
    """Most tokens per engine step (prefill chunks)."""
    kv_cache_gb: float | None = None
    """A fixed KV cache of this many GiB instead of the share of memory left after a start-up measurement (null).
    Several engines starting on one GPU at once measure each other's allocations; a fixed size does not (vLLM's
    kv_cache_memory_bytes; gpu_memory_utilization must still be free at start)."""


@dataclass(frozen=True)
class RolloutConfig:
    """Sampling the responses."""

    engine: Literal["hf", "vllm"] = "hf"
    """Sampler: 'hf' (transformers generate with the trained model; CPU or GPU) or 'vllm' (GPU; rollout.vllm)."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """Options of the vllm engine."""
    is_correction: Literal["none", "token_tis", "sequence_mask"] = "token_tis"
    """Correction for the engine's sampler differing from the trainer (docs/algorithms.md); used only when the engine
    reports log-probs."""
    is_cap: float = 2.0
    """token_tis: the cap C on each token's weight; sequence_mask: sequences whose ratio is outside [1/C, C] are
    dropped."""

    prompts_per_step: int = 8
    """Prompts per RL step, over all ranks (divisible by the number of ranks)."""
    group_size: int = 8
    """G: responses sampled per prompt (all on one rank)."""
    max_new_tokens: int = 256
    """Longest response; longer ones are truncated (no EOS)."""
    min_new_tokens: int = 0
    """Shortest response (EOS is masked before it); benchmarks set it to max_new_tokens for fixed lengths."""
    temperature: float = 1.0
    """Sampling temperature; also applied to the log-probs and fork entropies."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    generation_batch_size: int = 64
    """Sequences per generate() call on each rank."""
    per_prompt_seed: bool = False
    """Seed each prompt's sampling from (train.seed, step, prompt index): rollouts then do not depend on the number of
    ranks (slower: one generate call per prompt)."""
    dynamic_sampling: Literal["off", "outcome", "signal"] = "off"
    """Replace prompt groups that carry no learning signal with fresh prompts (DAPO's dynamic sampling;
    docs/algorithms.md): 'outcome' drops a group whose G outcome rewards are all equal; 'signal' drops it only when
    RePro's process advantage is zero on all its tokens as well (RePro on). Group-relative estimators only."""
    refill_rounds: int = 3
    """dynamic_sampling: most extra generation rounds per step; groups still without signal after them stay in the
    batch (they add nothing to the gradient)."""
    overlap_cpu_tail: bool = True
    """Decode the responses, run the outcome rewards and RePro's plan on background threads while the GPU runs the
    forward phase's passes; the batch is bit-identical either way. false = all on the main thread, in order (a
    fallback). What overlaps and what cannot: docs/performance.md, "The CPU tail"."""


@dataclass(frozen=True)
class RewardFnConfig:
    """One outcome reward function."""

    name: str = "math_verify"
    """A built-in (math_verify, exact_match, numeric, last_number, format, reasoning_gym) or an import path
    'pkg.mod:fn' / 'file.py:fn'."""
    weight: float = 1.0
    """Weight in the total outcome reward."""
    kwargs: dict = field(default_factory=dict)
    """Options of the function."""
    correctness: bool | None = None
    """Counts as the correctness check (accuracy, RePro apply_to); null = the built-in's default."""


@dataclass(frozen=True)
class RewardConfig:
    """Outcome rewards: the weighted sum of the functions."""

    functions: tuple[RewardFnConfig, ...] = (RewardFnConfig(),)
    """Reward functions, e.g. [{name: math_verify}, {name: format, weight: 0.1}]."""
    num_workers: int = 2
    """Worker processes for answer checking."""
    timeout_s: float = 5.0
    """Deadline in seconds: math_verify's per answer (a timed-out answer scores None, counted as unscorable); every
    other function's per call (one call scores this rank's batch): a call still running is stopped, a fault that
    reward.on_error handles."""
    on_error: Literal["error", "skip"] = "error"
    """A reward function that raises, returns a value that is not a finite number or None, or runs past timeout_s:
    'error' = stop the run naming the function, the row (file and line, prompt and response excerpts) and where it
    was; 'skip' = score those rows None (0) and count them (logged as reward/errors, reward/timeouts)."""


@dataclass(frozen=True)
class AlgoConfig:
    """The RL algorithm: advantage estimator, policy loss, KL and entropy terms, update schedule."""

    estimator: str = "grpo"
    """Advantage estimator: grpo, gae (PPO, needs the critic), reinforce_pp, reinforce_pp_baseline, rloo."""
    grpo_std_norm: bool = True
    """GRPO: divide by the group std (false = Dr. GRPO)."""
    gamma: float = 1.0
    """Discount (gae, reinforce_pp)."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """gae: whiten the advantages over the batch."""
    policy_loss: str = "ppo_clip"
    """Policy loss (registered name)."""
    clip_low: float = 0.2
    """PPO ratio clip: lower bound 1 - clip_low."""
    clip_high: float = 0.2
    """PPO ratio clip: upper bound 1 + clip_high (0.28 = DAPO's clip-higher)."""
    dual_clip: float | None = 3.0
    """Dual-clip constant c (> 1): a token with a negative advantage loses at most -c * A (verl's clip_ratio_c,
    always on); null = off (TRL, OpenRLHF). Inert while ratios stay below c."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How per-token losses become one number (seq-mean-token-sum-norm = Dr. GRPO)."""
    kl_coef: float = 0.0
    """KL to the reference (initial) policy; 0 = no reference model is loaded."""
    kl_estimator: str = "k3"
    """KL estimator: k1, k2, k3 (low-variance), abs."""
    kl_mode: Literal["loss", "reward"] = "loss"
    """Add the KL as a loss term, or subtract it from the per-token reward."""
    entropy_coef: float = 0.0
    """Entropy bonus weight."""
    update_epochs: int = 1
    """Passes over each batch of rollouts."""
    mini_batch_size: int | None = None
    """Rollouts per optimizer step, over all ranks; null = the whole batch (one step per epoch)."""
    micro_batch_size: int = 8
    """Rollouts per forward/backward on each rank (gradient accumulation), when max_tokens_per_micro_batch is null."""
    max_tokens_per_micro_batch: int | None = None
    """Micro-batches by a token budget instead of micro_batch_size: rows sorted by length and packed so that rows x
    (longest prompt + longest response) stays within it (a longer row goes alone). Less padding, and long responses
    fit. Null = micro_batch_size rows. Not with DeepSpeed (dist.strategy zero2/zero3 fix gradient accumulation at
    start-up). Activations grow with it: a 1.5B model without gradient checkpointing, float32 weights, bf16 autocast
    and vLLM at 30% of an 80 GB H100 peaked at 52 GiB at 4,096 and ran out of memory at 8,192 (docs/performance.md,
    section 6); longer budgets want model.gradient_checkpointing."""
    logprob_head: Literal["auto", "fused", "logits"] = "auto"
    """How log-probs and entropies are computed: 'fused' from the LM head's input a chunk of positions at a time,
    never keeping the logits (models/logprobs.py); 'logits' through the model's own head and a float32 log-softmax
    (the reference); 'auto' = fused where the head's weight is whole while the model runs (not ZeRO-3) and the head
    is a plain linear layer."""
    old_logprobs: Literal["auto", "recompute"] = "auto"
    """'auto': when the step is on-policy (update_epochs 1, one mini-batch, KL not in the reward), the old log-probs
    are the update's own detached ones and no separate pass computes them (RePro's pass keeps only its KV cache and
    fork entropies); 'recompute': always a separate no-grad pass first."""
    value_clip: float | None = 0.2
    """PPO value-loss clip; null = unclipped."""
    vf_coef: float = 1.0
    """Weight of the value loss (PPO)."""
    mask_truncated: bool = False
    """Leave responses cut at rollout.max_new_tokens (no EOS) out of the loss and its normalisers, and out of RePro's
    pools (DAPO's overlong filtering; counted as loss/excluded). Their rewards still enter their group's baseline."""


@dataclass(frozen=True)
class CriticConfig:
    """The value model (PPO, estimator = gae)."""

    path: str | None = None
    """Folder of the critic's initial weights; null = the policy's weights with a new value head."""
    lr: float = 1e-5
    """Critic learning rate."""


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate schedule (policy)."""

    lr: float = 1e-6
    """Policy learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, ...] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW eps."""
    grad_clip: float = 1.0
    """Clip the global gradient norm (0 = off)."""
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule after warm-up (over train.steps)."""
    warmup_steps: int = 0
    """Linear warm-up, in optimizer steps."""


@dataclass(frozen=True)
class DistConfig:
    """How the model is spread over processes."""

    strategy: Literal["auto", "ddp", "zero2", "zero3", "fsdp2"] = "auto"
    """'auto' = what `accelerate launch --config_file` set up (plain DDP under torchrun); or force one."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision for forward passes."""
    collective_timeout_s: float = 1800.0
    """A collective (all-reduce, barrier, the backward's gradient all-reduce) still waiting after this many seconds
    dumps every rank's Python stack and ends the run with exit code 4 instead of hanging; 0 = wait forever. Leave
    room for the main rank writing a checkpoint while the others wait."""


@dataclass(frozen=True)
class TrainConfig:
    """Run length, seeds, checkpoints."""

    steps: int = 100
    """RL steps (each: rollouts of rollout.prompts_per_step prompts, then the updates)."""
    seed: int = 0
    """Seed of everything (data order, sampling, initialisation)."""
    output_dir: str = "runs/default"
    """Run folder: checkpoints, metrics.jsonl, samples, resolved config."""
    save_every: int = 50
    """Checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_last: int = 2
    """Checkpoints kept (older ones are deleted)."""
    resume: str | None = None
    """'auto' = the latest checkpoint in output_dir (none yet: start at step 1), a checkpoint folder, or null = a new
    run (refused when output_dir holds another run's files, unless train.overwrite)."""
    resume_changes: Literal["refuse", "allow"] = "refuse"
    """A resume whose settings differ from the checkpoint's in what they train (optimizer, batch shape, algorithm,
    model, data, rewards, RePro): 'refuse' names each changed key and stops; 'allow' applies them from the next step,
    printed and recorded in <output_dir>/resumes.jsonl."""
    overwrite: bool = False
    """A new run (train.resume null) into an output_dir that holds another run: remove that run's files first
    (checkpoints, metrics, samples, config.yaml, wandb; nothing else). False = refuse and say how to proceed."""
    keep_optimizer_state_last: int = 1
    """Checkpoints that keep the trainer state resume needs (optimizer moments, full-precision weights, RNG) in
    state/: the newest N; older kept ones hold only policy/ (the model). 2 keeps a resumable fallback in case the
    newest is damaged."""
    time_limit_s: float = 0.0
    """Stop after the first step that ends this many seconds after the run started (loading included), with a
    checkpoint, as SIGUSR1 would (exit code 75, resumable); 0 = no limit. A lent machine's time limit."""
    max_bad_steps: int = 3
    """A step whose rewards, log-probs, J, advantages, loss or gradient norm are not finite is not applied (logged as
    guard/nonfinite/<where>); after this many such steps in a row the run writes a checkpoint (the last good
    weights) and stops. 0 = never stop."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms (exact-resume tests)."""
    device: str = "auto"
    """'auto' (GPU if any), 'cpu' or 'cuda'."""


@dataclass(frozen=True)
class LogConfig:
    """Metrics and samples."""

    wandb: bool = True
    """Log to Weights & Biases (offline when no key is configured)."""
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """'auto' = online with a key (WANDB_API_KEY or netrc), offline otherwise."""
    project: str = "repro-train"
    """wandb project."""
    run_name: str | None = None
    """wandb run name (default: the output folder's name)."""
    sample_rollouts: int = 4
    """Rollouts per step written to the samples table."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = False
    """Also write every step's scalars (those wandb gets) as TensorBoard events in the run folder's `tensorboard/`;
    open them with `tensorboard --logdir RUN_FOLDER/tensorboard`."""


@dataclass(frozen=True)
class ProcessConfig:
    """Where the process reward of a step comes from; RePro's cuts, pools, alpha and fold serve either source
    (docs/repro.md, "Monte-Carlo step values")."""

    source: Literal["repro", "mc_value"] = "repro"
    """'repro': RePro's score increments from J, one forward (spec 6-9). 'mc_value': the increment of the
    Monte-Carlo value V(c) = share of process.mc_continuations continuations from the cut's prefix that the outcome
    reward marks correct (rStar-Math, Math-Shepherd), sampled with the rollout engine at each of RePro's cuts and at
    the prompt; then normalised and folded as RePro's (repro.process_norm, repro.alpha, repro.ppo_process_reward).
    Needs repro.enabled."""
    mc_continuations: int = 8
    """K: continuations sampled from each distinct prefix (process.source: mc_value), with the rollout section's
    sampling settings, each cut to the rollout's own budget (rollout.max_new_tokens minus the prefix)."""


@dataclass(frozen=True)
class Config:
    """A whole recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    repro: ReProConfig = field(default_factory=ReProConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


def validate(cfg: Config, world_size: int = 1) -> None:
    """Raise ConfigError on anything inconsistent; never fixes values."""
    validate_repro(cfg.repro)
    _validate_rollout(cfg)
    _validate_batch_split(cfg, world_size)
    _validate_algo(cfg)
    _validate_optim_reward_train(cfg)
    validate_shaping(cfg.shaping, cfg.rollout.max_new_tokens)
    _validate_process(cfg)


def _validate_rollout(cfg: Config) -> None:
    """Counts >= 1 and the sampling settings."""
    ro, algo = cfg.rollout, cfg.algo
    for key, val in [
        ("rollout.prompts_per_step", ro.prompts_per_step),
        ("rollout.group_size", ro.group_size),
        ("rollout.max_new_tokens", ro.max_new_tokens),
        ("rollout.generation_batch_size", ro.generation_batch_size),
        ("algo.micro_batch_size", algo.micro_batch_size),
        (
            "algo.max_tokens_per_micro_batch",
            1 if algo.max_tokens_per_micro_batch is None else algo.max_tokens_per_micro_batch,
        ),
        ("algo.update_epochs", algo.update_epochs),
        ("train.steps", cfg.train.steps),
        ("data.max_prompt_tokens", cfg.data.max_prompt_tokens),
        ("reward.num_workers", cfg.reward.num_workers),
    ]:
        if val < 1:
            raise ConfigError(f"'{key}' must be >= 1, got {val}")
    if not 0 <= ro.min_new_tokens <= ro.max_new_tokens:
        raise ConfigError(
            f"'rollout.min_new_tokens' must be in [0, rollout.max_new_tokens = {ro.max_new_tokens}], "
            f"got {ro.min_new_tokens}"
        )
    if cfg.train.time_limit_s < 0:
        raise ConfigError(f"'train.time_limit_s' must be >= 0 (0 = no limit), got {cfg.train.time_limit_s}")
    if ro.temperature <= 0:
        raise ConfigError(f"'rollout.temperature' must be > 0, got {ro.temperature}")
    if not 0 < ro.top_p <= 1:
        raise ConfigError(f"'rollout.top_p' must be in (0, 1], got {ro.top_p}")
    if ro.is_cap <= 1.0:
        raise ConfigError(f"'rollout.is_cap' must be > 1 (a cap on importance weights), got {ro.is_cap}")
    for key, val in [
        ("rollout.vllm.tensor_parallel_size", ro.vllm.tensor_parallel_size),
        ("rollout.vllm.max_num_seqs", ro.vllm.max_num_seqs),
        ("rollout.vllm.max_num_batched_tokens", ro.vllm.max_num_batched_tokens),
    ]:
        if val < 1:
            raise ConfigError(f"'{key}' must be >= 1, got {val}")
    _validate_dynamic_sampling(cfg)
    if algo.estimator in ESTIMATORS and estimator_facts(algo.estimator).group_relative and ro.group_size < 2:
        raise ConfigError(
            f"'rollout.group_size' must be >= 2 for algo.estimator = {algo.estimator} "
            f"(it compares rollouts of one prompt), got {ro.group_size}"
        )


def _validate_dynamic_sampling(cfg: Config) -> None:
    """Dynamic sampling judges a group by its own rewards: a group-relative estimator (and RePro for 'signal')."""
    ro = cfg.rollout
    if ro.refill_rounds < 0:
        raise ConfigError(f"'rollout.refill_rounds' must be >= 0, got {ro.refill_rounds}")
    if ro.dynamic_sampling == "off":
        return
    if cfg.algo.estimator in ESTIMATORS and not estimator_facts(cfg.algo.estimator).group_relative:
        group = [n for n in ESTIMATORS if estimator_facts(n).group_relative]
        raise ConfigError(
            f"'rollout.dynamic_sampling' = {ro.dynamic_sampling} needs a group-relative algo.estimator (one of "
            f"{', '.join(group)}), got {cfg.algo.estimator}: set rollout.dynamic_sampling=off"
        )
    if ro.dynamic_sampling == "signal" and not cfg.repro.enabled:
        raise ConfigError(
            "'rollout.dynamic_sampling' = signal reads RePro's process advantage: set repro.enabled=true, "
            "or use rollout.dynamic_sampling=outcome"
        )


def _validate_batch_split(cfg: Config, world_size: int) -> None:
    """The step's batch splits into ranks (whole prompt groups), mini-batches and micro-batches."""
    ro, algo = cfg.rollout, cfg.algo
    if ro.prompts_per_step % world_size:
        ok = [n for n in range(world_size, 4 * world_size + 1, world_size)]
        raise ConfigError(
            f"'rollout.prompts_per_step' = {ro.prompts_per_step} is not divisible by the {world_size} "
            f"ranks (a prompt's group stays on one rank); use a multiple of {world_size}, e.g. {ok}"
        )
    batch = ro.prompts_per_step * ro.group_size
    mini = algo.mini_batch_size if algo.mini_batch_size is not None else batch
    if mini < 1 or batch % mini:
        divisors = [d for d in range(ro.group_size, batch + 1, ro.group_size) if batch % d == 0]
        raise ConfigError(
            f"'algo.mini_batch_size' = {mini} must divide the batch of rollout.prompts_per_step * "
            f"rollout.group_size = {batch} rollouts; valid values include {divisors}"
        )
    if mini % (world_size * algo.micro_batch_size):
        what = (
            f"'algo.mini_batch_size' = {mini} rollouts"
            if algo.mini_batch_size is not None
            else f"the batch of rollout.prompts_per_step * rollout.group_size = {mini} rollouts "
            "(algo.mini_batch_size is null)"
        )
        divisors = (
            [m for m in range(1, mini // world_size + 1) if (mini // world_size) % m == 0]
            if mini % world_size == 0
            else []
        )
        raise ConfigError(
            f"{what} must split evenly into {world_size} rank(s) x 'algo.micro_batch_size' = {algo.micro_batch_size}; "
            f"set algo.micro_batch_size to one of {divisors or 'the divisors of its per-rank share'} "
            f"or make the (mini-)batch a multiple of {world_size * algo.micro_batch_size}"
        )


def _validate_algo(cfg: Config) -> None:
    """Registered names and the loss's coefficients."""
    algo = cfg.algo
    try:
        get_estimator(algo.estimator)
        get_policy_loss(algo.policy_loss)
    except (ValueError, KeyError) as e:
        key = "algo.estimator" if algo.estimator in str(e) else "algo.policy_loss"
        raise ConfigError(f"'{key}': {e}") from None
    if algo.kl_estimator not in KL_ESTIMATORS:
        raise ConfigError(f"'algo.kl_estimator' must be one of {', '.join(KL_ESTIMATORS)}, got {algo.kl_estimator!r}")
    if algo.kl_coef < 0 or algo.entropy_coef < 0:
        raise ConfigError("'algo.kl_coef' and 'algo.entropy_coef' must be >= 0")
    if not 0 <= algo.clip_low < 1 or algo.clip_high < 0:
        raise ConfigError(
            f"'algo.clip_low' must be in [0, 1) and 'algo.clip_high' >= 0, got {algo.clip_low}, {algo.clip_high}"
        )
    if algo.dual_clip is not None and algo.dual_clip <= 1:
        raise ConfigError(f"'algo.dual_clip' must be > 1 (or null), got {algo.dual_clip}")
    if not (0 <= algo.gamma <= 1 and 0 <= algo.lam <= 1):
        raise ConfigError("'algo.gamma' and 'algo.lam' must be in [0, 1]")
    if (
        not estimator_facts(algo.estimator).needs_critic
        and cfg.repro.ppo_process_reward != "advantage"
        and cfg.repro.enabled
    ):
        raise ConfigError(
            f"'repro.ppo_process_reward' = {cfg.repro.ppo_process_reward} needs algo.estimator = gae "
            "(PPO); "
            "use 'advantage' for the other estimators"
        )


def _validate_optim_reward_train(cfg: Config) -> None:
    """Optimiser, reward functions, resume and the toy data's size."""
    if cfg.optim.lr <= 0 or cfg.critic.lr <= 0:
        raise ConfigError("'optim.lr' and 'critic.lr' must be > 0")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"'optim.betas' must be two numbers, got {list(cfg.optim.betas)}")
    if not cfg.reward.functions:
        raise ConfigError("'reward.functions' must list at least one reward function")
    if cfg.reward.timeout_s <= 0:
        raise ConfigError(f"'reward.timeout_s' must be > 0, got {cfg.reward.timeout_s}")
    if cfg.train.resume not in (None, "auto") and not cfg.train.resume.strip():
        raise ConfigError("'train.resume' must be 'auto', a checkpoint folder, or null")
    check_resume_folder(cfg.train.resume)
    if not 0 <= cfg.train.seed < 2**32:  # numpy's seed range (set_seed seeds numpy too)
        raise ConfigError(f"'train.seed' must be in [0, 2**32 - 1], got {cfg.train.seed}")
    if cfg.dist.collective_timeout_s < 0:
        raise ConfigError(f"'dist.collective_timeout_s' must be >= 0 (0 = off), got {cfg.dist.collective_timeout_s}")
    if cfg.train.keep_optimizer_state_last < 1:
        raise ConfigError(
            f"'train.keep_optimizer_state_last' must be >= 1 (a resume needs the newest checkpoint's state), got "
            f"{cfg.train.keep_optimizer_state_last}"
        )
    if cfg.train.max_bad_steps < 0:
        raise ConfigError(f"'train.max_bad_steps' must be >= 0 (0 = never stop), got {cfg.train.max_bad_steps}")
    if cfg.data.max_row_bytes < 1:
        raise ConfigError(f"'data.max_row_bytes' must be >= 1, got {cfg.data.max_row_bytes}")
    if cfg.data.source == "toy" and cfg.data.toy_size < cfg.rollout.prompts_per_step:
        raise ConfigError(
            f"'data.toy_size' = {cfg.data.toy_size} is smaller than "
            f"rollout.prompts_per_step = {cfg.rollout.prompts_per_step}"
        )


def _validate_process(cfg: Config) -> None:
    """process.source = mc_value samples from RePro's cuts with the rollouts' own sampling settings."""
    p = cfg.process
    if p.source != "mc_value":
        return
    if not cfg.repro.enabled:
        raise ConfigError(
            "'process.source' = mc_value needs repro.enabled: true (its values are taken at RePro's cuts); "
            "set repro.enabled: true, or process.source: repro"
        )
    if p.mc_continuations < 1:
        raise ConfigError(f"'process.mc_continuations' must be >= 1, got {p.mc_continuations}")
    if cfg.rollout.min_new_tokens:
        raise ConfigError(
            f"'process.source' = mc_value needs rollout.min_new_tokens = 0, got {cfg.rollout.min_new_tokens}: the "
            "engine would hold every continuation to that length, longer than the rollouts it continues"
        )


def check_resume_folder(resume: str | None) -> None:
    """A checkpoint folder given as train.resume exists and is one (it holds trainer_state.json), checked before any
    model loads; whether its files are whole is checked against its manifest at resume."""
    if resume in (None, "auto") or os.path.isfile(os.path.join(resume, "trainer_state.json")):
        return
    if not os.path.exists(resume):
        raise ConfigError(f"'train.resume' = {resume!r} does not exist; give a checkpoint-N folder, 'auto' or null")
    runs = sorted(n for n in os.listdir(resume) if re.match(r"^checkpoint-\d+$", n)) if os.path.isdir(resume) else []
    hint = (
        f" (it is a run folder: resume from {os.path.join(resume, runs[-1])}, or train.resume=auto with "
        f"train.output_dir={resume})"
        if runs
        else ""
    )
    raise ConfigError(f"'train.resume' = {resume!r} is not a checkpoint folder (no trainer_state.json){hint}")


def load(path: str | None = None, overrides: list[str] = (), world_size: int = 1) -> Config:
    """Recipe YAML + dotted overrides -> validated Config. Raises ConfigError naming the key."""
    raw: dict = {}
    if path is not None:
        try:
            with open(path) as fh:
                raw = yaml.safe_load(fh) or {}
        except FileNotFoundError:
            raise ConfigError(f"recipe {path} does not exist (recipes live in recipes/)") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"recipe {path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"recipe {path} must be a mapping of sections (model:, data:, ...)")
    raw = apply_overrides(raw, list(overrides))
    _check_moved(raw)
    if isinstance(raw.get("repro", {}), dict):  # (a non-mapping is reported by build)
        raw = resolve_preset(raw, to_dict(ReProConfig()), AlgoConfig.estimator, ReProConfig.preset)
    cfg = build(Config, raw)
    validate(cfg, world_size)
    return cfg


MOVED = {"repro.think_end": "model.think_end", "shaping.think_end": "model.think_end"}
"""Keys that moved (old -> new): a recipe that still uses one is told the new name."""


def _check_moved(raw: dict) -> None:
    for section, keys in raw.items():
        for key in keys if isinstance(keys, dict) else ():
            new = MOVED.get(f"{section}.{key}")
            if new is not None:
                raise ConfigError(
                    f"'{section}.{key}' moved to '{new}' (one end-of-thinking marker for RePro, the shapers and "
                    f"the metrics): write {new.partition('.')[0]}: {{{new.partition('.')[2]}: ...}}"
                )


__all__ = ["Config", "ConfigError", "ReProConfig", "load", "validate", "dump_yaml"]
