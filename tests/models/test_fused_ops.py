"""model.fused_ops: the compiled decoder layers against the model as loaded (float32 log-probs, entropies and
gradients, the fused and the logits head, gradient checkpointing), one graph for every layer and length, RePro's J
unchanged, the start-up checks; marked GPU tests for inductor's Triton kernels and Liger.

On the CPU most cases compile with backend 'aot_eager' (dynamo's graphs and AOT autograd, no code generation: seconds
where inductor takes tens); one case runs inductor itself, the backend model.fused_ops: compile uses."""

import copy
import functools
import sys

import pytest
import torch

from repro_train.core.typed_config import ConfigError
from repro_train.models import fused_ops, loading
from repro_train.models.forward import forward_logprobs, pack
from repro_train.models.fused_ops import LIGER_PIN, apply_fused_ops, check_fused_ops
from repro_train.repro.probe import ProbeRunner, ProbeSettings
from tests.helpers.probe_models import FORCING, PROMPTS, RESPONSES, build, fused_J

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
SEQS = pack(PROMPTS, RESPONSES, 0)  # 3 rows, prompts of 1-6 tokens, responses of 9-30


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """dynamo's caches are per process: each test compiles from nothing and leaves nothing behind."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def pair(kind: str, checkpointing: bool = False, backend: str = "aot_eager", device: str = "cpu"):
    """(compiled, eager): two copies of one random tiny model, in train mode."""
    eager = build(kind).to(device)
    if checkpointing:
        eager.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    compiled = apply_fused_ops(copy.deepcopy(eager), "compile", backend)
    return compiled.train(), eager.train()


def logprobs_and_grads(model, seqs, head: str, autocast=None):
    """(log-probs, entropies, {name: grad}) of one forward + backward of log-probs and entropies."""
    model.zero_grad(set_to_none=True)
    ctx = torch.autocast(seqs.input_ids.device.type, dtype=autocast, enabled=autocast is not None)
    with ctx:
        out = forward_logprobs(model, seqs, temperature=0.7, head=head)
    (out.logprobs.sum() + 0.1 * out.entropy.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.logprobs.detach(), out.entropy.detach(), grads


def assert_same_pass(a, b, atol: float, rtol: float = 0.0) -> None:
    """Two `logprobs_and_grads` results agree within the tolerance (every parameter has a gradient)."""
    torch.testing.assert_close(a[0], b[0], atol=atol, rtol=rtol)
    torch.testing.assert_close(a[1], b[1], atol=atol, rtol=rtol)
    assert a[2].keys() == b[2].keys() and len(a[2]) > 10
    for name in a[2]:
        torch.testing.assert_close(a[2][name], b[2][name], atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_compiled_layers_match_the_model_as_loaded(kind, checkpointing, monkeypatch):
    compiled, eager = pair(kind, checkpointing)
    calls = []
    real = fused_ops._compiled
    monkeypatch.setattr(fused_ops, "_compiled", lambda *a: calls.append(a) or real(*a))
    for head in ("logits", "fused"):
        got, want = logprobs_and_grads(compiled, SEQS, head), logprobs_and_grads(eager, SEQS, head)
        # aot_eager runs the same aten ops as the eager model, in the same order (only their dispatch differs);
        # 1e-6 leaves room for a decomposition that rounds once differently, far below any real change
        assert_same_pass(got, want, atol=1e-6)
    # the compiled path ran for both layers and both heads (again in the backward's recomputation where
    # transformers checkpoints around the layer's call rather than inside its forward)
    assert len(calls) >= 2 * 2 and all(a[1] == "aot_eager" for a in calls)


def test_inductor_matches_the_model_as_loaded_and_probe_J_is_unchanged():
    """The backend model.fused_ops: compile runs (inductor's generated C++ on the CPU)."""
    compiled, eager = pair("qwen2", checkpointing=True, backend="inductor")
    got, want = logprobs_and_grads(compiled, SEQS, "fused"), logprobs_and_grads(eager, SEQS, "fused")
    # inductor fuses RMSNorm's reductions and the backward's sums over tokens in another order: float32 rounding of
    # a sum of n terms moves it by about n * 6e-8 relative; log-probs here are O(5), gradients O(1e-2..1)
    assert_same_pass(got, want, atol=1e-5, rtol=1e-4)
    compiled.eval(), eager.eval()
    assert_probe_unchanged(compiled, eager, naive_atol=1e-5)


def assert_probe_unchanged(compiled, eager, naive_atol: float) -> None:
    """The fused probe's J on the compiled model is bit for bit the model-as-loaded's, on the layer-by-layer path and
    on the model's own forward: both run phase 1 with a KV cache (so uncompiled) and the layer path reads weights only.
    The naive reference runs cache-free forwards (so compiled) and agrees to float32 rounding."""
    for forward in ("layers", "model"):
        got, blocks = fused_J(compiled, FORCING, forward)
        want, _ = fused_J(eager, FORCING, forward)
        assert torch.equal(got, want), forward
    with torch.no_grad():
        naive = ProbeRunner(ProbeSettings(batch_size=3)).naive(compiled, SEQS, blocks)
    assert torch.allclose(got, naive, atol=naive_atol), (got - naive).abs().max()
    assert got.lt(0).sum() == 10  # the 10 valid blocks were scored


def test_probe_J_unchanged_and_cache_calls_run_as_loaded():
    compiled, eager = pair("llama")
    compiled.eval(), eager.eval()
    assert_probe_unchanged(compiled, eager, naive_atol=1e-6)
    prompt = torch.tensor([[5, 6, 7]])
    gen = compiled.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(gen, eager.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0))


def test_one_graph_for_every_layer_and_length():
    """Variable sequence lengths and batch sizes (>= 2: dynamo specialises size 1) reuse the first call's graph, and
    the layers share it: any recompilation raises here."""
    compiled, _ = pair("qwen2")
    other = pack([[1, 2], [3, 4, 5, 6, 7, 8, 9, 10]], [[11] * 40, [12, 13]], 0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seqs in (SEQS, other, SEQS.select([0, 2])):
            forward_logprobs(compiled, seqs).logprobs.sum().backward()


def test_deep_copy_rebinds_and_apply_twice_is_refused():
    compiled, _ = pair("qwen2")
    twin = copy.deepcopy(compiled)
    assert all(la.forward.__self__ is la for la in twin.model.layers)
    with pytest.raises(ValueError, match="applied twice"):
        apply_fused_ops(compiled, "compile")
    assert apply_fused_ops(twin, "none") is twin


def test_a_model_without_decoder_layers_is_a_config_error():
    from transformers import AutoConfig, AutoModelForCausalLM

    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2, vocab_size=97))
    with pytest.raises(ConfigError, match="'model.fused_ops' = 'compile' needs a decoder .* model.fused_ops: none"):
        apply_fused_ops(gpt2, "compile")


@pytest.mark.parametrize(
    "mode, on_gpu, kw, needles",
    [
        ("fast", False, {}, ["'model.fused_ops' = 'fast': choose one of none, compile, liger"]),
        (
            "compile",
            False,
            {"cxx": "no-such-c++-compiler"},
            ["'model.fused_ops' = 'compile' on the CPU needs a C++ compiler", "or set model.fused_ops: none"],
        ),
        ("liger", False, {}, ["'model.fused_ops' = 'liger' needs a CUDA GPU", "set model.fused_ops: compile or none"]),
        (
            "compile",
            True,
            {"strategy": "zero3"},
            ["is not supported under dist.strategy zero3", "or dist.strategy zero2"],
        ),
        ("liger", True, {"model_type": "gpt2"}, ["covers model_type llama, mistral, qwen2, qwen3, not 'gpt2'"]),
    ],
)
def test_start_up_checks_name_the_field_and_the_fix(monkeypatch, mode, on_gpu, kw, needles):
    monkeypatch.setattr(fused_ops, "installed", lambda package: True)  # triton and liger "installed"
    with pytest.raises(ConfigError) as e:
        check_fused_ops(mode, on_gpu, **kw)
    assert all(n in str(e.value) for n in needles), str(e.value)


def test_start_up_checks_of_missing_packages(monkeypatch):
    monkeypatch.setattr(fused_ops, "installed", lambda package: False)
    with pytest.raises(ConfigError, match=f"liger-kernel is not installed: pip install --no-deps {LIGER_PIN}"):
        check_fused_ops("liger", True, "qwen2")
    with pytest.raises(ConfigError, match="'compile' needs Triton on the GPU"):
        check_fused_ops("compile", True)
    check_fused_ops("none", True)
    check_fused_ops("compile", False, cxx=sys.executable)  # any program that exists passes


def test_the_trainer_runs_compiled_and_refuses_liger_on_the_cpu(tmp_path, tiny_model_dir, monkeypatch):
    """Two RePro steps with model.fused_ops: compile (aot_eager) train exactly as with none; liger on the CPU stops
    at start-up, before a model loads."""
    from repro_train.tasks.arithmetic import generate, write_jsonl
    from tests.helpers.trainer_utils import last_checkpoint, make_recipe, metrics, policy_weights, run_inprocess

    data = tmp_path / "toy.jsonl"
    write_jsonl(generate(4, seed=3, with_traces=False), str(data))
    monkeypatch.setattr(loading, "apply_fused_ops", functools.partial(apply_fused_ops, backend="aot_eager"))
    calls = []
    real = fused_ops._cache_free_compiled
    monkeypatch.setattr(fused_ops, "_cache_free_compiled", lambda *a, **k: calls.append(1) or real(*a, **k))
    runs = {}
    for mode in ("none", "compile"):
        recipe = make_recipe(
            tmp_path / mode,
            tiny_model_dir,
            str(data),
            model={"fused_ops": mode},
            train={"steps": 2},
            repro={"enabled": True, "probe_prefix": "\n\nFinal answer: "},
            algo={"kl_coef": 0.05},
        )
        runs[mode] = run_inprocess(recipe)
        assert bool(calls) == (mode == "compile")
    a, b = metrics(runs["none"]), metrics(runs["compile"])
    for key in ("train/pg_loss", "reward/mean", "repro/J_b", "policy/kl_ref"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], abs=1e-6), key
    wa, wb = (policy_weights(last_checkpoint(r)) for r in runs.values())
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    recipe = make_recipe(tmp_path / "liger", tiny_model_dir, str(data), model={"fused_ops": "liger"})
    with pytest.raises(ConfigError, match="'model.fused_ops' = 'liger' needs a CUDA GPU"):
        run_inprocess(recipe)


# ---------------------------------------------------------------------------------------------
# GPU: inductor's Triton kernels, and Liger (pip install --no-deps liger-kernel==0.8.5)
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_compile_on_gpu_matches_in_float32_and_bf16_autocast(kind):
    compiled, eager = pair(kind, checkpointing=True, backend="inductor", device="cuda")
    seqs = SEQS.to("cuda")
    # float32: Triton's reductions reorder sums as on the CPU (see the inductor test above); TF32 is off by default
    assert_same_pass(logprobs_and_grads(compiled, seqs, "fused"), logprobs_and_grads(eager, seqs, "fused"), 1e-5, 1e-4)
    got = logprobs_and_grads(compiled, seqs, "fused", torch.bfloat16)
    want = logprobs_and_grads(eager, seqs, "fused", torch.bfloat16)
    # bf16 autocast: the compiled SiLU gate and rotary keep float32 intermediates in registers where eager rounds
    # each op's output to bf16 (one bf16 step, 2^-8 relative, per op, through 2 layers); log-probs are O(5)
    torch.testing.assert_close(got[0], want[0], atol=5e-2, rtol=0)
    assert all(torch.isfinite(g).all() for g in got[2].values())


@pytest.mark.gpu
@cuda
def test_compile_on_gpu_keeps_probe_J_exact():
    compiled, eager = pair("qwen2", backend="inductor", device="cuda")
    compiled.eval(), eager.eval()
    for forward in ("layers", "model"):
        got, _ = fused_J(compiled, FORCING, forward, device="cuda")
        want, _ = fused_J(eager, FORCING, forward, device="cuda")
        assert torch.equal(got, want), forward


@pytest.fixture
def restore_modeling(monkeypatch):
    """Liger replaces classes and the rotary function in transformers' modeling modules for the whole process: put
    them back after the test."""
    import importlib

    for kind, prefix in (("qwen2", "Qwen2"), ("llama", "Llama")):
        mod = importlib.import_module(f"transformers.models.{kind}.modeling_{kind}")
        for name in ("apply_rotary_pos_emb", f"{prefix}RMSNorm", f"{prefix}MLP"):
            monkeypatch.setattr(mod, name, getattr(mod, name))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_liger_on_gpu_matches_and_keeps_fused_equal_naive(kind, restore_modeling):
    pytest.importorskip("liger_kernel", reason=f"pip install --no-deps {LIGER_PIN}")
    eager = build(kind).cuda().train()
    seqs = SEQS.to("cuda")
    want = logprobs_and_grads(eager, seqs, "fused")  # before the patch: Liger's rotary replaces a module function
    liger = apply_fused_ops(eager, "liger").train()
    layer = liger.model.layers[0]
    assert all("forward" in vars(m) for m in (layer.mlp, layer.input_layernorm, liger.model.norm))  # patched
    # float32 Triton kernels: RMSNorm's and the rotary's sums in another order (as inductor's, above)
    assert_same_pass(logprobs_and_grads(liger, seqs, "fused"), want, 1e-5, 1e-4)
    liger.eval()
    got, blocks = fused_J(liger, FORCING, "layers", device="cuda")
    with torch.no_grad():
        naive = ProbeRunner(ProbeSettings(batch_size=3)).naive(liger, seqs, blocks)
    assert torch.allclose(got, naive, atol=1e-5), (got - naive).abs().max()
