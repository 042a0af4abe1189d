"""agg_loss, ppo_clip_loss and value_loss against hand-derived numbers; micro-batch/rank splits."""

import math

import pytest
import torch

from repro_train.algos.losses import (
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    agg_loss,
    get_policy_loss,
    ppo_clip_loss,
    register_policy_loss,
    value_loss,
)
from repro_train.config import AlgoConfig

GARBAGE = 1e6


def _close(actual, expected, tol=1e-6):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=tol, rtol=0)


# ---------------------------------------------------------------------------------------------
# agg_loss
# ---------------------------------------------------------------------------------------------

# Row 0 has 2 valid tokens (1, 3), row 1 has 4 (2, 2, 2, 6), row 2 none.
X = torch.tensor([[1.0, 3.0, GARBAGE, GARBAGE], [2.0, 2.0, 2.0, 6.0], [GARBAGE, GARBAGE, GARBAGE, GARBAGE]])
M = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)


def test_agg_modes_hand():
    # token-mean: (1 + 3 + 2 + 2 + 2 + 6) / 6 = 16/6
    _close(agg_loss(X, M, "token-mean"), 16 / 6)
    # seq-mean-token-mean: (4/2 + 12/4) / 2 non-empty rows = 2.5
    _close(agg_loss(X, M, "seq-mean-token-mean"), 2.5)
    # seq-mean-token-sum-norm: (4/4 + 12/4) / 2 = 2;  with max_len 8: (4/8 + 12/8) / 2 = 1
    _close(agg_loss(X, M, "seq-mean-token-sum-norm"), 2.0)
    _close(agg_loss(X, M, "seq-mean-token-sum-norm", max_len=8), 1.0)
    # Explicit global denominators replace the local ones.
    _close(agg_loss(X, M, "token-mean", global_tokens=32), 0.5)
    _close(agg_loss(X, M, "seq-mean-token-mean", global_seqs=5), 1.0)


def test_agg_unknown_mode_lists_choices():
    with pytest.raises(ValueError) as e:
        agg_loss(X, M, "seq-mean")
    assert all(mode in str(e.value) for mode in LOSS_AGG_MODES)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_agg_two_halves_sum_to_whole(mode):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    lens = torch.tensor([5, 2, 0, 3, 1, 4])  # one empty row
    mask = torch.arange(5)[None, :] < lens[:, None]
    whole = agg_loss(x, mask, mode)
    n_tok, n_seq = mask.sum(), (lens > 0).sum()
    halves = sum(
        agg_loss(x[s], mask[s], mode, global_tokens=n_tok, global_seqs=n_seq) for s in (slice(0, 3), slice(3, 6))
    )
    _close(halves, whole)
    # The local (default) denominators do not sum to the whole: the test can fail.
    local = sum(agg_loss(x[s], mask[s], mode) for s in (slice(0, 3), slice(3, 6)))
    assert not torch.allclose(local, whole, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# ppo_clip_loss
# ---------------------------------------------------------------------------------------------
# Six valid tokens, clip 0.2 (ratio range [0.8, 1.2]); loss_t = max(-rA, -clip(r)A):
#   t1 r=1.1 A=+1: max(-1.1, -1.1) = -1.1   inside the range
#   t2 r=1.5 A=+1: max(-1.5, -1.2) = -1.2   clipped
#   t3 r=0.5 A=+1: max(-0.5, -0.8) = -0.5   unclipped (the min picks rA)
#   t4 r=0.5 A=-1: max( 0.5,  0.8) =  0.8   clipped
#   t5 r=1.5 A=-1: max( 1.5,  1.2) =  1.5   unclipped
#   t6 r=4.0 A=-1: max( 4.0,  1.2) =  4.0   unclipped; dual clip 3 (the default) caps it at 3
# Layout: row 0 = (t1, t2, pad, pad), row 1 = (t3, t4, t5, t6). The hand tests turn the dual clip off
# (NO_DUAL) so that t6 shows the plain clipped surrogate; test_ppo_clip_dual_clip checks the default.
RATIO = torch.tensor([[1.1, 1.5, 1.0, 1.0], [0.5, 0.5, 1.5, 4.0]])
ADV = torch.tensor([[1.0, 1.0, GARBAGE, -GARBAGE], [1.0, -1.0, -1.0, -1.0]])
PM = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
OLD = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-1.5, -0.7, -2.2, -1.1]])


NO_DUAL = dict(dual_clip=None)


def _logprobs():
    lp = OLD + RATIO.log()
    lp[0, 2:] = 50.0  # garbage on masked tokens (ratio e^50.5 before the clamp)
    return lp.requires_grad_(True)


def test_ppo_clip_hand_token_mean_and_metrics():
    lp = _logprobs()
    loss, metrics = ppo_clip_loss(lp, OLD, ADV, PM, **NO_DUAL)
    # (-1.1 - 1.2 - 0.5 + 0.8 + 1.5 + 4.0) / 6 = 3.5 / 6
    _close(loss, 3.5 / 6)
    _close(metrics["clipfrac"], 2 / 6)  # t2, t4
    _close(metrics["dual_clipfrac"], 0.0)
    _close(metrics["ratio_mean"], (1.1 + 1.5 + 0.5 + 0.5 + 1.5 + 4.0) / 6)
    # approx_kl = mean(log pi_old - log pi) = -ln(1.1 * 1.5 * 0.5 * 0.5 * 1.5 * 4) / 6
    _close(metrics["approx_kl"], -math.log(2.475) / 6, tol=1e-5)
    assert all(not v.requires_grad for v in metrics.values())
    # d loss / d logp_t = -A r / 6 where unclipped, 0 where clipped or masked.
    loss.backward()
    _close(lp.grad, [[-1.1 / 6, 0, 0, 0], [-0.5 / 6, 0, 1.5 / 6, 4.0 / 6]], tol=1e-5)


def test_ppo_clip_dual_clip():
    lp = _logprobs()
    loss, metrics = ppo_clip_loss(lp, OLD, ADV, PM, dual_clip=3.0)
    _close(loss, 2.5 / 6)  # t6: min(4, 3) = 3
    _close(metrics["dual_clipfrac"], 1 / 6)
    loss.backward()
    assert lp.grad[1, 3] == 0  # the capped token passes no gradient
    # on by default at c = 3 (verl's clip_ratio_c), in the function and in the recipes
    default, dm = ppo_clip_loss(_logprobs(), OLD, ADV, PM)
    _close(default, 2.5 / 6)
    _close(dm["dual_clipfrac"], 1 / 6)
    assert AlgoConfig().dual_clip == 3.0
    # c = 5 is above every ratio here: nothing capped, the loss of the hand test without the dual clip
    _close(ppo_clip_loss(_logprobs(), OLD, ADV, PM, dual_clip=5.0)[0], 3.5 / 6)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip_loss(lp, OLD, ADV, PM, dual_clip=1.0)


def test_ppo_clip_asymmetric():
    # clip_high 0.28: t2 -> max(-1.5, -1.28) = -1.28; t5 unchanged (1.5 > 1.28).
    # clip_low 0.3:   t4 -> max(0.5, 0.7) = 0.7.
    # Sum: -1.1 - 1.28 - 0.5 + 0.7 + 1.5 + 4.0 = 3.32
    loss, _ = ppo_clip_loss(_logprobs(), OLD, ADV, PM, clip_low=0.3, clip_high=0.28, **NO_DUAL)
    _close(loss, 3.32 / 6, tol=1e-5)


def test_ppo_clip_agg_modes_hand():
    # Row sums: row 0 = -1.1 - 1.2 = -2.3 (2 tokens); row 1 = -0.5 + 0.8 + 1.5 + 4.0 = 5.8 (4 tokens).
    lp = _logprobs()
    _close(ppo_clip_loss(lp, OLD, ADV, PM, agg="seq-mean-token-mean", **NO_DUAL)[0], (-2.3 / 2 + 5.8 / 4) / 2)  # 0.15
    _close(ppo_clip_loss(lp, OLD, ADV, PM, agg="seq-mean-token-sum-norm", **NO_DUAL)[0], (-2.3 + 5.8) / 4 / 2)
    _close(ppo_clip_loss(lp, OLD, ADV, PM, agg="seq-mean-token-sum-norm", max_len=10, **NO_DUAL)[0], 3.5 / 20)


def test_ppo_clip_two_ranks_equal_whole():
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(6, 5, generator=g) * 3
    lp = old + 0.4 * torch.randn(6, 5, generator=g)
    adv = torch.randn(6, 5, generator=g)
    mask = torch.arange(5)[None, :] < torch.tensor([5, 2, 1, 3, 4, 5])[:, None]
    for agg in LOSS_AGG_MODES:
        whole, _ = ppo_clip_loss(lp, old, adv, mask, agg=agg)
        kw = dict(agg=agg, global_tokens=mask.sum(), global_seqs=6)
        halves = sum(ppo_clip_loss(lp[s], old[s], adv[s], mask[s], **kw)[0] for s in (slice(0, 2), slice(2, 6)))
        _close(halves, whole)


def test_policy_loss_registry():
    assert get_policy_loss("ppo_clip") is ppo_clip_loss
    with pytest.raises(ValueError, match="ppo_clip"):
        get_policy_loss("gspo")
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("ppo_clip")(lambda *a, **k: None)
    assert list(POLICY_LOSSES) == ["ppo_clip"]


# ---------------------------------------------------------------------------------------------
# value_loss
# ---------------------------------------------------------------------------------------------
# clip 0.2; row 0 = (t1, t2, pad), row 1 = (t3, t4, pad):
#   t1 v=1.0 old=0.5 R=1.2: clip(v)=0.7; (v-R)^2=0.04, (0.7-R)^2=0.25 -> 0.25 clipped
#   t2 v=0.6 old=0.5 R=0.0: clip(v)=0.6;  0.36 both                     -> 0.36
#   t3 v=0.0 old=0.5 R=0.0: clip(v)=0.3;  0 vs 0.09                     -> 0.09 clipped
#   t4 v=1.0 old=0.5 R=0.0: clip(v)=0.7;  1.0 vs 0.49                   -> 1.0 (the unclipped term)
V = torch.tensor([[1.0, 0.6, GARBAGE], [0.0, 1.0, GARBAGE]])
V_OLD = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
R = torch.tensor([[1.2, 0.0, -GARBAGE], [0.0, 0.0, 0.0]])
VM = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)


def test_value_loss_clipped_hand():
    loss, metrics = value_loss(V, V_OLD, R, VM, clip=0.2)
    _close(loss, 0.5 * (0.25 + 0.36 + 0.09 + 1.0) / 4)  # 0.2125
    _close(metrics["vf_clipfrac"], 0.5)


def test_value_loss_unclipped_hand():
    loss, metrics = value_loss(V, V_OLD, R, VM, clip=None)
    _close(loss, 0.5 * (0.04 + 0.36 + 0.0 + 1.0) / 4)  # 0.175
    _close(metrics["vf_clipfrac"], 0.0)


def test_vf_clipfrac_counts_only_tokens_the_clip_bound():
    """verl's and TRL's event: the clipped term strictly larger. v = 0.01, old = 0.05, R = 0, clip 0.2:
    v is inside [old - 0.2, old + 0.2], so clip(v) = v and both terms are 0.01^2 = 1e-4: not clipped.
    (old + (v - old).clamp(-c, c) rounds to 0.010000001 in float32, whose square is larger by one
    unit: the former formula counted this token as clipped.)"""
    v, old, R, m = (torch.tensor([[x]]) for x in (0.01, 0.05, 0.0, True))
    loss, metrics = value_loss(v, old, R, m, clip=0.2)
    _close(metrics["vf_clipfrac"], 0.0, tol=0)
    _close(loss, 0.5 * 0.01**2)
    # Independent old and new values (as a critic's across an update), clip 0.2: a token counts only
    # when |v - old| > 0.2 and the bound value old +- 0.2 is farther from R than v (reference in
    # float64 from that definition). The former formula also counted ~2% of the tokens inside.
    g = torch.Generator().manual_seed(0)
    old, v, R = 0.1 * torch.randn(3, 4000, 1, generator=g)
    m = torch.ones_like(v, dtype=torch.bool)
    o64, v64, r64 = old.double(), v.double(), R.double()
    bound = o64 + 0.2 * torch.sign(v64 - o64)
    want = (((v64 - o64).abs() > 0.2) & ((bound - r64) ** 2 > (v64 - r64) ** 2)).double().mean()
    assert 0 < want < 0.2  # both kinds of token occur
    _close(value_loss(v, old, R, m, clip=0.2)[1]["vf_clipfrac"], want.item(), tol=0)
