"""algos/moments.py: pooled statistics against hand numbers and a slow per-pool reference; a flat pool
centres to exactly 0 on one process and split over ranks, whatever its value and dtype."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro_train.algos.moments import centre_by_sums, divide_keep_zero, moment_sums, pool_index, pool_moments

PROPS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
D = torch.float64
DTYPES = [torch.float32, torch.bfloat16, torch.float64]


def test_pool_moments_hand():
    # Rows [1, 2, pad], [3, pad, pad] in pool 0, row 1 adding one extra zero; [5, 5, 5] in pool 1.
    # Pool 0: members 1, 2, 3, 0 -> count 4, mean 6/4 = 1.5, deviations -0.5, 0.5, 1.5, -1.5,
    #   squares 0.25 + 0.25 + 2.25 + 2.25 = 5 -> var 5/3 (ddof 1), 5/4 (ddof 0).
    # Pool 1: flat at 5 -> mean 5, deviations 0, var 0.
    x = torch.tensor([[1.0, 2.0, 99.0], [3.0, -99.0, 99.0], [5.0, 5.0, 5.0]])
    valid = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    pools, extra = torch.tensor([0, 0, 1]), torch.tensor([0.0, 1.0, 0.0])
    pm = pool_moments(x, pools, 2, valid, ddof=1.0, extra_zeros=extra)
    assert pm.count.tolist() == [4.0, 3.0] and pm.mean.tolist() == [1.5, 5.0]
    assert pm.centred.tolist() == [[-0.5, 0.5, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert pm.var.tolist() == pytest.approx([5 / 3, 0.0], abs=1e-15) and pm.var[1] == 0
    assert pool_moments(x, pools, 2, valid, ddof=0.0, extra_zeros=extra).var.tolist() == [1.25, 0.0]
    # the same pool 0 through the all-reduce path, split over two "ranks"
    sums = moment_sums(x[:1], valid[:1]) + moment_sums(x[1:2], valid[1:2], 1.0)
    assert sums.tolist() == [4.0, 6.0, 0.0, 14.0]  # count, sum of float32 parts, sum of the rest, sum of squares
    centred, var = centre_by_sums(x[:2], valid[:2], sums)
    assert centred.tolist() == [[-0.5, 0.5, 0.0], [1.5, 0.0, 0.0]] and var.item() == pytest.approx(5 / 3)


def test_pool_index_and_divide_keep_zero():
    inv, n = pool_index(torch.tensor([7, 3, 7, 9]))
    assert inv.tolist() == [1, 0, 1, 2] and n == 3
    assert pool_index(torch.zeros(0, dtype=torch.long))[1] == 0
    out = divide_keep_zero(torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 2.0, 1.0]))
    assert out.tolist() == [0.0, 0.5, 0.0]  # 0 / 0 is 0, not NaN


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, value", [(7, 0.1), (64, 2.1), (1000, -3.7), (5, 1e6 + 0.1)])
def test_flat_pool_is_exactly_flat(n, value, dtype):
    x = torch.full((n,), value, dtype=dtype)
    pm = pool_moments(x, torch.zeros(n, dtype=torch.long), 1)
    assert torch.equal(pm.centred, torch.zeros(n, dtype=D)) and pm.var.item() == 0
    assert pm.mean.item() == x[0].item()
    ones = torch.ones(n, dtype=torch.bool)
    sums = moment_sums(x[: n // 3], ones[: n // 3]) + moment_sums(x[n // 3 :], ones[n // 3 :])  # two ranks
    centred, _ = centre_by_sums(x, ones, sums)
    assert torch.equal(centred, torch.zeros(n, dtype=D))


def test_textbook_mean_of_a_flat_pool_is_off_by_a_rounding_unit():
    """Why the module exists: the sum over a group by index_add, / n (the former code), is not the
    value for 7 x 0.1 in float32 nor for 3 x 0.1 in float64, so x - mean is not 0 (the tests above can fail)."""
    for n, dtype in ((7, torch.float32), (3, D)):
        x = torch.full((n,), 0.1, dtype=dtype)
        mean = torch.zeros(1, dtype=dtype).index_add(0, torch.zeros(n, dtype=torch.long), x) / n
        assert (x - mean).abs().max() > 0


@PROPS
@given(
    value=st.floats(-1e6, 1e6, allow_nan=False),
    n=st.integers(1, 300),
    cut=st.floats(0, 1),
    dtype=st.sampled_from(DTYPES),
    ddof=st.sampled_from([0.0, 1.0]),
)
def test_flat_pool_property(value, n, cut, dtype, ddof):
    x = torch.full((n,), value, dtype=dtype)
    pm = pool_moments(x, torch.zeros(n, dtype=torch.long), 1, ddof=ddof)
    assert (pm.centred == 0).all() and pm.var.item() == 0 and pm.mean.item() == x[0].item()
    k = int(cut * n)
    ones = torch.ones(n, dtype=torch.bool)
    centred, var = centre_by_sums(x, ones, moment_sums(x[:k], ones[:k]) + moment_sums(x[k:], ones[k:]), ddof)
    assert (centred == 0).all()


@st.composite
def pooled_rows(draw):
    """(x (B, K) float64, valid (B, K), pools (B,), n_pools, extra zeros (B,))."""
    B, K = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    x = torch.tensor(draw(st.lists(st.floats(-50, 50), min_size=B * K, max_size=B * K)), dtype=D).view(B, K)
    valid = torch.tensor(draw(st.lists(st.booleans(), min_size=B * K, max_size=B * K))).view(B, K)
    ids = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=B, max_size=B)))
    extra = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=B, max_size=B)), dtype=D)
    inv, n = pool_index(ids)
    return x, valid, inv, n, extra


def _reference(x, valid, inv, n, extra, ddof):
    """Per pool, a Python loop: its members (valid x and the extra zeros) -> (count, mean, var)."""
    xs, oks, pools, zeros = x.tolist(), valid.tolist(), inv.tolist(), extra.tolist()
    out = []
    for p in range(n):
        rows = [b for b, q in enumerate(pools) if q == p]
        members = [v for b in rows for v, ok in zip(xs[b], oks[b]) if ok] + [0.0] * int(sum(zeros[b] for b in rows))
        c = len(members)
        mean = sum(members) / c if c else 0.0
        out.append((c, mean, sum((m - mean) ** 2 for m in members) / max(c - ddof, 1)))
    return out


@PROPS
@given(batch=pooled_rows(), ddof=st.sampled_from([0.0, 1.0]))
def test_pool_moments_equal_a_per_pool_loop(batch, ddof):
    x, valid, inv, n, extra = batch
    pm = pool_moments(x, inv, n, valid, ddof, extra)
    ref = _reference(x, valid, inv, n, extra, ddof)
    assert pm.count.tolist() == [c for c, _, _ in ref]
    torch.testing.assert_close(pm.mean, torch.tensor([m for _, m, _ in ref], dtype=D), atol=1e-9, rtol=0)
    torch.testing.assert_close(pm.var, torch.tensor([v for _, _, v in ref], dtype=D), atol=1e-7, rtol=1e-9)
    want = torch.where(valid, x - pm.mean[inv].unsqueeze(1), 0.0)
    torch.testing.assert_close(pm.centred, want, atol=1e-9, rtol=0)
    # one pool spread over two ranks: the all-reduce path gives the same statistics
    k = x.shape[0] // 2
    everyone = torch.zeros_like(inv)
    sums = moment_sums(x[:k], valid[:k], extra[:k].sum()) + moment_sums(x[k:], valid[k:], extra[k:].sum())
    centred, var = centre_by_sums(x, valid, sums, ddof)
    ((c, mean, v),) = _reference(x, valid, everyone, 1, extra, ddof)
    assert sums[0].item() == c
    torch.testing.assert_close(centred, torch.where(valid, x - mean, 0.0), atol=1e-9, rtol=0)
    assert var.item() == pytest.approx(v, rel=1e-9, abs=1e-7)


@pytest.mark.parametrize("shape", [(0,), (0, 0), (0, 3), (2, 0)])
def test_empty_inputs(shape):
    """No rows, or rows without values (a batch where RePro scored nothing): empty or zero results, no error."""
    x = torch.zeros(shape)
    pools = torch.zeros(shape[0], dtype=torch.long)
    pm = pool_moments(x, pools, 1 if shape[0] else 0, torch.zeros(shape, dtype=torch.bool))
    assert pm.centred.shape == shape and (pm.count == 0).all() and (pm.mean == 0).all()
    centred, var = centre_by_sums(
        x, torch.zeros(shape, dtype=torch.bool), moment_sums(x, torch.zeros(shape, dtype=torch.bool))
    )
    assert centred.shape == shape and var.item() == 0
