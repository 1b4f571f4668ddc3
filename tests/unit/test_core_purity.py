"""services/core is pure domain code: no module in it may import an I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "services" / "core"
FORBIDDEN = frozenset({"aiohttp", "sqlalchemy", "redis", "rq", "spacy", "feedparser"})
MODULES = sorted(CORE.rglob("*.py"))


def imported_roots(source: str) -> set[str]:
    """Top-level package names of every import in ``source``, nested imports included."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_core_has_modules() -> None:
    assert MODULES, f"no modules found under {CORE}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_io_library(path: Path) -> None:
    bad = imported_roots(path.read_text(encoding="utf-8")) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize(
    ("source", "roots"),
    [
        ("import redis.asyncio", {"redis"}),
        ("from sqlalchemy.orm import Session", {"sqlalchemy"}),
        ("def f():\n    import spacy", {"spacy"}),
        ("from . import errors", set()),
        ("import importlib\nimportlib.import_module('rq.job')", {"importlib", "rq"}),
    ],
)
def test_imported_roots(source: str, roots: set[str]) -> None:
    assert imported_roots(source) == roots
