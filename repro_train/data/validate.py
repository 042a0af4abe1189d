"""Data checks before any model loads: every bad row is refused (naming the file, the line or row
and the field) or, with `data.on_bad_row: skip`, skipped and counted.

    report = DataReport(cfg.source, cfg.on_bad_row)
    rows = read_json_lines(path, report, cfg.max_row_bytes)   # [(where, row)], where = "f.jsonl line 7"
    for where, row in rows:
        if check_row(row, where, cfg, report, answer_check) ...
    print(report.summary())                             # "data: 1998 rows used; skipped: 2 (null_answer 2)"

Prompts over a length limit are dropped and counted whatever data.on_bad_row says. Every check and the
reason each problem is counted under: docs/reliability.md, section 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..core.typed_config import ConfigError
from ..rewards.extract import parse_number
from ..rewards.mathverify import parse_gold


@dataclass
class DataReport:
    """Counts of skipped rows per reason, and the first message of each reason."""

    source: str
    on_bad_row: str = "error"
    rows_read: int = 0
    rows_used: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    """Good rows left out by a length limit, per reason (too_long, too_long_for_model): always dropped, never an
    error."""

    def bad(self, reason: str, where: str, what: str) -> None:
        """Record a bad row; raises ConfigError when data.on_bad_row = 'error'."""
        msg = f"{where}: {what}"
        if self.on_bad_row == "error":
            raise ConfigError(f"{msg} [{reason}]; fix the row, or set data.on_bad_row=skip to skip and count such rows")
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.first.setdefault(reason, msg)

    def drop(self, reason: str, where: str, what: str) -> None:
        """Record a row left out by a length limit (whatever data.on_bad_row says)."""
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self.first.setdefault(reason, f"{where}: {what}")

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def summary(self) -> str:
        line = f"data: {self.rows_used} of {self.rows_read} rows of {self.source} used"
        if self.counts:
            line += (
                f"; skipped {self.skipped} bad row(s): {', '.join(f'{k} {v}' for k, v in sorted(self.counts.items()))}"
            )
        if self.drops:
            parts = ", ".join(f"{k} {v}" for k, v in sorted(self.drops.items()))
            line += f"; dropped {self.dropped} row(s) over a length limit: {parts}"
        line += "".join(f"\n  first {k}: {m}" for k, m in sorted(self.first.items()))
        return line

    def metrics(self) -> dict[str, float]:
        """What the first logged step records: data/rows_used, data/skipped/<reason>, data/dropped/<reason>."""
        out = {"data/rows_used": float(self.rows_used), "data/skipped_rows": float(self.skipped)}
        out.update({f"data/skipped/{k}": float(v) for k, v in sorted(self.counts.items())})
        if self.drops:
            out["data/dropped_rows"] = float(self.dropped)
            out.update({f"data/dropped/{k}": float(v) for k, v in sorted(self.drops.items())})
        return out


# ----------------------------------------------------------------------------------------------
# reading a local file line by line
# ----------------------------------------------------------------------------------------------


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise ConfigError(f"'data.source': file {path} does not exist")
    if os.path.getsize(path) == 0:
        raise ConfigError(f"'data.source': file {path} is empty (0 bytes); it needs one row per line")


def read_json_lines(path: str, report: DataReport, max_row_bytes: int) -> list[tuple[str, dict]]:
    """Rows of a JSON-lines file, each with its 'file line N'; bad lines go to `report`."""
    check_file(path)
    rows = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            where = f"{path} line {n}"
            if not raw.strip():
                continue
            report.rows_read += 1
            if len(raw) > max_row_bytes:
                report.bad(
                    "too_large", where, f"the line is {len(raw)} bytes, over data.max_row_bytes = {max_row_bytes}"
                )
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                report.bad(
                    "invalid_utf8",
                    where,
                    f"not valid UTF-8 (byte {e.start} of the line: {raw[e.start : e.start + 4]!r})",
                )
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                report.bad("invalid_json", where, f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(row, dict):
                report.bad("not_object", where, f"a JSON {type(row).__name__}, not an object with fields")
                continue
            rows.append((where, row))
    if report.rows_read == 0:
        raise ConfigError(f"'data.source': file {path} has no rows (only blank lines)")
    return rows


def read_json(path: str, report: DataReport, max_row_bytes: int) -> list[tuple[str, dict]]:
    """A .json file: one array of objects (rows named 'row i'), else JSON lines."""
    check_file(path)
    with open(path, "rb") as fh:
        head = fh.read(1024).lstrip()
    if not head.startswith(b"["):
        return read_json_lines(path, report, max_row_bytes)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"'data.source': {path} is not a valid JSON array: {e}") from None
    rows = []
    for i, row in enumerate(data):
        where = f"{path} row {i}"
        report.rows_read += 1
        if not isinstance(row, dict):
            report.bad("not_object", where, f"a JSON {type(row).__name__}, not an object with fields")
        elif len(json.dumps(row)) > max_row_bytes:
            report.bad("too_large", where, f"the row is over data.max_row_bytes = {max_row_bytes}")
        else:
            rows.append((where, row))
    return rows


# ----------------------------------------------------------------------------------------------
# the fields of one row
# ----------------------------------------------------------------------------------------------


def check_row(row: dict, where: str, cfg, report: DataReport, answer_check=None) -> bool:
    """True when the row's question (or prompt) and answer are usable; else recorded in `report`."""
    key = cfg.prompt_field if row.get(cfg.prompt_field) is not None else cfg.question_field
    if key not in row and cfg.prompt_field not in row:
        report.bad("missing_question", where, f"no field '{cfg.question_field}' (nor '{cfg.prompt_field}')")
        return False
    q = row.get(key)
    if q is None:
        report.bad("null_question", where, f"field '{key}' is null")
        return False
    if not isinstance(q, str):
        report.bad("question_not_text", where, f"field '{key}' is a {type(q).__name__}, not text")
        return False
    if not q.strip():
        report.bad("empty_question", where, f"field '{key}' is empty")
        return False
    a_key = cfg.answer_field
    if a_key not in row:
        report.bad("missing_answer", where, f"no field '{a_key}' (rows without a gold answer always score 0)")
        return False
    a = row[a_key]
    if a is None:
        report.bad("null_answer", where, f"field '{a_key}' is null (rows without a gold answer always score 0)")
        return False
    if isinstance(a, (dict, list, bool)):
        report.bad("answer_not_text", where, f"field '{a_key}' is a {type(a).__name__}, not text or a number")
        return False
    if not str(a).strip():
        report.bad("empty_answer", where, f"field '{a_key}' is empty")
        return False
    if answer_check is not None:
        why = answer_check(str(a))
        if why is not None:
            report.bad("unparsable_answer", where, f"field '{a_key}' = {str(a)[:60]!r}: {why}")
            return False
    return True


def answer_checker(reward_cfg):
    """fn(answer) -> None if every correctness reward of the recipe can read the gold answer, else
    why not. Built-ins only: numeric (a number), math_verify (math-verify parses it); custom
    functions are not asked (they may accept anything)."""
    checks = []
    for f in reward_cfg.functions:
        if f.correctness is False:
            continue
        if f.name == "numeric":
            checks.append(
                lambda a: None if parse_number(a) is not None else "reward 'numeric' cannot read it as a number"
            )
        elif f.name == "math_verify":
            checks.append(_math_verify_check)
    if not checks:
        return None

    def check(answer: str) -> str | None:
        for c in checks:
            why = c(answer)
            if why is not None:
                return why
        return None

    return check


def _math_verify_check(answer: str) -> str | None:
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        ok = bool(parse_gold(answer))
    except Exception:  # noqa: BLE001 - any parser failure means the gold cannot be used
        ok = False
    return None if ok else "reward 'math_verify' cannot parse it"
