"""RePro as the trainer builds it, for tests that construct one by hand."""

from repro_train.core.text import ResponseFormat, eos_ids


def fmt(tok, think_end: str = "</think>") -> ResponseFormat:
    """The response format of a tokenizer alone (no generation config), with `think_end`."""
    return ResponseFormat(tuple(eos_ids(None, tok)), think_end)
