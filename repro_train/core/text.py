"""Text facts shared by every layer: decoding token ids with per-token character offsets (`decode_with_offsets`,
`TokenizerDecoder`), and what ends a response and its thinking part (`ResponseFormat`, built once per model by
`response_format`: the EOS ids of the tokenizer and the generation config, and the end-of-thinking marker
`model.think_end`). Pure Python; the tokenizer enters as an object with `decode`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

REPLACEMENT = "\ufffd"


def decode_with_offsets(
    ids: Sequence[int], decode: Callable[[list[int]], str], piece: Callable[[int], str] | None = None
) -> tuple[str, list[int]]:
    """Decoded text of `ids` and, for each token, the character offset at which it begins.

    A token whose bytes only complete a character together with later tokens (byte-level BPE
    splitting a multi-byte character) begins where that character begins. Fast path: when the
    per-token pieces concatenate to the full decode, offsets are their cumulative lengths.
    Otherwise decode incrementally with a two-token context window (as streaming detokenisers do),
    which also keeps SentencePiece's leading spaces: O(len) short decodes.
    """
    ids = list(ids)
    full = decode(ids)
    if piece is not None:
        pieces = [piece(i) for i in ids]
        if "".join(pieces) == full and REPLACEMENT not in full:
            starts, pos = [], 0
            for p in pieces:
                starts.append(pos)
                pos += len(p)
            return full, starts
    text, starts = "", []
    prefix_off = read_off = 0
    for i in range(len(ids)):
        starts.append(len(text))
        old = decode(ids[prefix_off:read_off]) if read_off > prefix_off else ""
        new = decode(ids[prefix_off : i + 1])
        if len(new) > len(old) and not new.endswith(REPLACEMENT):
            text += new[len(old) :]
            prefix_off, read_off = read_off, i + 1
    return text, starts


class TokenizerDecoder:
    """`decode` and a cached per-id `piece` for a Hugging Face tokenizer (special tokens kept,
    no clean-up of spaces), so that offsets line up with the ids one to one."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._pieces: dict[int, str] = {}

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def piece(self, i: int) -> str:
        p = self._pieces.get(i)
        if p is None:
            p = self._pieces[i] = self.decode([i])
        return p

    def offsets(self, ids: Sequence[int]) -> tuple[str, list[int]]:
        """`decode_with_offsets` of `ids` with this tokenizer."""
        return decode_with_offsets(ids, self.decode, self.piece)


def eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the generation config's (Qwen's chat models add
    <|im_end|> there). `model` is anything with a `generation_config` (or None)."""
    ids = set()
    for src in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(i) for i in src)
    if not ids:
        raise ValueError("the tokenizer has no EOS token; set one (tokenizer.eos_token) so responses can end")
    return sorted(ids)


@dataclass(frozen=True)
class ResponseFormat:
    """What ends a response and its thinking part, for one model: read by the trainer, the rollout engines, RePro,
    the shapers, the metrics and eval alike."""

    eos_ids: tuple[int, ...]
    """Every token id that ends a response (`eos_ids`)."""
    think_end: str = "</think>"
    """The end-of-thinking marker (`model.think_end`); "" = none (the whole response is thinking)."""

    def thinking(self, text: str) -> str:
        """The part of a decoded response before the first end-of-thinking marker (all of it without one)."""
        return text.split(self.think_end, 1)[0] if self.think_end else text


def response_format(model, tokenizer, think_end: str) -> ResponseFormat:
    """The ResponseFormat of `model` (anything with a generation_config, or None) and its tokenizer."""
    return ResponseFormat(tuple(eos_ids(model, tokenizer)), think_end)
