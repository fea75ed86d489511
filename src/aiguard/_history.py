"""The history of a control source: who killed, revived, rolled out or set a threshold, when, why.

Every edit made through aiguard (the ``aiguard`` CLI, ``tune(apply=True)``, a drift rollback)
appends one entry where the control state lives, so the history is shared by whoever can edit:

- a control file ``PATH``: the JSON-lines file ``PATH.history.jsonl`` beside it, appended to
  (one ``write`` per entry, flushed to disk), never rewritten;
- Redis: the list ``{prefix}:control:history``, pushed in the same transaction as the change and
  capped to the latest 10,000 entries (``aiguard.redis.HISTORY_LIMIT``).

An entry is a JSON object: ``at`` (UTC, ISO 8601), ``feature`` (``*``: every feature), ``action``
(``kill``, ``revive``, ``rollout``, ``threshold``, ``edit``), ``changes`` (field -> ``[before,
after]``), ``by``, ``why`` and ``via`` (``cli``, ``tune``, ``check``, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._engine.settings import ALL
from .exceptions import ConfigError

LOCK_WAIT = 5.0
"""Seconds an edit of a control file waits for another edit of it to finish."""


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One entry of a control source's history.

    Example:
        >>> c = Change.made("triage", {"killed": (False, True)}, by="ana", why="bad", via="cli")
        >>> c.action, c.by, c.changes
        ('kill', 'ana', {'killed': (False, True)})
    """

    at: str
    feature: str
    action: str
    changes: Mapping[str, tuple[Any, Any]]
    by: str | None
    why: str | None
    via: str

    @classmethod
    def made(
        cls,
        feature: str,
        changes: Mapping[str, tuple[Any, Any]],
        *,
        by: str | None,
        why: str | None,
        via: str,
    ) -> Change:
        """An entry stamped now."""
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return cls(now, feature, action(changes), dict(changes), by, why, via)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["changes"] = {k: list(v) for k, v in self.changes.items()}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> Change:
        data = json.loads(line)
        return cls(
            at=str(data["at"]),
            feature=str(data["feature"]),
            action=str(data.get("action", "edit")),
            changes={k: (v[0], v[1]) for k, v in dict(data.get("changes") or {}).items()},
            by=data.get("by"),
            why=data.get("why"),
            via=str(data.get("via", "")),
        )

    def describe(self) -> str:
        """What changed, in words (``killed``, ``rollout 25% -> 50%``, ``threshold -> code``)."""
        if self.action in ("kill", "revive"):
            return "killed" if self.action == "kill" else "revived"
        parts = []
        for field, (before, after) in self.changes.items():
            if field in ("reason", "by"):
                continue
            parts.append(f"{field} {_shown(field, before)} -> {_shown(field, after)}")
        return ", ".join(parts) or self.action


def _shown(field: str, v: Any) -> str:
    if v is None:
        return "code"  # nothing said in the control source: the code's value applies
    if field == "rollout":
        return f"{v:g}%"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def action(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``kill``/``revive`` when the kill flag is set, else the one field changed, else ``edit``."""
    if "killed" in changes:
        return "kill" if changes["killed"][1] else "revive"
    fields = [f for f in changes if f not in ("reason", "by")]
    return fields[0] if len(fields) == 1 else "edit"


def user() -> str | None:
    """The OS user's login name (None when it cannot be found)."""
    try:
        return getpass.getuser()
    except Exception:
        return None


def file_for(control: Path) -> Path:
    """The history file of a control file: ``PATH.history.jsonl`` beside it."""
    return control.with_name(control.name + ".history.jsonl")


@contextlib.contextmanager
def locked(control: Path, wait: float | None = None) -> Iterator[None]:
    """Hold the edit lock of a control file (an advisory lock on its history file) for one
    read-change-write, so two operators' edits never overwrite each other; ConfigError after
    ``wait`` seconds."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: edits are not serialised
        yield
        return
    wait = LOCK_WAIT if wait is None else wait
    history = file_for(control)
    history.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"control file {str(control)!r}: another edit has held it for more than "
                        f"{wait:g} s ({history} is locked); try again"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def append(control: Path, change: Change) -> None:
    """Add ``change`` to a control file's history (one write of one line, flushed to disk)."""
    line = (change.to_json() + "\n").encode()
    fd = os.open(file_for(control), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(control: Path) -> list[Change]:
    """A control file's history, oldest first (lines that cannot be read are skipped)."""
    try:
        raw = file_for(control).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"history {str(file_for(control))!r} cannot be read: {exc}") from None
    out = []
    for line in raw.splitlines():
        if line.strip():
            with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
                out.append(Change.from_json(line))
    return out


def redis_key(prefix: str) -> str:
    return f"{prefix}:control:history"


def read_redis(client: Any, prefix: str) -> list[Change]:
    """The Redis control document's history, oldest first."""
    out = []
    for raw in client.lrange(redis_key(prefix), 0, -1):
        with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
            out.append(Change.from_json(raw))
    return out


def about(changes: list[Change], feature: str | None) -> list[Change]:
    """The entries about ``feature`` (global kills included), or all of them."""
    if feature is None:
        return changes
    return [c for c in changes if c.feature in (feature, ALL)]
