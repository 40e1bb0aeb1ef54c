"""The package tree is the architecture: imports run one way (commands -> sides -> core).

An AST walk over every module in ``src/sitestack`` collects *every* import: module level,
function level and under ``TYPE_CHECKING``. It fails on

- an import cycle between modules,
- a side importing a side above it (the order is ``LAYERS`` below),
- a private name (``_x``) imported from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "sitestack"

# Lowest first. A module may import from its own layer and from any layer before it.
# Top-level leaves (errors, output, __init__) sit below everything; the CLI above everything.
LAYERS = ["leaf", "core", "site", "conda", "build", "user", "scale", "commands", "cli"]
LEAVES = {"sitestack", "sitestack.errors", "sitestack.output", "sitestack.options"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    if module in LEAVES:
        return "leaf"
    if module in ("sitestack.cli", "sitestack.__main__"):
        return "cli"
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every sitestack import in *path*."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules = {_module_name(p) for p in PKG.rglob("*.py")}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("sitestack")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("sitestack"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # `from pkg import module`
                    found.append((sub, "", node.lineno))
                else:
                    found.append((target, alias.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        me = _module_name(path)
        graph[me] = {t for t, _, _ in _imports(path) if t != me}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package importing its own submodules (``__init__`` re-exports) is not a cycle
    # worth reporting only when the submodule does not import the package back.
    assert _cycles(graph) == []


def test_imports_run_one_way() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        me = _module_name(path)
        mine = LAYERS.index(_layer(me))
        for target, _, line in _imports(path):
            if target in _ancestors(me) or target == me:
                continue
            if LAYERS.index(_layer(target)) > mine:
                bad.append(f"{path.relative_to(PKG)}:{line}: {me} ({_layer(me)}) imports {target}")
    assert bad == []


def test_no_private_names_across_modules() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        for target, name, line in _imports(path):
            if name.startswith("_") and not name.startswith("__"):
                bad.append(f"{path.relative_to(PKG)}:{line}: imports {target}.{name}")
    assert bad == []


def test_type_checking_comes_from_one_place() -> None:
    """`from sitestack import TYPE_CHECKING` in every module: sitestack/__init__.py says why;
    `__import__` in cli.py alone, which says why."""
    bad = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(PKG)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module == "typing" and \
                    any(a.name == "TYPE_CHECKING" for a in node.names):
                bad.append(f"{where}: from typing import TYPE_CHECKING")
            elif isinstance(node, ast.Attribute) and node.attr == "TYPE_CHECKING":
                bad.append(f"{where}: ....TYPE_CHECKING")
            elif isinstance(node, ast.Assign) and path != PKG / "__init__.py" and \
                    any(isinstance(t, ast.Name) and t.id == "TYPE_CHECKING" for t in node.targets):
                bad.append(f"{where}: a TYPE_CHECKING of its own")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id == "__import__" and path != PKG / "cli.py":
                bad.append(f"{where}: __import__ (cli.py's comment says why it alone uses it)")
    assert bad == []


def test_top_level_keeps_only_the_shell() -> None:
    top = sorted(p.name for p in PKG.glob("*.py"))
    # options: each command's one declaration of its options (a shell part)
    assert top == ["__init__.py", "__main__.py", "cli.py", "errors.py", "options.py", "output.py"]


@pytest.mark.parametrize("graph", [{"a": {"b"}, "b": {"a"}}, {"a": {"b"}, "b": {"c"}, "c": {"a"}}])
def test_cycle_finder_finds_cycles(graph: dict[str, set[str]]) -> None:
    assert _cycles(graph) == [sorted(graph)]
