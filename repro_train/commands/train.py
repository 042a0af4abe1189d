"""`repro-train train --config recipes/X.yaml [key=value ...]`

Also under `torchrun --nproc_per_node N -m repro_train train ...` and
`accelerate launch --config_file launch/accelerate/{ddp,zero2,zero3,fsdp2}.yaml -m repro_train train ...`.
The recipe is parsed and validated before any model is loaded, so a bad recipe fails in seconds.

Exit codes (docs/reliability.md): 0 done; 2 bad recipe, data, model files, run folder or resume; 3 too many
non-finite steps; 4 a hung collective; 5 a reward function failed (reward.on_error=error); 6 a checkpoint or log
could not be written; 75 preempted (SIGTERM/SIGUSR1, requeue); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import load
from ..core.typed_config import ConfigError
from ..rewards.outcome import RewardFailed
from ..trainer.checkpoint import WriteFailed, resume_hint
from ..trainer.dist import finish
from ..trainer.guard import NonFiniteStop
from ..trainer.loop import train
from ..trainer.preempt import INTERRUPT_EXIT, Preempted

REWARD_EXIT = 5
"""A reward function raised, returned a bad value or timed out, and reward.on_error = error."""
WRITE_EXIT = 6
"""A checkpoint, metrics or samples file could not be written."""


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
    code = run(cfg)
    if world > 1:
        finish(code)
    return code


def run(cfg) -> int:
    """train(cfg), each way it can end as a message and an exit code."""
    out_dir = cfg.train.output_dir
    try:
        out = train(cfg)
    except ConfigError as e:  # data/model checks that need the files, the run folder, a refused resume
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteStop as e:  # too many steps in a row with NaN/inf (trainer/guard.py)
        print(f"error: {e}", file=sys.stderr)
        return 3
    except RewardFailed as e:  # a user's reward function raised or hung (rewards/outcome.py)
        print(f"error: {e}\nThe run stopped; {resume_hint(out_dir)}", file=sys.stderr)
        return REWARD_EXIT
    except WriteFailed as e:  # a full disk, a file in the way (trainer/checkpoint.py, metrics.py)
        print(f"error: {e}", file=sys.stderr)
        return WRITE_EXIT
    except Preempted as e:  # SIGTERM / SIGUSR1 / Ctrl-C: checkpoint written (trainer/preempt.py)
        print(f"{'interrupted' if e.exit_code == INTERRUPT_EXIT else 'preempted'}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C
        print(f"\ninterrupted: stopped at once by a second Ctrl-C; {resume_hint(out_dir)}", file=sys.stderr)
        return INTERRUPT_EXIT
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {out}")
    return 0
