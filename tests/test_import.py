"""``import aiguard`` is light: each public name's module is imported the first time the name
is used, so a bare import loads none of pydantic, the stores, the report or the command line.
Checked in fresh interpreters, the way a service starts."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import aiguard

INIT = Path(aiguard.__file__)

HEAVY = (
    "pydantic",
    "numpy",
    "cachetools",
    "psycopg",
    "redis",
    "sqlite3",
    "asyncio",
    "decimal",
    "aiguard.store",
    "aiguard.postgres",
    "aiguard.redis",
    "aiguard.cli",
    "aiguard.report",
    "aiguard.config",
    "aiguard.quality",
    "aiguard._engine",
)


def fresh(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_bare_import_loads_none_of_the_heavy_modules() -> None:
    loaded = set(
        json.loads(fresh("import aiguard, sys, json; print(json.dumps(list(sys.modules)))"))
    )
    assert not {m for m in loaded for heavy in HEAVY if m == heavy or m.startswith(heavy + ".")}
    assert "aiguard" in loaded


def test_every_public_name_resolves_in_a_fresh_interpreter() -> None:
    out = fresh(
        "import aiguard\n"
        "missing = [n for n in aiguard.__all__ if getattr(aiguard, n, None) is None]\n"
        "ns = {}\n"
        "exec('from aiguard import *', ns)\n"
        "print(missing, sorted(set(aiguard.__all__) - set(ns)))"
    )
    assert out.strip() == "[] []"


@pytest.mark.parametrize("name", ["guard", "report", "check", "feedback", "card", "stats", "tune"])
def test_a_submodule_imported_first_keeps_the_public_name(name: str) -> None:
    """``aiguard.guard`` is the decorator even when the submodule ``aiguard.guard`` was
    imported first (by a library, or by aiguard itself)."""
    out = fresh(
        f"import importlib, inspect, aiguard\n"
        f"module = {name!r} if {name!r} != 'tune' else 'tuning'\n"
        f"importlib.import_module('aiguard.' + module)\n"
        f"print(inspect.isfunction(aiguard.{name}))"
    )
    assert out.strip() == "True"


def test_submodules_are_attributes() -> None:
    out = fresh(
        "import aiguard\n"
        "print(callable(aiguard.records.counts), callable(aiguard.quality.summary), "
        "aiguard.control.__name__)"
    )
    assert out.strip() == "True True aiguard.control"
    assert fresh("import aiguard\nprint(hasattr(aiguard, 'no_such_name'))").strip() == "False"


def test_the_typed_imports_name_every_lazy_name() -> None:
    """The imports mypy and editors read (under ``TYPE_CHECKING``) are the names ``__getattr__``
    serves, which are ``__all__``."""
    tree = ast.parse(INIT.read_text())
    typed: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                assert isinstance(child, ast.ImportFrom)
                typed |= {a.asname or a.name for a in child.names}
    assert typed | {"__version__"} == set(aiguard.__all__)
    assert set(aiguard._WHERE) | {"__version__"} == set(aiguard.__all__)
    modules = {p.stem for p in INIT.parent.glob("*.py") if not p.stem.startswith("_")}
    assert set(aiguard._SUBMODULES) == modules


def test_dir_lists_the_public_names() -> None:
    assert set(aiguard.__all__) <= set(dir(aiguard))
