"""The scripts outside the package (bench/, experiments/, tools/) import names that exist.

They run on the GPU machine or by hand, so a renamed function breaks them silently until then:
bench/check_vllm.py imported `eos_ids` from repro_train.trainer.models after it had moved to
repro_train.models.forward, and failed only on the device. Every `from repro_train... import name` in
them, at module top or inside a function, must resolve here.
"""

from __future__ import annotations

import ast
import importlib
import os

import pytest

from tests.helpers import REPO

FOLDERS = ("bench", "experiments", "tools")


def repro_imports(path: str) -> list[tuple[int, str, str]]:
    """(line, module, name) of every `from repro_train[.x] import name` in the file, nested ones included."""
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("repro_train"):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def scripts() -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, f), REPO)
        for folder in FOLDERS
        for root, _, files in os.walk(os.path.join(REPO, folder))
        for f in files
        if f.endswith(".py")
    )


def test_the_scan_finds_what_it_should(tmp_path):
    f = tmp_path / "s.py"
    f.write_text(
        "import os\nfrom repro_train.models.forward import eos_ids, pack\ndef g():\n    from repro_train import cli\n"
    )
    assert repro_imports(str(f)) == [
        (2, "repro_train.models.forward", "eos_ids"),
        (2, "repro_train.models.forward", "pack"),
        (4, "repro_train", "cli"),
    ]
    assert "bench/check_vllm.py" in scripts() and "experiments/smollm2_repro.py" in scripts()


@pytest.mark.parametrize("script", scripts())
def test_every_repro_train_import_resolves(script):
    missing = []
    for line, module, name in repro_imports(os.path.join(REPO, script)):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:  # a submodule imported by name: from repro_train.repro import probe
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{script}:{line}: {module} has no {name}")
    assert not missing, "\n".join(missing)
