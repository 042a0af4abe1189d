"""Registries of pure tensor functions: advantage estimators, policy/value losses, KL estimators.

Torch only (no torch.distributed, config or logging); global quantities are arguments.
See docs/algorithms.md.
"""

from repro_train.algos.advantages import (  # noqa: F401
    ESTIMATORS,
    AdvantageInputs,
    AdvantageOutput,
    AdvantageParams,
    Reduce,
    get_estimator,
    identity,
    masked_whiten,
    register_estimator,
)
from repro_train.algos.kl import KL_ESTIMATORS, get_kl_estimator, kl_penalty, register_kl_estimator  # noqa: F401
from repro_train.algos.losses import (  # noqa: F401
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    agg_loss,
    get_policy_loss,
    ppo_clip_loss,
    register_policy_loss,
    value_loss,
)
