"""The package's layers: a module imports only its own layer and the layers below; no two
packages import each other, directly or round a loop; imports between the package's own modules
sit at module top (a reader sees every dependency in the first lines of a file).

Adding a module: put it in the folder of its layer; a new folder or root module needs an entry in LAYERS."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "repro_train"

LAYERS = (
    ("core",),  # 0 typed config machinery, registry, text (decoding, EOS, end-of-thinking), seeds, timing, redaction
    ("algos", "rewards", "tasks", "models"),  # 1 estimators and losses, outcome checks, tasks, the model forward
    ("repro", "shaping", "data", "rollout"),  # 2 RePro and its probe, length shapers, datasets, rollout engines
    ("config",),  # 3 the recipe
    ("trainer", "eval"),  # 4 the RL loop, the evaluation runner
    ("commands",),  # 5 one module per console command
    ("cli", "__main__", "testing", ""),  # 6 the entry point, test models; "": repro_train/__init__.py
)

LAZY_ALLOWED = {("repro.probe.triton.launch", "repro.probe.triton.jit"), ("models.logprobs", "models.logprobs_triton")}
"""(importer, imported) pairs that may import inside a function: the Triton kernels module imports
triton, which is slow to import and absent on some machines."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module relative to repro_train, at module top) for every import of the package's
    own modules in `path`; `from X import y` counts as X.y (y may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "repro_train":
                target = node.module.partition(".")[2]
            else:
                continue
            targets = [f"{target}.{a.name}".strip(".") for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.partition(".")[2] for a in node.names if a.name.split(".")[0] == "repro_train"]
        else:
            continue
        out += [(t, id(node) in top) for t in targets]
    return out


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The layer of the longest entry that is `module` or a package above it."""
    best, best_len = None, -1
    for i, entries in enumerate(layers):
        for e in entries:
            if (module == e or (e and module.startswith(e + "."))) and len(e) > best_len:
                best, best_len = i, len(e)
    return best


def edges() -> list[tuple[str, str, bool]]:
    """(importer, imported, at top) over the whole package, imported names resolved to modules."""
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        for target, at_top in imports(path):
            while target not in modules and "." in target:  # `from .pkg import name`: the module is pkg
                target = target.rpartition(".")[0]
            if target in modules:
                out.append((module_name(path), target, at_top))
    return out


def upward(edge_list, layers=LAYERS) -> list[str]:
    return [
        f"{a} (layer {layer_of(a, layers)}) imports {b} (layer {layer_of(b, layers)})"
        for a, b, _ in edge_list
        if layer_of(b, layers) > layer_of(a, layers)
    ]


def package_cycle(edge_list) -> list[str] | None:
    """A loop of top-level packages (repro_train.X) that import each other, or None."""
    graph = {}
    for a, b, _ in edge_list:
        pa, pb = a.split(".")[0], b.split(".")[0]
        if pa != pb:
            graph.setdefault(pa, set()).add(pb)
    state, stack = {}, []

    def visit(p):
        state[p] = "open"
        stack.append(p)
        for q in sorted(graph.get(p, ())):
            if state.get(q) == "open":
                return stack[stack.index(q) :] + [q]
            if q not in state:
                found = visit(q)
                if found:
                    return found
        state[p] = "done"
        stack.pop()
        return None

    for p in sorted(graph):
        if p not in state:
            found = visit(p)
            if found:
                return found
    return None


def test_every_module_has_a_layer():
    missing = [m for m in map(module_name, ROOT.rglob("*.py")) if layer_of(m) is None]
    assert not missing, f"give these modules a layer in LAYERS: {missing}"
    entries = [e for layer in LAYERS for e in layer]
    assert len(entries) == len(set(entries))


def test_no_module_imports_a_higher_layer():
    assert not upward(edges()), "\n".join(upward(edges()))


def test_no_package_cycle():
    assert package_cycle(edges()) is None, " -> ".join(package_cycle(edges()))


def test_package_imports_sit_at_module_top():
    lazy = [f"{a} imports {b} inside a function" for a, b, top in edges() if not top and (a, b) not in LAZY_ALLOWED]
    assert not lazy, "\n".join(lazy)


@pytest.mark.parametrize(
    "edge, layers, bad",
    [
        (("repro.scores", "trainer.loop", True), LAYERS, True),  # the method reaching up into the loop
        (("trainer.loop", "repro.scores", True), LAYERS, False),
        (("core.text", "repro.segment", True), LAYERS, True),  # a foundation reaching up into the method
        (("repro.segment", "core.text", True), LAYERS, False),
    ],
)
def test_the_checks_catch_what_they_should(edge, layers, bad):
    assert bool(upward([edge], layers)) == bad
    cycle = package_cycle([edge, (edge[1], edge[0], True)])
    assert cycle is not None or edge[0].split(".")[0] == edge[1].split(".")[0]


def test_imports_resolve_relative_and_absolute(tmp_path, monkeypatch):
    """The parser reads `from ..x import y`, `from . import y` and `import repro_train.x` alike."""
    pkg = tmp_path / "repro_train"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "m.py").write_text(
        "from ..b import c\nfrom . import n\nimport repro_train.d.e\ndef f():\n    from .n import g\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    assert imports(pkg / "a" / "m.py") == [("b.c", True), ("a.n", True), ("d.e", True), ("a.n.g", False)]


def test_no_private_name_crosses_a_module():
    """`from .x import _name` would tie a module to another's internals."""
    crossing = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("repro_train")):
                crossing += [
                    f"{module_name(path)} imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not crossing, "\n".join(crossing)


def test_the_loop_imports_nothing_of_the_probe_engine():
    """The loop asks RePro for its pass (`RePro.policy_pass`); the engine stays behind it."""
    engine = [b for a, b, _ in edges() if a == "trainer.loop" and b.startswith("repro.probe")]
    assert not engine, engine
