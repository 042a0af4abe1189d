"""Secrets never reach a saved config, wandb's config or a log.

    redact({"reward": {"kwargs": {"api_key": "sk-..."}}})  -> {"reward": {"kwargs": {"api_key": "<redacted>"}}}

A value is replaced by REDACTED when its key names a secret (api_key, token, hf_token, secret,
password, credentials, auth, ...: the whole key or its last '_'/'-' part; 'max_new_tokens' is not
one), or when it contains the value of a secret environment variable (WANDB_API_KEY, HF_TOKEN, ...).
`to_dict` (core/typed_config.py) applies it, so config.yaml in the run folder and in every checkpoint, the
wandb run config and the SFT report all go through it.
"""

from __future__ import annotations

import os
import re

REDACTED = "<redacted>"
SECRET_KEY = re.compile(
    r"(?i)(^|[_-])(api[_-]?key|key[_-]?secret|token|access[_-]?token|secret|password|passwd|"
    r"credentials?|auth)$"
)
SECRET_ENV = (
    "WANDB_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GITHUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
)
_MIN_SECRET = 8  # shorter environment values are not looked for (too many false hits)


def _env_secrets() -> list[str]:
    return [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= _MIN_SECRET]


def redact(data, _secrets: list[str] | None = None):
    """A copy of plain data (dicts, lists, scalars) with secret values replaced by REDACTED."""
    secrets = _env_secrets() if _secrets is None else _secrets
    if isinstance(data, dict):
        return {
            k: REDACTED if (isinstance(k, str) and SECRET_KEY.search(k) and v not in (None, "")) else redact(v, secrets)
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [redact(v, secrets) for v in data]
    if isinstance(data, str) and any(s in data for s in secrets):
        return REDACTED
    return data
