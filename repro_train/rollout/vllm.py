"""The `vllm` rollout engine: vLLM's `LLM` inside every training process (no Ray, no server).

    check_vllm(cfg.rollout, world_size, cuda)    # start-up: installed, version, GPU, TP, memory share
    engine = VLLMEngine(model_dir, cfg.rollout, eos_ids, max_model_len, dtype, rank, world)
    engine.push_weights(version, params)         # the policy's weights in, one tensor at a time
    out = engine.sample(prompt_ids, G, seeds)    # token ids and the sampled tokens' log-probs
    engine.release()                             # sleep (level 1/2) for the forward and update phases

The engine holds only weights pushed from the trainer and samples as the `hf` engine does; vLLM is imported
only when an engine is built, so this module imports without it. How the ranks form engines, and why no weights
come from disk: docs/architecture.md, "The vLLM rollout engine".
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
from collections.abc import Callable, Sequence

from ..core.typed_config import ConfigError
from .base import NamedTensors, Rollouts, trim_at_eos

SUPPORTED_VLLM = ((0, 25, 0), (0, 26, 0))
"""Versions tested: at least the first, below the second (0.25.1 is the last release on torch 2.11)."""
INSTALL_HINT = (
    "install it on a GPU machine with `pip install 'repro-train[vllm]'` (without this project's CPU "
    "constraints file: vLLM pins its own torch; README 'GPU install')"
)
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
"""Name segments that wrappers (FSDP1, activation checkpointing, torch.compile) insert."""
TRAINER_SHARE_MIN = 0.1
"""With the engine awake during training (sleep_level 0), the trainer keeps at least this share."""


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for piece in v.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def check_vllm(rollout, world_size: int, cuda_available: bool, version: str | None = None) -> None:
    """Raise ConfigError for an `engine: vllm` recipe that cannot run here, before any model loads.

    `version` is vLLM's installed version (None: read from the installed package)."""
    if rollout.engine != "vllm":
        return
    v = rollout.vllm
    if world_size % v.tensor_parallel_size:
        raise ConfigError(
            f"'rollout.vllm.tensor_parallel_size' = {v.tensor_parallel_size} does not divide the "
            f"{world_size} training processes (consecutive ranks form one engine); use a divisor of {world_size}"
        )
    if not 0.0 < v.gpu_memory_utilization < 1.0:
        raise ConfigError(f"'rollout.vllm.gpu_memory_utilization' must be in (0, 1), got {v.gpu_memory_utilization}")
    if v.kv_cache_gb is not None and not v.kv_cache_gb > 0:
        raise ConfigError(f"'rollout.vllm.kv_cache_gb' must be > 0 (or null: measured at start), got {v.kv_cache_gb}")
    if v.sleep_level == 0 and v.gpu_memory_utilization > 1.0 - TRAINER_SHARE_MIN:
        raise ConfigError(
            f"'rollout.vllm.gpu_memory_utilization' = {v.gpu_memory_utilization} leaves the trainer less than "
            f"{TRAINER_SHARE_MIN:.0%} of the GPU while the engine stays awake (sleep_level 0); lower it "
            "(0.3-0.6 is typical) or set rollout.vllm.sleep_level: 1 or 2"
        )
    if version is None:
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                f"'rollout.engine' = 'vllm' but vLLM is not installed: {INSTALL_HINT}, or use rollout.engine: hf"
            )
        version = importlib.metadata.version("vllm")
    low, high = SUPPORTED_VLLM
    if not low <= _version_tuple(version) < high:
        raise ConfigError(
            f"vLLM {version} is installed; 'rollout.engine' = 'vllm' supports "
            f"{'.'.join(map(str, low))} <= version < {'.'.join(map(str, high))}: {INSTALL_HINT}"
        )
    if not cuda_available:
        raise ConfigError("'rollout.engine' = 'vllm' needs a CUDA GPU; on a CPU use rollout.engine: hf")


def hf_name(name: str, prefix: str = "policy.") -> str | None:
    """The Hugging Face name of a trainer parameter: wrapper segments and `prefix` stripped.

    None for a parameter outside `prefix` (the critic never goes to the engine)."""
    for seg in WRAPPER_SEGMENTS:
        name = name.replace(seg, "")
    if name.startswith("module."):  # DDP and DeepSpeed engines
        name = name[len("module.") :]
    if not name.startswith(prefix):
        return None
    return name[len(prefix) :]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher_env() -> None:
    """external_launcher reads the torchrun variables; a plain `python` run gets a one-process world."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process


def sampled_logprobs(logprobs, row: Sequence[int]) -> list[float]:
    """The log-prob of each sampled token of `row` from vLLM's per-position log-probs: `FlatLogprobs` (flat lists
    with each position's [start, end) range; `flat_logprobs=True`) or a list of {token id: Logprob}."""
    if hasattr(logprobs, "start_indices"):
        ids, vals, start, end = logprobs.token_ids, logprobs.logprobs, logprobs.start_indices, logprobs.end_indices
        out = []
        for t, tok in enumerate(row):
            j = start[t]
            while ids[j] != tok and j + 1 < end[t]:  # logprobs=0: the sampled token is the only entry
                j += 1
            out.append(vals[j])
        return out
    return [logprobs[t][tok].logprob for t, tok in enumerate(row)]


class VLLMEngine:
    """The `vllm` engine of one training process (see the module docstring)."""

    name = "vllm"

    def __init__(
        self, model_dir: str, cfg, eos_ids: Sequence[int], max_model_len: int, dtype: str, rank: int, world: int
    ):
        _launcher_env()
        from vllm import LLM

        v = cfg.vllm
        self.cfg, self.eos_ids, self.sleep_level = cfg, [int(i) for i in eos_ids], v.sleep_level
        self.tp, self.rank = v.tensor_parallel_size, rank
        self.tp_group = self._tp_group(world) if self.tp > 1 else None
        self.llm = LLM(
            model=model_dir,
            skip_tokenizer_init=True,
            load_format="dummy",
            dtype=dtype,
            tensor_parallel_size=self.tp,
            # external_launcher: vLLM's world is tp x dp, and it infers each engine's dp rank from RANK
            data_parallel_size=world // self.tp,
            distributed_executor_backend="external_launcher",
            gpu_memory_utilization=v.gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_sleep_mode=v.sleep_level > 0,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",
            enforce_eager=not v.cuda_graphs,
            seed=rank // self.tp,
            max_num_seqs=v.max_num_seqs,
            max_num_batched_tokens=v.max_num_batched_tokens,
            enable_prefix_caching=True,
            **({} if v.kv_cache_gb is None else {"kv_cache_memory_bytes": int(v.kv_cache_gb * 2**30)}),
        )
        self.version: int | None = None  # trainer weights version the engine holds (None: dummy weights)
        self.asleep: set[str] = set()  # memory tags released by sleep() and not woken since

    def _tp_group(self, world: int):
        import torch.distributed as dist

        ranks = [list(range(s, s + self.tp)) for s in range(0, world, self.tp)]
        group, _ = dist.new_subgroups_by_enumeration(ranks)
        return group

    def wake(self) -> None:
        """Everything a sleep released back, weights first (level 1 with no new weights: the kept copy)."""
        self._wake("weights")
        self._wake("kv_cache")

    def _wake(self, tag: str) -> None:
        if tag in self.asleep:
            self.llm.wake_up(tags=[tag])
            self.asleep.discard(tag)

    def push_weights(self, version: int, params: Callable[[], NamedTensors]) -> None:
        """Load the trainer's weights at `version` unless the engine holds them already. Every rank
        calls this at the same point (a ZeRO-3 or FSDP2 gather inside `params()` is a collective)."""
        if version == self.version:
            return
        self._wake("weights")  # level-1 sleep unmaps the weights: wake them before writing (verl #7434)
        self.llm.apply_model(lambda model: model.load_weights(params()))
        self.llm.reset_prefix_cache()
        self.version = version

    def sample(self, prompts: Sequence[Sequence[int]], group_size: int, seeds: Sequence[int] | None) -> Rollouts:
        if self.version is None:
            raise RuntimeError("the vLLM engine holds no trainer weights yet: call push_weights first")
        self.wake()
        mine = len(prompts)
        if self.tp_group is not None:  # every rank of an engine generates the group's prompts
            prompts, seeds, offset = self._gather_tp(prompts, seeds)
        outs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts],
            [self.sampling_params(group_size, None if seeds is None else seeds[i]) for i in range(len(prompts))],
            use_tqdm=False,
        )
        if self.tp_group is not None:
            outs = outs[offset : offset + mine]
        return self._rollouts(outs)

    def sampling_params(self, n: int, seed: int | None):
        """vLLM's SamplingParams for `n` responses of one prompt, as the recipe's rollout section says."""
        from vllm import SamplingParams

        c = self.cfg
        return SamplingParams(
            n=n,
            temperature=c.temperature,
            top_p=c.top_p,
            top_k=c.top_k,
            min_tokens=c.min_new_tokens,
            max_tokens=c.max_new_tokens,
            stop_token_ids=self.eos_ids,
            logprobs=0,
            flat_logprobs=True,  # primitive lists, not a dict per token: far less for Python and its GC to walk
            detokenize=False,
            skip_special_tokens=False,
            seed=seed,
        )

    def _rollouts(self, outs) -> Rollouts:
        eos = set(self.eos_ids)
        ids, lps = [], []
        for o in outs:
            ids.append([]), lps.append([])
            for c in sorted(o.outputs, key=lambda c: c.index):
                row = trim_at_eos(list(c.token_ids), eos)
                ids[-1].append(row)
                lps[-1].append(sampled_logprobs(c.logprobs, row))
        return Rollouts(token_ids=ids, logprobs=lps)

    def _gather_tp(self, prompts, seeds):
        import torch.distributed as dist

        parts = [None] * self.tp
        dist.all_gather_object(
            parts, (list(map(list, prompts)), None if seeds is None else list(seeds)), group=self.tp_group
        )
        offset = sum(len(p[0]) for p in parts[: self.rank % self.tp])
        all_prompts = [p for part in parts for p in part[0]]
        all_seeds = None if seeds is None else [s for part in parts for s in part[1]]
        return all_prompts, all_seeds, offset

    def release(self) -> None:
        """Sleep for the forward and update phases: level 1 keeps the weights in CPU memory, level 2
        drops them (the next push then loads every tensor again)."""
        if self.sleep_level == 0 or self.asleep:
            return
        self.llm.sleep(level=self.sleep_level)
        self.asleep = {"weights", "kv_cache"}
        if self.sleep_level == 2:
            self.version = None

    def close(self) -> None:
        del self.llm
