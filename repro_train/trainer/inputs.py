"""Broken inputs stop a run at start-up, before any training, naming the file and the fix.

    check_model_files(folder, "'model.path'")   # config.json, every weights file (index shards), before loading
    check_tokenizer(tok, folder)                # an EOS token, so responses can end
    check_finite_weights(model, folder)         # no NaN / inf in the loaded weights (names the tensor and its file)
    room = prompt_room(cfg)                     # positions left for a prompt: max positions - rollout.max_new_tokens
    tensor_shapes(folder)                       # {name: shape} from the safetensors headers (no weights read)

A model folder is what `save_pretrained` writes: config.json, model.safetensors (or the shards that
model.safetensors.index.json lists) and the tokenizer's files. Hub names (not a folder here) are
left to transformers.
"""

from __future__ import annotations

import json
import os
import struct

import torch

from ..core.typed_config import ConfigError
from ..models.loading import PREPARE_HINT, model_folder, weight_files

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
"""config.json keys that give a model's maximum positions, in the order they are looked for."""


def _config_eos(folder: str) -> bool:
    """generation_config.json or config.json names an EOS id (what generation stops at besides the tokenizer's)."""
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path) as fh:
                if json.load(fh).get("eos_token_id") not in (None, []):
                    return True
    return False


def check_tokenizer(tok, folder: str) -> None:
    """The tokenizer, or the model's generation config, names an EOS token (a response could never end without)."""
    if tok.eos_token_id is None and not (os.path.isdir(folder) and _config_eos(folder)):
        raise ConfigError(
            f'the tokenizer in {folder} has no EOS token, so a response could never end; set "eos_token" in '
            f"{os.path.join(folder, 'tokenizer_config.json')} (e.g. the token the model ends its answers with)"
        )


def _header(path: str) -> dict:
    """The JSON header of a safetensors file: {name: {"dtype", "shape", "data_offsets"}} (+ __metadata__)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


def tensor_shapes(folder: str) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} over the folder's safetensors files, read from their headers."""
    out = {}
    for f in weight_files(folder):
        for name, meta in _header(os.path.join(folder, f)).items():
            if name != "__metadata__":
                out[name] = tuple(meta["shape"])
    return out


def _file_of(folder: str, name: str) -> str:
    """The safetensors file of `folder` that holds tensor `name` (the folder when none does)."""
    for f in weight_files(folder) if os.path.isdir(folder) else ():
        if name in _header(os.path.join(folder, f)):
            return os.path.join(folder, f)
    return folder


def check_finite_weights(model: torch.nn.Module, folder: str) -> None:
    """Every loaded parameter and buffer is finite; else ConfigError naming the tensors and their file."""
    bad = []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad.append((name, int((~torch.isfinite(t)).sum())))
    if bad:
        name, n = bad[0]
        more = f" (and {len(bad) - 1} more tensor(s): {', '.join(b for b, _ in bad[1:4])})" if len(bad) > 1 else ""
        raise ConfigError(
            f"the weights loaded from {folder} are not finite: {name} has {n} NaN/inf value(s){more}, in "
            f"{_file_of(folder, name)}. Training cannot start from them; the file is damaged or was saved from a "
            f"diverged run: {PREPARE_HINT}, or point model.path at an earlier checkpoint's policy/"
        )


def max_positions(folder: str) -> int | None:
    """The model's maximum positions from its config.json (None when it does not say)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        conf = json.load(fh)
    for key in POSITION_KEYS:
        if isinstance(conf.get(key), int) and conf[key] > 0:
            return conf[key]
    return None


def prompt_room(cfg) -> int | None:
    """Positions a prompt may take: the model's maximum minus rollout.max_new_tokens (None: no limit known).
    A response length that leaves no room at all is a ConfigError."""
    folder = model_folder(cfg.model.path)
    limit = max_positions(folder) if os.path.isdir(folder) else None
    if limit is None:
        return None
    room = limit - cfg.rollout.max_new_tokens
    if room < 1:
        raise ConfigError(
            f"'rollout.max_new_tokens' = {cfg.rollout.max_new_tokens} leaves no room for a prompt in the model's "
            f"{limit} positions ({os.path.join(folder, 'config.json')}); lower rollout.max_new_tokens"
        )
    return room
