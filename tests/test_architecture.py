"""The package's import graph: no cycles, and imports only go down the layers
that `docs/architecture.md` lists (the page is the single source of the
layers; this test reads its table).

Run alone with `python -m pytest -q tests/test_architecture.py`. Every
`import` and `from ... import` statement counts, including those inside
functions (a lazy import is still a dependency: it only hides a cycle from
the interpreter, not from a reader).
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mnemosyne"
PAGE = ROOT / "docs" / "architecture.md"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """The package's modules that module `name` imports (anywhere in its body)."""
    tree = ast.parse(MODULES[name].read_text())
    here = name if _is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import sub` imports the module `pkg.sub` when it is one
            targets = [
                f"{source}.{alias.name}"
                if f"{source}.{alias.name}" in MODULES
                else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` -> a.b.c
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _layers() -> list[tuple[int, list[str]]]:
    """`(rank, module patterns)` from the table on docs/architecture.md."""
    text = PAGE.read_text()
    table = text[text.index("| layer |") :].split("\n\n")[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((int(cells[0]), re.findall(r"`([\w.*]+)`", cells[1])))
    return rows


def _rank(name: str, layers) -> int:
    matches = [
        rank
        for rank, patterns in layers
        if any(fnmatch.fnmatchcase(name, p) for p in patterns)
    ]
    assert len(matches) == 1, f"{name} is in {len(matches)} layers of {PAGE.name}"
    return matches[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_imports():
    """The walker resolves relative, lazy and `from pkg import module` imports."""
    assert "mnemosyne._types" in GRAPH["mnemosyne.tasks._base"]
    assert "mnemosyne.tasks" in GRAPH["mnemosyne.evaluation._evaluate"]
    assert "mnemosyne.meta" in GRAPH["mnemosyne.evaluation._ablation"]  # lazy
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, f"import cycles: {cycles}"


def test_every_module_has_one_layer():
    layers = _layers()
    assert len(layers) >= 5
    for name in MODULES:
        _rank(name, layers)


def test_imports_only_go_down():
    """A module imports only modules of its own layer or of layers below it."""
    layers = _layers()
    upward = [
        f"{name} (layer {_rank(name, layers)}) imports {target} "
        f"(layer {_rank(target, layers)})"
        for name, targets in GRAPH.items()
        for target in sorted(targets)
        if _rank(target, layers) > _rank(name, layers)
    ]
    assert not upward, "\n".join(upward)


def test_backends_are_a_leaf():
    """The kernels import nothing else of the package."""
    for name, targets in GRAPH.items():
        if name.startswith("mnemosyne.backends"):
            outside = {t for t in targets if not t.startswith("mnemosyne.backends")}
            assert not outside, f"{name} imports {outside}"
