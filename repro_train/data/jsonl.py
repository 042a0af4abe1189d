"""Reading JSONL files row by row, keeping line numbers for error messages.

for line_no, row, error in iter_jsonl(path):   # row: a dict, or None with `error` set
"""

from __future__ import annotations

import json
from collections.abc import Iterator


def iter_jsonl(path: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, object, None) for each non-blank line that is a JSON object, or
    (line number, None, why) for one that is not, so callers can report or skip bad rows."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, None, f"not valid JSON ({e.msg})"
                continue
            if not isinstance(row, dict):
                yield n, None, f"expected a JSON object, got {type(row).__name__}"
                continue
            yield n, row, None
