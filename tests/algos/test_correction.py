"""The trainer-vs-engine log-prob gap and the importance weights (algos/correction.py), by hand."""

import math

import pytest
import torch

from repro_train.algos.correction import is_weights, logprob_gap
from repro_train.algos.losses import ppo_clip_loss

# Two rows, three token slots; row 0 has 3 valid tokens, row 1 has 2 (its last slot is padding,
# with values that must not matter).
TRAIN = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, 9.0]])
ENGINE = torch.tensor([[-1.5, -1.0, -0.5], [-0.2, -3.2, -7.0]])
MASK = torch.tensor([[True, True, True], [True, True, False]])
# log ratios (train - engine): row 0: 0.5, -1.0, 0.0; row 1: 0.1, 0.2 (masked slot ignored)


def test_gap_sum_and_max():
    s, mx = logprob_gap(TRAIN, ENGINE, MASK)
    assert s.item() == pytest.approx(0.5 + 1.0 + 0.0 + 0.1 + 0.2)
    assert mx.item() == pytest.approx(1.0)


def test_token_tis_truncates_each_ratio_at_the_cap():
    w, stats = is_weights(TRAIN, ENGINE, MASK, "token_tis", cap=1.5)
    # exp(0.5) = 1.6487 -> capped at 1.5; exp(-1) = 0.3679; exp(0) = 1; exp(0.1) = 1.1052; exp(0.2) = 1.2214
    want = torch.tensor([[1.5, math.exp(-1.0), 1.0], [math.exp(0.1), math.exp(0.2), 0.0]])
    assert torch.allclose(w, want, atol=1e-6)
    assert stats["clipped_frac"].item() == pytest.approx(1 / 5)
    assert stats["weight_mean"].item() == pytest.approx(want.sum().item() / 5, abs=1e-6)


def test_sequence_mask_drops_rows_whose_ratio_leaves_the_band():
    # row 0: sum of log ratios = -0.5, rho = 0.607 < 1/1.5 = 0.667: dropped
    # row 1: sum = 0.3, rho = 1.35 <= 1.5: kept
    w, stats = is_weights(TRAIN, ENGINE, MASK, "sequence_mask", cap=1.5)
    assert torch.equal(w, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    assert stats["dropped_seq_frac"].item() == pytest.approx(0.5)
    w2, stats2 = is_weights(TRAIN, ENGINE, MASK, "sequence_mask", cap=2.0)  # 1/2 <= 0.607: both kept
    assert torch.equal(w2, MASK.float()) and stats2["dropped_seq_frac"].item() == 0.0


def test_none_and_an_exact_engine_change_nothing():
    w, _ = is_weights(TRAIN, ENGINE, MASK, "none", cap=2.0)
    assert torch.equal(w, MASK.float())
    for mode in ("token_tis", "sequence_mask"):
        w, _ = is_weights(TRAIN, TRAIN.clone(), MASK, mode, cap=2.0)
        assert torch.equal(w, MASK.float()), mode


def test_bad_mode_and_cap_are_refused():
    with pytest.raises(ValueError, match="choices"):
        is_weights(TRAIN, ENGINE, MASK, "tis", cap=2.0)
    with pytest.raises(ValueError, match="> 1"):
        is_weights(TRAIN, ENGINE, MASK, "token_tis", cap=1.0)


def test_policy_loss_multiplies_each_token_by_its_weight():
    """With ratio 1 (logprobs = old), the per-token loss is -A; weights w give -sum(w A) / tokens."""
    adv = torch.tensor([[1.0, -2.0, 0.5], [2.0, 1.0, 0.0]])
    w = torch.tensor([[0.5, 2.0, 1.0], [1.0, 0.0, 3.0]])
    loss, _ = ppo_clip_loss(TRAIN, TRAIN, adv, MASK, is_weights=w)
    assert loss.item() == pytest.approx(-(0.5 * 1.0 + 2.0 * -2.0 + 1.0 * 0.5 + 1.0 * 2.0 + 0.0) / 5)
