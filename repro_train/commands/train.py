"""`repro-train train --config recipes/X.yaml [key=value ...]`

Also under `torchrun --nproc_per_node N -m repro_train train ...` and
`accelerate launch --config_file launch/accelerate/{ddp,zero2,zero3,fsdp2}.yaml -m repro_train train ...`.
The recipe is parsed and validated before any model is loaded, so a bad recipe fails in seconds.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import load
from ..core.typed_config import ConfigError
from ..trainer.dist import finish
from ..trainer.guard import NonFiniteStop
from ..trainer.loop import train
from ..trainer.preempt import REQUEUE_EXIT, Preempted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="repro-train train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=None, help="recipe YAML (default: the embedded toy recipe's defaults)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. repro.alpha=0.2 algo.estimator=gae")
    args = p.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        cfg = load(args.config, args.overrides, world_size=world)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        out = train(cfg)
    except ConfigError as e:  # data/model checks that need the files (missing columns, ...)
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except NonFiniteStop as e:  # too many steps in a row with NaN/inf (trainer/guard.py)
        print(f"error: {e}", file=sys.stderr)
        code = 3
    except Preempted as e:  # SIGTERM / SIGUSR1: checkpoint written (trainer/preempt.py)
        print(f"preempted: {e}", file=sys.stderr)
        code = REQUEUE_EXIT
    else:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"done: {out}")
        code = 0
    if world > 1:
        finish(code)
    return code
