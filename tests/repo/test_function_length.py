"""No function of the package runs over 60 lines (docstring included): a longer one is two
functions. The Triton kernels are exempt: a kernel is one launch, and splitting it into device
functions would not make it easier to read."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "repro_train"
MAX_LINES = 60
EXEMPT = {"repro/probe/triton/jit.py"}


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """(name, lines) of every function or method in `source` longer than `limit` lines."""
    return [
        (n.name, n.end_lineno - n.lineno + 1)
        for n in ast.walk(ast.parse(source))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > limit
    ]


def test_no_function_over_60_lines():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in EXEMPT:
            found += [f"repro_train/{rel}: {name} ({n} lines)" for name, n in long_functions(path.read_text())]
    assert not found, "split these into named steps:\n" + "\n".join(found)


def test_the_count_includes_nested_functions_and_methods():
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    method = "\n".join("    " + line for line in body.split("\n"))
    src = f"def f():\n{body}\n\nclass C:\n    def g(self):\n{method}\n        return 1\n"
    assert long_functions(src) == [("g", 61)]  # f has 60 lines (allowed), g 61
    assert long_functions(src, limit=59) == [("f", 60), ("g", 61)]
