"""The package's layout: import directions and no import cycles, function-level imports included.

Layers, from the top: the public modules (one concept each) and the configuration checks
(``aiguard._checks``) -> the per-call engine (``aiguard._engine``) -> the runtime
(``aiguard._runtime``), which imports nothing of aiguard but itself. The engine executes policies
and values (outcome, fallbacks, rollout, breaker, budget, ...), never the API that drives it
(guard, configure, control, the stores, the CLI, testing).
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import aiguard

ROOT = pathlib.Path(aiguard.__file__).parent

# What drives the engine: the engine must never import these.
API = {
    "aiguard",
    "aiguard.guard",
    "aiguard.config",
    "aiguard.control",
    "aiguard.testing",
    "aiguard.cli",
    "aiguard.report",
    "aiguard.export",
    "aiguard.records",
    "aiguard.stats",
    "aiguard.openfeature",
    "aiguard.redis",
    "aiguard.postgres",
    "aiguard.store",
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: pathlib.Path, known: set[str]) -> Iterator[str]:
    """Every aiguard module ``name`` imports, anywhere in the file (functions included), except
    under ``if TYPE_CHECKING:`` (never executed)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip: set[int] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "aiguard":
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "aiguard":
                continue
            for alias in node.names:  # `from . import x` imports the module aiguard.x
                sub = f"{target}.{alias.name}"
                yield sub if sub in known else target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {t for t in _imports(name, path, known) if t in known and t != name}
        for name, path in modules.items()
    }


def test_no_import_cycles_function_level_imports_included() -> None:
    """No module reaches itself through imports, counting those inside functions."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    # a package's __init__ importing its own submodules is not a cycle of concepts
    cycles = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert cycles == []


def test_runtime_imports_nothing_above_it() -> None:
    """aiguard._runtime imports only itself (and the version string)."""
    bad = {
        (name, target)
        for name, targets in _graph().items()
        if name.startswith("aiguard._runtime")
        for target in targets
        if not target.startswith("aiguard._runtime") and target != "aiguard._version"
    }
    assert bad == set()


def test_engine_never_imports_the_api_that_drives_it() -> None:
    """aiguard._engine imports the runtime and the policies it executes, never the API."""
    bad = {
        (name, target)
        for name, targets in _graph().items()
        if name.startswith("aiguard._engine")
        for target in targets
        if target in API
    }
    assert bad == set()


def test_only_the_public_surface_and_engine_import_the_engine() -> None:
    """The runtime never imports the engine; the layers point one way."""
    graph = _graph()
    assert {
        (n, t)
        for n, ts in graph.items()
        if n.startswith("aiguard._runtime")
        for t in ts
        if t.startswith("aiguard._engine")
    } == set()


def test_the_graph_sees_function_level_imports() -> None:
    """The checker is not blind: it finds a known function-level import (outcome -> feedback)
    and skips TYPE_CHECKING imports (exceptions -> outcome)."""
    graph = _graph()
    assert "aiguard.feedback" in graph["aiguard.outcome"]
    assert "aiguard.outcome" not in graph["aiguard.exceptions"]
    assert "aiguard._runtime.records" in graph["aiguard._engine.finish"]


def test_served_record_has_one_owner() -> None:
    """Only aiguard._runtime.records builds or indexes the served record."""
    for name, path in _modules().items():
        if name == "aiguard._runtime.records":
            continue
        text = path.read_text()
        assert "_new(Served" not in text and "Served((" not in text, name
        for line in text.splitlines():
            assert not ("record[" in line and "Served" in text), (name, line)
