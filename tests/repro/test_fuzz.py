"""Property tests (hypothesis) of the segmenter and RePro's pure functions: random token ids,
-inf and tied J values, empty inputs. Outputs are finite and of the right shapes, or the function
raises a clear error; invariants that hold for every input are checked against the definitions."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro_train.core.text import decode_with_offsets
from repro_train.repro import scores
from repro_train.repro.segment import segment_response
from repro_train.repro.select import select_cuts_batched

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

# ------------------------------------------------------------------------------------------------
# segmenter: ids over a small vocabulary of pieces, including the delimiter, the marker and bytes
# that only make a character together (a byte-level tokenizer splitting UTF-8)
# ------------------------------------------------------------------------------------------------
PIECES = ["a", "b", " ", "\n", "\n\n", " \n", "</think>", "</", "think>", "Final answer: 7", "é", "\t"]
EOS = len(PIECES)  # decodes to ""
BYTES = [b"\xc3", b"\xa9", b"\xe2\x82", b"\xac"]  # halves of "é" and "€"
VOCAB = [p.encode() for p in PIECES] + [b""] + BYTES


def decode(ids):
    return b"".join(VOCAB[i] for i in ids).decode("utf-8", errors="replace")


def piece(i):
    return decode([i])


ids_st = st.lists(st.integers(0, len(VOCAB) - 1), max_size=40)


@SETTINGS
@given(
    ids=ids_st,
    think_end=st.sampled_from(["</think>", ""]),
    delimiter=st.sampled_from([r"\n\n", r"\n", r"b+"]),
    fast=st.booleans(),
)
def test_segments_are_ordered_non_empty_and_inside_the_thinking_span(ids, think_end, delimiter, fast):
    seg = segment_response(ids, decode, think_end, delimiter, eos_ids=[EOS], piece=piece if fast else None)
    n = len(ids)
    assert 0 <= seg.T <= n
    if seg.T == 0:
        assert seg.starts == () and seg.ends == ()
        return
    assert seg.starts[0] == 0
    assert all(a < b for a, b in zip(seg.starts, seg.starts[1:]))  # strictly increasing: no empty segment
    assert all(s < seg.T for s in seg.starts) and seg.ends[-1] == seg.T
    assert len(seg.ends) == len(seg.starts) and all(s < e for s, e in zip(seg.starts, seg.ends))
    if n and ids[-1] == EOS and (not think_end or think_end not in seg.text):
        assert seg.T == n - 1  # a trailing EOS is never thinking


@SETTINGS
@given(ids=ids_st)
def test_offsets_are_monotone_and_inside_the_text(ids):
    text, starts = decode_with_offsets(ids, decode)
    assert len(starts) == len(ids)
    assert all(a <= b for a, b in zip(starts, starts[1:]))
    assert all(0 <= s <= len(text) for s in starts)
    assert text == decode(ids) or "\ufffd" in decode(ids)  # exact unless a character is left incomplete


def test_empty_response():
    seg = segment_response([], decode, "</think>", r"\n\n", eos_ids=[EOS])
    assert seg.T == 0 and seg.starts == () and seg.ends == ()


# ------------------------------------------------------------------------------------------------
# selection: tied and -inf entropies, any number of valid segments (right-padded), empty batches
# ------------------------------------------------------------------------------------------------
@st.composite
def segment_batches(draw):
    B, S = draw(st.integers(0, 4)), draw(st.integers(0, 6))
    H = draw(
        st.lists(
            st.sampled_from([0.0, 0.5, 0.5, 1.0, 2.0, float("-inf"), float("inf")]), min_size=B * S, max_size=B * S
        )
    )
    n = draw(st.lists(st.integers(0, S), min_size=B, max_size=B))
    H = torch.tensor(H, dtype=torch.float32).view(B, S)
    valid = torch.arange(S).view(1, -1) < torch.tensor(n, dtype=torch.long).view(-1, 1)
    ends = torch.arange(1, S + 1).view(1, -1).expand(B, S) * 3
    return H, valid.view(B, S), ends.contiguous(), draw(st.integers(1, 8))


def reference_selection(h: list[float], n: int, k: int) -> list[int]:
    """Top-k by entropy among the first n segments, ties to the earlier one, in trace order."""
    order = sorted(range(n), key=lambda i: (-h[i], i))
    return sorted(order[:k])


@SETTINGS
@given(batch=segment_batches())
def test_selection_matches_the_definition(batch):
    H, valid, ends, top_k = batch
    B, S = H.shape
    selected, cuts, cut_valid = select_cuts_batched(H, valid, ends, top_k)
    k = min(top_k, S)
    assert selected.shape == (B, S) and cuts.shape == (B, k) and cut_valid.shape == (B, k)
    for b in range(B):
        n = int(valid[b].sum())
        want = reference_selection(H[b].tolist(), n, top_k)
        assert selected[b].nonzero().flatten().tolist() == want
        assert cut_valid[b].tolist() == [True] * len(want) + [False] * (k - len(want))
        assert cuts[b, : len(want)].tolist() == [int(ends[b, i]) for i in want]


# ------------------------------------------------------------------------------------------------
# scores: J with -inf and ties, J_b at or above zero, masks of any shape, empty batches
# ------------------------------------------------------------------------------------------------
J_VALUES = [0.0, -0.1, -0.5, -0.5, -1.0, -3.0, -30.0, float("-inf")]


@st.composite
def score_batches(draw):
    N, M = draw(st.integers(0, 5)), draw(st.integers(0, 6))
    J = torch.tensor(
        draw(st.lists(st.sampled_from(J_VALUES), min_size=N * M, max_size=N * M)), dtype=torch.float32
    ).view(N, M)
    J_b = torch.tensor(draw(st.lists(st.sampled_from(J_VALUES + [1e-9]), min_size=N, max_size=N)), dtype=torch.float32)
    n = torch.tensor(draw(st.lists(st.integers(0, M), min_size=N, max_size=N)), dtype=torch.long)
    mask = torch.arange(M).view(1, -1) < n.view(-1, 1)
    groups = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=N, max_size=N)), dtype=torch.long)
    return J, J_b, mask.view(N, M), groups


@SETTINGS
@given(
    batch=score_batches(),
    w=st.sampled_from([0.0, 0.2, 1.0]),
    decay=st.sampled_from([0.0, 0.5]),
    norm=st.sampled_from(["group", "batch", "none"]),
    baseline=st.sampled_from(["score", "zero"]),
)
def test_scores_are_finite_bounded_and_zero_where_masked(batch, w, decay, norm, baseline):
    J, J_b, mask, groups = batch
    N, M = J.shape
    S_magn = scores.magnitude(J, J_b, 1e-6)
    S_stab = scores.stability(J, J_b, decay)
    assert S_magn.shape == S_stab.shape == (N, M)
    assert torch.isfinite(S_magn[mask]).all() and torch.isfinite(S_stab[mask]).all()
    assert ((S_magn[mask] >= 0) & (S_magn[mask] <= 1)).all() and ((S_stab[mask] >= 0) & (S_stab[mask] <= 1)).all()
    S = scores.process_score(S_magn, S_stab, w)
    r = scores.process_rewards(S, mask, w, baseline)
    r_norm = scores.normalize_rewards(r, mask, groups, norm, 1e-6)
    T = 3 * M + 2
    cuts = (torch.arange(1, M + 1) * 3).view(1, -1).expand(N, M)
    A = scores.token_process_advantages(r_norm, cuts, mask, T)
    D = scores.dense_process_rewards(r_norm, cuts, mask, T)
    for t in (r, r_norm):
        assert t.shape == (N, M) and torch.isfinite(t).all() and (t[~mask] == 0).all()
    assert A.shape == D.shape == (N, T) and torch.isfinite(A).all() and torch.isfinite(D).all()
    # the dense rewards' undiscounted return to go is the token advantage
    assert torch.allclose(D.flip(-1).cumsum(-1).flip(-1), A, atol=1e-4)
    adv = torch.randn(N, T)
    assert torch.equal(scores.fold(adv, A, 0.0), adv)


@SETTINGS
@given(batch=score_batches())
def test_masked_values_do_not_matter(batch):
    J, J_b, mask, groups = batch
    noisy = torch.where(mask, J, torch.full_like(J, float("nan")))
    for fn in (
        lambda x: scores.magnitude(x, J_b),
        lambda x: scores.stability(x, J_b),
        lambda x: scores.stability(x, J_b, 0.5),
    ):
        a, b = fn(J), fn(noisy)
        assert torch.equal(a[mask], b[mask])


@pytest.mark.parametrize(
    "J, J_b, want",
    [
        ([[float("-inf")]], [float("-inf")], scores.NO_PROGRESS_MAGNITUDE),  # impossible before and after: no progress
        ([[float("-inf")]], [-1.0], 0.0),  # the prefix makes the answer impossible
        ([[-1.0]], [float("-inf")], 1.0),  # the prefix makes an impossible answer possible
    ],
)
def test_magnitude_at_infinite_log_probs(J, J_b, want):
    out = scores.magnitude(torch.tensor(J), torch.tensor(J_b))
    assert out.item() == pytest.approx(want, abs=1e-7)


def test_stability_counts_infinite_ties_as_ties():
    """(J_b, J_1, J_2) = (-inf, -inf, -1): pairs (tie, up, up) -> tau_1 = 0, tau_2 = 2/3."""
    out = scores.stability(torch.tensor([[float("-inf"), -1.0]]), torch.tensor([float("-inf")]))
    assert out[0].tolist() == pytest.approx([0.5, (2 / 3 + 1) / 2])


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: scores.normalize_rewards(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), None, "group"),
            "needs group_ids",
        ),
        (
            lambda: scores.normalize_rewards(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), None, "prompt"),
            "must be 'group'",
        ),
        (lambda: scores.empty_prefix_score(0.2, "one"), "must be 'score' or 'zero'"),
    ],
)
def test_bad_options_raise_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_reference_selection_is_the_spec():
    assert reference_selection([1.0, 2.0, 2.0, -math.inf], 4, 2) == [1, 2]
    assert reference_selection([0.5, 0.5, 0.5], 3, 2) == [0, 1]
