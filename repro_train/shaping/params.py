"""The shapers' parameters: one frozen dataclass per method, a field of `ShapingConfig` each (recipe keys
`shaping.<method>.*`); defaults and their sources in docs/rewards.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class DapoOverlongParams:
    """DAPO soft overlong punishment (arXiv:2503.14476, eq. 13)."""

    max_len: int = 20480
    """L_max: DAPO sets it to the generation limit (20,480); must be <= rollout.max_new_tokens."""
    cache_len: int = 4096
    """L_cache: the soft-penalty buffer before L_max (DAPO: 4,096)."""


@dataclass(frozen=True)
class KimiParams:
    """Kimi k1.5 length reward (arXiv:2501.12599, section 2.3.3)."""

    weight: float = 1.0
    """Scale of lambda (the paper adds it to the correctness reward with weight 1)."""
    warmup_steps: int = 0
    """Steps of plain training before the length reward is on; the paper warms up but gives no count [check]."""


@dataclass(frozen=True)
class L1ExactParams:
    """L1 / LCPO-Exact (arXiv:2503.04697)."""

    alpha: float = 0.0003
    """Penalty per token of distance from the target (the paper's 0.0003)."""
    target_len: int = 1024
    """n_gold. L1 samples it per prompt and states it in the prompt; here one budget per run (state it with
    data.system_prompt)."""


@dataclass(frozen=True)
class L1MaxParams:
    """L1 / LCPO-Max (arXiv:2503.04697)."""

    alpha: float = 0.0003
    """Slope of the soft budget; same value as LCPO-Exact [check]."""
    delta: float = 0.5
    """Offset: a correct response exactly at the budget keeps half its reward [check]."""
    target_len: int = 1024
    """n_gold, the token budget (one per run, see l1_exact.target_len)."""


@dataclass(frozen=True)
class ShorterBetterParams:
    """ShorterBetter (arXiv:2504.21370)."""

    alpha: float = 1.0
    """Weight of the outcome reward (the paper trains with 1 and 2; 1 keeps R's scale)."""
    beta: float = 0.001
    """Penalty per token of distance from the sample optimal length [check]."""


@dataclass(frozen=True)
class CosineParams:
    """Cosine length scaling (arXiv:2502.03373, appendix C.1; TRL/open-r1 defaults)."""

    max_len: int = 1000
    """L_max of the cosine (TRL's default); longer responses get the value at L_max."""
    correct_at_0: float = 1.0
    """Reward of a correct response of length 0."""
    correct_at_max: float = 0.5
    """Reward of a correct response of length >= max_len."""
    wrong_at_0: float = -1.0
    """Reward of a wrong response of length 0 (short wrong answers are penalised most)."""
    wrong_at_max: float = -0.5
    """Reward of a wrong response of length >= max_len."""


@dataclass(frozen=True)
class EfficiencyParams:
    """Efficiency reward of Arora & Zanette (arXiv:2502.04463)."""

    alpha: float = 0.1
    """Strength of the length penalty; the paper sweeps 0 to 0.4 [check]."""
    eps: float = 1e-6
    """(L - mu) / (sigma + eps): a group whose correct lengths are equal gets sigmoid(0) = 0.5."""


@dataclass(frozen=True)
class GrpoLeadParams:
    """GRPO-LEAD (arXiv:2504.09696): length-dependent accuracy reward + difficulty-aware advantages."""

    alpha: float = 0.5
    """Correct: r = exp(-alpha * z), z = the length's z-score among the group's correct responses."""
    wrong_reward: float = -1.0
    """Reward of a wrong response (the paper's explicit penalty)."""
    eps: float = 1e-6
    """z = (L - mu_c) / (sigma_c + eps)."""
    difficulty_reweight: bool = True
    """Scale advantages by w(pass rate) (positive) or w(1 - pass rate) (negative), after the estimator."""
    w_min: float = 0.4
    """A in w(p) = A + (B - A) / (1 + exp(k (p - p0))) (the authors' code)."""
    w_max: float = 1.5
    """B in w(p) (the authors' code)."""
    k: float = 10.0
    """Steepness k of w(p) (the authors' code)."""
    p0: float = 0.75
    """Midpoint p0 of w(p) (the authors' code)."""


@dataclass(frozen=True)
class ThinkPruneParams:
    """ThinkPrune (arXiv:2504.01296)."""

    limits: tuple[int, ...] = (4096, 3072, 2048)
    """Length limits of the rounds (strictly decreasing, each <= rollout.max_new_tokens)."""
    round_steps: int = 0
    """RL steps per round; 0 = the first limit throughout. The paper trains each round to convergence [check]."""


@dataclass(frozen=True)
class LaserParams:
    """LASER, fixed target (arXiv:2505.15612); LASER-D's adaptive targets are not implemented."""

    alpha: float = 0.5
    """Bonus of a correct response within the target [check]."""
    target_len: int = 4096
    """L_T, the target length [check]."""


@dataclass(frozen=True)
class GatedBonusParams:
    """Correctness-gated length bonus (prime-rl, 2026)."""

    max_bonus: float = 1.0
    """Upper clamp of the bonus (prime-rl: 1, so a correct reward at most doubles)."""


@dataclass(frozen=True)
class ShapingConfig:
    """Length-control reward shapers, the baselines RePro is compared with (docs/rewards.md)."""

    methods: tuple[str, ...] = ()
    """Shapers applied in this order after the outcome reward, before the estimator: dapo_overlong, kimi, l1_exact,
    l1_max, shorter_better, cosine, efficiency, grpo_lead, thinkprune, laser, gated_bonus; [] = none."""
    length: Literal["response", "thinking"] = "response"
    """Length the group-relative methods compare: the whole response, or the tokens before model.think_end
    (dapo_overlong and thinkprune always use the response, whose limit they enforce)."""
    dapo_overlong: DapoOverlongParams = field(default_factory=DapoOverlongParams)
    """DAPO soft overlong punishment."""
    kimi: KimiParams = field(default_factory=KimiParams)
    """Kimi k1.5 group length reward."""
    l1_exact: L1ExactParams = field(default_factory=L1ExactParams)
    """L1 / LCPO-Exact."""
    l1_max: L1MaxParams = field(default_factory=L1MaxParams)
    """L1 / LCPO-Max."""
    shorter_better: ShorterBetterParams = field(default_factory=ShorterBetterParams)
    """ShorterBetter."""
    cosine: CosineParams = field(default_factory=CosineParams)
    """Cosine length scaling."""
    efficiency: EfficiencyParams = field(default_factory=EfficiencyParams)
    """Arora & Zanette's efficiency reward."""
    grpo_lead: GrpoLeadParams = field(default_factory=GrpoLeadParams)
    """GRPO-LEAD."""
    thinkprune: ThinkPruneParams = field(default_factory=ThinkPruneParams)
    """ThinkPrune."""
    laser: LaserParams = field(default_factory=LaserParams)
    """LASER."""
    gated_bonus: GatedBonusParams = field(default_factory=GatedBonusParams)
    """prime-rl's correctness-gated bonus."""
