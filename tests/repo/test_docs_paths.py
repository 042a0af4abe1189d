"""The docs name only files that exist: every path and `repro_train.*` module that docs/*.md, the READMEs and the
recipes' comments mention resolves in the tree.

After files move, a page that still says `trainer/folds.py` or `repro/probe/kernels.py` sends a reader nowhere, and
nothing else fails. A path may be written in full (`repro_train/trainer/loop.py`), from a folder a reader recognises
(`trainer/loop.py`, `probe/naive.py`) or relative to the page (`spec/repro-method.md`): it must be the end of a real
path. `{a,b}` alternatives and `*` are expanded."""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

ROOTS = ("repro_train", "tests", "docs", "bench", "launch", "recipes", "experiments", "tools")
"""The folders whose files the docs talk about; files at the repository's top level count too."""

SOURCE_EXT = (".py", ".md", ".yaml", ".yml", ".sh", ".sbatch", ".jinja")
DATA_EXT = (".png", ".json", ".jsonl", ".log", ".csv", ".txt", ".tgz")
"""A token ending in one of these is a file name. A source name counts bare (`loop.py`) or under one of our folders
(`trainer/loop.py`); a data name only under a top folder (`bench/results/.../bench_step.json`): `data/train.jsonl`,
`eval/summary.json` and `metrics.jsonl` are what a command writes."""

NOT_OURS = {
    "verl/trainer/ppo/core_algos.py": "verl's, cited in algorithms.md",
    "verl/trainer/ppo/ray_trainer.py": "the authors' verl fork, cited in repro.md",
    "core_algos.py": "the same",
    "path/to/file.py": "a placeholder in a reward name",
    "file.py": "the same ('file.py:fn')",
    "my_rewards.py": "the custom-reward example's own file",
    "rewards/my_rewards.py": "the same, given as a path",
    "coin_reward.py": "written by bench/bench_step.py beside its model at run time",
    "sft_config.yaml": "written by repro-train sft into the model folder it saves",
    "A.md": "written by bench/thinker_device.sh into $OUT",
    "B.md": "the same",
}
"""Names of files that are not in this repository, on purpose."""

COMPONENT = r"(?:[\w\-*]|\{[\w\-.,]*\})+"
PATH = re.compile(
    rf"(?<![\w/.\-{{}}*$<~])((?:\.\./|\./)*{COMPONENT}(?:/(?:[\w\-.*]|\{{[\w\-.,]*\}})+)*(?:/(?![\w<])|\.[A-Za-z]+\b))"
)
MODULE = re.compile(r"(?<![\w.])(repro_train(?:\.\w+)+)")
BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")


def pages() -> list[Path]:
    repo = Path(REPO)
    out = sorted((repo / "docs").rglob("*.md")) + [repo / "README.md"]
    out += sorted(p for root in ("bench", "launch", "recipes") for p in (repo / root).rglob("README.md"))
    return out + sorted((repo / "recipes").rglob("*.yaml"))


@functools.lru_cache(maxsize=1)
def tree() -> tuple[set[str], set[str]]:
    """(every file and folder as a path from the repository, '/'-separated; every end of one: `loop.py`,
    `trainer/loop.py`, `repro_train/trainer/loop.py`, ...)."""
    names = {f for f in os.listdir(REPO) if os.path.isfile(os.path.join(REPO, f))}
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(REPO, root)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
            rel = os.path.relpath(dirpath, REPO).replace(os.sep, "/")
            names |= {rel} | {f"{rel}/{f}" for f in filenames}
    ends = {"/".join(n.split("/")[i:]) for n in names for i in range(n.count("/") + 1)}
    return names, ends


def text_of(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of what a reader reads: every line of a page, the comments of a recipe."""
    lines = page.read_text().splitlines()
    if page.suffix == ".yaml":
        return [(i, line.partition("#")[2]) for i, line in enumerate(lines, 1) if "#" in line]
    return list(enumerate(lines, 1))


def expand(token: str) -> list[str]:
    """`a/{b,c}.py` -> [`a/b.py`, `a/c.py`]."""
    m = BRACES.search(token)
    if m is None:
        return [token]
    return [x for alt in m.group(1).split(",") for x in expand(token[: m.start()] + alt + token[m.end() :])]


def candidates(line: str, folder_names: set[str]) -> list[str]:
    """The tokens of `line` that name one of our files or folders."""
    out = []
    for m in PATH.finditer(line):
        token = m.group(1).split("#")[0]
        while token.startswith(("./", "../")):
            token = token.partition("/")[2]
        first = token.split("/")[0]
        if token.endswith("/"):
            if first in folder_names:
                out.append(token.rstrip("/"))
        elif token.endswith(SOURCE_EXT):
            if "/" not in token or first in folder_names:
                out.append(token)
        elif token.endswith(DATA_EXT) and first in ROOTS:
            out.append(token)
    return out


def resolves(token: str, names: set[str], ends: set[str]) -> bool:
    """`token` is a path in the tree (`names`), or the end of one (`ends`); a `*` must match something."""
    if "*" in token:
        return any(fnmatch.fnmatch(n, token) or fnmatch.fnmatch(n, "*/" + token) for n in names)
    return token in ends


def module_exists(dotted: str) -> bool:
    """`repro_train.a.b` is a module, or `b` is a name written in module `repro_train.a`."""

    def source(parts: list[str]) -> Path | None:
        base = Path(REPO, *parts)
        for f in (base.with_suffix(".py"), base / "__init__.py"):
            if f.is_file():
                return f
        return None

    parts = dotted.split(".")
    if source(parts) is not None:
        return True
    parent = source(parts[:-1])
    return parent is not None and re.search(rf"\b{parts[-1]}\b", parent.read_text()) is not None


def stale_mentions() -> list[str]:
    names, ends = tree()
    folder_names = {n.rpartition("/")[2] for n in names if os.path.isdir(os.path.join(REPO, n))}
    bad = []
    for page in pages():
        rel = os.path.relpath(page, REPO)
        for n, line in text_of(page):
            for token in candidates(line, folder_names):
                for path in expand(token):
                    if path not in NOT_OURS and not resolves(path, names, ends):
                        bad.append(f"{rel}:{n}: {path}")
            bad += [f"{rel}:{n}: {m}" for m in MODULE.findall(line) if not module_exists(m)]
    return bad


def test_docs_name_only_files_that_exist():
    bad = stale_mentions()
    assert not bad, (
        "paths or modules the docs name that do not exist (fix the page, or list a file that is not ours "
        "in NOT_OURS):\n" + "\n".join(bad)
    )


def test_the_readme_lists_every_docs_page():
    """The README's documentation table links every page of docs/."""
    readme = Path(REPO, "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    pages_ = {p.relative_to(REPO).as_posix() for p in Path(REPO, "docs").rglob("*.md")}
    assert not pages_ - linked, f"add these pages to the README's documentation table: {sorted(pages_ - linked)}"


@pytest.mark.parametrize(
    "line, stale",
    [
        ("the fold hook (`trainer/folds.py`)", ["trainer/folds.py"]),  # moved to trainer/process_fold.py
        ("the fold hook (`trainer/process_fold.py`)", []),
        ("see [the spec](spec/repro-method.md#cost)", []),  # relative to docs/
        ("`recipes/toy/{grpo,ppo,nope}_authors.yaml`", ["recipes/toy/nope_authors.yaml"]),
        ("python -m repro_train.commands.config_doc; repro_train.trainer.cli", ["repro_train.trainer.cli"]),
        ("`repro_train/tasks/` and `repro_train/nothing/`", ["repro_train/nothing/"]),
        ("writes `summary.json`, `data/train.jsonl` and `runs/x/config.yaml`", []),  # outputs, not our files
        ("logs `rollout/logprob_gap/mean` and `repro/skipped/<reason>`", []),  # metric names
        ("`bench/results/2026-11-21-h200-graph/bench_step.json`, `docs/img/nope.png`", ["docs/img/nope.png"]),
    ],
)
def test_the_check_catches_what_it_should(tmp_path, monkeypatch, line, stale):
    """The check flags a moved file, a wrong alternative and a missing module, and passes real and output paths."""
    page = tmp_path / "page.md"
    page.write_text(line + "\n")
    monkeypatch.setattr(sys.modules[__name__], "pages", lambda: [page])
    got = [b.split(": ", 1)[1] for b in stale_mentions()]
    assert [g.rstrip("/") for g in got] == [s.rstrip("/") for s in stale]
