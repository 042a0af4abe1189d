"""Monte-Carlo step values (repro/mc.py): V and its SE by hand, increments, the rank statistics of the J-vs-V
analysis, and the MC rewards going through RePro's own normalisation and every fold unchanged."""

import math

import pytest
import torch

from repro_train.config import AlgoConfig, Config
from repro_train.repro.config import ReProConfig
from repro_train.repro.mc import average_ranks, increments, mc_process_output, mc_value, sign_agreement, spearman
from repro_train.repro.pipeline import Plan, RePro
from repro_train.repro.types import MCValues, ProbeResult
from repro_train.trainer.process_fold import dense_rewards, process_advantage
from tests.helpers.repro import fmt

D = torch.float64


def test_mc_value_by_hand():
    outcomes = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    V, se = mc_value(outcomes)
    # shares 2/4, 4/4, 1/4; SE = sqrt(V (1 - V) / (K - 1)): sqrt(.25 / 3), 0, sqrt(.1875 / 3) = .25
    assert V.tolist() == [0.5, 1.0, 0.25]
    assert se.tolist() == pytest.approx([math.sqrt(0.25 / 3), 0.0, 0.25], abs=1e-12)
    # the same as the sample standard deviation over sqrt(K)
    x = outcomes.double()
    assert torch.allclose(se, x.std(-1, unbiased=True) / 2.0, atol=1e-12)
    V1, se1 = mc_value(torch.tensor([[True], [False]]))
    assert V1.tolist() == [1.0, 0.0] and all(math.isnan(s) for s in se1.tolist())


def test_increments_start_at_the_base_and_ignore_masked_steps():
    V_b = torch.tensor([0.5, float("nan")], dtype=D)
    V = torch.tensor([[0.75, 0.25, 1.0], [0.0, 0.0, 0.0]], dtype=D)
    mask = torch.tensor([[True, True, True], [False, False, False]])
    # 0.75 - 0.5, 0.25 - 0.75, 1.0 - 0.25; the unscored rollout's NaN base gives zeros, not NaN
    assert increments(V_b, V, mask).tolist() == [[0.25, -0.5, 0.75], [0.0, 0.0, 0.0]]
    short = torch.tensor([[True, True, False]])
    assert increments(V_b[:1], V[:1], short).tolist() == [[0.25, -0.5, 0.0]]


def test_average_ranks_and_spearman_by_hand():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); d = (0, 1, 1, 0): 1 - 12 / 60 = 0.8
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.8)
    # ties: y ranks (1, 2, 3.5, 5, 3.5); centred x ranks (-2..2), y (-2, -1, .5, 2, .5): 8 / sqrt(10 * 9.5)
    x, y = torch.tensor([1.0, 2, 3, 4, 5]), torch.tensor([5.0, 6, 7, 8, 7])
    assert spearman(x, y) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    assert spearman(x, -y) == pytest.approx(-8 / math.sqrt(95), abs=1e-12)
    # ranks only: a monotone map of either side changes nothing
    assert spearman(x.exp(), y**3) == pytest.approx(spearman(x, y), abs=1e-12)
    assert math.isnan(spearman(x, torch.ones(5))) and math.isnan(spearman(x[:1], y[:1]))
    with pytest.raises(ValueError, match="pairs"):
        spearman(x, y[:3])


def test_sign_agreement_leaves_out_steps_where_V_did_not_move():
    a = torch.tensor([0.1, -0.2, 0.3, -0.1])
    b = torch.tensor([0.5, 0.0, -0.25, -0.25])
    # steps 0, 2, 3 moved; signs (+,+), (+,-), (-,-): 2 of 3 agree
    agree, n = sign_agreement(a, b)
    assert n == 3 and agree == pytest.approx(2 / 3)
    assert sign_agreement(a, torch.zeros(4))[1] == 0


# ---------------------------------------------------------------------------------------------
# the MC rewards through RePro's normalisation and folds
# ---------------------------------------------------------------------------------------------

# The spec's worked example (docs/spec/repro-method.md): J at cuts (2, 5, 8, 10) and (3, 5), one prompt, w = 0.2.
J_B = (-4.0, -3.0)
J = ((-3.0, -3.5, -1.0, -0.2), (-4.5, -2.0))
CUTS = ((2, 5, 8, 10), (3, 5))
R_SPEC = ((0.201156, -0.121672, 0.400523, 0.169302), (-0.214843, 0.391226))
R_NORM_SPEC = (0.270964, -1.105705, 1.121145, 0.135124, -1.503025, 1.081497)


def worked_example(tok, cfg=None):
    repro = RePro(cfg or ReProConfig(), tok, fmt(tok))
    probes = [
        ProbeResult(H=torch.zeros(len(c)), selected=[True] * len(c), cuts=list(c), J_b=jb, J=torch.tensor(j))
        for c, jb, j in zip(CUTS, J_B, J)
    ]
    return repro, Plan([None, None], [None, None], [None, None]), probes


def values_with_increments(r: torch.Tensor, mask: torch.Tensor, V_b=(0.3, 0.6)) -> MCValues:
    """MC values whose increments are the given step rewards: V_j = V_b + r_1 + ... + r_j."""
    V_b = torch.tensor(V_b, dtype=D)
    V = (V_b.unsqueeze(-1) + r.cumsum(-1)) * mask
    return MCValues(V_b=V_b, V=V, V_b_se=torch.zeros(2, dtype=D), V_se=torch.zeros_like(V), K=8)


def test_mc_rewards_equal_to_the_specs_give_the_specs_normalised_rewards_and_A_tilde(tiny):
    _, tok = tiny
    repro, plan, probes = worked_example(tok)
    base = repro.rewards(plan, probes)
    r = torch.zeros(2, 4, dtype=D)
    r[0], r[1, :2] = torch.tensor(R_SPEC[0]), torch.tensor(R_SPEC[1])
    out = mc_process_output(repro, base, values_with_increments(r, base.mask), torch.tensor([0, 0]), 12)
    assert torch.allclose(out.r, r, atol=1e-12)
    flat = torch.cat([out.r_norm[0], out.r_norm[1, :2]])
    assert torch.allclose(flat, torch.tensor(R_NORM_SPEC, dtype=D), atol=1e-6)
    a1 = [0.421528] * 2 + [0.150563] * 3 + [1.256268] * 3 + [0.135124] * 2 + [0.0] * 2
    a2 = [-0.421528] * 3 + [1.081497] * 2 + [0.0] * 7
    assert torch.allclose(out.process_adv[0].double(), torch.tensor(a1, dtype=D), atol=2e-6)
    assert torch.allclose(out.process_adv[1].double(), torch.tensor(a2, dtype=D), atol=2e-6)
    assert out.mc is not None and out.mc.K == 8
    # J's scores stay for the logs; only the step rewards and what follows from them are the MC ones
    assert torch.equal(out.J, base.J) and torch.equal(out.S, base.S)


def test_rewards_then_normalise_is_repro_advantages(tiny):
    """The split of RePro.advantages into rewards + normalise computes the same numbers, for every pool."""
    _, tok = tiny
    for norm in ("group", "batch", "group_mean", "none"):
        repro, plan, probes = worked_example(tok, ReProConfig(process_norm=norm))
        whole = repro.advantages(plan, probes, torch.tensor([0, 0]), 12)
        half = repro.rewards(plan, probes)
        split = repro.normalise(half, half.r, torch.tensor([0, 0]), 12)
        for f in ("r", "r_norm", "process_adv", "S", "J", "cuts", "mask"):
            assert torch.equal(getattr(whole, f), getattr(split, f)), (norm, f)
    flat = torch.cat([whole.r[0], whole.r[1, :2]])
    assert torch.allclose(flat, torch.tensor(R_SPEC[0] + R_SPEC[1], dtype=D), atol=1e-6)


FOLDS = [
    ("grpo", "advantage"),
    ("reinforce_pp", "advantage"),
    ("gae", "advantage"),
    ("gae", "dense_reward"),
    ("gae", "second_gae"),
]


@pytest.mark.parametrize("estimator, fold_name", FOLDS)
@pytest.mark.parametrize("norm", ["group", "batch"])
def test_every_fold_is_repros_for_the_same_step_rewards(tiny, estimator, fold_name, norm):
    """MC values whose increments are J's step rewards fold exactly as J's do, for each algorithm's fold."""
    _, tok = tiny
    cfg = Config(
        algo=AlgoConfig(estimator=estimator), repro=ReProConfig(process_norm=norm, ppo_process_reward=fold_name)
    )
    repro, plan, probes = worked_example(tok, cfg.repro)
    groups = torch.tensor([4, 4])
    j_out = repro.advantages(plan, probes, groups, 12)
    mc_out = mc_process_output(
        repro, repro.rewards(plan, probes), values_with_increments(j_out.r, j_out.mask), groups, 12
    )
    assert torch.allclose(mc_out.r, j_out.r, atol=1e-12)
    assert torch.allclose(mc_out.r_norm, j_out.r_norm, atol=1e-9)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, :12], mask[1, :6] = True, True
    values = torch.linspace(-0.5, 0.5, 24).reshape(2, 12)

    def reduce(t):  # one rank: the all-reduce is the identity
        return t

    a = process_advantage(cfg, j_out, mask, values, reduce)
    b = process_advantage(cfg, mc_out, mask, values, reduce)
    assert (a is None) == (b is None) == (fold_name == "dense_reward")
    if a is not None:
        assert torch.allclose(a, b, atol=1e-6)
    da, db = dense_rewards(cfg, j_out, 12), dense_rewards(cfg, mc_out, 12)
    assert (da is None) == (db is None) == (fold_name != "dense_reward")
    if da is not None:
        assert torch.allclose(da, db, atol=1e-9) and da.abs().sum() > 0


def test_different_values_change_the_process_advantage(tiny):
    """A control for the test above: other increments give another A_tilde (the comparison can fail)."""
    _, tok = tiny
    repro, plan, probes = worked_example(tok)
    groups = torch.tensor([0, 0])
    j_out = repro.advantages(plan, probes, groups, 12)
    flipped = values_with_increments(-j_out.r, j_out.mask)
    mc_out = mc_process_output(repro, repro.rewards(plan, probes), flipped, groups, 12)
    assert torch.allclose(mc_out.process_adv, -j_out.process_adv, atol=1e-6)  # group pool: r' and A_tilde flip sign
    assert not torch.allclose(mc_out.process_adv, j_out.process_adv, atol=1e-3)
