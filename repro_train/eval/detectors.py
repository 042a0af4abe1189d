"""Pattern-based detectors of overthinking: re-checks and backtracks (docs/toy-task.md).

A response is split into paragraphs at blank lines; each paragraph gets at most one label:

    classify_paragraph(p)  ->  "backtrack" | "recheck" | None

A paragraph that matches any BACKTRACK pattern is a backtrack (a re-check that finds an error is a
backtrack); otherwise one that matches any RECHECK pattern is a recheck. Matching is
case-insensitive. The patterns cover the templates of the toy task (repro_train/tasks/arithmetic.py)
and of the thinking traces (repro_train/tasks/thinking/phrases.py: hesitations that ask "Wait, is ... really
...?", "Alternatively, ..." second solutions, "just to be sure", "I miscalculated", ...) and common
phrasings of real models; on free text they are a heuristic, not a parser.
"""

from __future__ import annotations

import re

_APOS = "['\u2019]"  # straight or curly apostrophe

RECHECK_PATTERNS = (
    r"\bdouble[- ]?check",  # let me double-check, to double check
    r"\bre-?check",
    r"\bverif(?:y|ying|ied|ication)\b",  # let me verify
    r"\blet me (?:just )?(?:check|confirm|make sure|recalculate|recompute)\b",
    r"\bcheck(?:ing)? (?:it |this |that )?again\b",
    r"\bsanity[- ]check",
    r"\bchecks out\b",
    r"\bmake sure\b",
    r"\bconfirm(?:s|ed|ing|ation)?\b",  # "to confirm", "let me confirm"
    r"\bjust to be (?:sure|safe|certain)\b",
    r"\b(?:wait|hmm+)\b[^.!?\n]*\?",  # a hesitation that asks: "Wait, is 7 * 8 really 56?"
    r"\b(?:is|was|did|does|do|am)\b[^.!?\n]*\b(?:right|correct|really)\b[^.!?\n]*\?",  # "Is that right?"
    r"\bthink\b[^.!?\n]*\bagain\b",  # "let me think about that again"
    r"\b(?:go|going|went|run|running) (?:back )?(?:over|through)\b[^.!?\n]*\b(?:again|once more)\b",
    r"\balternatively\b",  # a second solution: one re-check for its opening paragraph
    r"\b(?:another|a different) (?:way|method|approach)\b",
    r"\b(?:plug|plugging|substitut\w*)\b[^.!?\n]*\bback\b",  # "plugging x = 8 back in"
)
"""A paragraph that re-verifies earlier work."""
BACKTRACK_PATTERNS = (
    rf"\b(?:that|this|it)(?:{_APOS}s| is| was)\s+(?:wrong|incorrect|not (?:right|correct))\b",
    rf"\b(?:that|this|it) (?:isn{_APOS}t|wasn{_APOS}t|can{_APOS}t be) (?:right|correct)\b",
    rf"\bi(?: have|{_APOS}ve)? made (?:a |an )?(?:mistake|error)",
    r"\bmy (?:mistake|bad|error)\b",
    r"\bi was wrong\b",
    r"\blet me (?:redo|correct|fix|reconsider|rethink|start over)\b",
    r"\bwait,? no\b",
    r"\bno,? wait\b",
    rf"\bactually\b[^.!?\n]*(?:\bnot\b|n{_APOS}t\b|\bwrong\b)",  # "Actually, it is 12, not 13."
    r"\bscratch that\b",
    r"\boops\b",
    r"\bhmm+,? no\b",
    rf"\b(?:that|this|it) (?:does not|doesn{_APOS}t) (?:look|seem) (?:right|correct)\b",
    r"\bi (?:miscalculated|miscounted|misread|messed up|slipped)\b",
    r"\bi got\b[^.!?\n]*\bwrong\b",  # "I got that step wrong"
    r"\bshould (?:be|have been)\b[^.!?\n]*\bnot\b",  # "that should be 36, not 38"
)
"""A paragraph that retracts earlier work."""

_RECHECK = re.compile("|".join(RECHECK_PATTERNS), re.IGNORECASE)
_BACKTRACK = re.compile("|".join(BACKTRACK_PATTERNS), re.IGNORECASE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs of `text` (split at lines that are empty or whitespace only)."""
    return [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]


def classify_paragraph(paragraph: str) -> str | None:
    """ "backtrack", "recheck" or None; backtrack wins when both match."""
    if _BACKTRACK.search(paragraph):
        return "backtrack"
    if _RECHECK.search(paragraph):
        return "recheck"
    return None


def count_rechecks(text: str) -> int:
    """Paragraphs that re-verify earlier work without retracting it."""
    return sum(classify_paragraph(p) == "recheck" for p in paragraphs(text))


def count_backtracks(text: str) -> int:
    """Paragraphs that retract earlier work."""
    return sum(classify_paragraph(p) == "backtrack" for p in paragraphs(text))
