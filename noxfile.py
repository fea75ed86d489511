"""Development sessions: ``nox -s tests lint typing bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    paths = ["src", "tests", "examples", "benchmarks", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict on the library, on tests/typing and on the examples."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "src", "tests/typing")
    session.run("mypy", "--strict", "examples", env={"MYPYPATH": "examples"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Per-call overhead against a bare call (medians, same run)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/overhead.py", *session.posargs)
