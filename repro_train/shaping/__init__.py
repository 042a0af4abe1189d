"""Length-control reward shapers (docs/rewards.md): the baselines RePro is compared with. `params` holds each method's
parameters and `ShapingConfig`; `methods` the registered pure tensor functions, their group statistics and
`apply_reward_shapers` / `apply_advantage_shapers`. The trainer's hook is trainer/shaping.py."""

from .methods import (
    SHAPERS,
    ShapeInputs,
    ShapingResult,
    apply_advantage_shapers,
    apply_reward_shapers,
    group_mean_std,
    group_reduce,
    group_sum,
    register_shaper,
    validate_shaping,
)
from .params import ShapingConfig

__all__ = [
    "SHAPERS",
    "ShapeInputs",
    "ShapingConfig",
    "ShapingResult",
    "apply_advantage_shapers",
    "apply_reward_shapers",
    "group_mean_std",
    "group_reduce",
    "group_sum",
    "register_shaper",
    "validate_shaping",
]
