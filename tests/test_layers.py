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
    ("serve",),
    ("apps", "phantoms"),
    ("cli", "__main__"),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# the bottom layer's members are torch/pydantic-level utilities; config may name models (lazily, for the registry)
BOTTOM_ALLOWED = {("config", "models"), ("config", "labels"), ("config", "errors"), ("device", "errors"),
                  ("models", "errors"), ("labels", "errors"), ("labels", "config")}


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
