"""Answer extraction and number parsing, shared by the outcome rewards and the evaluation code.

Pure string functions, no dependencies:

    extract_final_answer("...</think>\\n\\nFinal answer: 42")   -> "42"
    extract_boxed(r"so \\boxed{\\frac{1}{2}}.")                 -> r"\\frac{1}{2}"
    extract_answer(text)        final answer line, else the last \\boxed{...}, else None
    last_number("5 + 3 = 9.\\nFinal answer: 8 apples")     -> "8"
    parse_number("1,000") -> 1000.0    parse_number(r"-\\frac{3}{4}") -> -0.75
    normalize_answer(" $1 000$. ") -> "1000"
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

FINAL_ANSWER_RE = re.compile(r"final answer:\s*(.+)", re.IGNORECASE)
"""The answer line the task templates ask for; `\\s*` lets the answer start on the next line."""

_BOXED = "\\boxed"
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRACTION = re.compile(r"([+-]?\d+)\s*/\s*([+-]?\d+)")
_LATEX_FRAC = re.compile(r"^([+-]?)\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}$")
_WRITTEN_NUMBER = re.compile(r"(?<![\w.,])[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")
"""A number as written in prose: a sign only when it touches the digits ("= -11"; "7 - 7" is two numbers)."""
_SPACED_DIGITS = re.compile(r"(?<=\d)(?: |\\,|\\ |,)(?=\d{3}\b)")


def extract_final_answer(text: str) -> str | None:
    """Text after the last "Final answer:" (case-insensitive) up to the end of that line.

    Markdown bold around it (`**Final answer:** 42`) is stripped. None if there is no such line
    or nothing follows it.
    """
    matches = FINAL_ANSWER_RE.findall(text)
    if not matches:
        return None
    answer = matches[-1].strip().strip("*").strip()
    return answer or None


def _closing_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` matching the `{` at `open_at`; escaped `\\{`, `\\}` don't count."""
    depth = 0
    i = open_at
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2  # skip the escaped character
            continue
        depth += (c == "{") - (c == "}")
        if depth == 0:
            return i
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`, matching nested braces.

    None if there is no `\\boxed{` or the last one is never closed (a truncated completion: an
    earlier box is not taken in its place).
    """
    start = text.rfind(_BOXED + "{")
    if start < 0:
        return None
    open_at = start + len(_BOXED)
    close = _closing_brace(text, open_at)
    return None if close is None else text[open_at + 1 : close].strip()


def extract_answer(text: str, pattern: re.Pattern | None = None) -> str | None:
    """The answer a completion gives.

    With `pattern` (a compiled regex with one group): group 1 of its last match, else None.
    Without: `extract_final_answer`, falling back to `extract_boxed`.
    """
    if pattern is not None:
        matches = list(pattern.finditer(text))
        return matches[-1].group(1).strip() if matches else None
    answer = extract_final_answer(text)
    return answer if answer is not None else extract_boxed(text)


def last_number(text: str) -> str | None:
    """The last number written in the last "Final answer:" line, or in the whole text when there is none.

    An int or a decimal, with thousands commas and a sign that touches its digits ("-11", not the
    "- 7" of "3 - 7"). A restated problem reads as its last operand: "5 + 3 = 9" -> "9",
    "3 - 7 - 7" -> "7". None if no number is written there.
    """
    span = extract_final_answer(text)
    numbers = _WRITTEN_NUMBER.findall(span if span is not None else text)
    return numbers[-1] if numbers else None


def _strip_wrappers(s: str) -> str:
    """Remove whitespace, bold, a trailing period, and surrounding $...$, \\(...\\) or \\boxed{...}."""
    prev = None
    while s != prev:
        prev = s
        s = s.strip().strip("*").strip()
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$")
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2]
        if s.startswith(_BOXED + "{") and _closing_brace(s, len(_BOXED)) == len(s) - 1:
            s = s[len(_BOXED) + 1 : -1]
    return s


def normalize_answer(s: str) -> str:
    """Canonical form for exact matching.

    strip; remove bold, a trailing period, and surrounding `$...$`, `\\(...\\)`, `\\boxed{...}`;
    lowercase; join digit groups written with a space, `\\,` or a comma ("1 000", "1,000" -> "1000");
    collapse runs of whitespace.
    """
    s = _strip_wrappers(s).lower()
    s = _SPACED_DIGITS.sub("", s)
    return " ".join(s.split())


def parse_number(s: str | None) -> float | None:
    """A number written as an int, a decimal, `a/b`, `\\frac{a}{b}`, or with thousands commas.

    Accepts a leading sign, surrounding `$`/`\\boxed{}`, a leading currency `$` or `\\$`, and a
    trailing `%` (dropped: "50%" -> 50.0). The whole string must be the number ("42 apples" ->
    None; "1,5" -> None: a comma only separates groups of three digits). Never returns inf or nan.
    """
    if s is None:
        return None
    s = _strip_wrappers(s)
    s = re.sub(r"^([+-]?)\\?\$", r"\1", s).strip()  # currency sign
    s = s.removesuffix("\\%").removesuffix("%").strip()
    s = _LATEX_FRAC.sub(r"\1\2/\3", s)  # -\frac{3}{4} -> -3/4
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL.fullmatch(s):
        value = float(s)
    elif m := _FRACTION.fullmatch(s):
        try:  # int() refuses > 4300 digits; float() of a huge Fraction overflows
            num, den = int(m.group(1)), int(m.group(2))
            value = float(Fraction(num, den)) if den != 0 else math.nan
        except (OverflowError, ValueError):
            return None
    else:
        return None
    return value if math.isfinite(value) else None
