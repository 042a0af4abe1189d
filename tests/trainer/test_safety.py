"""Safety: weights load from safetensors only; remote code stays off unless the recipe turns it on;
no secret (wandb key, tokens, a reward's API key) reaches a log, a saved config or wandb's files."""

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

from repro_train.config import ModelConfig
from repro_train.core.redact import REDACTED, redact
from repro_train.models.loading import load_policy, load_reference
from repro_train.trainer.models import load_critic
from tests.helpers.trainer_utils import REPO, make_recipe, run_cli


@pytest.fixture(scope="module")
def pickle_only_model(tmp_path_factory, tiny_model_dir):
    """The tiny model saved as pytorch_model.bin (a pickle) and no safetensors file."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("pickled") / "model"
    shutil.copytree(tiny_model_dir, out)
    torch.save(load_file(out / "model.safetensors"), out / "pytorch_model.bin")
    (out / "model.safetensors").unlink()
    assert (out / "pytorch_model.bin").exists() and not (out / "model.safetensors").exists()
    return str(out)


@pytest.mark.parametrize("loader", ["policy", "critic", "reference"])
def test_pickled_weights_are_refused(pickle_only_model, tiny, loader):
    _, tok = tiny
    cfg = ModelConfig(path=pickle_only_model)
    load = {
        "policy": lambda: load_policy(cfg, tok),
        "reference": lambda: load_reference(cfg),
        "critic": lambda: load_critic(cfg, type("C", (), {"path": None})()),
    }[loader]
    with pytest.raises(OSError, match="safetensors"):
        load()


def model_loads(path: Path):
    """(file, line, call) of every `AutoModel*.from_pretrained(...)` call in the package."""
    for py in path.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id.startswith("AutoModel")
            ):
                yield f"{py.relative_to(REPO)}:{node.lineno}", node


def test_every_model_load_in_the_package_is_safetensors_only_and_remote_code_off():
    calls = list(model_loads(Path(REPO) / "repro_train"))
    assert len(calls) >= 6  # policy, critic, reference, inference (eval, inspect, demo), prepare-model
    for where, call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        if "gguf_file" in kw:  # prepare-model's GGUF source: no pickle in that format, and its sha256 is checked
            assert where.startswith("repro_train/models/zoo.py"), where
            continue
        assert isinstance(kw.get("use_safetensors"), ast.Constant) and kw["use_safetensors"].value is True, where
        trust = kw.get("trust_remote_code")  # absent (transformers' default: off) or the recipe's value
        assert trust is None or ast.unparse(trust) == "cfg_model.trust_remote_code", where
    assert ModelConfig().trust_remote_code is False


CUSTOM_CODE = """
import pathlib
pathlib.Path(__file__).with_name("REMOTE_CODE_RAN").write_text("ran")
from transformers import LlamaConfig, LlamaForCausalLM
class MyConfig(LlamaConfig):
    model_type = "llama"
class MyModel(LlamaForCausalLM):
    config_class = MyConfig
"""


def test_remote_code_runs_only_when_the_recipe_allows_it(tmp_path, tiny_model_dir, tiny):
    _, tok = tiny
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "custom.py").write_text(CUSTOM_CODE)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.MyConfig", "AutoModelForCausalLM": "custom.MyModel"}
    (model / "config.json").write_text(json.dumps(config))
    load_policy(ModelConfig(path=str(model)), tok)
    assert not (model / "REMOTE_CODE_RAN").exists()
    try:
        load_policy(ModelConfig(path=str(model), trust_remote_code=True), tok)
    except Exception:  # noqa: BLE001 - only whether the file's code ran matters here
        pass
    assert (
        list(
            Path(os.environ.get("HF_MODULES_CACHE", Path.home() / ".cache/huggingface/modules")).rglob(
                "REMOTE_CODE_RAN"
            )
        )
        or (model / "REMOTE_CODE_RAN").exists()
    )


def test_redact_keys_and_environment_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    data = {
        "reward": {
            "kwargs": {"api_key": "sk-1", "judge_token": "t-2", "url": "http://x?k=hf_abcdefghijklmnop", "model": "m"}
        },
        "rollout": {"max_new_tokens": 128},
        "model": {"path": "toy", "hf_token": None},
        "list": ["hf_abcdefghijklmnop", 3],
    }
    assert redact(data) == {
        "reward": {"kwargs": {"api_key": REDACTED, "judge_token": REDACTED, "url": REDACTED, "model": "m"}},
        "rollout": {"max_new_tokens": 128},
        "model": {"path": "toy", "hf_token": None},
        "list": [REDACTED, 3],
    }


JUDGE = """
def judge(prompts, completions, answers, api_key=None, **columns):
    assert api_key == "sk-recipe-secret-0123456789"  # the function still gets the real key
    return [float(len(c) > 3) for c in completions]
"""
SECRETS = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567", "HF_TOKEN": "hf_SECRETSECRETSECRET123"}


@pytest.mark.slow
def test_no_secret_in_the_run_folder_or_the_output(tmp_path, tiny_model_dir):
    from repro_train.tasks.arithmetic import generate, write_jsonl

    data = tmp_path / "d.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(data))
    (tmp_path / "judge.py").write_text(JUDGE)
    recipe = make_recipe(
        tmp_path,
        tiny_model_dir,
        str(data),
        train={"steps": 1},
        reward={
            "functions": [{"name": f"{tmp_path}/judge.py:judge", "kwargs": {"api_key": "sk-recipe-secret-0123456789"}}]
        },
        log={"wandb": True, "wandb_mode": "offline"},
    )
    os.environ.update(SECRETS)
    try:
        res = run_cli(["train", "--config", recipe], timeout=300)
    finally:
        for k in SECRETS:
            os.environ.pop(k)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    assert list(run.glob("wandb/offline-run-*")), "wandb wrote no offline run"
    needles = [*SECRETS.values(), "sk-recipe-secret-0123456789"]
    found = [(str(p), n) for p in run.rglob("*") if p.is_file() for n in needles if n.encode() in p.read_bytes()]
    assert not found
    assert not [n for n in needles if n in res.stdout + res.stderr]
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["reward"]["functions"][0]["kwargs"] == {"api_key": REDACTED}
