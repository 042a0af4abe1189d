"""The layer-by-layer probe forward against the model's own forward and the naive reference, for
every architecture it covers (random tiny configs with GQA, biases and Qwen3's head norms)."""

import pytest
import torch

from repro_train.models.forward import pack
from repro_train.repro.probe import ProbeRunner, ProbeSettings
from repro_train.repro.probe import layers as probe_layers
from tests.helpers.probe_models import ARCHS, FORCING, PROMPTS, RESPONSES, build, fused_J


@pytest.mark.parametrize("kind", sorted(ARCHS))
@pytest.mark.parametrize("forcing", [FORCING, []])
def test_layers_match_model_forward_and_naive(kind, forcing, monkeypatch):
    model = build(kind)
    assert probe_layers.ModelFacts().unsupported(model) is None
    calls = []
    real = probe_layers.forward
    monkeypatch.setattr(probe_layers, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    layers, blocks = fused_J(model, forcing, "layers")
    own, _ = fused_J(model, forcing, "model")
    assert calls == [1]  # the layer path ran for "layers", and only there
    with torch.no_grad():
        naive = ProbeRunner(ProbeSettings(batch_size=3)).naive(model, pack(PROMPTS, RESPONSES, 0), blocks)
    assert torch.allclose(layers, own, atol=1e-5), (layers - own).abs().max()
    assert torch.allclose(layers, naive, atol=1e-5), (layers - naive).abs().max()
    assert layers[1, 2:].eq(0).all() and layers.lt(0).sum() == 10  # 10 valid blocks, each J < 0


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_layers_match_model_forward_in_low_precision(kind):
    """bf16 weights, and float32 weights under bf16 autocast (accelerate's mixed precision): the
    two forwards differ only by rounding order (fused residual adds, one rounding in the rotary)."""
    for model, ac in ((build(kind, torch.bfloat16), None), (build(kind), torch.bfloat16)):
        layers, _ = fused_J(model, FORCING, "layers", ac)
        own, _ = fused_J(model, FORCING, "model", ac)
        ref, _ = fused_J(build(kind), FORCING, "model")  # float32
        assert (layers - ref).abs().max() < 3e-2 and (own - ref).abs().max() < 3e-2
        assert (layers - own).abs().max() < 2e-2


def test_unsupported_models_say_why_and_fall_back(monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM

    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2, vocab_size=97))
    assert "model_type 'gpt2'" in probe_layers.ModelFacts().unsupported(gpt2)
    windowed = build("mistral")
    windowed.config.sliding_window = 8
    assert "sliding-window" in probe_layers.ModelFacts().unsupported(windowed)
    sharded = build("qwen2")
    sharded.model.layers[0].mlp.up_proj.weight.ds_id = 3  # what ZeRO-3 puts on a partitioned parameter
    assert "sharded" in probe_layers.ModelFacts().unsupported(sharded)
    # a sharded model takes the model's own forward and still gets J right
    monkeypatch.setattr(probe_layers, "forward", None)  # would raise if called
    layers, blocks = fused_J(sharded, FORCING, "layers")
    own, _ = fused_J(build("qwen2"), FORCING, "model")
    assert torch.allclose(layers, own, atol=1e-6)


def test_bad_forward_name():
    with pytest.raises(ValueError, match="layers"):
        ProbeRunner(ProbeSettings(forward="fast")).run(
            build("qwen2"), pack(PROMPTS, RESPONSES, 0), [None] * 3, [], top_k=2
        )


def test_sharding_check_is_remembered_until_the_parameters_change():
    model = build("qwen2")
    facts = probe_layers.ModelFacts()
    assert facts.unsupported(model) is None
    model.model.layers[0].mlp.up_proj.weight.ds_id = 3  # the walk is not taken again for this
    assert facts.unsupported(model) is None
    next(model.parameters()).data = torch.empty(0)  # what ZeRO-3's partitioning does to every parameter
    assert "sharded" in facts.unsupported(model)


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])  # with and without projection biases
def testfused_qkv_gathers_each_layers_projections(kind, monkeypatch):
    model = build(kind)
    layers = model.model.layers
    x = torch.zeros(1, 1, 64)
    for per_layer in (False, True):  # all layers in one copy, or one layer at a time into one buffer
        with torch.no_grad():
            get, rows = probe_layers.fused_qkv(layers, x, per_layer)
            got = [tuple(t.clone() if t is not None else None for t in get(i)) for i in range(len(layers))]
        for (W, b), la in zip(got, layers):
            a = la.self_attn
            assert torch.equal(W, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            if kind == "qwen2":
                assert torch.equal(b, torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            assert (b is None) == (kind == "mistral")
        assert rows == [a.q_proj.out_features, a.k_proj.out_features, a.v_proj.out_features]
    fused, _ = fused_J(model, FORCING, "layers")
    monkeypatch.setattr(probe_layers, "fused_qkv", lambda *a: None)
    apart, _ = fused_J(model, FORCING, "layers")
    assert torch.allclose(fused, apart, atol=1e-6) and not fused.eq(0).all()


class _Scaled(torch.nn.Linear):  # a Linear subclass that computes more than x @ W.t() + b (as LoRA does)
    def forward(self, x):
        return 2 * super().forward(x)


def _swap(model, layer: int, path: str) -> None:
    parent, name = model.model.layers[layer], path.split(".")
    for part in name[:-1]:
        parent = getattr(parent, part)
    old = getattr(parent, name[-1])
    new = _Scaled(old.in_features, old.out_features, bias=old.bias is not None)
    new.load_state_dict(old.state_dict())
    setattr(parent, name[-1], new)


@pytest.mark.parametrize("path", ["self_attn.k_proj", "self_attn.o_proj", "mlp.down_proj"])
def test_linear_subclasses_run_their_own_module(path):
    """The layer path puts only plain nn.Linear weights into GEMMs of its own (the fused q/k/v,
    the in-place residual projections); a subclass runs, and J follows the model's own forward."""
    model = build("qwen2")
    _swap(model, 1, path)
    if path.endswith("k_proj"):
        assert probe_layers.fused_qkv(model.model.layers, torch.zeros(1, 1, 64)) is None
    layers, _ = fused_J(model, FORCING, "layers")
    own, _ = fused_J(model, FORCING, "model")
    plain, _ = fused_J(build("qwen2"), FORCING, "layers")
    assert torch.allclose(layers, own, atol=1e-5), (layers - own).abs().max()
    assert (layers - plain).abs().max() > 1e-3  # the subclass changed J, so it did run


def testfused_qkv_needs_the_activations_dtype():
    assert probe_layers.fused_qkv(build("qwen2", torch.bfloat16).model.layers, torch.zeros(1, 1, 64)) is None
