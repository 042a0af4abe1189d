"""The rollout engine seam: conformance of the hf engine, the vLLM engine's start-up checks and
weight-name mapping (CPU), the loop's log-prob gap and IS correction with an engine that reports
log-probs, and on a GPU with vLLM installed the engine against the trainer (bench/check_vllm.py)."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from repro_train.config import RolloutConfig, VLLMConfig
from repro_train.core.typed_config import ConfigError
from repro_train.rollout.base import Rollouts
from repro_train.rollout.hf import HFEngine
from repro_train.rollout.vllm import check_vllm, hf_name
from tests.helpers.trainer_utils import REPO, make_recipe, metrics, run_inprocess


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


# ---------------------------------------------------------------------------------------------
# Conformance: what every engine must do (run on the hf engine here, on vLLM by check_vllm.py)
# ---------------------------------------------------------------------------------------------


def check_conformance(engine, prompts, cfg, eos: set[int], vocab: int, params) -> Rollouts:
    G = 3
    seeds = [101 + i for i in range(len(prompts))]
    engine.push_weights(0, params)
    out = engine.sample(prompts, G, seeds)
    assert len(out.token_ids) == len(prompts) and all(len(g) == G for g in out.token_ids)
    for g in out.token_ids:
        for r in g:
            assert 1 <= len(r) <= cfg.max_new_tokens and all(0 <= t < vocab for t in r)
            assert not any(t in eos for t in r[:-1])  # EOS only as the last token
            if len(r) < cfg.max_new_tokens:
                assert r[-1] in eos  # shorter than the limit means it ended with EOS
            if r[-1] in eos:
                assert len(r) > cfg.min_new_tokens  # EOS is masked until min_new_tokens tokens
    if out.logprobs is not None:
        for g, lg in zip(out.token_ids, out.logprobs):
            assert [len(r) for r in g] == [len(x) for x in lg]
            assert all(v <= 0 and v == v for x in lg for v in x)
    # a prompt's group depends on its seed only: not on its batch neighbours or their order
    swapped = engine.sample(prompts[::-1], G, seeds[::-1])
    assert swapped.token_ids == out.token_ids[::-1]
    alone = engine.sample(prompts[:1], G, seeds[:1])
    assert alone.token_ids == out.token_ids[:1]
    engine.release()
    engine.push_weights(0, params)  # the same version again: nothing changes
    assert engine.sample(prompts, G, seeds).token_ids == out.token_ids
    return out


def test_hf_engine_conforms(tiny):
    import contextlib

    model, tok = tiny
    cfg = RolloutConfig(max_new_tokens=8, min_new_tokens=2, temperature=1.0)
    engine = HFEngine(lambda: contextlib.nullcontext(model), cfg, [tok.eos_token_id], tok.pad_token_id, "cpu")
    prompts = [tok(t).input_ids for t in ("Q: 3+4?", "Q: 12+30+1?", "Q: 5+5+5+5?")]
    out = check_conformance(
        engine, prompts, cfg, {tok.eos_token_id}, model.config.vocab_size, lambda: model.named_parameters()
    )
    assert out.logprobs is None  # generate() does not report them
    engine.close()


# ---------------------------------------------------------------------------------------------
# vLLM: start-up errors (before any model loads), import without vLLM, names
# ---------------------------------------------------------------------------------------------


def vllm_cfg(**kw) -> RolloutConfig:
    return RolloutConfig(engine="vllm", vllm=VLLMConfig(**kw))


@pytest.mark.parametrize(
    "cfg, world, cuda, version, needle",
    [
        (vllm_cfg(), 1, True, "0.25.1", None),
        (vllm_cfg(tensor_parallel_size=2), 4, True, "0.25.1", None),
        (
            vllm_cfg(tensor_parallel_size=2),
            3,
            True,
            "0.25.1",
            "'rollout.vllm.tensor_parallel_size' = 2 does not divide",
        ),
        (vllm_cfg(), 1, False, "0.25.1", "needs a CUDA GPU"),
        (vllm_cfg(), 1, True, "0.24.2", "vLLM 0.24.2 is installed"),
        (vllm_cfg(), 1, True, "0.27.0", "supports 0.25.0 <= version < 0.26.0"),
        (vllm_cfg(gpu_memory_utilization=0.95), 1, True, "0.25.1", "leaves the trainer less than 10%"),
        (vllm_cfg(gpu_memory_utilization=0.95, sleep_level=2), 1, True, "0.25.1", None),
        (vllm_cfg(gpu_memory_utilization=1.0, sleep_level=2), 1, True, "0.25.1", "must be in (0, 1)"),
        (RolloutConfig(engine="hf"), 3, False, "0.1", None),  # the hf engine is never checked
    ],
)
def test_vllm_startup_checks(cfg, world, cuda, version, needle):
    if needle is None:
        check_vllm(cfg, world, cuda, version)
    else:
        with pytest.raises(ConfigError, match=None) as e:
            check_vllm(cfg, world, cuda, version)
        assert needle in str(e.value)


def test_vllm_missing_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else object())
    with pytest.raises(ConfigError) as e:
        check_vllm(vllm_cfg(), 1, True)
    assert "vLLM is not installed" in str(e.value) and "pip install 'repro-train[vllm]'" in str(e.value)


def test_engine_vllm_fails_before_any_model_loads(tmp_path, data_path):
    """A recipe with engine: vllm on this CPU machine stops at start-up: the model path does not
    even exist, so reaching a model load would raise a different error."""
    recipe = make_recipe(tmp_path, str(tmp_path / "no-such-model"), data_path, rollout={"engine": "vllm"})
    with pytest.raises(ConfigError) as e:
        run_inprocess(recipe)
    msg = str(e.value)
    assert "vLLM is not installed" in msg or "needs a CUDA GPU" in msg  # the latter where vLLM is installed


def test_vllm_module_imports_without_vllm():
    code = (
        "import sys; sys.modules['vllm'] = None; import repro_train.rollout.vllm as v; "
        "import repro_train.trainer.runtime; print(v.VLLMEngine.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "vllm"


def _hf_keys(policy) -> set[str]:
    return {n for n, _ in policy.named_parameters()}


def _mapped(module) -> dict[str, str | None]:
    return {n: hf_name(n) for n, _ in module.named_parameters()}


def test_hf_names_under_each_wrapper(tiny_model_dir):
    """The trainer's parameter names map to the policy's Hugging Face names under every wrapper;
    the critic maps to nothing."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    from repro_train.trainer.models import ActorCritic

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    critic = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=1)
    ac = ActorCritic(policy, critic)
    want = _hf_keys(policy)
    assert "lm_head.weight" not in want or not policy.config.tie_word_embeddings

    def check(module, prefix_seen: str):
        m = _mapped(module)
        assert any(prefix_seen in n for n in m), prefix_seen  # the wrapper really renamed things
        assert {v for v in m.values() if v is not None} == want
        assert all(v is None for n, v in m.items() if ".critic." in f".{n}" or n.startswith("critic"))

    check(ac, "policy.")
    check(torch.compile(ac), "_orig_mod.")
    layers = ac.policy.model.layers
    for i in range(len(layers)):  # activation checkpointing as accelerate/FSDP apply it
        layers[i] = checkpoint_wrapper(layers[i])
    check(ac, "_checkpoint_wrapped_module.")
    # DDP (and a DeepSpeed engine) put the model under `module.`
    store = torch.distributed.FileStore(os.path.join(os.path.dirname(tiny_model_dir), "ddp-store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        check(torch.nn.parallel.DistributedDataParallel(ac), "module.")
    finally:
        torch.distributed.destroy_process_group()
    assert hf_name("module._fsdp_wrapped_module.policy.model.norm.weight") == "model.norm.weight"


# ---------------------------------------------------------------------------------------------
# The loop with an engine that reports log-probs: gap metrics, IS weights, pushed versions
# ---------------------------------------------------------------------------------------------


class ShiftedEngine:
    """The hf engine plus "engine log-probs" = the model's own tempered log-probs + `shift`: a
    sampler whose log-probs are off by a known amount. Records every push."""

    name = "shifted"

    def __init__(self, inner: HFEngine, shift: float, temperature: float):
        self.inner, self.shift, self.temperature = inner, shift, temperature
        self.pushes: list[tuple[int, set[str]]] = []

    def push_weights(self, version, params):
        if not self.pushes or self.pushes[-1][0] != version:
            self.pushes.append((version, {n for n, _ in params()}))

    def sample(self, prompts, group_size, seeds):
        from repro_train.models.forward import forward_logprobs, pack

        out = self.inner.sample(prompts, group_size, seeds)
        rows = [r for g in out.token_ids for r in g]
        with self.inner.model_ctx() as model, torch.no_grad():
            seqs = pack([p for p in prompts for _ in range(group_size)], rows, self.inner.pad_id, "cpu")
            lp = forward_logprobs(model, seqs, self.temperature, with_entropy=False).logprobs
        flat = [[float(v) + self.shift for v in lp[i, : len(r)]] for i, r in enumerate(rows)]
        out.logprobs = [flat[i * group_size : (i + 1) * group_size] for i in range(len(prompts))]
        return out

    def release(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("mode, weight", [("token_tis", float(torch.exp(torch.tensor(-0.25)))), ("none", 1.0)])
def test_loop_logs_the_logprob_gap_and_weights_tokens(tmp_path, tiny_model_dir, data_path, monkeypatch, mode, weight):
    """Engine log-probs 0.25 above the trainer's: rollout/logprob_gap/mean and max are 0.25, and
    token_tis weighs every token exp(-0.25) = 0.7788 (below the cap 2, so no clipping)."""
    from repro_train.trainer import runtime

    real = runtime.build_rollout_engine
    engines = []

    def build(cfg, *a, **k):
        engines.append(ShiftedEngine(real(cfg, *a, **k), 0.25, cfg.rollout.temperature))
        return engines[-1]

    monkeypatch.setattr(runtime, "build_rollout_engine", build)
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path, rollout={"is_correction": mode})
    rows = metrics(run_inprocess(recipe))
    assert len(rows) == 3
    for r in rows:
        assert r["rollout/logprob_gap/mean"] == pytest.approx(0.25, abs=1e-5)
        assert r["rollout/logprob_gap/max"] == pytest.approx(0.25, abs=1e-5)
        assert r["rollout/is_weight_mean"] == pytest.approx(weight, abs=1e-5)
    # one push per optimizer step, before the step's rollouts, with every policy weight's HF name
    from transformers import AutoModelForCausalLM

    want = _hf_keys(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert [v for v, _ in engines[0].pushes] == [0, 1, 2]
    assert all(names == want for _, names in engines[0].pushes)


def test_runtime_pushes_the_trained_weights(tmp_path, tiny_model_dir, data_path):
    """Runtime.policy_weights yields the policy's current tensors (not a copy from disk)."""
    from repro_train.config import load
    from repro_train.trainer.runtime import build_runtime
    from tests.helpers.trainer_utils import reset_accelerate

    reset_accelerate()
    rt = build_runtime(load(make_recipe(tmp_path, tiny_model_dir, data_path)))
    try:
        policy = rt.acc.unwrap_model(rt.model).policy
        with torch.no_grad():
            policy.model.norm.weight.add_(1.0)
        pushed = dict(rt.policy_weights())
        assert set(pushed) == _hf_keys(policy)
        for n, p in policy.named_parameters():
            assert torch.equal(pushed[n], p)
    finally:
        rt.close()
        reset_accelerate()


# ---------------------------------------------------------------------------------------------
# GPU: the vLLM engine against the trainer (needs vLLM; bench/vllm_device.sh checks)
# ---------------------------------------------------------------------------------------------

needs_vllm = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None, reason="needs a CUDA GPU and vLLM"
)


@pytest.mark.gpu
@needs_vllm
@pytest.mark.parametrize("level", [0, 2])
def test_vllm_engine_matches_the_trainer_and_follows_pushes(tmp_path, level):
    """bench/check_vllm.py in a fresh process (one engine per process): the gap is small and a push
    after sleep level `level` really replaces the weights."""
    import json

    out = tmp_path / "check.json"
    p = subprocess.run(
        [sys.executable, f"{REPO}/bench/check_vllm.py", "--sleep-level", str(level), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["a_gap_mean"] < 1e-3 and res["b_gap_trained_mean"] < 1e-3
    assert res["b_gap_old_mean"] > 10 * res["b_gap_trained_mean"]
