"""`models.logprobs.token_logprobs` against `modeling.logprobs_from_logits` on full logits.

The torch row pass runs here in float32; the Triton kernels run on the CPU under Triton's
interpreter in a child pytest (`test_kernels_under_the_interpreter`: TRITON_INTERPRET=1 must be set
before triton is first imported), float32 and float16 (the interpreter has no bfloat16). The `gpu`
tests run the compiled kernels in bfloat16 and float32 against the torch path, and check that the
whole batch's logits never exist.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro_train.models.forward import logprobs_from_logits
from repro_train.models.logprobs import BLOCK, resolve_impl, token_logprobs
from tests.helpers.interpreter import run_interpreter_tests

REPO = Path(__file__).resolve().parents[2]  # the checkout
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
interp = pytest.mark.skipif(not INTERPRETER, reason="runs in the child pytest of test_kernels_under_the_interpreter")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
RTOL = 1e-5  # float32: max |ours - reference| <= RTOL * max |reference|, per tensor


def case(B=2, R=13, H=16, V=300, bias=False, dtype=torch.float32, device="cpu", seed=0, logit_std=3.0):
    """hidden (B, R, H), weight (V, H), bias (V,) or None, targets (B, R), upstream grads g_lp and
    g_ent (B, R). Logits of std about `logit_std` (peaked rows, as a trained LM's are)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, R, H, generator=g)
    weight = torch.randn(V, H, generator=g) * logit_std / H**0.5
    b = torch.randn(V, generator=g) if bias else None
    targets = torch.randint(0, V, (B, R), generator=g)
    g_lp, g_ent = torch.randn(B, R, generator=g), torch.randn(B, R, generator=g)

    def put(t):
        return None if t is None else t.to(device, dtype)

    return put(hidden), put(weight), put(b), targets.to(device), g_lp.to(device), g_ent.to(device)


def reference(hidden, weight, bias, targets, temperature, with_entropy):
    """Today's path: every logit, then the float32 row chunks of `logprobs_from_logits`."""
    logits = hidden @ weight.T + (bias if bias is not None else 0)
    return logprobs_from_logits(logits, targets, temperature, with_entropy, chunk=4)


def values_and_grads(fn, hidden, weight, bias, g_lp, g_ent, which="both"):
    """fn(hidden, weight, bias) -> (lp, ent); loss = sum g_lp * lp + g_ent * ent (the terms `which`
    keeps). Returns lp, ent and the loss's grads w.r.t. hidden, weight (and bias when given)."""
    leaves = [t.detach().requires_grad_() for t in (hidden, weight, bias) if t is not None]
    lp, ent = fn(*leaves, *([None] if bias is None else []))
    loss = 0
    if which in ("both", "lp"):
        loss = loss + (g_lp * lp).sum()
    if which in ("both", "ent"):
        loss = loss + (g_ent * ent).sum()
    grads = torch.autograd.grad(loss, leaves)
    return [lp.detach(), None if ent is None else ent.detach(), *grads]


def assert_rel(ours, ref, rtol=RTOL, what=""):
    assert ours.shape == ref.shape, what
    err = (ours.double() - ref.double()).abs().max().item()
    scale = ref.double().abs().max().item()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol} x {scale:.3g}"


def check_against_reference(impl, temperature, with_entropy, bias, which="both", V=300):
    """Values and the grads of a per-token loss (`which` of its terms) against the reference, N = 26
    positions in chunks of 5."""
    hidden, weight, b, targets, g_lp, g_ent = case(bias=bias, V=V)
    which = which if with_entropy else "lp"

    def ours(h, w, bb):
        return token_logprobs(h, w, targets, temperature, with_entropy, bias=bb, impl=impl, chunk_tokens=5)

    def ref(h, w, bb):
        return reference(h, w, bb, targets, temperature, with_entropy)

    got = values_and_grads(ours, hidden, weight, b, g_lp, g_ent, which)
    want = values_and_grads(ref, hidden, weight, b, g_lp, g_ent, which)
    assert got[0].dtype == torch.float32 and got[0].shape == targets.shape
    assert (got[1] is None) == (not with_entropy)
    for name, a, r in zip(["lp", "ent", "d hidden", "d weight", "d bias"], got, want):
        if r is not None:
            assert_rel(a, r, what=name)


# ---- hand-worked ---------------------------------------------------------------------------------


def hand_worked(impl):
    """V = 3, H = 1: weight (0, ln 2, ln 5), hidden 2, temperature 2 -> z = (0, ln 2, ln 5),
    sum exp z = 8, p = (1, 2, 5) / 8; target 1.
      lp = ln 2 - ln 8 = -ln 4;  H = 1/8 ln 8 + 2/8 ln 4 + 5/8 ln(8/5)
      d lp / d w_j = (1[j = t] - p_j) h / T = (-1/8, 6/8, -5/8)
      d lp / d h   = (w_t - sum_j p_j w_j) / T = (ln 2 - S) / 2,  S = sum_j p_j z_j = (2 ln 2 + 5 ln 5) / 8
      d H / d w_j  = p_j (S - z_j) h / T = p_j (S - z_j);   d H / d h = sum_j p_j (S - z_j) w_j / T"""
    ln2, ln5 = math.log(2), math.log(5)
    w = torch.tensor([[0.0], [ln2], [ln5]], requires_grad=True)
    h = torch.tensor([[2.0]], requires_grad=True)
    lp, ent = token_logprobs(h, w, torch.tensor([1]), temperature=2.0, impl=impl)
    p, z = [1 / 8, 2 / 8, 5 / 8], [0.0, ln2, ln5]
    S = (2 * ln2 + 5 * ln5) / 8
    assert lp.item() == pytest.approx(-math.log(4), rel=1e-6)
    assert ent.item() == pytest.approx(math.log(8) / 8 + 2 / 8 * math.log(4) + 5 / 8 * math.log(8 / 5), rel=1e-6)
    dw, dh = torch.autograd.grad(lp.sum(), (w, h), retain_graph=True)
    assert dw.flatten().tolist() == pytest.approx([-1 / 8, 6 / 8, -5 / 8], rel=1e-6)
    assert dh.item() == pytest.approx((ln2 - S) / 2, rel=1e-6)
    dw, dh = torch.autograd.grad(ent.sum(), (w, h))
    assert dw.flatten().tolist() == pytest.approx([pj * (S - zj) for pj, zj in zip(p, z)], rel=1e-5, abs=1e-7)
    assert dh.item() == pytest.approx(sum(pj * (S - zj) * zj for pj, zj in zip(p, z)) / 2, rel=1e-5)


def test_hand_worked():
    hand_worked("torch")


# ---- the torch path against the reference (float32) ----------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("with_entropy", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_reference(temperature, with_entropy, bias):
    check_against_reference("torch", temperature, with_entropy, bias)  # N = 26 in chunks of 5


@pytest.mark.parametrize("which", ["lp", "ent"])
def test_one_output_alone_carries_its_gradient(which):
    """A loss of only the entropy (or only the log-probs): the other output's grad is None inside."""
    check_against_reference("torch", 0.7, True, False, which=which)


def test_chunk_size_changes_nothing():
    hidden, weight, _, targets, g_lp, g_ent = case(R=17)
    runs = []
    for chunk in (1, 7, 34, 1000):

        def fn(h, w, _b, chunk=chunk):
            return token_logprobs(h, w, targets, 0.7, impl="torch", chunk_tokens=chunk)

        runs.append(values_and_grads(fn, hidden, weight, None, g_lp, g_ent))
    for other in runs[1:]:
        for a, r in zip(other, runs[0]):
            assert_rel(a, r)  # d weight sums the chunks in another order


def test_frozen_weight_and_no_grad():
    """Only what needs a gradient gets one; under no_grad nothing is kept for a backward."""
    hidden, weight, _, targets, g_lp, _ = case()
    h = hidden.detach().requires_grad_()
    lp, _ = token_logprobs(h, weight, targets, impl="torch")
    (dh,) = torch.autograd.grad((g_lp * lp).sum(), (h,))
    h_ref = hidden.detach().requires_grad_()
    ref_lp, _ = reference(h_ref, weight, None, targets, 1.0, False)
    (ref_dh,) = torch.autograd.grad((g_lp * ref_lp).sum(), (h_ref,))
    assert_rel(dh, ref_dh, what="d hidden")
    with torch.no_grad():
        lp, ent = token_logprobs(hidden.requires_grad_(), weight, targets, impl="torch")
    assert lp.grad_fn is None and ent.grad_fn is None


def test_shapes_and_empty():
    hidden, weight, _, targets, *_ = case(B=3, R=4)
    lp, ent = token_logprobs(hidden, weight, targets, impl="torch")
    assert lp.shape == ent.shape == (3, 4)
    h = torch.zeros(0, 16, requires_grad=True)
    lp, ent = token_logprobs(h, weight, torch.zeros(0, dtype=torch.long), impl="torch")
    assert lp.shape == ent.shape == (0,)
    (lp.sum() + ent.sum()).backward()
    assert h.grad.shape == (0, 16)


def test_errors_name_the_argument():
    hidden, weight, _, targets, *_ = case()
    with pytest.raises(ValueError, match="impl='cuda'.*auto"):
        token_logprobs(hidden, weight, targets, impl="cuda")
    with pytest.raises(ValueError, match="temperature=0"):
        token_logprobs(hidden, weight, targets, temperature=0)
    with pytest.raises(ValueError, match="chunk_tokens=0"):
        token_logprobs(hidden, weight, targets, chunk_tokens=0)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(hidden, weight, targets[:, 1:])
    with pytest.raises(ValueError, match="weight"):
        token_logprobs(hidden, weight[:, 1:], targets)
    with pytest.raises(ValueError, match="bias"):
        token_logprobs(hidden, weight, targets, bias=torch.zeros(3))
    assert resolve_impl("auto", "cpu") == "torch"
    if not INTERPRETER:
        with pytest.raises(ValueError, match="impl='triton' on device 'cpu'"):
            resolve_impl("triton", "cpu")


def test_autocast_runs_the_matmul_in_bfloat16():
    """Under CPU autocast the logits are bf16 (as the HF model's LM head gives them today): the
    values equal the reference fed those same bf16 logits; the outputs and grads keep their dtypes."""
    hidden, weight, _, targets, g_lp, g_ent = case(H=32, V=500)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = values_and_grads(lambda h, w, _b: token_logprobs(h, w, targets, 0.7), hidden, weight, None, g_lp, g_ent)
    logits = hidden.bfloat16() @ weight.bfloat16().T
    lp, ent = logprobs_from_logits(logits, targets, 0.7)
    assert got[0].dtype == torch.float32 and got[2].dtype == got[3].dtype == torch.float32
    assert_rel(got[0], lp, what="lp")
    assert_rel(got[1], ent, rtol=2e-5, what="ent")


def test_bfloat16_logits_error_against_float32():
    """What the bf16 logits buffer costs: with bf16 inputs, bf16 logits (rounded once from float32
    accumulation) against float32 logits of the same inputs, logits of std 4 (|z| up to ~20, where
    a bf16 ulp is 1/8): measured max |d lp| 0.063, max |d ent| 0.073, d hidden and d weight off by
    1.5% in norm (N 256, V 32000). Bounds at about twice that; the same run in float32 is exact to 1e-5."""
    hidden, weight, _, targets, g_lp, g_ent = case(B=1, R=256, H=256, V=32000, logit_std=4.0, seed=3)
    hidden, weight = hidden.bfloat16().float(), weight.bfloat16().float()
    runs = {}
    for cdt in (torch.float32, torch.bfloat16):

        def fn(h, w, _b, cdt=cdt):
            return token_logprobs(h, w, targets, 1.0, impl="torch", compute_dtype=cdt, chunk_tokens=64)

        runs[cdt] = values_and_grads(fn, hidden, weight, None, g_lp, g_ent)
    b16, f32 = runs[torch.bfloat16], runs[torch.float32]
    assert (b16[0] - f32[0]).abs().max() < 0.15 and (b16[1] - f32[1]).abs().max() < 0.15
    for a, r in zip(b16[2:], f32[2:]):
        assert 1e-4 < (a - r).norm() / r.norm() < 0.03  # bf16 really ran, and costs about 1.5%


# ---- the Triton kernels under the interpreter ----------------------------------------------------


def test_kernels_under_the_interpreter():
    if INTERPRETER:
        pytest.skip("this is the child")
    pytest.importorskip("triton")
    run_interpreter_tests(__file__, list(globals()), timeout=600)


@interp
def test_interp_hand_worked():
    hand_worked("triton")


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("with_entropy", [True, False])
@pytest.mark.parametrize("bias", [False, True])
@interp
def test_interp_matches_reference(temperature, with_entropy, bias):
    V = BLOCK + 452  # two vocabulary tiles, the second partial
    check_against_reference("triton", temperature, with_entropy, bias, V=V)


@pytest.mark.parametrize("which", ["lp", "ent"])
@interp
def test_interp_one_output_alone(which):
    check_against_reference("triton", 0.7, True, False, which=which)


@interp
def test_interp_float16_matches_the_torch_path():
    """Both read the same float16 logits; d logits are rounded to float16 by both (an ulp apart at most)."""
    hidden, weight, _, targets, g_lp, g_ent = case(V=BLOCK + 452, dtype=torch.float16, logit_std=2.0)
    runs = [
        values_and_grads(
            lambda h, w, _b, impl=impl: token_logprobs(h, w, targets, 0.7, impl=impl, chunk_tokens=5),
            hidden,
            weight,
            None,
            g_lp,
            g_ent,
        )
        for impl in ("triton", "torch")
    ]
    assert runs[0][2].dtype == torch.float16
    for name, a, r, tol in zip(["lp", "ent", "d hidden", "d weight"], *runs, [RTOL, RTOL, 1e-3, 1e-3]):
        assert_rel(a.float(), r.float(), rtol=tol, what=name)


@interp
def test_interp_bench_runs_tiny(tmp_path):
    """bench/bench_logprobs.py end to end on the CPU, all three variants (the kernels interpreted)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import bench_logprobs
    finally:
        sys.path.pop(0)
    out = tmp_path / "b.json"
    res = bench_logprobs.main(["--device", "cpu", "--tiny", "--repeats", "1", "--out", str(out)])
    assert out.exists() and len(res["rows"]) == 2
    for row in res["rows"]:
        assert set(row["variants"]) == {"today", "torch", "triton"}
        for v in row["variants"].values():
            assert v["fwd_ms"] > 0 and v["fwd_bwd_ms"] > 0
            assert v["max_abs_diff_lp_vs_today"] < 1e-4 and v["max_abs_diff_ent_vs_today"] < 1e-4


def test_bench_runs_tiny_on_the_cpu(tmp_path):
    """The bench's CPU smoke without the interpreter: today's path and the torch path."""
    out = tmp_path / "b.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, str(REPO / "bench" / "bench_logprobs.py"), "--device", "cpu", "--tiny", "--repeats", "1"]
    run = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "torch" in run.stdout and out.exists()


# ---- GPU: the compiled kernels -------------------------------------------------------------------


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_triton_matches_torch(dtype):
    """Same logits buffer for both: values to 1e-5 of the torch path; grads to 1e-5 in float32,
    1e-2 in bf16 (d logits rounded to bf16 by both, a rare ulp apart, then summed by the matmuls)."""
    hidden, weight, _, targets, g_lp, g_ent = case(B=3, R=700, H=256, V=50_000, dtype=dtype, device="cuda")
    runs = [
        values_and_grads(
            lambda h, w, _b, impl=impl: token_logprobs(h, w, targets, 0.7, impl=impl, chunk_tokens=512),
            hidden,
            weight,
            None,
            g_lp,
            g_ent,
        )
        for impl in ("triton", "torch")
    ]
    grad_tol = RTOL if dtype == torch.float32 else 1e-2
    for name, a, r, tol in zip(["lp", "ent", "d hidden", "d weight"], *runs, [RTOL, RTOL, grad_tol, grad_tol]):
        assert_rel(a.float(), r.float(), rtol=tol, what=name)


@pytest.mark.gpu
@cuda
def test_gpu_float32_matches_reference():
    hidden, weight, b, targets, g_lp, g_ent = case(B=2, R=600, H=128, V=40_000, bias=True, device="cuda")

    def ours(h, w, bb):
        return token_logprobs(h, w, targets, 0.7, bias=bb, impl="triton", chunk_tokens=256)

    def ref(h, w, bb):
        return reference(h, w, bb, targets, 0.7, True)

    got = values_and_grads(ours, hidden, weight, b, g_lp, g_ent)
    want = values_and_grads(ref, hidden, weight, b, g_lp, g_ent)
    for name, a, r in zip(["lp", "ent", "d hidden", "d weight", "d bias"], got, want):
        assert_rel(a, r, what=name)


@pytest.mark.gpu
@cuda
def test_gpu_autocast_float32_params():
    """fp32 master weights under bf16 autocast: bf16 matmuls, float32 outputs and grads; the kernel
    equals the torch row pass on the same bf16 logits, and both are near today's path (whose bf16
    logits come from another cuBLAS call: an ulp apart here and there)."""
    hidden, weight, _, targets, g_lp, g_ent = case(B=2, R=300, H=128, V=30_000, device="cuda")
    runs = []
    for impl in ("triton", "torch"):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            runs.append(
                values_and_grads(
                    lambda h, w, _b, impl=impl: token_logprobs(h, w, targets, impl=impl),
                    hidden,
                    weight,
                    None,
                    g_lp,
                    g_ent,
                )
            )
    got = runs[0]
    assert got[0].dtype == got[2].dtype == got[3].dtype == torch.float32
    assert_rel(got[0], runs[1][0], what="lp")
    assert_rel(got[1], runs[1][1], what="ent")
    lp, _ = logprobs_from_logits(hidden.bfloat16() @ weight.bfloat16().T, targets)
    assert (got[0] - lp).abs().max() < 0.15


@pytest.mark.gpu
@cuda
def test_gpu_the_whole_logits_never_exist():
    """Qwen2-1.5B's head at 8,192 tokens, forward + backward: the peak above the inputs stays below
    one chunk buffer + the float32 weight-grad accumulator + the bf16 grads (+ 64 MiB), far below
    the bf16 logits of the whole row (2.5 GB), which today's path holds several times over."""
    N, H, V, chunk = 8192, 1536, 151_936, 1024
    hidden = torch.randn(N, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = (torch.randn(V, H, device="cuda") / H**0.5).bfloat16().requires_grad_()
    targets = torch.randint(0, V, (N,), device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    lp, ent = token_logprobs(hidden, weight, targets, 0.7, impl="triton", chunk_tokens=chunk)
    dh, dw = torch.autograd.grad((lp + 0.01 * ent).sum(), (hidden, weight))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    bound = chunk * V * 2 + V * H * (4 + 2) + N * H * 2 + 64 * 2**20
    assert peak < bound < N * V * 2, (peak, bound)
    assert torch.isfinite(dh).all() and torch.isfinite(dw).all()


def test_auto_falls_back_to_torch_where_the_kernel_fails(monkeypatch):
    """impl "auto" on a GPU whose Triton cannot build the kernel: a warning, then the torch row pass."""
    from repro_train.models import logprobs as L

    def broken(*args):
        raise RuntimeError("no such triton builtin")

    monkeypatch.setattr(L, "_TRITON_FAILED", [])
    stats = L._auto(broken, L.torch_row_stats)
    x = torch.tensor([[1.0, 2.0, 3.0]])
    lp, lse, ent = torch.empty(1), torch.empty(1), torch.empty(1)
    with pytest.warns(UserWarning, match="no such triton builtin"):
        stats(x, torch.tensor([2]), 1.0, lp, lse, ent)
    ref_lp, ref_lse, ref_ent = torch.empty(1), torch.empty(1), torch.empty(1)
    L.torch_row_stats(x, torch.tensor([2]), 1.0, ref_lp, ref_lse, ref_ent)
    assert torch.equal(lp, ref_lp) and torch.equal(ent, ref_ent) and L._TRITON_FAILED
    calls = []
    L._auto(lambda *a: calls.append(a), L.torch_row_stats)(x, torch.tensor([2]), 1.0, lp, lse, ent)
    assert not calls  # once failed, the kernel is not tried again in this process
