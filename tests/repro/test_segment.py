"""Segmentation in token space (spec 1-2) on hand-built tokenizations with known answers."""

import pytest

from repro_train.core.text import TokenizerDecoder, decode_with_offsets
from repro_train.repro.segment import (
    boundary_runs,
    segment_response,
    thinking_end,
    token_at_char,
)

EOS = 99


def seg(pieces, think_end="</think>", delim=r"\n\n", eos=True):
    """Segment a response whose tokens decode to `pieces` (ids 0..n-1, plus EOS if asked)."""
    table = {i: p for i, p in enumerate(pieces)}
    table[EOS] = "<eos>"
    ids = list(range(len(pieces))) + ([EOS] if eos else [])
    s = segment_response(
        ids, lambda xs: "".join(table[i] for i in xs), think_end, delim, [EOS], piece=lambda i: table[i]
    )
    return s.T, list(s.starts), list(s.ends)


def test_plain_paragraphs():
    # tokens: 0 "A." 1 "\n\n" 2 "B." 3 "\n\n" 4 "C"  + EOS
    T, starts, ends = seg(["A.", "\n\n", "B.", "\n\n", "C"])
    assert T == 5  # no marker: everything but the trailing EOS
    assert starts == [0, 2, 4] and ends == [2, 4, 5]


def test_delimiter_inside_a_token_starts_at_the_next_token():
    # ".\n\nThe" holds the boundary; the whitespace run ends inside it, so the next segment
    # starts at the first token beginning at/after the run's end: token 2 " cat".
    T, starts, _ = seg(["Hi", ".\n\nThe", " cat", "."])
    assert T == 4 and starts == [0, 2]


def test_token_ending_with_the_delimiter():
    T, starts, _ = seg(["Hi.\n\n", "The", " cat"])
    assert starts == [0, 1]


def test_run_of_newlines_is_one_boundary():
    # "\n\n\n\n" (two delimiter matches) and "\n \n\n" (spaces inside the run) are one boundary each.
    T, starts, _ = seg(["A", "\n\n", "\n\n", "B", "\n", " ", "\n\n", "C"])
    assert starts == [0, 3, 7]


def test_single_newline_is_not_a_boundary():
    _, starts, _ = seg(["A", "\n", "B", "\n", "C"])
    assert starts == [0]


def test_no_delimiter_one_segment():
    T, starts, ends = seg(["no", " delimiter", " here"])
    assert (T, starts, ends) == (3, [0], [3])


def test_no_eos_keeps_last_token():
    T, starts, ends = seg(["A", "\n\n", "B"], eos=False)
    assert T == 3 and ends[-1] == 3


def test_leading_whitespace_is_not_a_boundary():
    _, starts, _ = seg(["\n\n", "A", "\n\n", "B"])
    assert starts == [0, 3]


def test_think_end_marker_ends_the_span():
    # "</think>" begins inside token 4 ("</" + "think>"): T = 4; the run before it starts nothing.
    T, starts, ends = seg(["A", "\n\n", "B", "\n\n", "</", "think>", "\n\nFinal", " 3"])
    assert T == 4
    assert starts == [0, 2] and ends == [2, 4]


def test_marker_inside_a_token_with_text_before_it():
    # token 2 is "B</thi": the marker begins in token 2, so the span is [0, 2)
    T, starts, _ = seg(["A", "\n\n", "B</thi", "nk>", " done"])
    assert T == 2 and starts == [0]


def test_marker_at_start_gives_no_segment():
    T, starts, ends = seg(["</think>", "x"])
    assert T == 0 and starts == [] and ends == []


def test_marker_absent_uses_whole_response_with_custom_marker():
    T, starts, _ = seg(["A", "\n\n", "B"], think_end="<END>")
    assert T == 3 and starts == [0, 2]


def test_empty_marker_means_no_marker():
    T, _, _ = seg(["A", "</think>", "B"], think_end="")
    assert T == 3


def test_boundary_after_last_token_of_span_starts_nothing():
    # the run "\n\n" ends where the thinking span ends: no token left for a new segment
    T, starts, ends = seg(["A", "\n\n", "</think>", "B"])
    assert T == 2 and starts == [0] and ends == [2]


def test_custom_regex_delimiter():
    _, starts, _ = seg(["Step 1: a", " Step", " 2: b", " Step 3: c"], delim=r"Step \d+:")
    # matches at char 0 (start: not a boundary), inside token 1-2 (ends in token 2) and token 3
    assert starts == [0, 3]


def test_boundary_runs_merge_and_skip_start():
    assert boundary_runs("\n\nA\n\n\n\nB \n\n C", r"\n\n") == [(3, 7), (8, 12)]


def test_token_at_char_first_of_shared_start():
    # tokens 1 and 2 begin at the same character (a split multi-byte character)
    assert token_at_char([0, 3, 3, 4], 3) == 1
    assert token_at_char([0, 3, 3, 4], 5) == 3
    assert thinking_end("abcdef", [0, 2, 4], 3, "d", ends_with_eos=False) == 1


def test_incremental_offsets_with_split_multibyte_characters():
    # A byte-level decoder: each id is one byte; "é" is two bytes, "中" three.
    data = "a\n\né中\n\nb".encode()

    def decode(ids):
        return bytes(data[i] for i in ids).decode("utf-8", errors="replace")

    text, starts = decode_with_offsets(list(range(len(data))), decode)
    assert text == "a\n\né中\n\nb"
    # byte index -> char offset where its token begins: é occupies bytes 3-4 (char 3), 中 bytes 5-7 (char 4)
    assert starts == [0, 1, 2, 3, 3, 4, 4, 4, 5, 6, 7]
    s = segment_response(list(range(len(data))), decode, "</think>", r"\n\n")
    assert list(s.starts) == [0, 3, 10]


def test_fast_and_incremental_paths_agree(tiny):
    _, tok = tiny
    dec = TokenizerDecoder(tok)
    for text in [
        "Let me add 3 + 4 = 7.\n\nWait 7 + 1 = 8.\n\n\n</think>\n\nFinal answer: 8",
        "ok é ü ∑ 中文\n\nnext\n\n",
        "\n\nleading",
    ]:
        ids = tok(text, add_special_tokens=False).input_ids
        fast = decode_with_offsets(ids, dec.decode, dec.piece)
        slow = decode_with_offsets(ids, dec.decode)
        assert fast == slow
        assert fast[0] == text


def test_real_tokenizer_segments(tiny):
    _, tok = tiny
    dec = TokenizerDecoder(tok)
    text = "Let me add 3 + 4 = 7.\n\nWait 7 + 1 = 8.\n\n\nso answer is 8\n\n</think>\n\nFinal answer: 8"
    ids = tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
    s = segment_response(ids, dec.decode, "</think>", r"\n\n", [tok.eos_token_id], dec.piece)
    pieces = [dec.decode(ids[a:b]) for a, b in zip(s.starts, s.ends)]
    # each segment starts right after a whitespace run, and the span stops before </think>
    assert "".join(pieces) + dec.decode(ids[s.T :]) == text + "<|eos|>"
    assert [p.strip() for p in pieces] == ["Let me add 3 + 4 = 7.", "Wait 7 + 1 = 8.", "so answer is 8"]
    assert dec.decode(ids[s.T :]).startswith("</think>")


@pytest.mark.parametrize("bad", ["", "\n\n"])
def test_empty_or_whitespace_response(bad):
    pieces = [bad] if bad else []
    T, starts, _ = seg(pieces, eos=True)
    assert starts == ([0] if bad else [])
