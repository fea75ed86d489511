"""What the ``aiguard`` command reads and shows: stores opened for reading only, ``status`` and
``history``.

A store named on the command line is only ever read: a SQLite path must be an existing aiguard
store (a mistyped path is an error naming it, and no file is created); a PostgreSQL database must
already hold aiguard's tables (none are created).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import _history
from ._engine.settings import ALL
from ._since import parse_since
from .control import ControlState, FeatureControl
from .exceptions import AiguardError
from .limits import StageFigures, summed
from .store import SQLiteStore, Store, open_store

STATUS_TIMEOUT = 30.0  # seconds the status query may take


class ReadError(AiguardError):
    """A store or control source the command cannot read (exit 2)."""


def open_for_reading(spec: str, *, env: str) -> Store:
    """The store at ``spec``, which must exist already; ReadError naming it otherwise."""
    if spec.startswith(("postgresql://", "postgres://")):
        _postgres_has_tables(spec)
        return open_store(spec)
    text = spec[len("sqlite:///") :] if spec.startswith("sqlite:///") else spec
    hint = f"(--store or ${env}; commands that read a store never create one)"
    if not text or text == ":memory:":
        raise ReadError(f"store {text!r} is invalid: give the path of an existing store {hint}")
    path = Path(text)
    if not path.exists():
        raise ReadError(f"store {text!r} does not exist {hint}")
    if not path.is_file():
        raise ReadError(f"store {text!r} is not a file {hint}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'aiguard_meta'"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ReadError(f"store {text!r} cannot be read as an SQLite database: {exc}") from None
    if not found:
        raise ReadError(f"store {text!r} is not an aiguard store (it has no aiguard tables)")
    return SQLiteStore(path)


def _postgres_has_tables(url: str) -> None:
    """ReadError when the database answers but holds no aiguard tables in the store's default
    schema (connection errors are left to the store, which reports them)."""
    import inspect

    try:
        import psycopg

        from .postgres import PostgresStore, _safe
    except ImportError:  # the store reports the missing extra
        return
    schema = inspect.signature(PostgresStore).parameters["schema"].default
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.aiguard_meta",)).fetchone()
    except psycopg.Error:
        return
    if row is None or row[0] is None:
        raise ReadError(
            f"the PostgreSQL database {_safe(url)} holds no aiguard store (no table "
            f"{schema}.aiguard_meta); commands that read a store never create one"
        )


# -- status ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Counts:
    calls: int
    fallbacks: int
    errors: int


def call_counts(store: Any, since: float | None) -> dict[str, Counts]:
    """Calls, fallbacks (not served by the model) and errors per feature in the call records
    from ``since`` on (every feature when the store has no SQL call records: none)."""
    session = getattr(store, "_session", None)
    mark = getattr(store, "_mark", None)
    if session is None or mark not in ("?", "%s"):
        return {}
    where, params = ("", ()) if since is None else (f" WHERE started_at >= {mark}", (since,))
    sql = (
        "SELECT feature, COUNT(*), SUM(CASE WHEN reason <> 'served' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN reason = 'error' THEN 1 ELSE 0 END) FROM call_records"
        f"{where} GROUP BY feature"
    )
    with session(STATUS_TIMEOUT) as run:
        rows = run(sql, params)
    return {str(r[0]): Counts(int(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows}


def stage_figures(store: Any, feature: str, percent: float | None) -> StageFigures | None:
    """The figures of ``feature``'s rollout gates at ``percent`` (the highest recorded when
    None), summed over every process; None when none are recorded."""
    read = getattr(store, "stage_figures", None)
    rows = read(feature) if read is not None else []
    if not rows:
        return None
    if percent is None:
        percent = max(r.percent for r in rows)
    return summed([r for r in rows if r.percent == percent])


def _pct(n: int, of: int) -> str:
    return f"{100 * n / of:.1f}%" if of else "-"


def status_rows(
    control: ControlState,
    store: Any,
    configured: Mapping[str, Any],
    since: str,
) -> list[tuple[str, ...]]:
    """The ``status`` table: every feature named by the control source, the call records (from
    ``since``), the rollout gates' figures or the config file, with its state, rollout,
    threshold, calls, error and fallback rates."""
    counts = call_counts(store, parse_since(since)) if store is not None else {}
    names = set(control.features) | set(counts) | set(configured)
    read = getattr(store, "stage_figures", None)
    if read is not None:
        names |= {r.feature for r in read(None)}
    names.discard(ALL)
    rows: list[tuple[str, ...]] = [
        ("FEATURE", "STATE", "ROLLOUT", "THRESHOLD", "CALLS", "ERRORS", "FALLBACKS")
    ]
    for name in sorted(names):
        fc = control.features.get(name, FeatureControl())
        if control.all.killed:
            state = f"killed (all): {control.all.reason or ''}".strip()
        elif fc.killed:
            state = f"killed: {fc.reason or ''}".strip()
        else:
            state = "live"
        calls = errors = fallbacks = "-"
        c = counts.get(name)
        if c is not None and c.calls:
            calls, errors, fallbacks = (
                str(c.calls),
                _pct(c.errors, c.calls),
                _pct(c.fallbacks, c.calls),
            )
        elif store is not None:
            f = stage_figures(store, name, fc.rollout)
            if f is not None and f.calls:
                calls, errors, fallbacks = (
                    str(f.calls),
                    _pct(f.errors, f.calls),
                    _pct(f.fallbacks, f.calls),
                )
        rollout = "-" if fc.rollout is None else f"{fc.rollout:g}%"
        threshold = "-" if fc.threshold is None else f"{fc.threshold:g}"
        cfg = configured.get(name)
        if fc.threshold is None and getattr(cfg, "threshold", None) is not None:
            threshold = f"{cfg.threshold:g} (config)"  # type: ignore[union-attr]
        rows.append((name, state, rollout, threshold, calls, errors, fallbacks))
    return rows


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


# -- history --------------------------------------------------------------------------------------


def history_text(changes: list[_history.Change], *, as_json: bool) -> str:
    """The history as a table (oldest first), or as JSON lines."""
    if as_json:
        return "\n".join(c.to_json() for c in changes)
    rows: list[tuple[str, ...]] = [("AT", "FEATURE", "CHANGE", "BY", "VIA", "WHY")]
    for c in changes:
        feature = "every feature" if c.feature == ALL else c.feature
        rows.append((c.at, feature, c.describe(), c.by or "-", c.via, c.why or "-"))
    return table(rows)
