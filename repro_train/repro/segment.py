"""Segment a chain of thought in token space (spec sections 1 and 2; docs/repro.md, steps 1-2).

    text, starts = decode_with_offsets(ids, decode)                  # core/text.py
    T = thinking_end(text, starts, len(ids), think_end, ends_with_eos)
    seg_starts = segment_starts(text, starts, T, delimiter)        # s_0 = 0 < s_1 < ...
    seg_ends = seg_starts[1:] + [T]

T is the token in which the first end-of-thinking marker begins (no marker: the whole response but a trailing EOS). A
maximal whitespace run holding a delimiter match is one boundary (a match of non-whitespace, such as `Step \\d+:`, with
the whitespace around it), and the next segment starts at the first token that begins at or after its end: segments
are never empty. The authors' variant works on ids alone (`thinking_end_by_id`, `token_boundary_starts`).
`segment_response` does it all for one response. Pure Python; the tokenizer enters only as a `decode` callable.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ..core.text import decode_with_offsets


def token_at_char(starts: Sequence[int], pos: int) -> int:
    """Index of the token in which character `pos` begins (the first of tokens sharing a start)."""
    i = bisect.bisect_right(starts, pos) - 1
    i = max(i, 0)
    while i > 0 and starts[i - 1] == starts[i]:
        i -= 1
    return i


def thinking_end(text: str, starts: Sequence[int], n_tokens: int, think_end: str, ends_with_eos: bool) -> int:
    """T: the thinking span is y[0:T] (spec 1)."""
    if think_end:
        pos = text.find(think_end)
        if pos >= 0:
            return token_at_char(starts, pos)
    return n_tokens - 1 if (ends_with_eos and n_tokens > 0) else n_tokens


def boundary_runs(text: str, delimiter: str | re.Pattern) -> list[tuple[int, int]]:
    """Character ranges [a, b) of the boundaries in `text`: each delimiter match widened by the
    whitespace around it, overlapping ranges merged; a range that starts at 0 is dropped."""
    rx = re.compile(delimiter) if isinstance(delimiter, str) else delimiter
    runs: list[tuple[int, int]] = []
    for m in rx.finditer(text):
        a, b = m.start(), m.end()
        if a == b:
            continue
        while a > 0 and text[a - 1].isspace():
            a -= 1
        while b < len(text) and text[b].isspace():
            b += 1
        if runs and a <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(b, runs[-1][1]))
        else:
            runs.append((a, b))
    return [(a, b) for a, b in runs if a > 0]


def segment_starts(text: str, starts: Sequence[int], T: int, delimiter: str | re.Pattern) -> list[int]:
    """Token indices s_0 = 0 < s_1 < ... of the segments of the thinking span y[0:T] (spec 2).

    Returns [] when the thinking span is empty (no segment)."""
    if T <= 0:
        return []
    span_end = starts[T] if T < len(starts) else len(text)
    out = [0]
    for _, b in boundary_runs(text[:span_end], delimiter):
        i = bisect.bisect_left(starts, b)
        if i < T and i > out[-1]:
            out.append(i)
    return out


def think_end_cut_text(text: str, starts: Sequence[int], n_tokens: int, think_end: str) -> int:
    """The shortest prefix y[:c] that holds the whole end-of-thinking marker (text mode); the whole
    response (n_tokens) when there is no marker."""
    pos = text.find(think_end) if think_end else -1
    if pos < 0:
        return n_tokens
    return bisect.bisect_left(starts, pos + len(think_end))


def thinking_end_by_id(ids: Sequence[int], think_end_id: int | None) -> tuple[int, int]:
    """(T, forced cut) as the authors' code finds them: T = the number of positions before the first
    token equal to `think_end_id` (the first token id of the marker), the forced cut T + 1 (the
    prefix including that token); no such token: T = len(ids), the forced cut the whole response."""
    for t, i in enumerate(ids):
        if i == think_end_id:
            return t, t + 1
    return len(ids), len(ids)


def token_boundary_starts(ids: Sequence[int], T: int, boundary_ids: Collection[int]) -> list[int]:
    """Segment starts by token ids (authors' code): 0, then every position 0 < t < T whose previous
    token is one of `boundary_ids`. Returns [] when the thinking span is empty."""
    if T <= 0:
        return []
    return [0] + [t for t in range(1, T) if ids[t - 1] in boundary_ids]


@dataclass(frozen=True)
class Segmentation:
    """Segments of one response, in response-token indices."""

    T: int
    """End (exclusive) of the thinking span."""
    starts: tuple[int, ...]
    """Segment starts s_0 = 0 < s_1 < ... (empty when the thinking span is empty)."""
    text: str
    """The decoded response the offsets refer to ("" when nothing needed decoding)."""
    think_end_cut: int = 0
    """The prefix y[:think_end_cut] holds the end-of-thinking marker (the whole response without one):
    where `repro.force_think_end_cut` adds its cut."""

    @property
    def ends(self) -> tuple[int, ...]:
        return tuple(self.starts[1:]) + ((self.T,) if self.starts else ())


def segment_response(
    ids: Sequence[int],
    decode: Callable[[list[int]], str],
    think_end: str,
    delimiter: str | re.Pattern,
    eos_ids: Sequence[int] = (),
    piece: Callable[[int], str] | None = None,
    think_end_id: int | None = None,
    boundary_ids: Collection[int] | None = None,
) -> Segmentation:
    """Thinking span and segments of one response `ids` (spec 1-2).

    `think_end_id` given: the span ends before the first token equal to it (authors' code) instead
    of where `think_end` begins in the text; `boundary_ids` given: boundaries are the positions after
    those tokens (authors' code) instead of `delimiter` matches. With both, nothing is decoded."""
    text, starts = (
        ("", []) if think_end_id is not None and boundary_ids is not None else decode_with_offsets(ids, decode, piece)
    )
    if think_end_id is not None:
        T, cut = thinking_end_by_id(ids, think_end_id)
    else:
        ends_with_eos = len(ids) > 0 and ids[-1] in set(eos_ids)
        T = thinking_end(text, starts, len(ids), think_end, ends_with_eos)
        cut = think_end_cut_text(text, starts, len(ids), think_end)
    seg = (
        token_boundary_starts(ids, T, boundary_ids)
        if boundary_ids is not None
        else segment_starts(text, starts, T, delimiter)
    )
    return Segmentation(T=T, starts=tuple(seg), text=text, think_end_cut=cut)
