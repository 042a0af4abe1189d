"""The recipe key reference: one markdown table per config section, built from the attribute
docstrings of the config dataclasses: `repro_train/config.py`, and the sections that live beside their
components (`repro/config.py` for `repro`, `repro/probe/settings.py` for `repro.probe`, `shaping/params.py`
for `shaping`, `tasks/arithmetic.py` for `data.toy`). docs/recipes.md ends with it, and a test keeps the two equal.

    python -m repro_train.commands.config_doc                          # print the tables
    python -m repro_train.commands.config_doc --write docs/recipes.md  # replace the generated part of the page

Each row is (dotted key, type, default, meaning). Keys are written as they are typed on the command
line (`repro.alpha=0.2`), defaults as they are written in YAML. A list of sub-sections (like
`reward.functions`) also gets one row per entry key, as `reward.functions[].name`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

import yaml

from ..config import Config
from ..core.typed_config import describe_type, iter_fields, to_dict

MARKER = (
    "<!-- Generated from the docstrings in repro_train/config.py by "
    "`python -m repro_train.commands.config_doc --write docs/recipes.md`: edit those, not this part. -->"
)
"""First line of the generated part; --write replaces everything from here to the end of the page."""


def _cell(text: str) -> str:
    """A table cell: '|' would end the cell, even inside backticks."""
    return text.replace("|", "\\|")


def _entry_class(tp):
    """The dataclass of a `tuple[SomeConfig, ...]` field, else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (tuple, list) and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def yaml_value(value) -> str:
    """`value` as written in a recipe: plain YAML flow style, or JSON (valid YAML) for multi-line strings."""
    data = to_dict(value)
    text = yaml.safe_dump(data, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10**6)
    text = text.removesuffix("\n").removesuffix("\n...").strip()
    return json.dumps(data) if "\n" in text else text


def _rows(cls, prefix: str):
    for key, tp, default, doc in iter_fields(cls, prefix):
        entry = _entry_class(tp)
        kind = f"list of entries (keys `{key}[].*` below)" if entry else describe_type(tp)
        kind = "mapping" if tp is dict else kind
        yield f"| `{key}` | {_cell(kind)} | `{_cell(yaml_value(default))}` | {_cell(doc)} |"
        if entry:
            yield from _rows(entry, key + "[].")


def recipe_markdown(root=Config) -> str:
    """The generated part of docs/recipes.md: MARKER, then a table per top-level section of `root`."""
    hints = typing.get_type_hints(root)
    out = [MARKER]
    for f in dataclasses.fields(root):
        section = hints[f.name]
        summary = " ".join((section.__doc__ or "").split())
        out += ["", f"### `{f.name}`", "", summary, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out += list(_rows(section, f.name + "."))
    return "\n".join(out) + "\n"


def write(path: str) -> None:
    """Replace the generated part of `path` (from MARKER on), keeping the hand-written head."""
    page = Path(path)
    text = page.read_text() if page.exists() else ""
    head = text.split(MARKER)[0] if MARKER in text else (text.rstrip("\n") + "\n\n" if text else "")
    page.write_text(head + recipe_markdown())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m repro_train.commands.config_doc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--write", metavar="PAGE", help="replace the generated part of PAGE (docs/recipes.md)")
    args = p.parse_args(argv)
    if args.write:
        write(args.write)
    else:
        sys.stdout.write(recipe_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
