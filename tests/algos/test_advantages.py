"""Advantage estimators against hand-derived numbers, plus invariances (masked garbage, rank split)."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro_train.algos.advantages import (
    ESTIMATORS,
    AdvantageInputs,
    AdvantageParams,
    get_estimator,
    masked_whiten,
    register_estimator,
)

GARBAGE = 1e6  # written on masked tokens; must never reach an output


def _mask(rows):
    return torch.tensor(rows, dtype=torch.bool)


# The shared example: rewards (1, 0, 1, 1), groups {0, 1} and {2, 3}, T = 3, right-padded.
MASK = _mask([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
REWARDS = torch.tensor([1.0, 0.0, 1.0, 1.0])
GROUPS = torch.tensor([0, 0, 1, 1])


def _run(name, inputs, **params):
    return get_estimator(name)(inputs, AdvantageParams(**params))


def _close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=tol, rtol=0)


# ---------------------------------------------------------------------------------------------
# grpo / Dr. GRPO
# ---------------------------------------------------------------------------------------------


def test_grpo_two_groups_of_two():
    # Group {0,1}: scores (1, 0), mean 0.5, unbiased std sqrt((0.25 + 0.25) / 1) = 1/sqrt2
    #   -> A = +-0.5 / (1/sqrt2 + eps) = +-1/sqrt2 (eps = 0 here).
    # Group {2,3}: scores (1, 1), mean 1, std 0 -> A = 0 / (0 + eps) = 0 with the default eps.
    out = _run("grpo", AdvantageInputs(REWARDS, MASK, GROUPS), eps=0.0)
    a = 1 / math.sqrt(2)
    _close(out.advantages[:2], [[a, a, a], [-a, -a, 0.0]])
    out = _run("grpo", AdvantageInputs(REWARDS, MASK, GROUPS))
    _close(out.advantages[2:], torch.zeros(2, 3), tol=0)
    # returns = return-to-go of r (outcome at the last valid token), gamma = 1.
    _close(out.returns, [[1, 1, 1], [0, 0, 0], [1, 0, 0], [1, 1, 1]], tol=0)


def test_grpo_token_rewards_and_dr_grpo():
    # rewards (1, 0, 0); row 0 adds token rewards 1 + 1 on its two valid tokens, row 1 adds
    # 0.5 - 0.5; masked tokens hold garbage. Scores (3, 0, 0), mean 1, deviations (2, -1, -1),
    # unbiased var (4 + 1 + 1) / 2 = 3.
    #   GRPO:    A = (2, -1, -1) / sqrt3;   Dr. GRPO: A = (2, -1, -1).
    mask = _mask([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    tok = torch.tensor([[1.0, 1.0, GARBAGE], [0.5, -0.5, 0.0], [0.0, GARBAGE, GARBAGE]])
    inp = AdvantageInputs(torch.tensor([1.0, 0.0, 0.0]), mask, torch.tensor([7, 7, 7]), token_rewards=tok)
    s3 = math.sqrt(3)
    grpo = _run("grpo", inp, eps=0.0)
    _close(grpo.advantages, [[2 / s3, 2 / s3, 0], [-1 / s3] * 3, [-1 / s3, 0, 0]])
    dr = _run("grpo", inp, grpo_std_norm=False)
    _close(dr.advantages, [[2, 2, 0], [-1, -1, -1], [-1, 0, 0]])
    # Per-token r: row 0 (1, 1 + 1), row 1 (0.5, -0.5, 0 + 0); return-to-go at gamma = 1.
    _close(grpo.returns, [[3, 2, 0], [0, -0.5, 0], [0, 0, 0]])


def test_grpo_group_of_one_uses_mean0_std1():
    # verl: a lone rollout gets mean 0, std 1, so A = score / (1 + eps), and score under Dr. GRPO.
    inp = AdvantageInputs(torch.tensor([2.0, 1.0, 0.0]), _mask([[1, 1], [1, 0], [1, 1]]), torch.tensor([5, 9, 9]))
    out = _run("grpo", inp, eps=1e-6)
    _close(out.advantages[0], [2 / (1 + 1e-6)] * 2, tol=1e-6)
    assert _run("grpo", inp, grpo_std_norm=False).advantages[0].tolist() == [2.0, 2.0]


# ---------------------------------------------------------------------------------------------
# rloo
# ---------------------------------------------------------------------------------------------


def test_rloo_formula_and_group_of_one():
    # Group a = scores (3, 0, 0): A_0 = 3 - (0+0)/2 = 3, A_1 = A_2 = 0 - (3+0)/2 = -1.5
    #   (= G/(G-1) (s - mean) = 1.5 * (2, -1, -1)).
    # Group b = scores (1, 0): A = (1 - 0, 0 - 1) = (1, -1).   Group c = one rollout: A = 0.
    mask = _mask([[1, 1], [1, 0], [1, 1], [1, 1], [1, 0], [1, 1]])
    inp = AdvantageInputs(torch.tensor([3.0, 0.0, 0.0, 1.0, 0.0, 4.0]), mask, torch.tensor([0, 0, 0, 1, 1, 2]))
    out = _run("rloo", inp)
    _close(out.advantages, [[3, 3], [-1.5, 0], [-1.5, -1.5], [1, 1], [-1, 0], [0, 0]], tol=1e-6)


# ---------------------------------------------------------------------------------------------
# reinforce_pp / reinforce_pp_baseline
# ---------------------------------------------------------------------------------------------


def test_reinforce_pp_hand():
    # gamma = 0.5; r has the outcome on each row's last valid token.
    #   G = row0 (0.25, 0.5, 1), row1 (0, 0, -), row2 (1, -, -), row3 (0.25, 0.5, 1)
    # Whitening over the 9 valid tokens: mean 4.5/9 = 0.5; squared deviations
    #   .0625 + 0 + .25 + .25 + .25 + .25 + .0625 + 0 + .25 = 1.375; unbiased var 1.375/8.
    out = _run("reinforce_pp", AdvantageInputs(REWARDS, MASK, GROUPS), gamma=0.5)
    _close(out.returns, [[0.25, 0.5, 1], [0, 0, 0], [1, 0, 0], [0.25, 0.5, 1]], tol=1e-7)
    dev = torch.tensor([[-0.25, 0, 0.5], [-0.5, -0.5, 0], [0.5, 0, 0], [-0.25, 0, 0.5]])
    _close(out.advantages, dev / math.sqrt(1.375 / 8 + 1e-8), tol=1e-6)
    assert out.advantages[~MASK].eq(0).all()


def test_reinforce_pp_token_rewards_return_to_go():
    # gamma = 1: r = (-0.1, -0.2, -0.3 + 1, pad) -> G = (0.4, 0.5, 0.7, 0).
    inp = AdvantageInputs(
        torch.tensor([1.0]),
        _mask([[1, 1, 1, 0]]),
        torch.tensor([0]),
        token_rewards=torch.tensor([[-0.1, -0.2, -0.3, GARBAGE]]),
    )
    _close(_run("reinforce_pp", inp).returns, [[0.4, 0.5, 0.7, 0.0]], tol=1e-6)


def test_reinforce_pp_baseline_hand():
    # score - group mean = (0.5, -0.5, 0, 0) broadcast: 3 x 0.5, 2 x -0.5, 1 x 0, 3 x 0.
    # n = 9, S1 = 0.5, S2 = 1.25 -> mean 1/18, unbiased var (1.25 - 0.5 * 1/18) / 8.
    out = _run("reinforce_pp_baseline", AdvantageInputs(REWARDS, MASK, GROUPS))
    mean, std = 1 / 18, math.sqrt((1.25 - 0.5 / 18) / 8 + 1e-8)
    pre = torch.tensor([[0.5] * 3, [-0.5, -0.5, 0], [0, 0, 0], [0, 0, 0]])
    _close(out.advantages, torch.where(MASK, (pre - mean) / std, 0), tol=1e-6)
    assert out.advantages[~MASK].eq(0).all()


# ---------------------------------------------------------------------------------------------
# gae
# ---------------------------------------------------------------------------------------------


def test_gae_gamma_lam_one_zero_values_is_return_to_go():
    tok = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.5, GARBAGE], [1.0, GARBAGE, GARBAGE], [0.0, 0.0, -1.0]])
    inp = AdvantageInputs(REWARDS, MASK, GROUPS, token_rewards=tok, values=torch.where(MASK, 0.0, GARBAGE))
    out = _run("gae", inp, gamma=1.0, lam=1.0, whiten=False)
    # G = row0 r (0.1, -0.2, 1.3) -> (1.2, 1.1, 1.3); row1 r (0.5, 0.5) -> (1, 0.5);
    #     row2 r (2) -> (2); row3 r (0, 0, 0) -> 0.
    expected = [[1.2, 1.1, 1.3], [1.0, 0.5, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    _close(out.advantages, expected, tol=1e-6)
    _close(out.returns, expected, tol=1e-6)  # R = A + V = A


def test_gae_hand_gamma09_lam08():
    # gamma = 0.9, lam = 0.8 (gamma lam = 0.72).
    # Row 0: mask (1,1,1,0), reward 1, V = (0.5, 0.2, 0.4, garbage).
    #   delta_2 = 1 + 0 - 0.4 = 0.6;  delta_1 = 0.9*0.4 - 0.2 = 0.16;  delta_0 = 0.9*0.2 - 0.5 = -0.32
    #   A_2 = 0.6;  A_1 = 0.16 + 0.72*0.6 = 0.592;  A_0 = -0.32 + 0.72*0.592 = 0.10624
    #   R = A + V = (0.60624, 0.792, 1.0)
    # Row 1: mask (1,1,0,0), reward -1, V = (0.1, -0.3, garbage, garbage).
    #   delta_1 = -1 + 0 + 0.3 = -0.7;  delta_0 = 0.9*(-0.3) - 0.1 = -0.37
    #   A_1 = -0.7;  A_0 = -0.37 + 0.72*(-0.7) = -0.874;   R = (-0.774, -1.0)
    mask = _mask([[1, 1, 1, 0], [1, 1, 0, 0]])
    values = torch.tensor([[0.5, 0.2, 0.4, GARBAGE], [0.1, -0.3, GARBAGE, -GARBAGE]])
    inp = AdvantageInputs(torch.tensor([1.0, -1.0]), mask, torch.tensor([0, 1]), values=values)
    out = _run("gae", inp, gamma=0.9, lam=0.8, whiten=False)
    _close(out.advantages, [[0.10624, 0.592, 0.6, 0], [-0.874, -0.7, 0, 0]], tol=1e-6)
    _close(out.returns, [[0.60624, 0.792, 1.0, 0], [-0.774, -1.0, 0, 0]], tol=1e-6)
    # Whitening: returns unchanged; advantages = masked_whiten of the raw A.
    w = _run("gae", inp, gamma=0.9, lam=0.8, whiten=True)
    _close(w.returns, out.returns, tol=0)
    raw = torch.tensor([0.10624, 0.592, 0.6, -0.874, -0.7])
    expected = (raw - raw.mean()) / torch.sqrt(raw.var(unbiased=True) + 1e-8)
    _close(w.advantages[mask], expected, tol=1e-5)


def test_gae_requires_values():
    with pytest.raises(ValueError, match="values"):
        _run("gae", AdvantageInputs(REWARDS, MASK, GROUPS))


# ---------------------------------------------------------------------------------------------
# Invariances
# ---------------------------------------------------------------------------------------------


def _random_batch(B=8, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, T + 1, (B,), generator=g)
    lens[3] = T  # at least one full row
    mask = torch.arange(T)[None, :] < lens[:, None]  # (B, T) right-padded
    rewards = torch.randint(0, 2, (B,), generator=g).float() + 0.1 * torch.randn(B, generator=g)
    token_rewards = 0.1 * torch.randn(B, T, generator=g)
    values = torch.randn(B, T, generator=g)
    groups = torch.arange(B) // 2  # groups of 2, never straddling the middle
    return AdvantageInputs(rewards, mask, groups, token_rewards, values)


PARAMS = AdvantageParams(gamma=0.9, lam=0.8, whiten=True)


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gae"])
def test_masked_inputs_do_not_matter(name):
    clean = _random_batch()
    m = clean.mask
    dirty = AdvantageInputs(
        clean.rewards,
        m,
        clean.group_ids,
        torch.where(m, clean.token_rewards, GARBAGE),
        torch.where(m, clean.values, float("nan")),
    )
    a, b = get_estimator(name)(clean, PARAMS), get_estimator(name)(dirty, PARAMS)
    assert torch.equal(a.advantages, b.advantages) and torch.equal(a.returns, b.returns)
    assert a.advantages[~m].eq(0).all() and a.returns[~m].eq(0).all()
    assert a.advantages[m].abs().sum() > 0


class _FakeRanks:
    """reduce for a 2-rank split: record the other half's stats, then add them to ours."""

    def __init__(self):
        self.recorded = []

    def record(self, stats):
        self.recorded.append(stats.clone())
        return stats

    def add_recorded(self, stats):
        return stats + self.recorded.pop(0)


def _half(inp, rows):
    return AdvantageInputs(
        inp.rewards[rows], inp.mask[rows], inp.group_ids[rows], inp.token_rewards[rows], inp.values[rows]
    )


@pytest.mark.parametrize("name", ["reinforce_pp", "reinforce_pp_baseline", "gae", "grpo", "rloo"])
def test_two_ranks_equal_whole_batch(name):
    whole = _random_batch(seed=1)
    est = get_estimator(name)
    ref = est(whole, PARAMS)
    halves = [_half(whole, slice(0, 4)), _half(whole, slice(4, 8))]
    parts = []
    for me, other in ((0, 1), (1, 0)):
        ranks = _FakeRanks()
        est(halves[other], PARAMS, ranks.record)  # what the other rank contributes to the all-reduce
        parts.append(est(halves[me], PARAMS, ranks.add_recorded))
        assert not ranks.recorded  # every recorded stat was consumed
    torch.testing.assert_close(torch.cat([p.advantages for p in parts]), ref.advantages, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.cat([p.returns for p in parts]), ref.returns, atol=1e-6, rtol=0)
    # Without the reduce the whitened estimators differ: the test can fail.
    if name in ("reinforce_pp", "reinforce_pp_baseline", "gae"):
        assert not torch.allclose(est(halves[0], PARAMS).advantages, ref.advantages[:4], atol=1e-3)


def test_masked_whiten_hand():
    # Valid x = (1, 2, 3, 6): mean 3, unbiased var (4 + 1 + 0 + 9) / 3 = 14/3.
    x = torch.tensor([[1.0, 2.0, GARBAGE], [3.0, 6.0, -GARBAGE]])
    m = _mask([[1, 1, 0], [1, 1, 0]])
    out = masked_whiten(x, m, eps=0.0)
    s = math.sqrt(14 / 3)
    _close(out, [[-2 / s, -1 / s, 0], [0, 3 / s, 0]], tol=1e-6)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_unknown_estimator_lists_choices():
    with pytest.raises(ValueError) as e:
        get_estimator("ppo")
    for name in ("gae", "grpo", "reinforce_pp", "reinforce_pp_baseline", "rloo"):
        assert name in str(e.value)


def test_duplicate_registration_raises():
    before, grpo = list(ESTIMATORS), ESTIMATORS.get("grpo")
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("grpo")(lambda inp, p, reduce: None)
    assert list(ESTIMATORS) == before and ESTIMATORS.get("grpo") is grpo


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="bool"):
        AdvantageInputs(REWARDS, MASK.float(), GROUPS)
    with pytest.raises(ValueError, match="values"):
        AdvantageInputs(REWARDS, MASK, GROUPS, values=torch.zeros(4, 2))


# ---------------------------------------------------------------------------------------------
# Flat groups and invariances (issue 25): statistics in float64 with exact centring (algos/moments.py)
# ---------------------------------------------------------------------------------------------

PROPS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
FLAT_CASES = [("grpo", {}), ("grpo", {"eps": 0.0}), ("grpo", {"grpo_std_norm": False}), ("rloo", {})]
FLAT_CASES += [("reinforce_pp_baseline", {}), ("reinforce_pp", {})]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, value", [(7, 0.1), (64, 2.1)])
def test_flat_group_gets_exactly_zero(n, value, dtype):
    """n equal rewards get A = 0, as verl (float64) and this file's docs say. The former float32
    group statistics gave 7 x 0.1 -> -0.0074 each and 64 x 2.1 -> +0.32 each (bf16 inputs: -0.93
    and +0.99): the mean is off by a rounding unit and the std is that rounding noise."""
    inp = AdvantageInputs(
        torch.full((n,), value, dtype=dtype), torch.ones(n, 3, dtype=torch.bool), torch.zeros(n, dtype=torch.long)
    )
    for name, params in FLAT_CASES:
        out = _run(name, inp, **params)
        assert out.advantages.dtype == out.returns.dtype == torch.float32, name
        assert torch.equal(out.advantages, torch.zeros(n, 3)), (name, params, out.advantages[0, 0].item())


def test_flat_group_beside_other_groups():
    # Group 0: three rewards of 0.1 -> A = 0. Group 1: (1, 0) -> GRPO +-1/sqrt2 (eps 0), RLOO +-1.
    inp = AdvantageInputs(torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0]), _mask([[1, 1]] * 5), torch.tensor([4, 4, 4, 2, 2]))
    g, r = _run("grpo", inp, eps=0.0), _run("rloo", inp)
    assert torch.equal(g.advantages[:3], torch.zeros(3, 2)) and torch.equal(r.advantages[:3], torch.zeros(3, 2))
    _close(g.advantages[3:, 0], [2**-0.5, -(2**-0.5)], tol=1e-7)
    _close(r.advantages[3:, 0], [1.0, -1.0], tol=0)


def test_outputs_are_float32_for_any_input_dtype():
    for dtype in (torch.bfloat16, torch.float64):
        inp = _random_batch()
        inp = AdvantageInputs(inp.rewards.to(dtype), inp.mask, inp.group_ids, inp.token_rewards.to(dtype), inp.values)
        for name in ESTIMATORS:
            out = get_estimator(name)(inp, PARAMS)
            assert out.advantages.dtype == out.returns.dtype == torch.float32, (name, dtype)


GRID = 64
"""Rewards and shifts are multiples of 1/64 below 2^10: exact in float32, so r + c rounds nowhere and
any difference is the estimator's."""


@st.composite
def grouped_batches(draw):
    """AdvantageInputs with 1-4 groups of 2-6 rollouts (rows interleaved), grid rewards and token rewards."""
    sizes = draw(st.lists(st.integers(2, 6), min_size=1, max_size=4))
    B, T = sum(sizes), draw(st.integers(1, 4))
    perm = torch.tensor(draw(st.permutations(range(B))))
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))[perm]
    lens = torch.tensor(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    rewards = torch.tensor(draw(st.lists(st.integers(-8 * GRID, 8 * GRID), min_size=B, max_size=B))) / GRID
    tok = torch.tensor(draw(st.lists(st.integers(-GRID, GRID), min_size=B * T, max_size=B * T))).view(B, T) / GRID
    return AdvantageInputs(
        rewards, torch.arange(T)[None, :] < lens[:, None], groups, tok if draw(st.booleans()) else None
    )


def _with_rewards(inp, rewards):
    return AdvantageInputs(rewards, inp.mask, inp.group_ids, inp.token_rewards)


@PROPS
@given(
    inp=grouped_batches(),
    shift=st.integers(-64 * GRID, 64 * GRID),
    case=st.sampled_from(
        [
            ("grpo", {}),
            ("grpo", {"eps": 0.0}),
            ("grpo", {"grpo_std_norm": False}),
            ("rloo", {}),
            ("reinforce_pp_baseline", {}),
        ]
    ),
)
def test_shift_invariance(inp, shift, case):
    """Adding c to every reward leaves GRPO, Dr. GRPO, RLOO and REINFORCE++-baseline unchanged (groups of >= 2;
    a group of one takes its raw reward, as verl)."""
    name, params = case
    a = _run(name, inp, **params).advantages
    b = _run(name, _with_rewards(inp, inp.rewards + shift / GRID), **params).advantages
    torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


@PROPS
@given(inp=grouped_batches(), power=st.integers(-6, 6))
def test_scale_invariance_of_grpo_and_equivariance_of_the_others(inp, power):
    """k = 2^power (exact): GRPO with eps = 0 is unchanged; Dr. GRPO and RLOO scale by k. With token rewards
    scaled too, since they enter the total."""
    k = 2.0**power
    tok = None if inp.token_rewards is None else inp.token_rewards * k
    scaled = AdvantageInputs(inp.rewards * k, inp.mask, inp.group_ids, tok)
    torch.testing.assert_close(
        _run("grpo", scaled, eps=0.0).advantages, _run("grpo", inp, eps=0.0).advantages, atol=1e-6, rtol=0
    )
    for name, params in (("grpo", {"grpo_std_norm": False}), ("rloo", {})):
        a, b = _run(name, inp, **params).advantages, _run(name, scaled, **params).advantages
        torch.testing.assert_close(b, a * k, atol=1e-6 * k, rtol=0)


@PROPS
@given(inp=grouped_batches(), shift=st.integers(-64 * GRID, 64 * GRID), power=st.integers(-6, 6))
def test_masked_whiten_is_shift_and_scale_invariant(inp, shift, power):
    """The batch whitening of REINFORCE++(-baseline) and GAE: (k x + c) whitens like x (eps = 0)."""
    x, m = inp.token_rewards if inp.token_rewards is not None else inp.rewards[:, None].expand(inp.mask.shape), inp.mask
    moved = x * 2.0**power + shift / GRID
    torch.testing.assert_close(masked_whiten(moved, m, eps=0.0), masked_whiten(x, m, eps=0.0), atol=1e-6, rtol=0)


@PROPS
@given(
    inp=grouped_batches(),
    value=st.floats(-1e4, 1e4, width=32),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
    case=st.sampled_from(FLAT_CASES),
)
def test_flat_group_property(inp, value, dtype, case):
    """Every group flat at one value (so the whole batch is flat): every estimator gives exactly 0."""
    name, params = case
    out = _run(
        name, AdvantageInputs(torch.full_like(inp.rewards, value, dtype=dtype), inp.mask, inp.group_ids), **params
    )
    assert torch.equal(out.advantages, torch.zeros(inp.mask.shape))
