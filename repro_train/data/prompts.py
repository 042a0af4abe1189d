"""Turn a data row into the prompt token ids the policy sees.

    ids = encode_prompt(tokenizer, row)           # row: {"prompt": ...} or {"question": ...}

- `prompt_ids`: used as given.
- `prompt`: raw text, tokenized with the tokenizer's special tokens (BOS), unless the text already
  starts with the BOS text (a rendered chat template), which would double it.
- `question`: wrapped as one user message (after an optional system prompt) with the tokenizer's
  chat template and the generation prompt; a tokenizer without a template is an error.
"""

from __future__ import annotations


class RowError(ValueError):
    """A data row is unusable; the message names the row and the field."""


def encode_prompt(tokenizer, row: dict, system_prompt: str | None = None, where: str = "row") -> list[int]:
    if row.get("prompt_ids") is not None:
        ids = row["prompt_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) or not ids:
            raise RowError(f"{where}: 'prompt_ids' must be a non-empty list of token ids")
        return list(ids)
    if row.get("prompt") is not None:
        text = row["prompt"]
        if not isinstance(text, str) or not text:
            raise RowError(f"{where}: 'prompt' must be a non-empty string")
        bos = tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))
        return list(tokenizer(text, add_special_tokens=add_special).input_ids)
    if row.get("question") is not None:
        q = row["question"]
        if not isinstance(q, str) or not q:
            raise RowError(f"{where}: 'question' must be a non-empty string")
        if not getattr(tokenizer, "chat_template", None):
            raise RowError(
                f"{where}: 'question' needs a tokenizer with a chat template; "
                "this tokenizer has none, so give the full text as 'prompt' instead"
            )
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": q}
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    raise RowError(f"{where}: missing field 'prompt' (or 'question', or 'prompt_ids')")
