"""The Triton prefix attention of phase 2 against masked attention and against the SDPA path.

On the CPU the kernels run under Triton's interpreter, float32 and float16 (the interpreter has no
bfloat16). The interpreter must be on before triton is first imported, so the `test_interp_*`
tests run in a child pytest started with TRITON_INTERPRET=1 (`test_kernels_under_the_interpreter`).
The `gpu` tests run the compiled kernels in bfloat16."""

import os
import platform

import pytest
import torch

from repro_train.models.forward import pack
from repro_train.repro.probe.attention import folded_sdpa, probe_mask
from repro_train.repro.probe.triton import attention, launch, ops
from tests.helpers.interpreter import run_interpreter_tests
from tests.helpers.references import prefix_attention_reference

if platform.system() != "Linux":  # triton ships Linux wheels only; on Linux it is a test dependency
    pytest.importorskip("triton")

from tests.helpers.probe_models import ARCHS, BLOCKS, FORCING, build, fused_J  # noqa: E402

KERNELS = ops.Kernels()


INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
interp = pytest.mark.skipif(not INTERPRETER, reason="runs in the child pytest of test_kernels_under_the_interpreter")


def test_kernels_under_the_interpreter():
    if INTERPRETER:
        pytest.skip("this is the child")
    import triton

    if tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 9):
        pytest.skip(
            f"triton {triton.__version__}: the interpreter before 3.9 cannot take loop bounds loaded "
            "from memory (the compiled kernels can)"
        )
    run_interpreter_tests(__file__, list(globals()), timeout=900)


def case(B, nb, Lb, H, Hkv, D, T0, dtype, seed=0, device="cpu"):
    """Queries, the phase-1 cache (a (B, Hkv, T0, D) view of a tokens-major buffer, as HF leaves
    it), the blocks' own keys/values (B, L, Hkv, D), lo and hi."""
    g = torch.Generator().manual_seed(seed)
    L = nb * Lb
    q = torch.randn(B, L, H, D, generator=g).to(device, dtype)
    kb = torch.randn(B, T0, Hkv, D, generator=g).to(device, dtype)
    vb = torch.randn(B, T0, Hkv, D, generator=g).to(device, dtype)
    own_k = torch.randn(B, L, Hkv, D, generator=g).to(device, dtype)
    own_v = torch.randn(B, L, Hkv, D, generator=g).to(device, dtype)
    lo = torch.randint(0, 8, (B,), generator=g)
    hi = torch.randint(0, T0 + 1, (B, nb), generator=g)
    hi[0, 0] = 0  # a block that sees nothing of the cache (an invalid block)
    hi[-1, -1] = T0  # one that sees all of it
    return q, kb.transpose(1, 2), vb.transpose(1, 2), own_k, own_v, lo.to(device), hi.to(device)


SHAPES = [  # B, nb, Lb, H, Hkv, D, T0
    (2, 3, 5, 4, 2, 16, 40),  # one partial tile of prefix columns
    (3, 4, 7, 6, 1, 32, 150),  # MQA: 42 folded rows
    (2, 2, 20, 12, 2, 16, 130),  # Qwen2-1.5B's group of 6: 120 folded rows in a 128-row tile
    (1, 2, 70, 4, 2, 16, 200),  # 140 folded rows: two row tiles; the block itself spans two key tiles
]


def attention_pair(shape, dtype, device="cpu", **kw):
    q, k, v, ok, ov, lo, hi = case(*shape, dtype, device=device)
    Lb, D = shape[2], shape[5]
    out = attention.PrefixAttention(lo, hi, Lb, **kw)(q, k, v, ok, ov, D**-0.5)
    ref = prefix_attention_reference(q, k, v, ok, ov, lo, hi, Lb, D**-0.5)
    return out, ref


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("splits", [1, 3, None])
@interp
def test_interp_prefix_attention_matches_masked_attention(shape, splits):
    out, ref = attention_pair(shape, torch.float32, splits=splits)
    assert out.shape == (shape[0], shape[1] * shape[2], shape[3] * shape[5])
    assert (out - ref).abs().max() < 1e-5


@interp
def test_interp_prefix_attention_float16_and_reused_buffers():
    q, k, v, ok, ov, lo, hi = case(2, 2, 20, 12, 2, 16, 130, torch.float16)
    attn = attention.PrefixAttention(lo, hi, 20, splits=3)  # the merge tickets must reset between layers
    first = attn(q, k, v, ok, ov, 0.25).clone()
    again = attn(q * 2, k, v, ok, ov, 0.25)  # a second layer reuses the work buffers
    ref = prefix_attention_reference(q * 2, k, v, ok, ov, lo, hi, 20, 0.25)
    assert again.dtype == torch.float16 and (again.float() - ref.float()).abs().max() < 2e-3
    assert not torch.equal(first, again)


def test_work_items_largest_first():
    """Hand-worked: row 0 sees nothing in block 0 and 200 columns in block 1; row 1 (lo = 10) sees
    nothing in block 0 (hi < lo) and 64 columns in block 1. Slices of 64 columns, at most 4; a
    slice's size counts key tiles, and slice 0 one more for the block's own keys."""
    lo, hi = torch.tensor([0, 10]), torch.tensor([[0, 200], [5, 74]])
    items = attention.work_items(lo, hi, n_mt=1, span=64, splits=4, block_n=64)
    # sizes per (tile, slice): t0 [1, -, -, -], t1 [2, 1, 1, 1], t2 [1, -, -, -], t3 [2, -, -, -]
    assert items.tolist() == [4, 12, 0, 5, 6, 7, 8] + [-1] * 9 and items.dtype == torch.int32
    # two row tiles per block: every tile of a block has that block's slices
    two = attention.work_items(lo, hi, n_mt=2, span=128, splits=2, block_n=64)
    # sizes: tiles 0, 1 [1, -]; tiles 2, 3 [3, 2] (128 + 72 columns); tiles 4, 5 [1, -]; tiles 6, 7 [2, -]
    assert two.tolist() == [4, 6, 5, 7, 12, 14, 0, 2, 8, 10] + [-1] * 6


def rope_reference(t, cos, sin_signed):
    half = t.shape[-1] // 2
    return (t * cos.unsqueeze(2)).add_(t.roll(half, dims=-1) * sin_signed.unsqueeze(2))


def rope_case(dtype, device="cpu", B=2, L=5, H=12, Hkv=2, D=16):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(B, L, H * D, generator=g).to(device, dtype).view(B, L, H, D)
    k = torch.randn(B, L, Hkv * D, generator=g).to(device, dtype).view(B, L, Hkv, D)
    ang = torch.rand(B, L, D, generator=g) * 6
    return q, k, ang.cos().to(device, dtype), ang.sin().to(device, dtype)


@interp
def test_interp_rope_in_place():
    q, k, cos, sin = rope_case(torch.float32)
    want_q, want_k = rope_reference(q, cos, sin), rope_reference(k, cos, sin)
    assert KERNELS.rope_(q, k, cos, sin)
    assert (q - want_q).abs().max() < 1e-6 and (k - want_k).abs().max() < 1e-6


def test_rope_declines_what_it_cannot_do():
    q, k, cos, sin = rope_case(torch.float32)
    before = q.clone()
    assert not KERNELS.rope_(q, k, cos.half(), sin.half())  # mixed dtypes (autocast): torch does it
    assert not KERNELS.rope_(q.half(), k.half(), cos.half(), sin.half())  # float16
    assert not KERNELS.rope_(q.transpose(1, 2).contiguous().transpose(1, 2), k, cos, sin)  # head-major
    assert torch.equal(q, before)


def rms_reference(x, w, eps):
    return w * torch.nn.functional.rms_norm(x, (x.shape[-1],), eps=eps)


def gate_reference(g, u):
    return torch.nn.functional.silu(g.clone(), inplace=True).mul_(u)


@pytest.fixture
def fused_rms():
    return ops.Kernels(fused_rms_norm=True)


@pytest.mark.parametrize("rows, width", [(7, 1536), (300, 32), (3, 3000)])  # one row, 16 rows, a partial block
@interp
def test_interp_rms_norm(rows, width, fused_rms):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(rows, width, generator=g) * 3
    w = torch.rand(width, generator=g) + 0.5
    y = fused_rms.rms_norm(x.view(rows, 1, width), w, 1e-6)
    assert y.shape == (rows, 1, width) and (y.view(rows, width) - rms_reference(x, w, 1e-6)).abs().max() < 1e-5


@interp
def test_interp_scale_is_torchs_product():
    y = torch.randn(7, 33) * 3
    w = torch.rand(33) + 0.5
    want = w * y
    assert KERNELS.scale_(y, w) and torch.equal(y, want)


def test_scale_declines_what_it_cannot_do():
    y = torch.randn(4, 8)
    assert not KERNELS.scale_(y.half(), torch.ones(8).half())  # float16
    assert not KERNELS.scale_(y.bfloat16(), torch.ones(8))  # autocast's float32 weight on bf16 rows
    assert not KERNELS.scale_(y.t(), torch.ones(4))  # strided
    assert not KERNELS.scale_(y, torch.ones(4))  # a weight of another width


@interp
def test_interp_silu_mul():
    g = torch.Generator().manual_seed(7)
    a, u = torch.randn(3, 5, 1000, generator=g) * 4, torch.randn(3, 5, 1000, generator=g)
    want = gate_reference(a, u)
    assert KERNELS.silu_mul_(a, u) and (a - want).abs().max() < 1e-5


def test_norm_and_gate_decline_what_they_cannot_round_alike(fused_rms):
    x, w = torch.randn(4, 8), torch.ones(8)
    assert fused_rms.rms_norm(x.half(), w.half(), 1e-6) is None  # float16
    assert fused_rms.rms_norm(x, w.bfloat16(), 1e-6) is None  # autocast's float32 weights on bf16 rows
    assert fused_rms.rms_norm(x.t(), torch.ones(4), 1e-6) is None  # strided rows
    assert not fused_rms.silu_mul_(x, x.bfloat16())
    assert not fused_rms.silu_mul_(x.t(), x.t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@interp
def test_interp_target_logprobs(dtype):
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(7, 5000, generator=g) * 4).to(dtype)  # 5000: a partial last chunk
    logits[3, 100:] = float("-inf")  # masked-out vocabulary entries
    targets = torch.tensor([0, 4999, 17, 99, 2048, 2047, 1234])
    want = torch.log_softmax(logits.float(), -1).gather(-1, targets.view(-1, 1)).view(-1)
    got = KERNELS.target_logprobs(logits, targets)
    assert got.dtype == torch.float32 and (got - want).abs().max() < 1e-5


def test_reference_is_the_probe_mask():
    """The slow reference encodes the same visibility as the SDPA path's mask (left-padded rows)."""
    seqs = pack([[5, 6, 7], [8, 9, 10, 11, 12, 13]], [list(range(20, 31)), list(range(31, 36))], 0)
    B, Kc = seqs.input_ids.shape
    nb, Lb, H, Hkv, D = 3, 4, 4, 2, 16
    L, P = nb * Lb, seqs.prompt_width
    limit = torch.tensor([[P, P + 4, P + 11], [P, P + 2, 0]])  # 0: an invalid block
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, L, H, D, generator=g)
    kv = torch.randn(2, B, Hkv, Kc + L, D, generator=g)  # the cache with the blocks appended
    mask = probe_mask(_Stub(H, Hkv), seqs, _KeysOf(kv[0]), limit, Lb, L)
    sdpa = folded_sdpa(q.transpose(1, 2), kv[0], kv[1], mask, D**-0.5).transpose(1, 2).reshape(B, L, H * D)
    ref = prefix_attention_reference(
        q,
        kv[0, :, :, :Kc],
        kv[1, :, :, :Kc],
        kv[0, :, :, Kc:].transpose(1, 2),
        kv[1, :, :, Kc:].transpose(1, 2),
        P - seqs.prompt_lens,
        limit,
        Lb,
        D**-0.5,
    )
    assert (sdpa - ref).abs().max() < 1e-5


class _Stub(torch.nn.Module):
    def __init__(self, H, Hkv):
        super().__init__()
        self.config = type("C", (), {"num_attention_heads": H, "num_key_value_heads": Hkv})()
        self.w = torch.nn.Parameter(torch.zeros(1))


class _KeysOf:
    def __init__(self, keys):
        self.layers = [type("L", (), {"keys": keys})()]


@pytest.mark.parametrize("kind", sorted(ARCHS))
@pytest.mark.parametrize("forcing", [FORCING, []])
@interp
def test_interp_probe_triton_matches_sdpa(kind, forcing):
    """J through the whole layer-by-layer forward: Triton attention = SDPA attention, float32."""
    model = build(kind)
    tri, _ = fused_J(model, forcing, "layers", attention="triton")
    sdpa, blocks = fused_J(model, forcing, "layers", attention="sdpa")
    assert torch.allclose(tri, sdpa, atol=1e-5), (tri - sdpa).abs().max()
    assert blocks.valid.sum() == sum(len(b) for b in BLOCKS)


def test_triton_where_it_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # (in the child too)
    assert "CUDA" in launch.unavailable("cpu")
    with pytest.raises(ValueError, match="probe.attention 'triton' cannot run here"):
        fused_J(build("qwen2"), FORCING, "layers", attention="triton")
    auto, _ = fused_J(build("qwen2"), FORCING, "layers", attention="auto")  # auto falls back to SDPA
    sdpa, _ = fused_J(build("qwen2"), FORCING, "layers", attention="sdpa")
    assert torch.equal(auto, sdpa)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("shape", SHAPES + [(4, 11, 20, 12, 2, 128, 4352)])  # the bench's bar cell
def test_prefix_attention_bf16_on_gpu(shape):
    out, ref = attention_pair(shape, torch.bfloat16, device="cuda")
    assert (out.float() - ref.float()).abs().max() < 2e-2  # about two bf16 steps at |out| < 2


@pytest.mark.gpu
@gpu
def test_target_logprobs_on_gpu():
    logits = (torch.randn(704, 151936, device="cuda") * 3).bfloat16()
    targets = torch.randint(0, 151936, (704,), device="cuda")
    want = torch.log_softmax(logits, -1, dtype=torch.float32).gather(-1, targets.view(-1, 1)).view(-1)
    assert (KERNELS.target_logprobs(logits, targets) - want).abs().max() < 1e-4


@pytest.mark.gpu
@gpu
def test_rope_bit_exact_on_gpu():
    q, k, cos, sin = rope_case(torch.bfloat16, "cuda", B=4, L=220, H=12, Hkv=2, D=128)
    want_q, want_k = rope_reference(q, cos, sin), rope_reference(k, cos, sin)
    assert KERNELS.rope_(q, k, cos, sin)
    assert torch.equal(q, want_q) and torch.equal(k, want_k)


@pytest.mark.gpu
@gpu
def test_direct_launches_match_tritons_launcher_on_gpu():
    """After its first launch a kernel is called without Triton's launcher (`Launcher.launch`): the
    same results, bit for bit, for every layer-like call after the first."""
    kernels = ops.Kernels()

    def run():
        q, k, v, ok, ov, lo, hi = case(4, 11, 20, 12, 2, 128, 4352, torch.bfloat16, device="cuda")
        attn = kernels.prefix_attention(lo, hi, 20)
        outs = [attn(q * s, k, v, ok, ov, 0.088).clone() for s in (1.0, 0.5, 2.0)]
        rq, rk, cos, sin = rope_case(torch.bfloat16, "cuda", B=4, L=220, H=12, Hkv=2, D=128)
        for _ in range(3):
            kernels.rope_(rq, rk, cos, sin)
        gen = torch.Generator(device="cuda").manual_seed(5)
        g = (torch.randn(880, 8960, device="cuda", generator=gen) * 4).bfloat16()
        u = torch.randn(880, 8960, device="cuda", generator=gen).bfloat16()
        for _ in range(2):
            kernels.silu_mul_(g, u)
        y = torch.randn(880, 1536, device="cuda", generator=gen).bfloat16()
        for _ in range(2):
            kernels.scale_(y, g[0, :1536])
        return outs + [rq, rk, g, y]

    direct = run()
    assert kernels.launcher.direct and len(kernels.launcher.table) >= 3  # the direct path ran
    kernels.launcher.direct = False
    launcher = run()
    assert all(torch.equal(x, y) for x, y in zip(direct, launcher))


def within_one_step(got, want):
    """bf16 results that differ from torch's by at most one rounding step (the kernels' float32
    rsqrt/exp/division are not torch's bit for bit), and mostly not at all."""
    step = (want.float().abs() * 2.0**-7).clamp(min=2.0**-126)
    off = (got.float() - want.float()).abs()
    return bool((off <= step * 1.01).all()) and float((off > 0).float().mean()) < 0.05


def test_rms_norm_kernel_is_off_unless_asked_for():
    assert ops.Kernels().fused_rms_norm is False
    assert ops.Kernels().rms_norm(torch.randn(4, 8), torch.ones(8), 1e-6) is None


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_fused_rms_norm_gives_the_same_J_on_gpu(kind):
    """The Triton RMSNorm (off by default) against torch's in the whole probe: float32 to 1e-5."""
    model = build(kind).cuda()
    off, _ = fused_J(model, FORCING, "layers", attention="triton", device="cuda")
    on, _ = fused_J(model, FORCING, "layers", attention="triton", device="cuda", fused_rms_norm=True)
    assert (on - off).abs().max() < 1e-5


@pytest.mark.gpu
@gpu
def test_norm_and_gate_on_gpu(fused_rms):
    x = (torch.randn(880, 1536, device="cuda") * 3).bfloat16()
    w = (torch.rand(1536, device="cuda") + 0.5).bfloat16()
    assert within_one_step(fused_rms.rms_norm(x, w, 1e-6), rms_reference(x, w, 1e-6))
    a, u = (torch.randn(880, 8960, device="cuda") * 4).bfloat16(), torch.randn(880, 8960, device="cuda").bfloat16()
    want = gate_reference(a, u)
    assert fused_rms.silu_mul_(a, u) and within_one_step(a, want)
    y = torch.nn.functional.rms_norm(x, (1536,), eps=1e-6)
    want = w * y
    assert fused_rms.scale_(y, w) and torch.equal(y, want)  # RMSNorm's scale: torch's bit for bit


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", sorted(ARCHS))
def test_probe_triton_matches_sdpa_on_gpu(kind):
    model = build(kind).cuda()
    tri, _ = fused_J(model, FORCING, "layers", attention="triton", device="cuda")
    sdpa, _ = fused_J(model, FORCING, "layers", attention="sdpa", device="cuda")
    assert (tri - sdpa).abs().max() < 1e-4
    model = build(kind, torch.bfloat16).cuda()
    tri, _ = fused_J(model, FORCING, "layers", attention="triton", device="cuda")
    sdpa, _ = fused_J(model, FORCING, "layers", attention="sdpa", device="cuda")
    assert (tri - sdpa).abs().max() < 2e-2
    model = build(
        kind
    ).cuda()  # the recipes' precision: float32 weights under bf16 autocast (keys float32, values bf16)
    tri, _ = fused_J(model, FORCING, "layers", attention="triton", device="cuda", autocast=torch.bfloat16)
    sdpa, _ = fused_J(model, FORCING, "layers", attention="sdpa", device="cuda", autocast=torch.bfloat16)
    assert (tri - sdpa).abs().max() < 2e-2


@interp
def test_interp_probe_under_autocast_over_float32_weights():
    """The recipes' precision (float32 weights, half-precision autocast): the rotary returns float32 queries and keys
    while the values are half. The probe's cache keeps the keys in the values' dtype (what the model's own attention
    casts them to), so the Triton table of all layers sees one dtype (it failed on a GPU on 2026-12-07: "kv_table:
    every layer's keys and values need the same shape, strides and dtype"), and gives SDPA's J. float16: the
    interpreter has no bf16."""
    model = build("qwen2")
    tri, _ = fused_J(model, FORCING, "layers", attention="triton", autocast=torch.float16)
    sdpa, _ = fused_J(model, FORCING, "layers", attention="sdpa", autocast=torch.float16)
    assert tri.dtype == sdpa.dtype and tri.abs().sum() > 0
    assert (tri - sdpa).abs().max() < 2e-2  # half-precision attention, the GPU bf16 test's bound


@interp
def test_interp_prefix_attention_takes_queries_in_another_dtype():
    """float32 queries and own keys over a float16 cache: computed in the cache's dtype."""
    q, k, v, ok, ov, lo, hi = case(2, 3, 5, 4, 2, 16, 40, torch.float16)
    out = attention.PrefixAttention(lo, hi, 5)(q.float(), k, v, ok.float(), ov, 0.25)
    ref = prefix_attention_reference(q, k, v, ok, ov, lo, hi, 5, 0.25)
    assert out.dtype == torch.float16 and (out.float() - ref.float()).abs().max() < 2e-3


@interp
def test_interp_policy_pass_triton_keeps_phase1_cache_and_matches_sdpa():
    """The trainer's pass: with Triton, phase 1 keeps its own keys (room 0) and J equals SDPA's."""
    from repro_train.repro.probe import ProbeRunner, ProbeSettings
    from repro_train.repro.types import ProbeRequest
    from tests.helpers.probe_models import ANSWERS, PROMPTS, RESPONSES

    model = build("qwen2")
    rows = [ProbeRequest((0, 3, 9), (3, 9, len(r)), tuple(a)) for r, a in zip(RESPONSES, ANSWERS)]
    seqs = pack(PROMPTS, RESPONSES, 0)
    out = {
        a: ProbeRunner(ProbeSettings(attention=a)).run(model, seqs, rows, FORCING, top_k=2) for a in ("triton", "sdpa")
    }
    for pt, ps in zip(out["triton"].probes, out["sdpa"].probes):
        assert pt.cuts == ps.cuts and abs(pt.J_b - ps.J_b) < 1e-5 and torch.allclose(pt.J, ps.J, atol=1e-5)


def test_probe_cache_without_room_keeps_phase1_tensors():
    from repro_train.models.forward import forward_logprobs
    from repro_train.repro.probe.attention import probe_cache

    model = build("qwen2")
    seqs = pack([[5, 6, 7], [8]], [list(range(20, 31)), list(range(31, 36))], 0)
    seen = []
    real = model.model.layers[0].self_attn.forward

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(k["past_key_values"].layers[0].keys)
        return out

    model.model.layers[0].self_attn.forward = spy
    with torch.no_grad():
        cache = forward_logprobs(model, seqs, use_cache=True, past_key_values=probe_cache(0)).cache
        keys = cache.layers[0].keys
        assert keys.shape[-2] == seqs.input_ids.shape[1] and keys is seen[0]
        k2, _ = cache.update(keys[:, :, :2], cache.layers[0].values[:, :, :2], 0)  # appending still works
    assert k2.shape[-2] == keys.shape[-2] + 2 and torch.equal(k2[:, :, -2:], keys[:, :, :2])


def test_triton_asked_for_on_a_cpu_fails_at_start_up(monkeypatch):
    from repro_train.config import Config
    from repro_train.core.typed_config import ConfigError
    from repro_train.repro.probe import ProbeSettings
    from repro_train.trainer.runtime import check_probe_attention

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    import dataclasses

    cfg = Config()
    triton = dataclasses.replace(
        cfg, repro=dataclasses.replace(cfg.repro, enabled=True, probe=ProbeSettings(attention="triton"))
    )
    with pytest.raises(ConfigError, match="'repro.probe.attention' = 'triton' cannot run here: device 'cpu'"):
        check_probe_attention(triton, torch.device("cpu"))
    auto = dataclasses.replace(
        cfg, repro=dataclasses.replace(cfg.repro, enabled=True, probe=ProbeSettings(attention="auto"))
    )
    check_probe_attention(auto, torch.device("cpu"))  # auto falls back without complaint
