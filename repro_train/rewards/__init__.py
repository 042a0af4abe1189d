"""Outcome rewards: built-in checks (math_verify, exact_match, numeric, last_number, format, reasoning_gym),
custom functions by import path, and OutcomeReward, their weighted sum over a batch. See docs/rewards.md.

No torch import at module level anywhere in this package: math_verify's spawned workers import it.
"""

from .extract import (
    extract_answer,
    extract_boxed,
    extract_final_answer,
    last_number,
    normalize_answer,
    parse_exact,
    parse_number,
    strict_refusal,
)
from .functions import REWARDS, ExactMatch, Format, LastNumber, Numeric, RewardFn, register_reward
from .mathverify import MathVerify, verify_answer
from .outcome import OutcomeReward, RewardResult, RewardSpec
from .rgym import ReasoningGym  # registers reasoning_gym

__all__ = [
    "REWARDS",
    "RewardFn",
    "register_reward",
    "RewardSpec",
    "RewardResult",
    "OutcomeReward",
    "ExactMatch",
    "Numeric",
    "LastNumber",
    "Format",
    "MathVerify",
    "ReasoningGym",
    "verify_answer",
    "extract_answer",
    "extract_boxed",
    "extract_final_answer",
    "normalize_answer",
    "last_number",
    "parse_number",
    "parse_exact",
    "strict_refusal",
]
