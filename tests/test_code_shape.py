"""The project's size rules (docs/DESIGN.md): no module in src/rtseg over 400 lines, no function over 80."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rtseg"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# Offenders in files other helpers are rewriting now; the lead removes each entry once their work
# is merged, and the test fails when an entry is no longer needed so the list cannot go stale.
ALLOWED: set[str] = set()  # every module and function is within the limits


def _offenders(root: Path) -> set[str]:
    found = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        source = path.read_text(encoding="utf-8")
        n_lines = len(source.splitlines())
        if n_lines > MAX_MODULE_LINES:
            found.add(f"module {rel} ({n_lines} lines)")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.add(f"function {rel}:{node.name} ({length} lines)")
    return found


def _key(entry: str) -> str:
    return entry.split(" (")[0]


def test_no_module_or_function_over_the_limits() -> None:
    offenders = sorted(o for o in _offenders(SRC) if _key(o) not in ALLOWED)
    assert not offenders, "over the size limits (split them along their seams):\n" + "\n".join(offenders)


def test_allow_list_holds_only_current_offenders() -> None:
    stale = ALLOWED - {_key(o) for o in _offenders(SRC)}
    assert not stale, f"no longer over the limits, remove from ALLOWED: {sorted(stale)}"


def test_checker_finds_long_nested_functions_and_long_modules(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def outer():\n    def inner():\n{body}\n    return inner\n\ndef short():\n    return 1\n")
    (tmp_path / "big.py").write_text("\n".join(f"y{i} = {i}" for i in range(MAX_MODULE_LINES + 1)) + "\n")
    (tmp_path / "ok.py").write_text("\n".join(f"y{i} = {i}" for i in range(MAX_MODULE_LINES)) + "\n")
    found = {_key(o) for o in _offenders(tmp_path)}
    assert found == {"function long.py:outer", "function long.py:inner", "module big.py"}
