"""Everything that touches torch.distributed, accelerate or deepspeed lives here.

    accelerator = build_accelerator(cfg, grad_accum_steps)   # DDP, ZeRO-2/3 or FSDP2 per cfg.dist / launcher
    d = Dist(accelerator)                                    # rank, world, device, collectives
    with gathered_for_generation(model, accelerator) as policy: policy.generate(...)
    finish(0)                                                # clean exit of every rank

Strategy comes from `dist.strategy` in the recipe, or with 'auto' from the launcher:
`accelerate launch --config_file launch/accelerate/{ddp,zero2,zero3,fsdp2}.yaml`, or plain DDP
under `torchrun`. The pure modules get global quantities from `Dist.sum` as arguments.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import torch

from ..core.typed_config import ConfigError


def _zero_stage(accelerator) -> int | None:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin.zero_stage if plugin is not None else None


def strategy_of(accelerator) -> str:
    """'single', 'ddp', 'zero2', 'zero3' or 'fsdp2' for a built accelerator."""
    from accelerate.utils import DistributedType

    t = accelerator.distributed_type
    if t == DistributedType.DEEPSPEED:
        stage = _zero_stage(accelerator)
        if stage not in (2, 3):
            raise ConfigError(
                f"DeepSpeed ZeRO stage {stage} is not supported; use 2 or 3 (launch/accelerate/zero2.yaml, zero3.yaml)"
            )
        return f"zero{stage}"
    if t == DistributedType.FSDP:
        version = getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1)
        if version != 2:
            raise ConfigError("FSDP1 is not supported: set fsdp_version: 2 (launch/accelerate/fsdp2.yaml)")
        return "fsdp2"
    if accelerator.num_processes > 1 and t == DistributedType.NO:
        raise ConfigError(
            f"{accelerator.num_processes} processes but accelerate set up no distributed wrapper "
            "(gradients would not be averaged); check the launcher config"
        )
    return "ddp" if accelerator.num_processes > 1 else "single"


def build_accelerator(
    strategy: str,
    mixed_precision: str,
    grad_accum_steps: int,
    micro_batch_size: int,
    grad_clip: float,
    device: str = "auto",
):
    """An Accelerator for `strategy` ('auto' = as launched) with accumulation over `grad_accum_steps`."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    launched = lambda name: strategy == "auto" and os.environ.get(f"ACCELERATE_USE_{name}", "false").lower() == "true"  # noqa: E731
    deepspeed = strategy in ("zero2", "zero3") or launched("DEEPSPEED")
    if (strategy == "fsdp2" or launched("FSDP")) and not torch.cuda.is_available():
        raise ConfigError(
            "FSDP2 needs GPUs (accelerate runs FSDP only on accelerators); on the CPU use "
            "DDP (torchrun) or DeepSpeed (launch/accelerate/zero2.yaml, zero3.yaml)"
        )
    # accelerate's cpu=True turns DeepSpeed off; DeepSpeed runs on the CPU (gloo) without it.
    cpu = not deepspeed and (device == "cpu" or (device == "auto" and not torch.cuda.is_available()))
    kw: dict[str, Any] = dict(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum_steps, cpu=cpu)
    if deepspeed and not torch.cuda.is_available():
        # accelerate picks no process-group backend for DeepSpeed without a GPU: name gloo.
        from accelerate.utils import InitProcessGroupKwargs

        kw["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    if strategy in ("zero2", "zero3"):
        kw["deepspeed_plugin"] = DeepSpeedPlugin(
            zero_stage=int(strategy[-1]),
            gradient_accumulation_steps=grad_accum_steps,
            gradient_clipping=grad_clip if grad_clip > 0 else 0.0,
            zero3_init_flag=False,
        )
    elif strategy == "fsdp2":
        kw["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2,
            auto_wrap_policy="transformer_based_wrap",
            reshard_after_forward=True,
            state_dict_type="FULL_STATE_DICT",
        )
    acc = Accelerator(**kw)
    got = strategy_of(acc)
    if strategy not in ("auto",) and got not in (strategy, "single"):
        raise ConfigError(
            f"dist.strategy = {strategy} but the launcher set up {got}; launch with the matching "
            f"launch/accelerate/{strategy}.yaml or set dist.strategy=auto"
        )
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is not None:
        # We prepare no dataloader, so DeepSpeed's batch keys are set here, from the recipe.
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = micro_batch_size
        ds["gradient_accumulation_steps"] = grad_accum_steps
        ds["train_batch_size"] = micro_batch_size * grad_accum_steps * acc.num_processes
        ds["gradient_clipping"] = grad_clip if grad_clip > 0 else 0.0
        acc.gradient_accumulation_steps = grad_accum_steps
    return acc


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch on every device of this process (accelerate's set_seed)."""
    from accelerate.utils import set_seed as accelerate_set_seed

    accelerate_set_seed(seed)


def clip_grad_norm(accelerator, model, strategy: str, clip: float) -> torch.Tensor:
    """The gradient norm of this optimizer step (a 0-d tensor, left on the device: no host sync here), gradients
    clipped to `clip` (0: no clipping). DeepSpeed clips inside its own step (its config's gradient_clipping) and
    reports the norm itself; the other strategies clip through accelerate."""
    if strategy in ("zero2", "zero3"):
        n = model.get_global_grad_norm() if hasattr(model, "get_global_grad_norm") else None
        return torch.as_tensor(float(n) if n is not None else float("nan"), dtype=torch.float64)
    norm = accelerator.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
    return torch.as_tensor(norm).detach()


def gather_full_weights_on_save(accelerator) -> None:
    """Under ZeRO-3, have DeepSpeed gather the full weights when a Hugging Face checkpoint is saved."""
    accelerator.state.deepspeed_plugin.deepspeed_config.setdefault("zero_optimization", {})[
        "stage3_gather_16bit_weights_on_model_save"
    ] = True


class Dist:
    """Rank facts and the few collectives the trainer needs (identity on one process)."""

    watchdog = None
    """trainer/watchdog.py: times every collective below (dist.collective_timeout_s)."""

    def timed(self, what: str):
        return self.watchdog.guard(what) if self.watchdog is not None else contextlib.nullcontext()

    def __init__(self, accelerator):
        self.acc = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.is_main = accelerator.is_main_process
        self.device = accelerator.device
        self.strategy = strategy_of(accelerator)

    @property
    def sharded(self) -> bool:
        """Forward passes are collectives (every rank must run the same number)."""
        return self.strategy in ("zero3", "fsdp2")

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce SUM of a tensor (returned on its original device)."""
        if self.world == 1:
            return t
        dev = t.device
        out = t.detach().to(self.device, copy=True)
        with self.timed("all_reduce(sum)"):
            torch.distributed.all_reduce(out)
        return out.to(dev)

    def max(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce MAX of a tensor."""
        if self.world == 1:
            return t
        dev = t.device
        out = t.detach().to(self.device, copy=True)
        with self.timed("all_reduce(max)"):
            torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
        return out.to(dev)

    def max_int(self, n: int) -> int:
        if self.world == 1:
            return n
        t = torch.tensor([n], device=self.device)
        with self.timed("all_reduce(max)"):
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def gather_objects(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        with self.timed("all_gather_object"):
            torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            with self.timed("barrier"):
                self.acc.wait_for_everyone()


@contextlib.contextmanager
def gathered_for_generation(model, accelerator):
    """The unwrapped model with full weights for `generate` (ZeRO-3: gathered; FSDP2: unsharded)."""
    strategy = strategy_of(accelerator)
    if strategy == "zero3":
        # TRL's helpers: ZeRO-3's hooks would re-partition weights after every layer of every step.
        import deepspeed
        from trl.models.utils import add_hooks, remove_hooks

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            remove_hooks(model)
            try:
                yield accelerator.unwrap_model(model)
            finally:
                add_hooks(model)
    elif strategy == "fsdp2":
        from torch.distributed.fsdp import FSDPModule

        if not getattr(model, "_repro_root_initialised", False):
            # FSDP2 initialises its root on the root's first forward; unsharding the units before
            # that makes the root's later initialisation fail. One token through the root first.
            with torch.no_grad():
                one = torch.zeros((1, 1), dtype=torch.long, device=accelerator.device)
                model(input_ids=one, attention_mask=torch.ones_like(one))
            model._repro_root_initialised = True
        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for m in units:
            m.unshard()
            m.set_reshard_after_forward(False, recurse=False)
        try:
            yield accelerator.unwrap_model(model)
        finally:
            for m in units:
                m.set_reshard_after_forward(True, recurse=False)
                m.reshard()
    else:
        yield accelerator.unwrap_model(model)


def full_parameters(module: torch.nn.Module, strategy: str):
    """(name, whole tensor) for each parameter of `module`, one at a time: gathered under ZeRO-3
    (`GatheredParameters([p])`), `full_tensor()` of FSDP2's DTensors, the tensor itself otherwise.

    Never the whole model at once: the gathered copy of one parameter is released when the next is
    asked for. A generator of collectives under ZeRO-3/FSDP2: every rank must run it to the end."""
    for name, p in module.named_parameters():
        if strategy == "zero3" and hasattr(p, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p]):
                yield name, p.data
        elif hasattr(p, "full_tensor"):  # an FSDP2 DTensor
            yield name, p.full_tensor()
        else:
            yield name, p.detach()


def zero_(params) -> None:
    """Set parameters to zero on every rank, also when ZeRO-3 has partitioned them at load time."""
    params = list(params)
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            for p in params:
                p.data.zero_()
    else:
        for p in params:
            p.data.zero_()


def prepare_frozen(model: torch.nn.Module, accelerator):
    """A frozen model (the KL reference) placed for the strategy: sharded under ZeRO-3, else on device."""
    model.requires_grad_(False).eval()
    if strategy_of(accelerator) == "zero3":
        from trl.models import prepare_deepspeed

        return prepare_deepspeed(model, accelerator)
    if strategy_of(accelerator) == "fsdp2":
        from accelerate.utils import fsdp2_prepare_model

        return fsdp2_prepare_model(accelerator, model)
    return model.to(accelerator.device)


def finish(code: int = 0) -> None:
    """End a (possibly distributed) process cleanly: barrier, destroy the group, flush, exit.

    torch with gloo can abort at interpreter exit ("terminate called without an active
    exception"); exiting this way avoided it in every run (a third of runs aborted at exit without it)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        try:
            if code == 0:
                dist.barrier()
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the process is ending either way
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
