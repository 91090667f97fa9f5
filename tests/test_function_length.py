"""Structural check: no function in training/, deployment/ (but deployment/serving/) or detops/
is longer than 80 lines, so each can be read and tested alone (issue 15)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "deployment", "detops")
EXCLUDED = ("deployment/serving",)  # the serving app has its own owner and routers
MAX_LINES = 80


def long_functions(root: Path = ROOT, max_lines: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function or method longer than ``max_lines``.

    A function's length runs from its ``def`` (decorators excluded) to its last line, docstring included.
    """
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(EXCLUDED):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > max_lines:
                        found.append(f"{rel}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_80_lines():
    assert long_functions() == []


def test_the_check_finds_a_long_function(tmp_path):
    """The check can fail: a 90-line function in a scanned package is reported; serving is skipped."""
    for pkg in ("training", "deployment/serving", "detops"):
        (tmp_path / pkg).mkdir(parents=True)
    body = "\n".join(f"    x{i} = {i}" for i in range(88))
    source = f'def too_long():\n    """doc"""\n{body}\n'
    (tmp_path / "training" / "long.py").write_text(source)
    (tmp_path / "deployment" / "serving" / "app.py").write_text(source)
    assert long_functions(tmp_path) == ["training/long.py:1 too_long (90 lines)"]
