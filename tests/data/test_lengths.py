"""Prompts over a length limit (repro_train/data/datasets.py): over data.max_prompt_tokens, or over the room the
model's positions leave after rollout.max_new_tokens, a prompt is dropped and counted with its reason and first
example, whatever data.on_bad_row says; when none is left the error says why."""

import json

import pytest

from repro_train.core.typed_config import ConfigError
from repro_train.data.datasets import load_prompts
from tests.data.test_validate import data_cfg

QUESTIONS = [
    "What is 1 + 1?",
    "What is 2 + 2? " + "Think about it very carefully, step by step. " * 4,
    "What is 3 + 3?",
]


@pytest.fixture()
def prompts_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": "2"}) + "\n" for q in QUESTIONS))
    return str(path)


def lengths(tok, cfg) -> list[int]:
    from repro_train.data.prompts import encode_prompt

    return [len(encode_prompt(tok, {"question": q, "prompt": None}, cfg.data.system_prompt)) for q in QUESTIONS]


def test_over_max_prompt_tokens_is_dropped_with_its_reason(tmp_path, tiny, tiny_model_dir, prompts_file):
    _, tok = tiny
    cfg = data_cfg(prompts_file, tmp_path, tiny_model_dir)
    short, long, _ = lengths(tok, cfg)
    cfg = data_cfg(prompts_file, tmp_path, tiny_model_dir, max_prompt_tokens=long - 1)
    ps = load_prompts(cfg.data, tok)
    assert ps.where == [f"{prompts_file} line 1", f"{prompts_file} line 3"] and ps.report.drops == {"too_long": 1}
    summary = ps.report.summary()
    assert "data: 2 of 3 rows" in summary and "dropped 1 row(s) over a length limit: too_long 1" in summary
    assert (
        f"first too_long: {prompts_file} line 2: the prompt has {long} tokens, over data.max_prompt_tokens" in summary
    )
    assert ps.report.metrics()["data/dropped/too_long"] == 1.0
    assert ps.label(ps.prompts[1]) == f"{prompts_file} line 3 (prompt 1)"


def test_over_the_models_room_is_dropped_and_none_left_is_an_error(tmp_path, tiny, tiny_model_dir, prompts_file):
    _, tok = tiny
    cfg = data_cfg(prompts_file, tmp_path, tiny_model_dir)
    short, long, _ = lengths(tok, cfg)
    ps = load_prompts(cfg.data, tok, room=long - 1, max_new_tokens=12)
    assert len(ps) == 2 and ps.report.drops == {"too_long_for_model": 1}
    assert f"over the model's {long - 1 + 12} positions" in ps.report.summary()
    with pytest.raises(ConfigError, match="no usable row .* too_long_for_model 3"):
        load_prompts(cfg.data, tok, room=short - 1, max_new_tokens=12)
