"""RePro presets: `repro.preset` fills the RePro options it governs before the recipe's own keys.

    raw = resolve_preset(raw, spec_defaults)      # in config.load, after the CLI overrides

'spec' is docs/spec/repro-method.md (the dataclass defaults); 'authors_code' is what the authors'
code computes (facts: the authors' verl fork, summarised in docs/repro.md 'Presets'). A key the
recipe or the command line sets is kept; every other governed key gets the preset's value, so the
resolved config (config.yaml) shows what runs and reloads to the same run. The algorithm-specific
folds depend on `algo.estimator`: they are the only preset values that do.
"""

from __future__ import annotations

PRESETS = ("spec", "authors_code")

AUTHORS_CODE: dict[str, object] = {
    "think_end_match": "first_token",
    "boundary": "token_ids",
    "boundary_tokens": (".\n", "?\n", "\n\n"),
    "cut_at": "fork",
    "force_think_end_cut": True,
    "top_k": 20,
    "probe_prefix": "",
    "probe_answer_format": "\\boxed{{answer}}",
    "probe_scored": "all",
    "probe_special_tokens": True,
    "magnitude_form": "nll",
    "stability": "off",
    "first_step_baseline": "zero",
    "norm_std": "unbiased",
    "norm_extra_zero": True,
    "alpha": 0.05,
    "apply_to": "all",
}
"""The options the authors' code fixes whatever the algorithm."""

AUTHORS_CODE_FOLDS: dict[str, dict[str, object]] = {
    "grpo": {"process_norm": "group", "ppo_process_reward": "advantage"},
    "rloo": {"process_norm": "group", "ppo_process_reward": "advantage"},  # not in their code: GRPO's fold
    "reinforce_pp": {"process_norm": "batch", "ppo_process_reward": "advantage"},
    "reinforce_pp_baseline": {"process_norm": "group_mean", "ppo_process_reward": "advantage"},
    "gae": {"process_norm": "none", "ppo_process_reward": "second_gae"},
}
"""Per algo.estimator: how the authors' code folds process rewards into that algorithm's advantage.
GRPO: group-normalised, return to go, added. REINFORCE++: whitened over the batch, then return to
go. REINFORCE++-baseline: group mean subtracted (no std), then return to go. PPO: raw r through a
second GAE with the critic's values, whitened, added."""

GOVERNED = tuple(AUTHORS_CODE) + ("process_norm", "ppo_process_reward")
"""Every key a preset sets (the 'spec' preset sets them to the spec's defaults)."""


def preset_values(name: str, estimator: str, spec: dict[str, object]) -> dict[str, object]:
    """The values preset `name` gives the governed keys, for `estimator`; `spec` = the dataclass defaults."""
    if name == "spec":
        return {k: spec[k] for k in GOVERNED}
    if name == "authors_code":
        fold = AUTHORS_CODE_FOLDS.get(estimator, AUTHORS_CODE_FOLDS["grpo"])
        return {**AUTHORS_CODE, **fold}
    raise ValueError(f"unknown repro.preset {name!r}; choices: {', '.join(PRESETS)}")


def resolve_preset(raw: dict, spec: dict[str, object], default_estimator: str, default_preset: str = "spec") -> dict:
    """`raw` (a recipe after its overrides) with the preset's values in every governed repro key it
    does not set; `repro.preset` itself is written out. Returns a new dict."""
    repro = raw.get("repro")
    repro = dict(repro) if isinstance(repro, dict) else {}
    algo = raw.get("algo")
    estimator = algo.get("estimator", default_estimator) if isinstance(algo, dict) else default_estimator
    name = repro.get("preset", default_preset)
    if name not in PRESETS:  # build() names the key and its choices
        return raw
    values = preset_values(name, estimator, spec)
    out = dict(raw)
    out["repro"] = {"preset": name, **{k: v for k, v in values.items() if k not in repro}, **repro}
    return out
