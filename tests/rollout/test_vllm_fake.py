"""The vLLM engine's own logic on a CPU, against a stand-in `vllm` package that records what the
engine asks of it: the LLM's construction, the sampling parameters, the order of sleep, wake and
weight loads, and how outputs become token ids and log-probs (trimmed at the first EOS)."""

import sys
import types
from dataclasses import dataclass, field

import pytest

from repro_train.config import RolloutConfig, VLLMConfig


@dataclass
class FakeCompletion:
    index: int
    token_ids: list[int]
    logprobs: list[dict]


@dataclass
class FakeOutput:
    outputs: list[FakeCompletion]


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeLLM:
    """Answers prompt p, child i with tokens [10 + i, 11 + i, EOS, 99]: vLLM stops at a stop id, but
    the engine must trim anything after it too; each token's log-prob is -0.1 * its id."""

    kwargs: dict
    calls: list = field(default_factory=list)
    model_weights: dict = field(default_factory=dict)

    def apply_model(self, fn):
        self.calls.append("load_weights")

        class Model:
            def load_weights(_, weights):
                self.model_weights.update({n: float(t) if isinstance(t, float) else t for n, t in weights})

        return [fn(Model())]

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self, tags):
        self.calls.append(f"wake:{','.join(tags)}")

    def generate(self, prompts, params, use_tqdm):
        self.calls.append("generate")
        self.params = params
        outs = []
        for _prompt, sp in zip(prompts, params):
            rows = []
            for i in range(sp.n):
                ids = [10 + i, 11 + i, 2, 99]
                rows.append(FakeCompletion(i, ids, [{t: FakeLogprob(-0.1 * t)} for t in ids]))
            outs.append(FakeOutput(rows[::-1]))  # children out of order: the engine sorts by index
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    built = []

    def LLM(**kwargs):  # noqa: N802 - vLLM's name
        built.append(FakeLLM(kwargs))
        return built[-1]

    class SamplingParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    # what a launcher sets; set here so that nothing the engine sets outlives the test
    env = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29555")
    for k, v in {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}.items():
        monkeypatch.setenv(k, v)
    return built


def engine(level: int = 0, **rollout):
    from repro_train.rollout.vllm import VLLMEngine

    cfg = RolloutConfig(engine="vllm", vllm=VLLMConfig(sleep_level=level), **rollout)
    return VLLMEngine("/models/m", cfg, [2], max_model_len=160, dtype="bfloat16", rank=0, world=1)


def test_llm_is_built_for_pushed_weights_only(fake_vllm):
    engine()
    kw = fake_vllm[0].kwargs
    assert kw["load_format"] == "dummy" and kw["skip_tokenizer_init"] is True
    assert kw["distributed_executor_backend"] == "external_launcher"
    assert kw["logprobs_mode"] == "processed_logprobs" and kw["generation_config"] == "vllm"
    assert kw["tensor_parallel_size"] == 1 and kw["data_parallel_size"] == 1 and kw["seed"] == 0
    assert kw["max_model_len"] == 160 and kw["enable_sleep_mode"] is False and kw["enforce_eager"] is False


def test_sampling_matches_the_recipe_and_outputs_are_trimmed(fake_vllm):
    eng = engine(temperature=0.7, top_p=0.9, top_k=0, min_new_tokens=3, max_new_tokens=50)
    with pytest.raises(RuntimeError, match="push_weights first"):
        eng.sample([[1, 5]], 2, [7])
    eng.push_weights(0, lambda: [("w", 1.0)])
    out = eng.sample([[1, 5], [1, 6]], 2, [7, 8])
    sp = fake_vllm[0].params
    assert [p.seed for p in sp] == [7, 8] and all(p.n == 2 for p in sp)
    p = sp[0]
    assert (p.temperature, p.top_p, p.top_k, p.min_tokens, p.max_tokens) == (0.7, 0.9, 0, 3, 50)
    assert p.stop_token_ids == [2] and p.logprobs == 0 and p.detokenize is False
    assert out.token_ids == [[[10, 11, 2], [11, 12, 2]]] * 2  # sorted by child, cut after EOS
    assert out.logprobs[0][1] == pytest.approx([-1.1, -1.2, -0.2])


def test_sleep_level_2_reloads_every_weight_and_wakes_weights_first(fake_vllm):
    eng = engine(level=2)
    llm = fake_vllm[0]
    eng.push_weights(0, lambda: [("a", 1.0), ("b", 2.0)])
    eng.push_weights(0, lambda: [("a", 9.0)])  # same version: nothing loaded
    eng.sample([[1]], 1, [0])
    eng.release()
    eng.release()  # already asleep: no second sleep
    eng.push_weights(0, lambda: [("a", 3.0), ("b", 4.0)])  # level 2 dropped them: loaded again
    eng.sample([[1]], 1, [0])
    assert llm.calls == [
        "load_weights",
        "reset_prefix_cache",
        "generate",
        "sleep2",
        "wake:weights",
        "load_weights",
        "reset_prefix_cache",
        "wake:kv_cache",
        "generate",
    ]
    assert llm.model_weights == {"a": 3.0, "b": 4.0}


def test_sleep_level_1_keeps_weights_and_wakes_both_before_sampling(fake_vllm):
    eng = engine(level=1)
    llm = fake_vllm[0]
    eng.push_weights(0, lambda: [("a", 1.0)])
    eng.release()
    eng.push_weights(0, lambda: [("a", 2.0)])  # level 1 kept version 0: nothing to load
    eng.sample([[1]], 1, [0])
    assert llm.calls == ["load_weights", "reset_prefix_cache", "sleep1", "wake:weights", "wake:kv_cache", "generate"]
    assert llm.model_weights == {"a": 1.0}


def test_each_rank_is_a_data_parallel_engine(fake_vllm):
    """Under a launcher of 4 processes with TP 1, vLLM's world is 1 x 4 (data_parallel_size 4) and
    each rank's engine is seeded with its rank: different samples on different ranks."""
    from repro_train.rollout.vllm import VLLMEngine

    cfg = RolloutConfig(engine="vllm")
    VLLMEngine("/models/m", cfg, [2], max_model_len=160, dtype="auto", rank=3, world=4)
    kw = fake_vllm[0].kwargs
    assert (kw["tensor_parallel_size"], kw["data_parallel_size"], kw["seed"]) == (1, 4, 3)


@dataclass
class FakeFlat:
    """vLLM's FlatLogprobs: each position's entries in [start, end) of flat lists."""

    start_indices: list[int]
    end_indices: list[int]
    token_ids: list[int]
    logprobs: list[float]


def test_sampled_logprobs_read_flat_and_dict_logprobs(fake_vllm):
    from repro_train.rollout.vllm import sampled_logprobs

    eng = engine()
    eng.push_weights(0, lambda: [("w", 1.0)])
    eng.sample([[1, 5]], 1, [7])
    assert fake_vllm[0].params[0].flat_logprobs is True  # asked of vLLM: no dict per token
    # position 1 holds two entries (a top-k run); the sampled token 8 is the second
    flat = FakeFlat([0, 1, 3], [1, 3, 4], [5, 9, 8, 2], [-0.5, -0.1, -0.7, -0.2])
    assert sampled_logprobs(flat, [5, 8, 2]) == [-0.5, -0.7, -0.2]
    assert sampled_logprobs([{5: FakeLogprob(-0.5)}, {8: FakeLogprob(-0.7)}], [5, 8]) == [-0.5, -0.7]


def test_kv_cache_gb_fixes_the_cache_size(fake_vllm):
    from repro_train.rollout.vllm import VLLMEngine, check_vllm

    VLLMEngine("/m", RolloutConfig(engine="vllm", vllm=VLLMConfig(kv_cache_gb=1.5)), [2], 160, "auto", 0, 1)
    assert fake_vllm[0].kwargs["kv_cache_memory_bytes"] == 3 * 2**29
    assert "kv_cache_memory_bytes" not in engine().llm.kwargs  # unset: vLLM measures it at start
    with pytest.raises(ValueError, match="'rollout.vllm.kv_cache_gb' must be > 0"):
        check_vllm(RolloutConfig(engine="vllm", vllm=VLLMConfig(kv_cache_gb=0.0)), 1, True, version="0.25.1")


def test_eval_builds_one_engine_and_pushes_each_models_weights(fake_vllm, monkeypatch, tiny_model_dir, tmp_path):
    """`repro-train eval --engine vllm`: one engine for the run (dummy weights, eager, a fixed KV cache), every
    model's weights pushed to it under their Hugging Face names, problem i sampled from seed mix_seed(seed, i), and
    the responses graded as the hf engine's are (here the fake's tokens, cut after the tiny model's EOS, id 2)."""
    import json

    from repro_train.commands.eval import main
    from repro_train.core.seeds import mix_seed
    from repro_train.eval import runner

    monkeypatch.setattr(runner, "check_vllm", lambda *a, **k: None)  # no vLLM package, no GPU here
    argv = ["--model", f"a={tiny_model_dir}", "--model", f"b={tiny_model_dir}", "--data", "toy", "--n-problems", "3"]
    argv += ["--samples", "2", "--engine", "vllm", "--vllm-eager", "--vllm-kv-gb", "0.5", "--vllm-memory", "0.2"]
    assert main([*argv, "--max-new-tokens", "40", "--out", str(tmp_path)]) == 0
    assert len(fake_vllm) == 1
    llm = fake_vllm[0]
    kw = llm.kwargs
    assert kw["load_format"] == "dummy" and kw["enforce_eager"] is True and kw["gpu_memory_utilization"] == 0.2
    assert kw["kv_cache_memory_bytes"] == 2**29 and 40 < kw["max_model_len"] <= 1024
    assert llm.calls.count("load_weights") == 2 and llm.calls.count("generate") == 2
    assert "model.embed_tokens.weight" in llm.model_weights and "lm_head.weight" in llm.model_weights
    assert [p.seed for p in llm.params] == [mix_seed(0, i) for i in range(3)] and {p.n for p in llm.params} == {2}
    assert {(p.max_tokens, p.temperature, p.top_k) for p in llm.params} == {(40, 1.0, 0)}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["a"]["n_samples"] == 6 and summary["a"]["mean_tokens"] == 3.0  # [10 + g, 11 + g, EOS]
    assert summary["b"]["settings"]["engine"] == "vllm" and summary["b"]["frac_finished"] == 1.0
