"""Answer extraction and number parsing, shared by the outcome rewards and the evaluation code: pure string
functions, no dependencies (docs/rewards.md, "Built-ins" and "The strict answer rule").

    extract_final_answer("...</think>\\n\\nFinal answer: 42")   -> "42"
    extract_boxed(r"so \\boxed{\\frac{1}{2}}.")                 -> r"\\frac{1}{2}"
    extract_answer(text)        final answer line, else the last \\boxed{...}, else None
    last_number("5 + 3 = 9.\\nFinal answer: 8 apples")     -> "8"
    parse_number("1,000") -> 1000.0   parse_number(r"-\\frac{3}{4}") -> -0.75   parse_exact("0.1") -> Fraction(1, 10)
    normalize_answer(" $1 000$. ") -> "1000"
    strict_refusal(completion, span, gold) -> None, or why the answer is not one final value
        "Final answer: 5 or 6" (gold 5)  -> "a hedge ('or') the gold does not have"
        "Final answer: 3 - 7 - 7" (-11)  -> "an expression with no value written ('3 - 7 - 7')"
"""

from __future__ import annotations

import re
from fractions import Fraction

FINAL_ANSWER_RE = re.compile(r"final answer:\s*(.+)", re.IGNORECASE)
"""The answer line the task templates ask for; `\\s*` lets the answer start on the next line."""

_BOXED = "\\boxed"
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?")
_INTEGER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")
_MAX_EXPONENT = 1000
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
        group = matches[-1].group(1) if matches else None  # None too where an optional group did not take part
        return None if group is None else group.strip()
    answer = extract_final_answer(text)
    return answer if answer is not None else extract_boxed(text)


def last_number(text: str) -> str | None:
    """The last number written in the last "Final answer:" line, or in the whole text when there is none.

    An int or a decimal, with thousands commas and a sign that touches its digits ("-11", not the
    "- 7" of "3 - 7"). A restated problem reads as its last operand: "5 + 3 = 9" -> "9",
    "3 - 7 - 7" -> "7". None if no number is written there.
    """
    found = last_number_match(text)
    return None if found is None else found[1].group()


def last_number_match(text: str) -> tuple[str, re.Match] | None:
    """`last_number`'s reading with its place: (the text searched, the number's match in it)."""
    span = extract_final_answer(text)
    span = text if span is None else span
    matches = list(_WRITTEN_NUMBER.finditer(span))
    return (span, matches[-1]) if matches else None


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
    value = parse_exact(s)
    return None if value is None else float(value)


def parse_exact(s: str | None) -> Fraction | None:
    """`parse_number`'s reading as an exact Fraction ("0.1" -> 1/10, "38095785" -> 38095785/1).

    None where parse_number gives None, and for exponents beyond +-1000 (a string like "1e99999999"
    must not cost a 100-million-digit integer).
    """
    if s is None:
        return None
    s = _strip_wrappers(s)
    s = re.sub(r"^([+-]?)\\?\$", r"\1", s).strip()  # currency sign
    s = s.removesuffix("\\%").removesuffix("%").strip()
    s = _LATEX_FRAC.sub(r"\1\2/\3", s)  # -\frac{3}{4} -> -3/4
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    try:  # int() refuses > 4300 digits; float() of a huge Fraction overflows
        if m := _DECIMAL.fullmatch(s):
            if m.group(1) is not None and abs(int(m.group(1))) > _MAX_EXPONENT:
                return None
            value = Fraction(s)
        elif m := _FRACTION.fullmatch(s):
            num, den = int(m.group(1)), int(m.group(2))
            if den == 0:
                return None
            value = Fraction(num, den)
        else:
            return None
        float(value)  # OverflowError beyond float's range: parse_number never returns inf
    except (OverflowError, ValueError):
        return None
    return value


def written_as_integer(s: str) -> bool:
    """True if `s` reads as a number written with digits only (a sign, thousands commas, `$`...):
    "42", "-1,000", "$\\boxed{7}$"; not "42.0", "1e3" or "3/1". Such a gold is compared exactly."""
    s = re.sub(r"^([+-]?)\\?\$", r"\1", _strip_wrappers(s)).strip()
    s = s.removesuffix("\\%").removesuffix("%").strip()
    return bool(_INTEGER.fullmatch(s)) and parse_exact(s) is not None


# ---------------------------------------------------------------- the strict answer rule
# A grader's mistake becomes the policy's skill: a GRPO run learned to write "The final answer is
# 3 - 7 - 7 = 3." because math-verify read the expression 3 - 7 - 7 as the answer (docs/rewards.md,
# "The strict answer rule"). strict_refusal says why an answer is not one final value.

THINK_END = "</think>"
_HEDGE = re.compile(r"\b(?:or|either|maybe|perhaps|possibly)\b|\\(?:pm|mp|lor)(?![a-zA-Z])|[±∓∨]", re.I)
_NEGATION = re.compile(
    r"\b(?:not|never|neither|nor|cannot)\b|n['’]t\b|\\(?:neq?|neg|lnot|not)(?![a-zA-Z])|!=|[≠¬]", re.I
)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_LATEX_SYMBOL = {"\\times": "×", "\\cdot": "·", "\\div": "÷", "−": "-"}
_TOKEN = re.compile(
    r"""(?P<num>(?<![A-Za-z\d._])(?:\d{1,3}(?:(?:,|\{,\}|,\\!|\\[,\ ])\d{3})+(?!\d)|\d+)(?:\.\d+)?)
      | (?P<op>[-+*/×÷·^−]|\\(?:times|cdot|div)(?![a-zA-Z]))
      | (?P<eq>=) | (?P<open>[(\[{]) | (?P<close>[)\]}])
      | (?P<frac>\\[dt]?frac(?![a-zA-Z])\s*(?=\{))
      | (?P<space>\s+|\\[,!;:\ ]
                  |\\(?:left|right|boxed|fbox|text|textbf|mathrm|mathbf|displaystyle|quad|qquad)(?![a-zA-Z]))
      | (?P<command>\\[a-zA-Z]+)
      | (?P<other>.)""",
    re.X | re.S,
)
"""One token of an arithmetic run. LaTeX operators, \\frac{a}{b} and spacing read as theirs ("1\\,000",
"14{,}940" are one number; \\boxed, \\text, \\left are spacing); any other command (\\sqrt, \\pi)
makes its run symbolic, not arithmetic."""
_MAX_TOKENS = 200
_MAX_RUNS = 100
_MAX_DIGITS = 100
_MAX_DEPTH = 40
_MAX_POWER_BITS = 20000


def final_answers(text: str, pattern: re.Pattern | None = None, boxes: bool = True) -> list[str]:
    """Every final answer written after the last `</think>` (the whole text if there is none).

    With `pattern`: group 1 of each match. Without: each "Final answer:" line, or where there is
    none (and `boxes`), each `\\boxed{...}` (a box inside another box is part of it). Boxes beside a
    "Final answer:" line are work, as extract_answer reads them.
    """
    section = text.rsplit(THINK_END, 1)[-1]
    if pattern is not None:
        return [g.strip() for m in pattern.finditer(section) if (g := m.group(1)) is not None]
    lines = [m.group(1).strip().strip("*").strip() for m in FINAL_ANSWER_RE.finditer(section)]
    if lines or not boxes:
        return [a for a in lines if a]
    found, stack, i = [], [], 0  # one pass, matching braces as _closing_brace does
    while i < len(section):
        c = section[i]
        if c == "\\":
            if section.startswith(_BOXED + "{", i):
                stack.append((i + len(_BOXED), True))
                i += len(_BOXED) + 1
            else:
                i += 2
            continue
        if c == "{":
            stack.append((i, False))
        elif c == "}" and stack:
            open_at, is_box = stack.pop()
            if is_box:  # inner boxes close first: the outer one replaces them
                while found and found[-1][0] > open_at:
                    found.pop()
                found.append((open_at, section[open_at + 1 : i].strip()))
        i += 1
    return [b for _, b in found if b]


def answer_key(answer: str):
    """What two final answers must share to be one answer: the number, else the normalized text."""
    value = parse_exact(answer)
    return value if value is not None else normalize_answer(answer)


def _same_answer(a: str, span_key, span_text: str, key) -> bool:
    """`a` is the span's answer written again: equal keys, or one written inside the other ("The final
    answer is $20\\%$. I hope it is correct." holds "20\\%"). span_text: the span, normalized."""
    if key(a) == span_key:
        return True
    short, long = sorted((normalize_answer(a), span_text), key=len)
    return bool(short) and re.search(r"(?<![\w.])" + re.escape(short) + r"(?!\w)", long) is not None


_SEVERAL = re.compile(r",(?!\d{3}(?!\d))|;|\\quad|\band\b")
"""A gold with a list separator (not a thousands comma) has several parts: "(2, 2), (6, 2)", "k = 45, n = 2"."""


def _has(regex: re.Pattern, text: str) -> str | None:
    m = regex.search(text)
    return None if m is None else m.group()


def _tokens(text: str) -> list[tuple[str, str]]:
    return [(m.lastgroup, _LATEX_SYMBOL.get(m.group(), m.group())) for m in _TOKEN.finditer(text)]


def _attached(token: tuple[str, str] | None) -> bool:
    """A token that an operator or bracket right after it continues: a letter ("x-100", "f(2)", "a_{37}")."""
    return token is not None and (
        token[0] == "command" or (token[0] == "other" and (token[1].isalnum() or token[1] in "_'"))
    )


def _runs(text: str) -> list[list[list[tuple[str, str]] | None]]:
    """The arithmetic runs of `text` (numbers, operators, brackets, `=`), each split at `=` into parts.

    A run starts at a number, a bracket or a sign: "x^2 + 1" has no run (its `^2` is a symbol's
    exponent), "x = 5" has the run "5". A word or a line break ends a run, and so do two values side
    by side ("6 5" is two runs). A part continued from or into a symbol ("-100" in "20z-100 = 0",
    "{37}" in "a_{37} = 19") is None: not arithmetic. A run with another LaTeX command is dropped.
    """
    return _RunReader(_tokens(text)).read()


class _RunReader:
    """One pass over the tokens of a text, collecting its arithmetic runs (see _runs)."""

    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens, self.runs = tokens, []
        self._start_run()

    def _start_run(self) -> None:
        self.indices: list[int] = []  # the run's tokens, as indices into self.tokens
        self.out: list[tuple[str, str]] = []  # the run's tokens, \frac{a}{b} rewritten as ( {a} frac/ {b} )
        self.symbolic, self.depth = False, 0
        self.fracs: list[list[int]] = []  # [bracket depth of a \frac's wrapper, groups closed]

    def read(self) -> list:
        for i, (kind, tok) in enumerate(self.tokens):
            if kind == "space" and "\n" not in tok:
                continue
            if self.fracs and self.fracs[-1][1] == 1 and self.depth == self.fracs[-1][0]:
                if kind != "open":  # \frac{a} without its {b}
                    self.symbolic = True
                    self.fracs.pop()
                else:
                    self.out.append(("op", "frac/"))
            elif kind in ("num", "open", "frac") and self.out and self.out[-1][0] in ("num", "close"):
                self._close_run()  # "6 5", "(3)(4)": two values side by side, not one expression
            if kind in ("other", "space"):  # a word or a line break ends a run
                self._close_run()
            else:
                self.indices.append(i)
                self._add(kind, tok)
        self._close_run()
        return self.runs

    def _add(self, kind: str, tok: str) -> None:
        if kind == "command":
            self.symbolic = True
        elif kind == "frac":
            self.out.append(("open", "("))
            self.depth += 1
            self.fracs.append([self.depth, 0])
        else:
            self.out.append((kind, tok))
            self.depth += (kind == "open") - (kind == "close")
            if kind == "close" and self.fracs and self.depth == self.fracs[-1][0]:
                self.fracs[-1][1] += 1
                if self.fracs[-1][1] == 2:  # the denominator closed: close the wrapper
                    self.out.append(("close", ")"))
                    self.depth -= 1
                    self.fracs.pop()

    def _close_run(self) -> None:
        out = self.out
        lead = next((k for k, t in enumerate(out) if t[0] not in ("close", "eq")), len(out))
        body = out[lead:]
        while body and body[-1][0] in ("open", "eq", "op"):
            body.pop()
        if body and not self.symbolic and body[0][1] not in "*/×÷·^" and any(k == "num" for k, _ in body):
            parts: list = [[]]
            for t in body:
                parts.append([]) if t[0] == "eq" else parts[-1].append(t)
            self.runs.append(self._mark_fragments(parts, lead == 0))
        self._start_run()

    def _mark_fragments(self, parts: list, starts_at_first: bool) -> list:
        """None for a first part that goes on from a symbol ("x-100", "f(2)", "45y - 100") and a last
        part that goes on into one ("34x", "2 + x")."""
        first, last, tokens = self.indices[0], self.indices[-1], self.tokens
        before, spaced = self._neighbour(first - 1, -1)
        binary = tokens[first][0] == "op" and first + 1 < len(tokens) and tokens[first + 1][0] == "space"
        if starts_at_first and _attached(before) and (not spaced or binary):
            parts[0] = None
        after, spaced = self._neighbour(last + 1, 1)
        glued = not spaced and tokens[last][0] != "close"
        if _attached(after) and (glued or self.out[-1][0] == "op"):
            parts[-1] = None
        return parts

    def _neighbour(self, i: int, step: int) -> tuple[tuple[str, str] | None, bool]:
        """The first token from i in direction step that is not a space, and whether a space came first."""
        spaced, tokens = False, self.tokens
        while 0 <= i < len(tokens) and tokens[i][0] == "space" and "\n" not in tokens[i][1]:
            i, spaced = i + step, True
        return (tokens[i] if 0 <= i < len(tokens) else None), spaced


class _Unreadable(Exception):
    pass


class _Parser:
    """Exact evaluation of one part, by recursive descent:
    expr := term (+|- term)*   term := unary (*|×|·|/|÷ unary)*   unary := (+|-) unary | power
    power := atom (^ unary)?   atom := number | ( expr ). Counts the binary operators it applies."""

    def __init__(self, part: list[tuple[str, str]]):
        self.part, self.pos, self.binary = part, 0, 0

    def peek(self) -> str | None:
        return self.part[self.pos][1] if self.pos < len(self.part) else None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.part):
            raise _Unreadable
        self.pos += 1
        return self.part[self.pos - 1]

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            sign = self.take()[1]
            right = self.term(depth)
            value, self.binary = (value + right if sign == "+" else value - right), self.binary + 1
        return value

    def term(self, depth: int) -> Fraction:
        value = self.unary(depth)
        while self.peek() in ("*", "×", "·", "/", "÷", "frac/"):
            op = self.take()[1]
            right = self.unary(depth)
            if op in ("/", "÷", "frac/") and right == 0:
                raise _Unreadable
            value = value * right if op in "*×·" else value / right
            self.binary += op != "frac/"  # \frac{1}{2} is a value; its parts may still hold operators
        return value

    def unary(self, depth: int) -> Fraction:
        if depth > _MAX_DEPTH:
            raise _Unreadable
        if self.peek() in ("+", "-"):
            return -self.unary(depth + 1) if self.take()[1] == "-" else self.unary(depth + 1)
        return self.power(depth)

    def power(self, depth: int) -> Fraction:
        base = self.atom(depth)
        if self.peek() != "^":
            return base
        self.take()
        exponent = self.unary(depth + 1)
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if exponent.denominator != 1 or bits * abs(exponent) > _MAX_POWER_BITS or (base == 0 and exponent < 0):
            raise _Unreadable  # a root, or a power too large to be a written answer
        self.binary += 1
        return base ** int(exponent)

    def atom(self, depth: int) -> Fraction:
        kind, tok = self.take()
        if kind == "num" and len(tok) <= _MAX_DIGITS:
            return Fraction(re.sub(r"[^\d.]", "", tok))  # drop the thousands separators
        if kind == "open" and depth <= _MAX_DEPTH:
            value = self.expr(depth + 1)
            if self.take()[0] == "close":
                return value
        raise _Unreadable


def _evaluate(part: list[tuple[str, str]] | None) -> tuple[Fraction, bool, Fraction] | None:
    """(value, is an expression, rounding tolerance) of one part of a run; None if it is not arithmetic.

    A part is an expression when it has a binary operator; a plain number, a signed one and a
    fraction of two integers ("3/4", \frac{3}{4}) are values. A decimal written with d places may
    be a rounding: its tolerance is half a unit in the last place ("0.33" for 1/3).
    """
    if not part or len(part) > _MAX_TOKENS:
        return None
    parser = _Parser(part)
    try:
        value = parser.expr(0)
    except _Unreadable:
        return None
    if parser.pos != len(part):
        return None
    binary = parser.binary
    if [t for _, t in part[-2:-1]] == ["/"] and [k for k, _ in part[-3:]] == ["num", "op", "num"] and len(part) <= 4:
        binary = 0  # "3/4", "-3/4": a fraction is a value
    numbers = [t for k, t in part if k == "num"]
    places = len(numbers[0].partition(".")[2]) if len(numbers) == 1 and not binary else 0
    return value, binary > 0, Fraction(1, 2 * 10**places) if places else Fraction(0)


def _agree(a: tuple[Fraction, bool, Fraction], b: tuple[Fraction, bool, Fraction]) -> bool:
    return abs(a[0] - b[0]) <= max(a[2], b[2])


def _agree(a: tuple[Fraction, bool, Fraction], b: tuple[Fraction, bool, Fraction]) -> bool:
    return abs(a[0] - b[0]) <= max(a[2], b[2])


def _show(run: list) -> str:
    return " = ".join("..." if part is None else " ".join(t for _, t in part) for part in run)[:80]


def _arithmetic_refusal(text: str, gold_is_number: bool) -> str | None:
    """Rules 3 and 4 of strict_refusal on `text`; None if it passes."""
    values, plain, runs = [], False, _runs(text)
    if gold_is_number and len(runs) > _MAX_RUNS:
        return f"{len(runs)} numbers or expressions, more than one final value"
    runs = runs[-_MAX_RUNS:]  # the value is at the end; this bounds the cost of a degenerate answer
    for run in runs:
        parts = [v for v in map(_evaluate, run) if v is not None]
        if any(not _agree(a, parts[0]) for a in parts):
            return f"'{_show(run)}' sets unequal values equal"
        if parts:
            values.append(parts[0])
            plain = plain or any(not is_expression for _, is_expression, _ in parts)
    if not gold_is_number or not values:
        return None
    if not plain:
        return f"an expression with no value written ('{_show(runs[-1])}')"
    if any(not _agree(a, values[-1]) for a in values):
        return f"several values ({', '.join(str(v[0]) for v in values[:4])})"
    return None


def strict_refusal(
    completion: str,
    span: str,
    gold: str | None,
    *,
    tail: str | None = None,
    pattern: re.Pattern | None = None,
    key=answer_key,
    boxes: bool = True,
) -> str | None:
    """Why the answer a reward read is not one final value, or None if it is one. Pure; never raises.

    `span` is what the reward read (the "Final answer:" line, a box, a pattern's group), `tail`
    (default: span) the part that holds the value, `key` what two final answers must share, `boxes`
    whether the reward reads boxes at all.
    Refused (docs/rewards.md, "The strict answer rule"):
      1. several final answers: after the last </think>, the "Final answer:" lines (else the boxes,
         or `pattern`'s matches) that are not the span's answer by `key` or written inside it,
         unless the gold itself lists several parts ("(2, 2), (6, 2)");
      2. a hedge ("or", "either", "maybe", \\pm) or a negation ("not", "n't", \\neq) in the span
         or in any final answer, where the gold has none;
      3. a chain of `=` with unequal sides ("3 - 7 - 7 = 3");
      4. where the gold is one number: an expression with no value written ("0 + 4", "3 - 7 - 7"),
         or several different numbers ("6, 5").
    """
    gold = gold or ""
    answers = final_answers(completion, pattern, boxes=boxes)
    if not _SEVERAL.search(gold):
        span_key, span_text = key(span), normalize_answer(span)
        other = next((a for a in dict.fromkeys(answers) if not _same_answer(a, span_key, span_text, key)), None)
        if other is not None:
            return f"several final answers ({other[:40]!r}, {span[:40]!r})"
    for what, regex in (("a hedge", _HEDGE), ("a negation", _NEGATION)):
        found = next((w for a in (span, *answers) if (w := _has(regex, a)) is not None), None)
        if found is not None and _has(regex, gold) is None:
            return f"{what} ({found!r}) where the gold has none"
    return _arithmetic_refusal(span if tail is None else tail, parse_exact(gold) is not None)


def answer_number(answer: str) -> Fraction | None:
    """The one number an answer writes: `parse_exact`'s reading, else the value of its only
    arithmetic run that ends in a plain number ("m = 62" -> 62, "2 + 2 = 4 apples" -> 4); else None."""
    value = parse_exact(answer)
    if value is not None:
        return value
    values = {v[0] for run in _runs(answer) if (v := _evaluate(run[-1])) is not None and not v[1]}
    return values.pop() if len(values) == 1 else None


def run_start(text: str, index: int) -> int:
    """Where the arithmetic run that holds text[index] begins: "is 0 + 4." at the 4 -> at the 0."""
    start, right = index, "num"  # the kind of the token to the right of the one looked at
    for m in reversed(list(_TOKEN.finditer(text, max(0, index - 2000), index))):
        kind = m.lastgroup
        if kind == "space" and "\n" not in m.group():
            continue
        if kind in ("other", "space") or (kind in ("num", "close") and right in ("num", "open")):
            break
        start, right = m.start(), kind
    return start


def answer_sentence(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence, within its line, that holds text[start:end]: from after the last ". " (or "!",
    "?") before it to the first one after it."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = len(text) if (nl := text.find("\n", end)) < 0 else nl
    begin = line_start
    for m in _SENTENCE_END.finditer(text, line_start, start):
        begin = m.end()
    m = _SENTENCE_END.search(text, end, line_end)
    return begin, (line_end if m is None else m.end())
