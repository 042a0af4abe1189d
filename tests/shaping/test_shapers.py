"""Length-control shapers (repro_train/shaping/) against hand-computed values.

One batch covers the edge cases every shaper must handle (R = c, lengths in tokens):

    group 0: c = 1 1 0 0, L = 10 20 30 40 (the 40 is truncated)   mixed
    group 1: c = 0 0,     L = 5 15                                  all wrong
    group 2: c = 1,       L = 8                                     a single rollout
    group 3: c = 1 1 1,   L = 12 12 12                              all correct, equal lengths
"""

import dataclasses
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro_train.core.text import ResponseFormat
from repro_train.core.typed_config import ConfigError
from repro_train.shaping import methods as S
from repro_train.trainer.shaping import thinking_lengths
from tests.helpers import REPO

CORRECT = [1, 1, 0, 0, 0, 0, 1, 1, 1, 1]
LENGTHS = [10, 20, 30, 40, 5, 15, 8, 12, 12, 12]
GROUPS = [0, 0, 0, 0, 1, 1, 2, 3, 3, 3]
TRUNC = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def batch(rewards=None, correct=CORRECT, lengths=LENGTHS, groups=GROUPS, truncated=TRUNC, step=0, thinking=None):
    c = torch.tensor(correct, dtype=torch.bool)
    r = c.float() if rewards is None else torch.tensor(rewards, dtype=torch.float32)
    return S.ShapeInputs(
        r,
        c,
        torch.tensor(lengths),
        torch.tensor(truncated, dtype=torch.bool),
        torch.tensor(groups),
        None if thinking is None else torch.tensor(thinking, dtype=torch.float64),
        step,
    )


def run(name, inp=None, **params):
    p = dataclasses.replace(getattr(S.ShapingConfig(), name), **params)
    out = S.SHAPERS.get(name).reward(inp or batch(), p)
    assert out.shape == (len((inp or batch()).rewards),) and torch.isfinite(out).all()
    return out.tolist()


def close(got, want, tol=1e-6):
    assert len(got) == len(want) and all(abs(g - w) <= tol for g, w in zip(got, want)), f"{got}\n!= {want}"


def test_registry_has_every_method_with_its_parameters_and_docs():
    names = [
        "dapo_overlong",
        "kimi",
        "l1_exact",
        "l1_max",
        "shorter_better",
        "cosine",
        "efficiency",
        "grpo_lead",
        "thinkprune",
        "laser",
        "gated_bonus",
    ]
    assert list(S.SHAPERS) == names
    fields = {f.name for f in dataclasses.fields(S.ShapingConfig)}
    assert set(names) <= fields
    doc = open(os.path.join(REPO, "docs", "rewards.md")).read()
    assert all(f"`{n}`" in doc for n in names)


def test_dapo_overlong():
    # soft = max_len - cache_len = 20: L <= 20 -> 0; (20 - L) / 20 inside the buffer; 40 = L_max -> -1
    close(run("dapo_overlong", max_len=40, cache_len=20), [1, 1, -0.5, -1.0, 0, 0, 1, 1, 1, 1])
    # beyond L_max: -1 (a response longer than the limit the recipe allows)
    close(run("dapo_overlong", batch([0.5], [1], [50], [0], [0]), max_len=40, cache_len=20), [-0.5])


def test_kimi():
    # group 0: lambda = 0.5 - (L - 10) / 30 = 0.5, 1/6, -1/6, -1/2; wrong ones get min(0, lambda)
    # group 1 (all wrong): lambda = 0.5, -0.5 -> 0, -0.5; single and equal-length groups: lambda = 0
    want = [1.5, 1 + 1 / 6, -1 / 6, -0.5, 0, -0.5, 1, 1, 1, 1]
    close(run("kimi"), want)
    close(run("kimi", weight=2.0), [c + 2 * (w - c) for w, c in zip(want, CORRECT)])
    close(run("kimi", batch(step=4), warmup_steps=5), CORRECT)  # still warming up: unchanged
    close(run("kimi", batch(step=5), warmup_steps=5), want)


def test_l1_exact_and_max():
    # exact: R - 0.01 * |20 - L|
    close(run("l1_exact", alpha=0.01, target_len=20), [0.9, 1, -0.1, -0.2, -0.15, -0.05, 0.88, 0.92, 0.92, 0.92])
    # max: R * clip(0.01 * (20 - L) + 0.5, 0, 1) = R * (0.6, 0.5, 0.4, 0.3, 0.65, 0.55, 0.62, 0.58, ...)
    close(run("l1_max", alpha=0.01, target_len=20), [0.6, 0.5, 0, 0, 0, 0, 0.62, 0.58, 0.58, 0.58])
    # the clip: far under budget -> 1, far over -> 0
    close(run("l1_max", batch(None, [1, 1], [0, 500], [0, 0], [0, 0]), alpha=0.01, target_len=100), [1.0, 0.0])


def test_shorter_better():
    # SOL: 10 (shortest correct), 10 (no correct: mean of 5 and 15), 8, 12; R' = 2R - 0.1 |L - SOL|
    close(run("shorter_better", alpha=2.0, beta=0.1), [2, 1, -2, -3, -0.5, -0.5, 2, 2, 2, 2])


def test_cosine():
    # v(L) = v_max + (v_0 - v_max)(1 + cos(pi L / 40)) / 2; correct (1, 0.5), wrong (-1, -0.5)
    r2 = math.sqrt(2) / 2
    half = lambda cos: (1 + cos) / 2  # noqa: E731
    want = [
        0.5 + 0.5 * half(r2),  # L 10: cos(pi/4)
        0.75,  # L 20: cos(pi/2) = 0
        -0.5 - 0.5 * half(-r2),  # L 30, wrong: cos(3 pi/4)
        -0.5,  # L 40 = max_len, wrong
        -0.5 - 0.5 * half(0.9238795325),  # L 5: cos(pi/8)
        -0.5 - 0.5 * half(0.3826834324),  # L 15: cos(3 pi/8)
        0.5 + 0.5 * half(0.8090169944),  # L 8: cos(pi/5)
        *[0.5 + 0.5 * half(0.5877852523)] * 3,
    ]  # L 12: cos(3 pi/10)
    close(run("cosine", max_len=40), want)
    close(want[:2], [0.926776695, 0.75])  # the first two by hand
    # longer than max_len: the value at max_len; and the correctness term is what gets replaced
    close(run("cosine", batch([1.3, 0.3], [1, 0], [80, 80], [0, 0], [0, 1]), max_len=40), [0.5 + 0.3, -0.5 + 0.3])


def test_efficiency():
    # group 0 correct lengths 10, 20: mu 15, sigma 5 -> z = -1, +1; R' = 1 - 0.2 * sigmoid(z)
    # single rollout and equal lengths: z = 0 -> 1 - 0.2 * 0.5; wrong responses unchanged
    s1 = 1 / (1 + math.exp(-1))
    close(run("efficiency", alpha=0.2), [1 - 0.2 * (1 - s1), 1 - 0.2 * s1, 0, 0, 0, 0, 0.9, 0.9, 0.9, 0.9])
    close([1 - 0.2 * (1 - s1), 1 - 0.2 * s1], [0.946211716, 0.853788284])


def test_grpo_lead_reward():
    # correct: exp(-0.5 z), z = -1, +1 in group 0, 0 in groups 2 and 3; wrong: -1
    close(run("grpo_lead"), [math.exp(0.5), math.exp(-0.5), -1, -1, -1, -1, 1, 1, 1, 1])
    close([math.exp(0.5), math.exp(-0.5)], [1.648721271, 0.606530660])


def test_grpo_lead_difficulty_weights():
    # w(p) = 0.4 + 1.1 / (1 + exp(10 (p - 0.75))): w(0.5) = 1.416556, w(0) = 1.499392, w(1) = 0.483444
    inp = batch()
    p = S.ShapingConfig().grpo_lead
    close(
        S.lead_weight(torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64), p).tolist(), [1.4165560, 1.4993919, 0.4834440]
    )
    adv = torch.tensor(
        [
            [1.0, 1.0],
            [-1.0, 0.0],
            [2.0, -2.0],
            [0.0, 0.0],
            [0.5, 0.5],
            [-0.5, -0.5],
            [2.0, -2.0],
            [1.0, 0.0],
            [0.0, 0.0],
            [-1.0, -1.0],
        ]
    )
    out = S.grpo_lead_advantage(adv, inp, p)
    # group 0 (pass rate 0.5): both signs x w(0.5); group 1 (0): positive x w(0), negative x w(1);
    # group 2 (1): positive x w(1), negative x w(0); group 3 (1): same; zeros stay zero
    w5, w0, w1 = 1.4165560, 1.4993919, 0.4834440
    want = [
        [w5, w5],
        [-w5, 0],
        [2 * w5, -2 * w5],
        [0, 0],
        [0.5 * w0, 0.5 * w0],
        [-0.5 * w1, -0.5 * w1],
        [2 * w1, -2 * w0],
        [w1, 0],
        [0, 0],
        [-w0, -w0],
    ]
    close(out.flatten().tolist(), [x for row in want for x in row])
    off = S.grpo_lead_advantage(adv, inp, dataclasses.replace(p, difficulty_reweight=False))
    assert torch.equal(off, adv)


def test_thinkprune_rounds():
    inp = lambda step: batch([1, 1, 1, 1], [1, 1, 1, 1], [10, 25, 35, 5], [0, 0, 0, 0], [0, 0, 1, 1], step=step)  # noqa: E731
    # round 0 (limit 30): the 35 is over the limit and the truncated 5 was cut at the generation limit
    close(run("thinkprune", inp(0), limits=(30, 20), round_steps=2), [1, 1, 0, 0])
    close(run("thinkprune", inp(2), limits=(30, 20), round_steps=2), [1, 0, 0, 0])  # round 1: limit 20
    close(run("thinkprune", inp(99), limits=(30, 20), round_steps=2), [1, 0, 0, 0])  # the last limit stays
    close(run("thinkprune", inp(99), limits=(30, 20), round_steps=0), [1, 1, 0, 0])  # no rounds: the first
    # on the shared batch with limit 40: only the truncated (wrong, R = 0) row is cut
    close(run("thinkprune", limits=(40,)), CORRECT)


def test_laser():
    # R + 0.5 * c * [L <= 15]
    close(run("laser", alpha=0.5, target_len=15), [1.5, 1, 0, 0, 0, 0, 1.5, 1.5, 1.5, 1.5])


def test_gated_bonus():
    # group 0: mean correct 15 -> bonus 1 - 10/15 = 1/3 and 0 (clamped); group 1: none correct;
    # single and equal-length groups: L = mean -> 0
    close(run("gated_bonus"), [4 / 3, 1, 0, 0, 0, 0, 1, 1, 1, 1])
    close(run("gated_bonus", batch([2.0, 2.0], [1, 1], [10, 30], [0, 0], [0, 0]), max_bonus=0.25), [2.5, 2.0])


def test_group_mean_std_hand():
    # group 0 over the rows where `where`: (1, 2) -> mean 1.5, population std 0.5 (the 3 is left out);
    # group 1: (7, 7) -> mean 7, std exactly 0; group 2: no such row -> nan
    x = torch.tensor([1.0, 2.0, 3.0, 7.0, 7.0, 4.0], dtype=torch.float64)
    where = torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.bool)
    mean, std = S.group_mean_std(x, where, torch.tensor([0, 0, 0, 1, 1, 2]))
    assert mean[:5].tolist() == [1.5, 1.5, 1.5, 7.0, 7.0] and std[:5].tolist() == [0.5, 0.5, 0.5, 0.0, 0.0]
    assert math.isnan(mean[5]) and math.isnan(std[5])


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.floats(1.0, 1e4), n=st.integers(2, 40), others=st.lists(st.floats(1.0, 1e4), max_size=5))
def test_flat_group_terms_are_exactly_neutral(value, n, others):
    """n correct responses of one measured length `value` (plus wrong ones of other lengths) in one
    group: the group's mean is exactly that length and its std exactly 0 (issue 25), so
    efficiency's sigmoid((L - mu) / (sigma + eps)) is exactly 1/2, GRPO-LEAD's exp(-alpha z) exactly
    1 and gated_bonus's bonus exactly 0."""
    lengths = [value] * n + others
    c = [1] * n + [0] * len(others)
    inp = batch(None, c, [1] * len(c), [0] * len(c), [3] * len(c), thinking=lengths)
    mean, std = S.group_mean_std(inp.measured, inp.correct, inp.group_ids)
    assert (mean == value).all() and (std == 0).all()
    assert run("efficiency", inp, alpha=0.2)[:n] == [1 - 0.2 * 0.5] * n
    assert run("grpo_lead", inp)[:n] == [1.0] * n
    assert run("gated_bonus", inp)[:n] == [1.0] * n


def test_thinking_lengths_replace_the_response_length():
    # laser with L_T = 15 reads the thinking length: all rows now within the target
    inp = batch(thinking=[1] * 10)
    close(run("laser", inp, alpha=0.5, target_len=15), [1.5, 1.5, 0, 0, 0, 0, 1.5, 1.5, 1.5, 1.5])
    # dapo_overlong keeps the response length (it enforces the generation limit)
    close(run("dapo_overlong", inp, max_len=40, cache_len=20), [1, 1, -0.5, -1.0, 0, 0, 1, 1, 1, 1])


def test_shapers_compose_in_order_and_record_their_contributions():
    cfg = S.ShapingConfig(methods=("kimi", "gated_bonus"))
    out, res = S.apply_reward_shapers(cfg, batch())
    after_kimi = torch.tensor(run("kimi"), dtype=torch.float32)
    second = batch(after_kimi.tolist())
    close(out.tolist(), run("gated_bonus", second), 1e-5)
    close(res.contributions["kimi"].tolist(), (after_kimi - torch.tensor(CORRECT)).tolist(), 1e-6)
    close(
        (res.contributions["kimi"] + res.contributions["gated_bonus"]).tolist(),
        (out - torch.tensor(CORRECT, dtype=torch.float32)).tolist(),
        1e-6,
    )
    assert S.apply_advantage_shapers(cfg, res, torch.ones(10, 3)).equal(torch.ones(10, 3))


@pytest.mark.parametrize("name", list(S.SHAPERS))
def test_groups_split_over_two_ranks_equal_the_whole_batch(name):
    """Group statistics never need another rank: shaping the batch in two halves (whole groups,
    and group ids reordered) gives the same rows."""
    p = S.ShapingConfig(
        methods=(name,), dapo_overlong=S.DapoOverlongParams(40, 20), thinkprune=S.ThinkPruneParams((40, 20), 1)
    )
    whole, _ = S.apply_reward_shapers(p, batch(step=1))
    cut = 4  # groups 0 | 1, 2, 3
    a, _ = S.apply_reward_shapers(p, batch(None, CORRECT[:cut], LENGTHS[:cut], GROUPS[:cut], TRUNC[:cut], step=1))
    b, _ = S.apply_reward_shapers(
        p, batch(None, CORRECT[cut:], LENGTHS[cut:], [9 - g for g in GROUPS[cut:]], TRUNC[cut:], step=1)
    )
    close(torch.cat([a, b]).tolist(), whole.tolist(), 1e-6)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"methods": ("kimi", "kimi")}, "'shaping.methods' lists a shaper twice"),
        ({"methods": ("cosin",)}, "'shaping.methods[0]' = 'cosin' is not a shaper (did you mean 'cosine'?)"),
        (
            {"methods": ("dapo_overlong",)},
            "'shaping.dapo_overlong.max_len' = 20480 exceeds rollout.max_new_tokens = 128",
        ),
        (
            {"methods": ("dapo_overlong",), "dapo_overlong": S.DapoOverlongParams(128, 128)},
            "'shaping.dapo_overlong.cache_len' must be in (0, max_len = 128)",
        ),
        ({"methods": ("thinkprune",), "thinkprune": S.ThinkPruneParams((64, 96))}, "strictly decreasing"),
        (
            {"methods": ("efficiency",), "efficiency": S.EfficiencyParams(alpha=2.0)},
            "'shaping.efficiency.alpha' must be in [0, 1]",
        ),
        ({"methods": ("laser",), "laser": S.LaserParams(target_len=0)}, "'shaping.laser.target_len' must be >= 1"),
    ],
)
def test_validation_names_the_field(overrides, needle):
    with pytest.raises(ConfigError) as e:
        S.validate_shaping(S.ShapingConfig(**overrides), max_new_tokens=128)
    assert needle in str(e.value)
    # parameters of a shaper that is not in use are not checked
    S.validate_shaping(dataclasses.replace(S.ShapingConfig(**overrides), methods=()), max_new_tokens=128)


PARITY = """
def parity(prompts, completions, answers, **columns):
    \"\"\"1 for an even number of characters: about half the rollouts of a random model are 'correct'.\"\"\"
    return [float(len(t) % 2 == 0) for t in completions]
"""


def test_training_with_shapers_on(tmp_path, tiny_model_dir):
    """Three GRPO steps with kimi + grpo_lead: the logged reward is the outcome reward plus each
    shaper's contribution, lengths are split by correctness, and the weights move."""
    from repro_train.tasks.arithmetic import generate, write_jsonl
    from tests.helpers.trainer_utils import (
        all_finite,
        last_checkpoint,
        make_recipe,
        metrics,
        policy_weights,
        run_inprocess,
    )

    data = tmp_path / "d.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(data))
    (tmp_path / "parity.py").write_text(PARITY)
    recipe = make_recipe(
        tmp_path,
        tiny_model_dir,
        str(data),
        shaping={"methods": ["kimi", "grpo_lead"]},
        repro={"enabled": False},
        reward={"functions": [{"name": f"{tmp_path}/parity.py:parity", "correctness": True}]},
    )
    rows = metrics(run_inprocess(recipe))
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert not all_finite(r), all_finite(r)
        assert "response_length/correct" in r or "response_length/incorrect" in r
        outcome = r[f"reward/{tmp_path}/parity.py:parity"]
        assert r["accuracy"] == pytest.approx(outcome)
        assert r["reward/mean"] == pytest.approx(outcome + r["shaping/kimi"] + r["shaping/grpo_lead"], abs=1e-5)
        n_ok = r["accuracy"]
        split = n_ok * r.get("response_length/correct", 0) + (1 - n_ok) * r.get("response_length/incorrect", 0)
        assert split == pytest.approx(r["response_length/mean"], rel=1e-6)
    from safetensors.torch import load_file

    before = load_file(f"{tiny_model_dir}/model.safetensors")
    after = policy_weights(last_checkpoint(os.path.join(tmp_path, "run")))
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_thinking_lengths_count_the_tokens_before_the_marker(tiny):
    """The thinking span ends at the token where '</think>' begins (RePro's spec 1); without the
    marker it is the whole response but a final EOS."""
    _, tok = tiny
    ids = tok.encode("12 + 3 = 15\n\n</think>\n\nFinal answer: 15", add_special_tokens=False)
    plain = tok.encode("12 + 3 = 15", add_special_tokens=False)
    eos = tok.eos_token_id
    T = thinking_lengths(tok, [ids, plain, plain + [eos]], ResponseFormat((eos,), "</think>")).tolist()
    head = tok.decode(ids[: int(T[0])])
    assert "</think>" not in head and "</think>" in tok.decode(ids[: int(T[0]) + 8])
    assert head.startswith("12 + 3 = 15") and 0 < T[0] < len(ids)
    assert T[1:] == [len(plain), len(plain)]


@pytest.mark.distributed
def test_two_ranks_equal_one_process_with_shapers(tmp_path, tiny_model_dir):
    """torchrun with 2 ranks (gloo DDP) and kimi + grpo_lead on: each rank shapes its own groups,
    and the step's metrics and updated weights equal one process's with the same global batch."""
    import sys

    from repro_train.tasks.arithmetic import generate, write_jsonl
    from tests.helpers.trainer_utils import (
        last_checkpoint,
        make_recipe,
        max_abs_diff,
        metrics,
        policy_weights,
        run_cli,
        run_inprocess,
    )

    data = tmp_path / "d.jsonl"
    write_jsonl(generate(8, seed=11, with_traces=False), str(data))
    (tmp_path / "parity.py").write_text(PARITY)
    recipe = make_recipe(
        tmp_path,
        tiny_model_dir,
        str(data),
        shaping={"methods": ["kimi", "grpo_lead"]},
        rollout={"prompts_per_step": 4, "per_prompt_seed": True},
        algo={"micro_batch_size": 2},
        train={"steps": 1},
        repro={"enabled": False},
        reward={"functions": [{"name": f"{tmp_path}/parity.py:parity", "correctness": True}]},
    )
    single = run_inprocess(recipe, f"train.output_dir={tmp_path / 'single'}")
    bin_dir = os.path.dirname(sys.executable)
    res = run_cli(
        ["train", "--config", recipe, f"train.output_dir={tmp_path / 'ddp'}"],
        launcher=[f"{bin_dir}/torchrun", "--standalone", "--nproc_per_node", "2", "-m", "repro_train"],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = metrics(single)[0], metrics(str(tmp_path / "ddp"))[0]
    for k in ("reward/mean", "shaping/kimi", "shaping/grpo_lead", "accuracy", "adv/abs_mean"):
        assert two[k] == pytest.approx(one[k], abs=1e-6), k
    assert (
        max_abs_diff(policy_weights(last_checkpoint(single)), policy_weights(last_checkpoint(str(tmp_path / "ddp"))))
        < 1e-4
    )
