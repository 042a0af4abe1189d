"""KL estimators against hand values, their sign convention, and the registry."""

import math

import pytest
import torch

from repro_train.algos.kl import KL_ESTIMATORS, get_kl_estimator, kl_penalty, register_kl_estimator

# d = logp - ref = (0.5, -1, 0)
LOGP = torch.tensor([[-1.0, -2.0, -0.5]])
REF = torch.tensor([[-1.5, -1.0, -0.5]])


def _close(actual, expected, tol=1e-6):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=tol, rtol=0)


def test_hand_values():
    _close(kl_penalty(LOGP, REF, "k1"), [[0.5, -1.0, 0.0]])
    _close(kl_penalty(LOGP, REF, "k2"), [[0.125, 0.5, 0.0]])  # 0.5 d^2
    _close(kl_penalty(LOGP, REF, "abs"), [[0.5, 1.0, 0.0]])
    # k3 = exp(x) - x - 1 with x = ref - logp = (-0.5, 1, 0):
    #   exp(-0.5) + 0.5 - 1 = 0.1065307;  e - 2 = 0.7182818;  0
    expected = [[math.exp(-0.5) - 0.5, math.e - 2.0, 0.0]]
    _close(kl_penalty(LOGP, REF, "k3"), expected)
    _close(kl_penalty(LOGP, REF, "low_var_kl"), expected)
    _close(kl_penalty(LOGP, REF), expected)  # k3 is the default


def test_k3_nonnegative_and_clamped():
    g = torch.Generator().manual_seed(0)
    logp, ref = 3 * torch.randn(64, 32, generator=g), 3 * torch.randn(64, 32, generator=g)
    k3 = kl_penalty(logp, ref, "k3")
    assert (k3 >= 0).all()
    assert k3.max() <= 10.0
    # x = ref - logp = 30: exp(20) - 21 before the cap, capped at 10.
    _close(kl_penalty(torch.tensor([[-30.0]]), torch.tensor([[0.0]]), "k3"), [[10.0]])


def test_k1_k3_estimate_kl_of_policy_from_reference():
    # Tokens sampled from p: E_p[k1] = E_p[k3] = KL(p || q). This pins the sign convention.
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    kl = float((p * (p / q).log()).sum())  # 0.3961
    idx = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, ref = p.log()[idx], q.log()[idx]
    assert abs(float(kl_penalty(logp, ref, "k1").mean()) - kl) < 0.01
    assert abs(float(kl_penalty(logp, ref, "k3").mean()) - kl) < 0.01


def test_registry():
    with pytest.raises(ValueError) as e:
        kl_penalty(LOGP, REF, "mse")
    assert all(name in str(e.value) for name in ("abs", "k1", "k2", "k3", "low_var_kl"))
    with pytest.raises(ValueError, match="already registered"):
        register_kl_estimator("k2")(lambda a, b: a)
    assert get_kl_estimator("low_var_kl") is KL_ESTIMATORS["k3"]
    assert sorted(KL_ESTIMATORS) == ["abs", "k1", "k2", "k3", "low_var_kl"]
