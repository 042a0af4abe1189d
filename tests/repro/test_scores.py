"""RePro scores against the spec's worked example and hand-computed cases (spec 4, 6-12)."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from repro_train.repro.scores import (
    empty_prefix_score,
    fold,
    magnitude,
    normalize_rewards,
    pool_stats,
    process_rewards,
    process_score,
    stability,
    token_process_advantages,
)
from repro_train.repro.select import select_cuts_batched


def select_cuts(seg_starts, seg_ends, H, top_k):
    """The slow per-rollout reference of spec 4: top-k entropies, ties to the earlier segment,
    back in trace order; the cuts are the selected segments' ends."""
    n = len(seg_starts)
    keep = sorted(sorted(range(n), key=lambda i: (-float(H[i]), i))[:top_k])
    return [i in keep for i in range(n)], [int(seg_ends[i]) for i in keep]


D = torch.float64


@pytest.fixture
def example():
    """The spec's worked example: two rollouts of one prompt, w = 0.2."""
    J_b = torch.tensor([-4.0, -3.0], dtype=D)
    J = torch.tensor([[-3.0, -3.5, -1.0, -0.2], [-4.5, -2.0, 0.0, 0.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    cuts = torch.tensor([[2, 5, 8, 10], [3, 5, 0, 0]])
    return J_b, J, mask, cuts


def test_worked_example(example):
    J_b, J, mask, cuts = example
    S_magn = magnitude(J, J_b) * mask
    S_stab = stability(J, J_b) * mask
    S = process_score(S_magn, S_stab, 0.2) * mask
    r = process_rewards(S, mask, 0.2, "score")
    # Table of the spec: rollout 1 steps 1-4, rollout 2 steps 1-2.
    exp_magn = [[0.364851, 0.296094, 0.755081, 0.950042], [0.094852, 0.417217]]
    exp_stab = [[1.0, 0.666667, 0.833333, 0.9], [0.0, 0.666667]]
    exp_S = [[0.491881, 0.370209, 0.770732, 0.940033], [0.075881, 0.467107]]
    exp_r = [[0.201156, -0.121672, 0.400523, 0.169302], [-0.214843, 0.391226]]
    for got, exp in [(S_magn, exp_magn), (S_stab, exp_stab), (S, exp_S), (r, exp_r)]:
        for i, row in enumerate(exp):
            assert torch.allclose(got[i, : len(row)], torch.tensor(row, dtype=D), atol=1e-6)
    r_norm = normalize_rewards(r, mask, torch.tensor([0, 0]), "group")
    flat = torch.cat([r_norm[0], r_norm[1, :2]])
    expected = torch.tensor([0.270964, -1.105705, 1.121145, 0.135124, -1.503025, 1.081497], dtype=D)
    assert torch.allclose(flat, expected, atol=1e-6)
    A = token_process_advantages(r_norm, cuts, mask, 12)
    a1 = [0.421528] * 2 + [0.150563] * 3 + [1.256268] * 3 + [0.135124] * 2 + [0.0] * 2
    a2 = [-0.421528] * 3 + [1.081497] * 2 + [0.0] * 7
    assert torch.allclose(A[0], torch.tensor(a1, dtype=D), atol=2e-6)
    assert torch.allclose(A[1], torch.tensor(a2, dtype=D), atol=2e-6)


def test_magnitude_landmarks():
    J_b = torch.tensor([-2.0, -2.0, -2.0])
    J = torch.tensor([[0.0], [-2.0], [-8.0]])
    S = magnitude(J, J_b).squeeze(-1)
    # certain -> 1; no better than no reasoning -> 1 - tanh 1; much worse -> 1 - tanh 4
    assert torch.allclose(S, torch.tensor([1.0, 1 - math.tanh(1.0), 1 - math.tanh(4.0)]), atol=1e-7)


def test_magnitude_clamps_baseline_near_zero():
    # J_b = -1e-9 is clamped to -eps: S = 1 - tanh(-0.5 / -1e-3)
    S = magnitude(torch.tensor([[-0.5]]), torch.tensor([-1e-9]), eps=1e-3)
    assert S.item() == pytest.approx(1 - math.tanh(500.0))


def test_monotone_J_gives_stability_one_and_decreasing_zero():
    J_b = torch.tensor([-5.0, -1.0])
    J = torch.tensor([[-4.0, -3.0, -2.5, -0.1], [-2.0, -3.0, -4.0, -5.0]])
    S = stability(J, J_b)
    assert torch.equal(S[0], torch.ones(4))
    assert torch.equal(S[1], torch.zeros(4))


def test_stability_ties_count_zero():
    # (J_b, J1, J2) = (-1, -1, -1): all pairs tied -> tau = 0 -> S_stab = 0.5
    S = stability(torch.tensor([[-1.0, -1.0]]), torch.tensor([-1.0]))
    assert torch.equal(S, torch.full((1, 2), 0.5))


def test_stability_ema_smooths_before_ranking():
    # x = (J_b, J1, J2) = (-4, -2, -3); raw: pairs (+1, +1, -1) -> tau_2 = 1/3 -> S = 2/3.
    # EMA d=0.5: e = (-4, -3, -3) -> pairs (+1, +1, 0) -> tau_2 = 2/3 -> S = 5/6.
    J_b, J = torch.tensor([-4.0]), torch.tensor([[-2.0, -3.0]])
    assert stability(J, J_b)[0, 1].item() == pytest.approx(2 / 3)
    assert stability(J, J_b, ema_decay=0.5)[0, 1].item() == pytest.approx(5 / 6)
    assert stability(J, J_b, ema_decay=0.5)[0, 0].item() == pytest.approx(1.0)  # (-4, -3) rises


def test_process_score_w_extremes():
    a, b = torch.tensor([[0.3]]), torch.tensor([[0.9]])
    assert process_score(a, b, 0.0).item() == pytest.approx(0.3)
    assert process_score(a, b, 1.0).item() == pytest.approx(0.9)
    assert process_score(a, b, 0.25).item() == pytest.approx(0.75 * 0.3 + 0.25 * 0.9)


def test_first_step_baseline_options():
    S = torch.tensor([[0.5, 0.7]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    w = 0.2
    assert empty_prefix_score(w, "score") == pytest.approx(0.8 * (1 - math.tanh(1)) + 0.1)
    r_score = process_rewards(S, mask, w, "score")
    r_zero = process_rewards(S, mask, w, "zero")
    assert r_zero[0, 0].item() == pytest.approx(0.5)  # r_1 = S_1
    assert r_score[0, 0].item() == pytest.approx(0.5 - empty_prefix_score(w, "score"))
    assert r_score[0, 1].item() == r_zero[0, 1].item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="first_step_baseline"):
        process_rewards(S, mask, w, "first")


def test_normalisation_pools():
    r = torch.tensor([[1.0, 3.0], [5.0, 0.0], [2.0, 4.0]], dtype=D)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]], dtype=torch.bool)
    groups = torch.tensor([7, 7, 9])
    # group 7 pool: (1, 3, 5): mean 3, population std sqrt(8/3)
    g = normalize_rewards(r, mask, groups, "group", eps=0.0)
    s = math.sqrt(8 / 3)
    assert torch.allclose(g[0], torch.tensor([-2 / s, 0.0], dtype=D))
    assert g[1, 0].item() == pytest.approx(2 / s) and g[1, 1].item() == 0.0
    assert torch.allclose(g[2], torch.tensor([-1.0, 1.0], dtype=D))  # pool (2, 4): mean 3, std 1
    # batch pool: (1, 3, 5, 2, 4): mean 3, std sqrt(2)
    b = normalize_rewards(r, mask, groups, "batch", eps=0.0)
    assert torch.allclose(b[0], torch.tensor([-2 / math.sqrt(2), 0.0], dtype=D))
    assert b[1, 1].item() == 0.0
    # none: unchanged on valid entries, 0 elsewhere
    n = normalize_rewards(r, mask, groups, "none")
    assert torch.equal(n, r * mask)
    with pytest.raises(ValueError, match="process_norm"):
        normalize_rewards(r, mask, groups, "prompt")


def test_pool_of_one_gives_zero():
    r = torch.tensor([[0.7, 0.0], [0.2, 0.0]])
    mask = torch.tensor([[1, 0], [1, 0]], dtype=torch.bool)
    assert torch.equal(normalize_rewards(r, mask, torch.tensor([0, 1]), "group"), torch.zeros(2, 2))


def test_batch_pool_split_across_ranks_equals_whole():
    torch.manual_seed(0)
    r = torch.randn(6, 4, dtype=D)
    mask = torch.rand(6, 4) > 0.3
    whole = normalize_rewards(r, mask, None, "batch")
    stats = pool_stats(r[:3], mask[:3]) + pool_stats(r[3:], mask[3:])  # what all-reduce gives
    halves = torch.cat(
        [
            normalize_rewards(r[:3], mask[:3], None, "batch", batch_stats=stats),
            normalize_rewards(r[3:], mask[3:], None, "batch", batch_stats=stats),
        ]
    )
    assert torch.allclose(whole, halves, atol=1e-12)


def test_norm_eps_is_used():
    r = torch.tensor([[1.0, 3.0]], dtype=D)
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = normalize_rewards(r, mask, torch.tensor([0]), "group", eps=1.0)  # std 1 -> divide by 2
    assert torch.allclose(out, torch.tensor([[-0.5, 0.5]], dtype=D))


def test_token_advantages_ignore_masked_garbage():
    r = torch.tensor([[1.0, 2.0, 99.0]])
    cuts = torch.tensor([[2, 4, -5]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    A = token_process_advantages(r, cuts, mask, 6)
    assert torch.equal(A, torch.tensor([[3.0, 3.0, 2.0, 2.0, 0.0, 0.0]]))
    empty = token_process_advantages(
        torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.bool), 4
    )
    assert torch.equal(empty, torch.zeros(2, 4))


def test_fold_alpha_and_apply_mask():
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    pa = torch.tensor([[0.5, -0.5], [2.0, 0.0]])
    assert torch.equal(fold(adv, pa, 0.0), adv)
    assert torch.allclose(fold(adv, pa, 0.1), torch.tensor([[1.05, 0.95], [-0.8, -1.0]]))
    only_first = fold(adv, pa, 0.1, apply_mask=torch.tensor([True, False]))
    assert torch.allclose(only_first, torch.tensor([[1.05, 0.95], [-1.0, -1.0]]))


def test_top_k_selection_ties_earlier_first():
    starts, ends = [0, 3, 5, 8, 10], [3, 5, 8, 10, 12]
    H = torch.tensor([0.5, 2.0, 1.0, 2.0, 2.0])

    def one(k):
        return select_cuts_batched(H.view(1, -1), torch.ones(1, 5, dtype=torch.bool), torch.tensor([ends]), k)

    sel, cuts, valid = one(2)
    # three segments tie at 2.0: the two earliest (1 and 3) win; order restored
    assert sel[0].tolist() == [False, True, False, True, False]
    assert cuts[0].tolist() == [5, 10] and valid.all()
    assert one(3)[1][0].tolist() == [5, 10, 12]
    sel, cuts, valid = one(10)  # fewer than k: all
    assert sel.all() and cuts[0].tolist() == ends
    # the reference used below agrees on this case
    assert select_cuts(starts, ends, H, 2) == ([False, True, False, True, False], [5, 10])


def test_batched_selection_equals_per_rollout_selection():
    torch.manual_seed(0)
    rows = []
    for n in [0, 1, 3, 7, 12]:
        starts = sorted(torch.randperm(40)[:n].tolist())
        ends = starts[1:] + [40] if n else []
        H = torch.randint(0, 3, (n,)).float()  # many ties
        rows.append((starts, ends, H))
    S = max(len(r[0]) for r in rows)
    Hp = torch.zeros(len(rows), S)
    ends_p = torch.zeros(len(rows), S, dtype=torch.long)
    valid = torch.zeros(len(rows), S, dtype=torch.bool)
    for b, (st, en, H) in enumerate(rows):
        Hp[b, : len(st)] = H
        ends_p[b, : len(st)] = torch.tensor(en, dtype=torch.long)
        valid[b, : len(st)] = True
    for k in (1, 4, 20):
        sel, cuts, cut_valid = select_cuts_batched(Hp, valid, ends_p, k)
        for b, (st, en, H) in enumerate(rows):
            ref_sel, ref_cuts = select_cuts(st, en, H, k)
            assert sel[b, : len(st)].tolist() == ref_sel and not sel[b, len(st) :].any()
            assert cuts[b][cut_valid[b]].tolist() == ref_cuts


# ---------------------------------------------------------------------------------------------
# Flat pools (issue 25): a pool of equal process rewards normalises to exactly 0
# ---------------------------------------------------------------------------------------------

PROPS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@hs.composite
def flat_pools(draw):
    """(r (N, M), mask, group_ids, cuts): every group's valid rewards equal (one value per group)."""
    N, M = draw(hs.integers(1, 8)), draw(hs.integers(1, 5))
    groups = torch.tensor(draw(hs.lists(hs.integers(0, 2), min_size=N, max_size=N)))
    values = torch.tensor(draw(hs.lists(hs.floats(-2, 2), min_size=3, max_size=3)), dtype=D)
    n = torch.tensor(draw(hs.lists(hs.integers(0, M), min_size=N, max_size=N)))
    mask = torch.arange(M)[None, :] < n[:, None]
    r = torch.where(mask, values[groups][:, None].expand(N, M), 0.0)
    return r, mask, groups, (torch.arange(1, M + 1) * 2)[None, :].expand(N, M)


@PROPS
@given(
    pools=flat_pools(),
    mode=hs.sampled_from(["group", "group_mean"]),
    std=hs.sampled_from(["population", "unbiased"]),
    eps=hs.sampled_from([0.0, 1e-6]),
    dtype=hs.sampled_from([D, torch.float32]),
)
def test_flat_group_pool_gives_exactly_zero_process_advantage(pools, mode, std, eps, dtype):
    r, mask, groups, cuts = pools
    r_norm = normalize_rewards(r.to(dtype), mask, groups, mode, eps, std=std)
    assert r_norm.dtype == dtype and torch.equal(r_norm, torch.zeros_like(r_norm))
    A = token_process_advantages(r_norm, cuts, mask, 2 * r.shape[1] + 1)
    assert torch.equal(A, torch.zeros_like(A))


@PROPS
@given(
    pools=flat_pools(),
    std=hs.sampled_from(["population", "unbiased"]),
    eps=hs.sampled_from([0.0, 1e-6]),
    dtype=hs.sampled_from([D, torch.float32]),
    split=hs.integers(0, 8),
)
def test_flat_batch_pool_split_across_ranks_gives_exactly_zero(pools, std, eps, dtype, split):
    """One value everywhere; the batch spread over two ranks (pool_stats summed, as the all-reduce)."""
    r, mask, _, cuts = pools
    r = torch.where(mask, r[mask][:1].sum(), 0.0).to(dtype)  # the first valid value everywhere
    k = min(split, r.shape[0])
    stats = pool_stats(r[:k], mask[:k]) + pool_stats(r[k:], mask[k:])
    for a, b in ((0, k), (k, r.shape[0])):
        part = normalize_rewards(r[a:b], mask[a:b], None, "batch", eps, stats, std)
        assert torch.equal(part, torch.zeros_like(part))
    assert torch.equal(normalize_rewards(r, mask, None, "batch", eps, std=std), torch.zeros_like(r))


@pytest.mark.parametrize("mode", ["group", "batch", "group_mean"])
def test_flat_pool_with_the_authors_extra_zero(mode):
    """With norm_extra_zero every scored rollout adds a zero to its pool: a pool of zeros stays exactly 0
    (no 0/0 with eps = 0), while rewards of 0.1 are no longer flat: (0.1, 0.1, 0.1 | 0, 0) has mean
    0.06, so group_mean gives 0.04 and the unbiased std sqrt((3 * 0.04^2 + 2 * 0.06^2) / 4) = sqrt(0.003)."""
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    g = torch.tensor([5, 5])
    zeros = torch.zeros(2, 3, dtype=D)
    out = normalize_rewards(zeros, mask, g, mode, 0.0, std="unbiased", extra_zero=True)
    assert torch.equal(out, zeros)
    r = torch.where(mask, 0.1, 0.0).to(D)
    out = normalize_rewards(r, mask, g, mode, 0.0, std="unbiased", extra_zero=True)
    want = 0.04 if mode == "group_mean" else 0.04 / math.sqrt(0.003)
    assert torch.allclose(out, torch.where(mask, want, 0.0).to(D), atol=1e-12)


@PROPS
@given(
    pools=flat_pools(),
    seed=hs.integers(0, 2**16),
    shift=hs.integers(-256, 256),
    power=hs.integers(-4, 4),
    mode=hs.sampled_from(["group", "batch"]),
)
def test_normalisation_is_shift_and_scale_invariant(pools, seed, shift, power, mode):
    """(k r + c) normalises like r (eps = 0); grid values (multiples of 1/64), so k r + c is exact."""
    _, mask, groups, _ = pools
    r = torch.randint(-64, 65, mask.shape, generator=torch.Generator().manual_seed(seed)).to(D) / 64
    moved = r * 2.0**power + shift / 64
    a = normalize_rewards(r, mask, groups, mode, 0.0)
    torch.testing.assert_close(normalize_rewards(moved, mask, groups, mode, 0.0), a, atol=1e-9, rtol=0)
