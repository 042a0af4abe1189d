"""Run under a launcher (tests/trainer/test_distributed.py): build the trainer's runtime, push the policy's
weights the way the vLLM engine receives them (`Runtime.policy_weights`), and save what arrived.

    accelerate launch --config_file launch/accelerate/zero3.yaml --num_processes 2 \
        tests/helpers/dist_push_weights.py RECIPE OUT

ZeRO-3 keeps small parameters whole ("persistent"); the threshold is set to 0 here so that every
parameter is partitioned and the test sees the gathering. For each yielded tensor it records how
many partitioned parameters were whole at that moment: one at a time means at most 1.
"""

import sys

import torch

from repro_train.config import load
from repro_train.trainer import runtime
from repro_train.trainer.dist import finish


def build_accelerator_no_persistence(*args, **kwargs):
    acc = real_build_accelerator(*args, **kwargs)
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is not None:
        plugin.deepspeed_config.setdefault("zero_optimization", {})["stage3_param_persistence_threshold"] = 0
    return acc


real_build_accelerator = runtime.build_accelerator
runtime.build_accelerator = build_accelerator_no_persistence


def whole_partitioned(params) -> int:
    return sum(
        1
        for p in params
        if hasattr(p, "ds_id") and not getattr(p, "ds_persist", False) and p.ds_status.name == "AVAILABLE"
    )


def main(recipe: str, out: str) -> None:
    rt = runtime.build_runtime(load(recipe, ["algo.estimator=gae", f"train.output_dir={out}/run"]))
    params = list(rt.model.parameters())
    got, most = {}, 0
    for name, t in rt.policy_weights():
        most = max(most, whole_partitioned(params))
        got[name] = t.detach().to("cpu", copy=True)
    if rt.dist.is_main:
        partitioned = sum(1 for p in params if hasattr(p, "ds_id") and not getattr(p, "ds_persist", False))
        torch.save(
            {
                "weights": got,
                "most_whole": most,
                "partitioned": partitioned,
                "strategy": rt.dist.strategy,
                "after": whole_partitioned(params),
            },
            f"{out}/pushed.pt",
        )
    rt.close()
    finish(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
