"""RePro's recipe section (`repro:`) and its checks: every choice the paper leaves open is a named field whose default
is docs/spec/repro-method.md's; `repro.preset` (presets.py) fills them from the authors' code instead."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ..core.typed_config import ConfigError
from .probe import ProbeSettings


@dataclass(frozen=True)
class ReProConfig:
    """RePro process rewards (spec: docs/spec/repro-method.md, sections 1-12)."""

    enabled: bool = True
    """Compute RePro process advantages and fold them into the outcome advantage."""
    preset: Literal["spec", "authors_code"] = "spec"
    """Fills every RePro option it governs before the recipe's own keys: 'spec' = docs/spec/repro-method.md (the
    defaults below); 'authors_code' = what the authors' code computes (docs/repro.md, 'Presets'). Keys set in the
    recipe or on the command line win; the saved config.yaml shows the resolved values."""
    alpha: float = 0.1
    """Weight of the token process advantage: A_hat = A + alpha * A_tilde (spec 12)."""
    top_k: int = 10
    """Keep the top_k segments with the highest fork entropy (ties: earlier first); all if fewer (spec 4)."""
    w: float = 0.2
    """Process score S = (1 - w) * S_magn + w * S_stab; the paper finds smaller w better (spec 8)."""
    segment_delimiter: str = r"\n\n"
    """Regex for segment boundaries inside the thinking span; a whitespace run containing a match is one boundary (spec
    2)."""
    think_end_match: Literal["text", "first_token"] = "text"
    """How the thinking span ends (spec 1). 'text': at the token where the first occurrence of model.think_end begins
    in the decoded text; 'first_token' (authors' code): before the first token equal to its first token id."""
    boundary: Literal["regex", "token_ids"] = "regex"
    """Segment boundaries (spec 2). 'regex': segment_delimiter on the decoded text; 'token_ids' (authors' code): a
    position is a boundary when the token before it is the first token id of one of boundary_tokens."""
    boundary_tokens: tuple[str, ...] = (".\n", "?\n", "\n\n")
    """boundary = token_ids only: strings whose first token id (tokenized alone, no special tokens) ends a segment; the
    authors' code uses exactly these three."""
    cut_at: Literal["segment_end", "fork"] = "segment_end"
    """Where J is scored for a selected fork (spec 4). 'segment_end': after the segment whose first token is the fork
    (cut = segment end); 'fork' (authors' code): at the fork itself, the prefix excludes the fork token (cut = segment
    start; the first segment, which starts at 0, is then no candidate)."""
    force_think_end_cut: bool = False
    """Always add a cut at the end of thinking (spec 4 adds none): the prefix that includes the end-of-thinking marker
    (the whole response when there is none), besides the top_k; duplicates removed, cuts sorted (authors' code)."""
    probe_prefix: str = "\n\nFinal answer: "
    """Forcing text placed between the reasoning prefix and the answer when scoring J (spec 5)."""
    probe_answer_format: str = "{answer}"
    """Scored answer text: the literal '{answer}' is replaced by the ground-truth answer; other braces are kept, so
    '{answer}}$' works (spec 5)."""
    probe_scored: Literal["answer", "all"] = "answer"
    """Which probe tokens J averages (spec 5). 'answer': the answer tokens q after the forcing text f, tokenized apart;
    'all' (authors' code): every token of probe_prefix + formatted answer, tokenized as one string."""
    probe_special_tokens: bool = False
    """Tokenize the scored probe text with the tokenizer's default special tokens (a BOS for Llama-style tokenizers), as
    the authors' code does; false: without special tokens (spec 5)."""
    magnitude_eps: float = 1e-6
    """S_magn = 1 - tanh(J / min(J_b, -magnitude_eps)) (spec 6)."""
    magnitude_form: Literal["ratio", "nll"] = "ratio"
    """Where magnitude_eps enters (spec 6). 'ratio': 1 - tanh(J / min(J_b, -eps)); 'nll' (authors' code, on NLLs
    v = -J): tanh((v_b - v) / (v_b + eps) - 1) + 1 = 1 - tanh((v + eps) / (v_b + eps)). Equal up to O(eps)."""
    stability_ema: float = 0.0
    """EMA decay applied to (J_b, J_1, ...) before Kendall tau: e_i = d * e_{i-1} + (1 - d) * J_i; 0 = off (spec 7)."""
    stability: Literal["convex", "off", "additive"] = "convex"
    """How S_stab enters the process score (spec 8). 'convex': S = (1 - w) S_magn + w S_stab; 'off' (authors' code, the
    term is commented out there): S = S_magn; 'additive' (their commented-out line): S = S_magn + w (1/2 - tau_NLL)
    with tau_NLL = -tau of (J_b, J_1, ..., J_j), i.e. S_magn + w (2 S_stab - 1/2) (they use w = 0.1)."""
    first_step_baseline: Literal["score", "zero"] = "score"
    """S_0 for r_1 = S_1 - S_0: 'score' = the empty prefix's score (1-w)(1-tanh 1) + w/2, 'zero' = 0 (spec 9)."""
    process_norm: Literal["group", "batch", "group_mean", "none"] = "group"
    """Pool for normalising r: the rollouts of one prompt, the whole batch (all ranks), the prompt's mean subtracted
    without dividing by a std ('group_mean', the authors' REINFORCE++-baseline fold), or no normalisation (spec 10)."""
    norm_eps: float = 1e-6
    """r' = (r - mean) / (std + norm_eps) (spec 10)."""
    norm_std: Literal["population", "unbiased"] = "population"
    """The std of the normalisation pool: 'population' (divide by n, spec 10) or 'unbiased' (divide by n - 1, authors'
    code; a pool of one gives r' = 0 either way)."""
    norm_extra_zero: bool = False
    """The authors' code's quirk: every scored rollout adds one extra zero reward (its baseline cut, written at the last
    column) to the normalisation pool; the zero changes mean and std only, no token receives it (spec 10 has none)."""
    apply_to: Literal["all", "correct", "incorrect"] = "all"
    """Which rollouts get the process advantage, by outcome correctness (spec 12)."""
    ppo_process_reward: Literal["advantage", "dense_reward", "second_gae"] = "advantage"
    """PPO only: add alpha * A_tilde after GAE ('advantage'), or put alpha * r' on the cut tokens as dense rewards
    before GAE (spec 12); 'second_gae' (authors' code): r' on the cut tokens (token c_j - 1) runs through its own GAE
    with the critic's values (algo.gamma, algo.lam), is whitened over the batch, and alpha times it is added."""
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    """How the J probe runs: the `repro.probe.*` keys below (runner settings; every choice gives the same numbers)."""


def validate_repro(c: ReProConfig, prefix: str = "repro.") -> None:
    """Raise ConfigError naming the field when a RePro option is out of range."""
    if c.alpha < 0:
        raise ConfigError(f"'{prefix}alpha' must be >= 0 (0 turns the fold off), got {c.alpha}")
    if c.top_k < 1:
        raise ConfigError(f"'{prefix}top_k' must be >= 1, got {c.top_k}")
    if not 0.0 <= c.w <= 1.0:
        raise ConfigError(f"'{prefix}w' must be in [0, 1], got {c.w}")
    if not 0.0 <= c.stability_ema < 1.0:
        raise ConfigError(f"'{prefix}stability_ema' must be in [0, 1) (0 = off), got {c.stability_ema}")
    if c.magnitude_eps <= 0 or c.norm_eps <= 0:
        raise ConfigError(f"'{prefix}magnitude_eps' and '{prefix}norm_eps' must be > 0")
    if c.probe.batch_size < 1:
        raise ConfigError(f"'{prefix}probe.batch_size' must be >= 1, got {c.probe.batch_size}")
    try:
        rx = re.compile(c.segment_delimiter)
    except re.error as e:
        raise ConfigError(f"'{prefix}segment_delimiter' is not a valid regex: {e}") from None
    if rx.match("") is not None:
        raise ConfigError(f"'{prefix}segment_delimiter' must not match the empty string (got {c.segment_delimiter!r})")
    if c.boundary == "token_ids" and not any(c.boundary_tokens):
        raise ConfigError(
            f"'{prefix}boundary_tokens' must list at least one non-empty string when "
            f"{prefix}boundary = token_ids, got {list(c.boundary_tokens)}"
        )
    if "{answer}" not in c.probe_answer_format:
        raise ConfigError(f"'{prefix}probe_answer_format' must contain '{{answer}}', got {c.probe_answer_format!r}")
