"""Config machinery: unknown keys, wrong types, dotted overrides, `validate`, `load`, the YAML dump,
and attribute docstrings on every field (docs/recipes.md is built from them)."""

import dataclasses
import typing

import pytest

from repro_train.config import Config, dump_yaml, load
from repro_train.core.typed_config import ConfigError, apply_overrides, field_docs, parse_override


def error(overrides=(), world_size=1) -> str:
    with pytest.raises(ConfigError) as e:
        load(None, list(overrides), world_size=world_size)
    return str(e.value)


# ----------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_names_nearest_and_lists_sections():
    msg = error(["modle.path=x"])
    assert "unknown key 'modle': did you mean 'model'?" in msg
    assert (
        "valid keys here: model, data, rollout, reward, shaping, algo, critic, repro, process, optim, dist, train, log"
        in msg
    )


@pytest.mark.parametrize(
    "override, nearest, listed",
    [
        ("repro.alpah=0.2", "repro.alpha", "enabled, preset, alpha, top_k, w,"),
        ("data.toy.opz=['+']", "data.toy.ops", "n_ops, operand_range, start_range, mul_range, ops, style_ratios"),
        ("reward.functions=[{nmae: exact_match}]", "reward.functions[0].name", "name, weight, kwargs, correctness"),
    ],
)
def test_unknown_nested_key_names_nearest_with_full_dotted_path(override, nearest, listed):
    msg = error([override])
    assert f"did you mean '{nearest}'?" in msg
    assert listed in msg


def test_unknown_key_without_close_match_still_lists_valid_keys():
    msg = error(["log.zzzzzz=1"])
    assert "unknown key 'log.zzzzzz': valid keys here: wandb, wandb_mode, project" in msg
    assert "did you mean" not in msg


# ----------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    "override, expected",
    [
        ("repro.enabled=1", "'repro.enabled' must be true or false, got 1"),
        ("rollout.group_size=2.5", "'rollout.group_size' must be an integer, got 2.5"),
        ("rollout.group_size=true", "'rollout.group_size' must be an integer, got True"),
        ("repro.alpha=abc", "'repro.alpha' must be a number, got 'abc'"),
        ("repro.alpha=false", "'repro.alpha' must be a number, got False"),
        ("model.path=3", "'model.path' must be a string, got 3"),
        (
            "repro.process_norm=grop",
            "'repro.process_norm' must be one of group, batch, group_mean, none; got 'grop' (did you mean 'group'?)",
        ),
        ("optim.betas=0.9", "'optim.betas' must be a list, got 0.9"),
        ("optim.betas=[0.9, x]", "'optim.betas[1]' must be a number, got 'x'"),
        ("algo.mini_batch_size=abc", "'algo.mini_batch_size' must be int | null, got 'abc'"),
        ("repro=5", "'repro' must be a section (a mapping of keys), got 5"),
        ("reward.functions=[{weight: x}]", "'reward.functions[0].weight' must be a number, got 'x'"),
        ("data.toy.n_ops=[3, 1]", "'data.toy': n_ops=(3, 1): need 0 <= lo <= hi"),
    ],
)
def test_wrong_type_names_the_dotted_key(override, expected):
    assert expected in error([override])


def test_coercions_that_are_allowed():
    cfg = load(None, ["repro.alpha=1", "algo.mini_batch_size=null", "optim.betas=[0.9, 0.95]"])
    assert cfg.repro.alpha == 1.0 and isinstance(cfg.repro.alpha, float)
    assert cfg.algo.mini_batch_size is None
    assert cfg.optim.betas == (0.9, 0.95)  # lists become tuples: the config stays hashable and frozen
    assert load(None, ["repro.alpha=0.5", "repro=null"]).repro == Config().repro  # later wins; null = defaults


# ----------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    "text, path, value",
    [
        ("a.b=1", ["a", "b"], 1),
        ("model.path=/data/my model", ["model", "path"], "/data/my model"),
        ("x='1'", ["x"], "1"),
        ("x=[1, 2]", ["x"], [1, 2]),
        ("x=[{name: numeric}]", ["x"], [{"name": "numeric"}]),
        ("x=null", ["x"], None),
        ("x=true", ["x"], True),
        ("x=0.5", ["x"], 0.5),
        ("x=a=b", ["x"], "a=b"),
        ("x=", ["x"], ""),
        (" x.y =2", ["x", "y"], 2),
    ],
)
def test_parse_override(text, path, value):
    assert parse_override(text) == (path, value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("repro.alpha", "override 'repro.alpha' must look like key.sub=value"),
        ("=3", "override '=3' has an empty key"),
        ("x=[1, 2", "override 'x=[1, 2': value is not valid YAML"),
    ],
)
def test_malformed_override(text, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        parse_override(text)


def test_apply_overrides_nests_in_order_and_does_not_mutate():
    raw = {"repro": {"alpha": 0.1, "w": 0.2}, "model": "not a mapping"}
    out = apply_overrides(raw, ["repro.alpha=0.3", "repro.alpha=0.4", "algo.kl.coef=1", "model.path=x"])
    assert out == {"repro": {"alpha": 0.4, "w": 0.2}, "model": {"path": "x"}, "algo": {"kl": {"coef": 1}}}
    assert raw == {"repro": {"alpha": 0.1, "w": 0.2}, "model": "not a mapping"}


def test_overrides_win_over_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("repro:\n  alpha: 0.3\n  top_k: 4\n")
    cfg = load(str(recipe), ["repro.alpha=0.5"])
    assert (cfg.repro.alpha, cfg.repro.top_k) == (0.5, 4)


# ----------------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    "world, overrides, expected",
    [
        # prompts must split over the ranks (a prompt's group stays on one rank)
        (2, ["rollout.prompts_per_step=3"], "use a multiple of 2, e.g. [2, 4, 6, 8]"),
        (4, ["rollout.prompts_per_step=6"], "use a multiple of 4, e.g. [4, 8, 12, 16]"),
        # the mini-batch must divide the batch (8 prompts x 8 = 64 rollouts)
        (
            1,
            ["algo.mini_batch_size=5"],
            "'algo.mini_batch_size' = 5 must divide the batch of rollout.prompts_per_step * "
            "rollout.group_size = 64 rollouts; valid values include [8, 16, 32, 64]",
        ),
        # the (mini-)batch must split into ranks x micro-batches
        (1, ["algo.micro_batch_size=5"], "set algo.micro_batch_size to one of [1, 2, 4, 8, 16, 32, 64]"),
        (2, ["algo.micro_batch_size=3"], "set algo.micro_batch_size to one of [1, 2, 4, 8, 16, 32]"),
        (
            4,
            ["algo.mini_batch_size=32", "algo.micro_batch_size=16"],
            "'algo.mini_batch_size' = 32 rollouts must split evenly into 4 rank(s) x 'algo.micro_batch_size' = 16; "
            "set algo.micro_batch_size to one of [1, 2, 4, 8]",
        ),
    ],
)
def test_batch_divisibility_lists_valid_values(world, overrides, expected):
    assert expected in error(overrides, world_size=world)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_default_batch_is_valid_on_1_2_4_ranks(world):
    load(None, world_size=world)


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_pp_baseline"])
def test_group_estimators_need_two_samples(estimator):
    msg = error([f"algo.estimator={estimator}", "rollout.group_size=1"])
    assert f"'rollout.group_size' must be >= 2 for algo.estimator = {estimator}" in msg


def test_group_size_one_is_fine_without_groups_and_zero_never():
    load(None, ["algo.estimator=reinforce_pp", "rollout.group_size=1"])
    assert "'rollout.group_size' must be >= 1, got 0" in error(["algo.estimator=reinforce_pp", "rollout.group_size=0"])


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "algo.estimator=grop",
            "'algo.estimator': unknown advantage estimator 'grop'; "
            "choices: gae, grpo, reinforce_pp, reinforce_pp_baseline, rloo",
        ),
        ("algo.policy_loss=ppo", "'algo.policy_loss': unknown policy loss 'ppo'; choices: ppo_clip"),
        ("algo.kl_estimator=k4", "'algo.kl_estimator' must be one of k1, k2, k3"),
    ],
)
def test_unknown_registered_names_list_the_choices(override, expected):
    assert expected in error([override])


def test_empty_reward_list():
    assert "'reward.functions' must list at least one reward function" in error(["reward.functions=[]"])


def test_dense_process_reward_needs_gae():
    msg = error(["repro.ppo_process_reward=dense_reward"])
    assert "'repro.ppo_process_reward' = dense_reward needs algo.estimator = gae" in msg
    load(None, ["repro.ppo_process_reward=dense_reward", "algo.estimator=gae"])
    load(None, ["repro.ppo_process_reward=dense_reward", "repro.enabled=false"])  # unused when RePro is off


def test_dynamic_sampling_needs_groups_and_signal_needs_repro():
    msg = error(["rollout.dynamic_sampling=outcome", "algo.estimator=gae"])
    assert "'rollout.dynamic_sampling' = outcome needs a group-relative algo.estimator" in msg
    assert "grpo" in msg and "rloo" in msg and "reinforce_pp_baseline" in msg
    msg = error(["rollout.dynamic_sampling=signal", "repro.enabled=false"])
    assert "set repro.enabled=true, or use rollout.dynamic_sampling=outcome" in msg
    assert "'rollout.refill_rounds' must be >= 0" in error(["rollout.refill_rounds=-1"])
    assert "'rollout.dynamic_sampling' must be one of off, outcome, signal" in error(["rollout.dynamic_sampling=dapo"])
    load(None, ["rollout.dynamic_sampling=outcome", "repro.enabled=false", "algo.estimator=rloo"])
    load(None, ["rollout.dynamic_sampling=signal", "rollout.refill_rounds=0"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("repro.w=1.5", "'repro.w' must be in [0, 1]"),
        ("repro.top_k=0", "'repro.top_k' must be >= 1"),
        ("repro.segment_delimiter=(", "'repro.segment_delimiter' is not a valid regex"),
        ("repro.probe_answer_format=x", "'repro.probe_answer_format' must contain '{answer}'"),
        ("rollout.temperature=0", "'rollout.temperature' must be > 0"),
        ("optim.betas=[0.9]", "'optim.betas' must be two numbers"),
    ],
)
def test_out_of_range_values_name_the_key(override, expected):
    assert expected in error([override])


# ----------------------------------------------------------------------------- load


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(str(tmp_path / "nope.yaml"))


def test_load_invalid_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("repro: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load(str(bad))


def test_load_non_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- model\n- data\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load(str(bad))


def test_load_empty_file_gives_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load(str(empty)) == Config()


# ----------------------------------------------------------------------------- dump


def test_dump_yaml_round_trips_through_load(tmp_path):
    cfg = load(
        None,
        [
            'repro.probe_prefix="\\n</think>\\n\\nThe final answer is $\\\\boxed{"',
            "repro.probe_answer_format='{answer}}$'",
            "repro.segment_delimiter=\\n",
            "repro.magnitude_eps=1.0e-7",
            "reward.functions=[{name: numeric, kwargs: {rel_tol: 0.01}}, "
            "{name: format, weight: 0.1, correctness: false}]",
            "data.toy.n_ops=[1, 3]",
            "data.system_prompt='Be brief: 1 | 2'",
            "optim.betas=[0.8, 0.9]",
            "algo.mini_batch_size=32",
            "algo.dual_clip=3",
            "critic.path=null",
            "train.resume=auto",
        ],
    )
    assert cfg.repro.probe_prefix == "\n</think>\n\nThe final answer is $\\boxed{"
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(cfg))
    assert load(str(saved)) == cfg


# ----------------------------------------------------------------------------- field docs


def _sections(cls):
    """Every config dataclass reachable from `cls`, itself included (sections and list entries)."""
    found = [cls]
    for hint in typing.get_type_hints(cls).values():
        for tp in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(tp) and tp not in found:
                found += [s for s in _sections(tp) if s not in found]
    return found


def test_every_field_has_a_docstring():
    sections = _sections(Config)
    names = {s.__name__ for s in sections}
    assert {
        "ModelConfig",
        "DataConfig",
        "TaskConfig",
        "RolloutConfig",
        "RewardConfig",
        "RewardFnConfig",
        "AlgoConfig",
        "CriticConfig",
        "ReProConfig",
        "OptimConfig",
        "DistConfig",
        "TrainConfig",
        "LogConfig",
    } <= names
    covered, missing = 0, []
    for cls in sections:
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no class docstring"
        if cls is Config:  # its fields are the sections, documented by their class docstrings
            continue
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if docs.get(f.name, "").strip():
                covered += 1
            else:
                missing.append(f"{cls.__name__}.{f.name}")
    total = sum(len(dataclasses.fields(c)) for c in sections if c is not Config)
    assert not missing, f"fields without a docstring: {missing}"
    assert covered == total and total >= 95, (covered, total)


@pytest.mark.parametrize("old", ["repro.think_end=Final", "shaping.think_end=Final"])
def test_moved_keys_name_their_new_place(old):
    """One end-of-thinking marker (model.think_end) for RePro, the shapers and the metrics."""
    with pytest.raises(ConfigError, match=f"'{old.split('=')[0]}' moved to 'model.think_end'"):
        load(None, [old])
    assert load(None, ["model.think_end=Final"]).model.think_end == "Final"
