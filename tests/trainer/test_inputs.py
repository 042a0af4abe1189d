"""Broken inputs stop a run before training (repro_train/trainer/inputs.py), naming the file and the fix: weights with
NaN/inf, a tokenizer (and model config) without an EOS token, a model folder missing config.json or a weights shard;
prompts that do not fit the model's positions with rollout.max_new_tokens are dropped and counted."""

import json
import os
import shutil

import pytest

from repro_train.core.typed_config import ConfigError
from tests.helpers.trainer_utils import make_recipe, run_inprocess


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


def copy_model(tiny_model_dir, tmp_path) -> str:
    model = str(tmp_path / "model")
    shutil.copytree(tiny_model_dir, model)
    return model


def edit_json(path: str, fn) -> None:
    with open(path) as fh:
        data = json.load(fh)
    fn(data)
    with open(path, "w") as fh:
        json.dump(data, fh)


def refused(tmp_path, model, data_path, match: str) -> None:
    recipe = make_recipe(tmp_path, model, data_path, train={"steps": 2})
    with pytest.raises(ConfigError, match=match):
        run_inprocess(recipe)
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")  # stopped before training


def test_non_finite_weights(tmp_path, tiny_model_dir, data_path):
    from safetensors.torch import load_file, save_file

    model = copy_model(tiny_model_dir, tmp_path)
    weights = load_file(f"{model}/model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][3, :2] = float("nan")
    save_file(weights, f"{model}/model.safetensors", metadata={"format": "pt"})
    refused(
        tmp_path,
        model,
        data_path,
        f"not finite: model.layers.1.mlp.up_proj.weight has 2 NaN/inf value\\(s\\), in {model}/model.safetensors",
    )


def test_no_eos_token(tmp_path, tiny_model_dir, data_path):
    model = copy_model(tiny_model_dir, tmp_path)
    edit_json(f"{model}/tokenizer_config.json", lambda d: d.pop("eos_token"))
    for name in ("config.json", "generation_config.json"):  # generation would stop at these ids otherwise
        edit_json(f"{model}/{name}", lambda d: d.pop("eos_token_id"))
    refused(tmp_path, model, data_path, f"the tokenizer in {model} has no EOS token.*{model}/tokenizer_config.json")


def test_missing_config(tmp_path, tiny_model_dir, data_path):
    model = copy_model(tiny_model_dir, tmp_path)
    os.remove(f"{model}/config.json")
    refused(tmp_path, model, data_path, f"'model.path' = {model} is missing config.json; re-create the folder")


def test_missing_weights_shard(tmp_path, tiny_model_dir, data_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = str(tmp_path / "sharded")
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(model, max_shard_size="100KB")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(model)
    shards = sorted(n for n in os.listdir(model) if n.endswith(".safetensors"))
    assert len(shards) > 1
    os.remove(f"{model}/{shards[-1]}")
    refused(tmp_path, model, data_path, f"is missing {shards[-1]}")


def test_prompts_beyond_the_models_positions_are_dropped_and_counted(tmp_path, tiny_model_dir, capsys):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    model = copy_model(tiny_model_dir, tmp_path)
    edit_json(f"{model}/config.json", lambda d: d.update(max_position_embeddings=100))
    rows = generate(6, seed=3, with_traces=False)
    rows[2]["question"] += " Show every step of the work, and check it twice before you answer."
    data = str(tmp_path / "d.jsonl")
    write_jsonl(rows, data)
    recipe = make_recipe(tmp_path, model, data, train={"steps": 1})  # 12 new tokens: prompts may have 88
    run = run_inprocess(recipe)
    out = capsys.readouterr().out
    assert f"data: 5 of 6 rows of {data} used; dropped 1 row(s) over a length limit: too_long_for_model 1" in out
    assert f"first too_long_for_model: {data} line 3: the prompt has" in out
    assert "with rollout.max_new_tokens = 12 that is over the model's 100 positions" in out
    first = json.loads(open(os.path.join(run, "metrics.jsonl")).readline())
    assert first["data/dropped/too_long_for_model"] == 1 and first["data/rows_used"] == 5
    with pytest.raises(ConfigError, match="'rollout.max_new_tokens' = 100 leaves no room for a prompt"):
        run_inprocess(recipe, "rollout.max_new_tokens=100", "train.overwrite=true")
