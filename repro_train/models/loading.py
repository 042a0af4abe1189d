"""Finding and loading models: one resolver of model paths (`model_folder`: 'toy' is the shipped tiny reasoner; a
missing folder that `repro-train prepare-model` makes stops with the command to run; a missing local path never
reaches the hub) and the loaders every command uses: the trainer's (`load_tokenizer`, `load_policy`,
`load_reference`) and inference's (`load_for_inference`). Weights load from safetensors only."""

from __future__ import annotations

import contextlib
import json
import os

import torch
from torch import nn

from ..core.typed_config import ConfigError
from ..tasks.reasoner import reasoner_path
from .fused_ops import apply_fused_ops
from .zoo import missing_model_hint

INDEX = "model.safetensors.index.json"
PREPARE_HINT = (
    "re-create the folder (`repro-train prepare-model NAME --out DIR` for the models it knows, or the "
    "model's `save_pretrained`), or copy the missing files from where the model came from"
)


def weight_files(folder: str) -> list[str]:
    """The safetensors files of a model folder: the index's shards, else every *.safetensors."""
    index = os.path.join(folder, INDEX)
    if os.path.isfile(index):
        with open(index) as fh:
            return sorted(set(json.load(fh)["weight_map"].values()))
    return sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))


def check_model_files(folder: str, what: str = "'model.path'") -> None:
    """A local model folder has config.json and its weights (every shard of an index); else ConfigError."""
    if not os.path.isdir(folder):
        return  # a hub name, or reported by the loader's own check
    missing = [n for n in ("config.json",) if not os.path.isfile(os.path.join(folder, n))]
    try:
        shards = weight_files(folder)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"{what} = {folder}: {INDEX} is unreadable ({type(e).__name__}: {e}); {PREPARE_HINT}"
        ) from None
    if not shards:
        missing.append("model.safetensors (no *.safetensors weights)")
    missing += [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        raise ConfigError(f"{what} = {folder} is missing {', '.join(missing)}; {PREPARE_HINT}")


def model_folder(path: str) -> str:
    """The folder of a recipe's model path ('toy': the shipped tiny reasoner). A missing folder that
    `repro-train prepare-model` makes stops at start-up with the command to run (models/zoo.py)."""
    if path == "toy":
        return reasoner_path()
    hint = missing_model_hint(path)
    if hint is not None:
        raise ConfigError(hint)
    return path


def model_type_at(folder: str) -> str | None:
    """The model_type in a local model folder's config.json; None for a hub name or an unreadable file (the loader
    reports those)."""
    try:
        with open(os.path.join(folder, "config.json")) as fh:
            return json.load(fh).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


LOCAL_FOLDERS = ("models", "runs")
"""First path parts that always mean a local folder: where `prepare-model` and training write. 'models/mine' is
never looked up on the hub, even before the folder exists."""


def looks_local(path: str) -> bool:
    """A path that cannot be a hub name ('org/name'): absolute, relative with ./ or ../ or ~, deeper than one
    slash, or under a folder that exists here (or models/, runs/)."""
    p = path.replace(os.sep, "/")
    first = p.partition("/")[0]
    return (
        p.startswith(("/", ".", "~"))
        or p.count("/") > 1
        or p.endswith("/")
        or ("/" in p and (first in LOCAL_FOLDERS or os.path.isdir(first)))
    )


def check_exists(path: str, what: str) -> None:
    """A model path that is not a folder stops here, before any hub lookup: a local-looking one always, a hub name
    when the hub is offline (HF_HUB_OFFLINE=1)."""
    if os.path.exists(path):
        return
    if looks_local(path):
        raise ConfigError(f"{what} = {path!r} does not exist (a local path); give a model folder or 'toy'")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(
            f"{what} = {path!r} is not a folder and the hub is offline (HF_HUB_OFFLINE=1); give a local model folder "
            "or 'toy'"
        )


@contextlib.contextmanager
def quiet_transformers(report: bool = True):
    """transformers' progress bars ('Loading weights', 'Writing model shards') off for one load or save; with
    report=False also its warnings (the load report of a value head the caller explains itself)."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if not report:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer_at(path: str, trust_remote_code: bool = False, what: str = "'model.path'"):
    """The tokenizer of the model at `path` (pad = EOS when it has no pad token). A hub name the hub does not give
    (no network, no such model) is a ConfigError, not a traceback."""
    folder = model_folder(path)
    check_exists(folder, what)  # before transformers is imported: a wrong path costs no import, no hub lookup
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except OSError as e:
        if os.path.exists(folder):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{what} = {path!r} is not a local folder and the Hugging Face hub did not give it ({first}); "
            "give a model folder or 'toy' (HF_HUB_OFFLINE=1 never asks the hub)"
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_tokenizer(cfg_model):
    """The policy's tokenizer (pad = EOS when it has no pad token)."""
    return load_tokenizer_at(cfg_model.path, cfg_model.trust_remote_code)


def load_policy(cfg_model, tok):
    """The policy from the recipe's model section, on the CPU, its decoder ops fused as model.fused_ops says."""
    from transformers import AutoModelForCausalLM

    path = model_folder(cfg_model.path)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, cfg_model.dtype),
            attn_implementation=cfg_model.attn_implementation,
            trust_remote_code=cfg_model.trust_remote_code,
            use_safetensors=True,
        )  # never unpickle weights
    if cfg_model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # training forwards; the probe asks for a cache explicitly
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return apply_fused_ops(model, cfg_model.fused_ops)  # the trainer's passes (model.fused_ops)


def load_reference(cfg_model):
    """A frozen copy of the initial policy (KL penalty)."""
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        ref = AutoModelForCausalLM.from_pretrained(
            model_folder(cfg_model.path),
            dtype=getattr(torch, cfg_model.dtype),
            attn_implementation=cfg_model.attn_implementation,
            trust_remote_code=cfg_model.trust_remote_code,
            use_safetensors=True,
        )
    return apply_fused_ops(ref, cfg_model.fused_ops).requires_grad_(False).eval()  # the KL pass, as the policy's


def load_for_inference(path: str, dtype: str = "float32", device: str = "cpu", what: str = "--model"):
    """(model in eval mode on `device`, tokenizer with a pad token) for evaluation and inspection (no remote code)."""
    from transformers import AutoModelForCausalLM

    check_exists(model_folder(path), what)
    check_model_files(model_folder(path), what)  # before the tokenizer, whose own errors name no missing file
    tok = load_tokenizer_at(path, False, what)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            model_folder(path), dtype=getattr(torch, dtype), use_safetensors=True
        )
    return model.to(device).eval(), tok


def save_pretrained(module: nn.Module, state_dict: dict, path: str, tokenizer=None) -> None:
    """Hugging Face folder for `module` with the given (gathered, unprefixed) weights."""
    os.makedirs(path, exist_ok=True)
    with quiet_transformers():
        module.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
