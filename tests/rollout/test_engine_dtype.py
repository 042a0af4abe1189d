"""The vllm engine's dtype (issue 25): rollout.vllm.dtype 'auto' is the precision the trainer's forward
runs in (the autocast dtype under dist.mixed_precision, else model.dtype), shown in the start-up log;
checked on a CPU against a stand-in `vllm` package that records the LLM's arguments."""

import sys
import types
from types import SimpleNamespace

import pytest

from repro_train.config import load
from repro_train.trainer.runtime import build_rollout_engine, engine_dtype


@pytest.mark.parametrize(
    "overrides, want",
    [
        ([], "float32"),  # model.dtype float32, no autocast: the forward runs in float32
        (["dist.mixed_precision=bf16"], "bfloat16"),  # the math recipes: float32 master weights, bf16 forward
        (["dist.mixed_precision=fp16"], "float16"),
        (["model.dtype=bfloat16"], "bfloat16"),
        (["dist.mixed_precision=bf16", "rollout.vllm.dtype=float32"], "float32"),  # an explicit dtype wins
        (["model.dtype=bfloat16", "rollout.vllm.dtype=float16"], "float16"),
    ],
)
def test_engine_dtype_follows_the_forward_precision(overrides, want):
    assert engine_dtype(load(None, overrides)) == want


@pytest.fixture
def fake_vllm(monkeypatch):
    """A `vllm` module whose LLM records its keyword arguments."""
    mod, built = types.ModuleType("vllm"), []
    mod.LLM = lambda **kw: built.append(kw) or SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    env = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29555")
    for k, v in {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}.items():
        monkeypatch.setenv(k, v)
    return built


@pytest.mark.parametrize("main", [True, False])
def test_the_engine_gets_it_and_the_start_up_log_shows_it(fake_vllm, capsys, main):
    cfg = load(None, ["rollout.engine=vllm", "dist.mixed_precision=bf16"])
    acc = SimpleNamespace(is_main_process=main, process_index=0, num_processes=1)
    build_rollout_engine(cfg, acc, None, [2], 0, 16)
    assert fake_vllm[0]["dtype"] == "bfloat16"
    out = capsys.readouterr().out
    if main:
        assert "rollout engine vllm samples in bfloat16 (rollout.vllm.dtype auto" in out
        assert "trainer weights float32, dist.mixed_precision bf16" in out
    else:
        assert out == ""  # one line per run, from the main process
