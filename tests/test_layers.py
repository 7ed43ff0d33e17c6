"""Imports flow one way (docs/DESIGN.md): a package may import its own layer and the layers below, never above.

Lazy imports inside functions count too: they are the same dependency, only deferred.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rtseg"

# bottom first; packages in one tuple share a layer
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "labels", "device", "config", "models"),
    ("io",),
    ("synthetic",),
    ("data",),
    ("figures",),
    ("evaluation",),
    ("inference",),
    ("review",),
    ("training",),
    ("audit",),
    ("adapt",),
    ("serve",),
    ("apps",),
    ("cli", "__main__"),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# the bottom layer's members are torch/pydantic-level utilities; config may name models (lazily, for the registry)
BOTTOM_ALLOWED = {("config", "models"), ("config", "labels"), ("config", "errors"), ("device", "errors"),
                  ("models", "errors"), ("labels", "errors")}


def _top(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imported(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rtseg.") and node.level == 0:
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("rtseg."))
    return out


def test_every_package_has_a_layer() -> None:
    tops = {_top(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert tops <= set(RANK), f"packages without a layer in this test and docs/DESIGN.md: {sorted(tops - set(RANK))}"


def test_imports_flow_one_way() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        here = _top(path)
        if here == "__init__":
            continue
        for there in _imported(ast.parse(path.read_text(), str(path))):
            if there == here or there not in RANK:
                continue
            if RANK[there] > RANK[here] or (RANK[there] == RANK[here] == 0 and (here, there) not in BOTTOM_ALLOWED):
                upward.append(f"{path.relative_to(SRC)} imports rtseg.{there}")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """rtseg modules ``path`` imports, at the top or lazily inside a function: ``from a.b import c`` names a.b,
    and a.b.c too where c is a module."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rtseg") and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("rtseg"))
    return out & modules


def test_no_import_cycles_lazy_ones_included() -> None:
    """A cycle (even through an import deferred into a function) means two modules own one concern."""
    paths = sorted(SRC.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _module_imports(p, modules) - {_module_name(p)} for p in paths}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
