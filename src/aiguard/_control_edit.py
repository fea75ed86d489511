"""Writing to a control source from outside the call path: the CLI, ``tune(apply=True)`` and a
drift rollback. Each edit is recorded in the source's history (``aiguard._history``).

A control file is edited under a lock (``_history.locked``) and replaced atomically. A TOML file
is edited as text: only the lines of the feature's table change, so comments, blank lines and the
other tables stay as written (when the feature is written in a form the text editor does not
follow, e.g. an inline table, the file is written afresh and its comments are lost). A JSON file
(JSON has no comments) is rewritten with its other entries as they were. A file that cannot be
parsed or validated is edited only when replacing the feature's own table makes it valid again;
otherwise the edit is refused with the error and its line, and the file is left untouched.

A Redis control document is changed in an optimistic transaction (``aiguard.redis.edit_control``),
which pushes the history entry with the change.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic

from . import _history, _toml_edit
from ._checks import explain
from ._engine.settings import ALL
from ._runtime.state import runtime
from .control import (
    CONTROL_FILE_HEADER,
    ControlFile,
    ControlState,
    FeatureControl,
    write_control_text,
)
from .exceptions import ConfigError

REDIS_SCHEMES = ("redis:/", "rediss:/", "unix:/")
FIELDS = tuple(FeatureControl.model_fields)


def is_redis(where: str | os.PathLike[str]) -> bool:
    return str(where).startswith(REDIS_SCHEMES)


def url(where: str | os.PathLike[str]) -> str:
    """A Redis URL, mended if a Path folded its ``//``."""
    text = str(where)
    return text.replace(":/", "://", 1) if "://" not in text else text


def label(where: str | os.PathLike[str]) -> str:
    return f"Redis control {url(where)}" if is_redis(where) else f"control file {where}"


def load(where: str | os.PathLike[str], *, prefix: str = "aiguard") -> ControlState:
    """What the control file or Redis document says now (a missing one is an empty state)."""
    if is_redis(where):
        from .redis import RedisControl

        source = RedisControl(url(where), prefix=prefix, timeout=5.0)
        try:
            return source.poll() or ControlState()
        finally:
            source.close()
    path = Path(where)
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        return ControlState()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"control file {str(path)!r} cannot be read: {exc}") from None
    return parse(path, text)


def history(where: str | os.PathLike[str], *, prefix: str = "aiguard") -> list[_history.Change]:
    """Every recorded change of a control file or Redis document, oldest first."""
    if is_redis(where):
        from .redis import _client

        client = _client(url(where), 5.0)
        try:
            return _history.read_redis(client, prefix)
        finally:
            client.close()
    return _history.read_file(Path(where))


# -- parsing with line numbers --------------------------------------------------------------------


def _line_of_json(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line of the first key of ``loc`` found in order in a JSON text (an approximation:
    the first occurrence of each key after the previous one)."""
    at = 0
    found = None
    for part in loc:
        if not isinstance(part, str):
            continue
        m = re.compile(re.escape(json.dumps(part)) + r"\s*:").search(text, at)
        if m is None:
            break
        at = m.end()
        found = text.count("\n", 0, m.start()) + 1
    return found


def _line(path: Path, text: str, loc: tuple[Any, ...]) -> int | None:
    if path.suffix.lower() == ".json":
        return _line_of_json(text, loc)
    table: tuple[str, ...] = ()
    field = None
    if loc and loc[0] == "all":
        table, rest = ("all",), loc[1:]
    elif len(loc) >= 2 and loc[0] == "features" and isinstance(loc[1], str):
        table, rest = ("features", loc[1]), loc[2:]
    else:
        return None
    if rest and isinstance(rest[0], str):
        field = rest[0]
    return _toml_edit.line_of(text, table, field)


def _first_bad_line(text: str) -> int:
    """The line where the TOML statement that cannot be parsed starts: the one after the
    longest beginning of the text that parses (tomllib says "at end of document" for an
    unterminated string)."""
    lines = _toml_edit.lines_of(text)
    good = 0
    for k in range(1, len(lines) + 1):
        try:
            tomllib.loads("".join(lines[:k]))
        except ValueError:
            continue
        good = k
    return min(good + 1, max(len(lines), 1))


def parse(path: Path, text: str) -> ControlState:
    """A control file's text as a ControlState; ConfigError naming the file, the line, the
    feature, the field and the value."""
    name = f"control file {str(path)!r}"
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} cannot be read: line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # tomllib's messages end with "(at line N, column M)" mostly
        said = str(exc)
        if "line" not in said:
            said = f"line {_first_bad_line(text)}: {said}"
        raise ConfigError(f"{name} cannot be read: {said}") from None
    except RecursionError:
        raise ConfigError(f"{name} cannot be read: it is nested too deep") from None
    try:
        return ControlState.model_validate(raw)
    except pydantic.ValidationError as exc:
        line = _line(path, text, tuple(exc.errors()[0]["loc"]))
        where = f"{name} (line {line})" if line is not None else name
        raise ConfigError(explain(exc, where)) from None
    except RecursionError:  # pragma: no cover - pydantic-core stops deep nesting itself
        raise ConfigError(f"{name} is invalid: it is nested too deep") from None


# -- the edit itself (sans-I/O: old text in, new text out) ----------------------------------------


def _changed(current: FeatureControl, changes: Mapping[str, Any]) -> FeatureControl:
    return FeatureControl.model_validate({**current.model_dump(), **changes})


def _entry(state: ControlState, feature: str) -> FeatureControl:
    return state.all if feature == ALL else state.features.get(feature, FeatureControl())


def _with(state: ControlState, feature: str, fc: FeatureControl) -> ControlState:
    if feature == ALL:
        return state.model_copy(update={"all": fc})
    return state.model_copy(update={"features": {**state.features, feature: fc}})


def _table(feature: str) -> tuple[str, ...]:
    return ("all",) if feature == ALL else ("features", feature)


def _entries(fc: FeatureControl) -> dict[str, Any]:
    """A feature's table as written: ``killed`` always, the other fields when said."""
    return {k: v for k, v in fc.model_dump().items() if k == "killed" or v is not None}


def _salvaged(text: str, feature: str, suffix: str) -> FeatureControl:
    """What can still be read of ``feature``'s own entry in an invalid file (each field on its
    own; a field that cannot be read is dropped)."""
    raw: Any = None
    try:
        if suffix == ".json":
            data = json.loads(text)
            raw = data.get("all") if feature == ALL else (data.get("features") or {}).get(feature)
        else:
            lines = _toml_edit.lines_of(text)
            table = _table(feature)
            for path, start, end in _toml_edit.sections(lines):
                if path == table:  # line by line: a broken line does not lose the others
                    raw = {}
                    for line in lines[start + 1 : end]:
                        with contextlib.suppress(ValueError):
                            raw.update(tomllib.loads(line))
    except (ValueError, AttributeError, RecursionError):
        raw = None
    kept: dict[str, Any] = {}
    if isinstance(raw, dict):
        for k, v in raw.items():
            try:
                FeatureControl.model_validate({k: v})
            except pydantic.ValidationError:
                continue
            kept[k] = v
    return FeatureControl.model_validate(kept)


def edited_text(
    path: Path, text: str | None, feature: str, changes: Mapping[str, Any]
) -> tuple[str, FeatureControl, FeatureControl, str | None]:
    """The new text of the control file at ``path`` (``text``: its text now, None when it does
    not exist) with ``feature``'s entry changed: ``(text, before, after, note)``, the note
    saying what the caller should know (comments lost, an invalid file mended). ConfigError,
    with the line, when the file is invalid elsewhere than in the feature's own entry."""
    suffix = path.suffix.lower()
    if text is None:
        before = FeatureControl()
        after = _changed(before, changes)
        if suffix == ".json":
            return _json_text({}, feature, after), before, after, None
        rendered = _toml_edit.set_keys(f"{CONTROL_FILE_HEADER}\n", _table(feature), _entries(after))
        return rendered or "", before, after, None
    try:
        old = parse(path, text)
    except ConfigError as invalid:
        return _mended(path, text, feature, changes, invalid)
    before = _entry(old, feature)
    after = _changed(before, changes)
    new = _with(old, feature, after)
    if suffix == ".json":
        raw = json.loads(text)
        return _json_text(raw, feature, after), before, after, None
    wanted = {k: getattr(after, k) for k in changes}
    if feature != ALL and feature not in old.features:
        wanted = {**_entries(after), **wanted}
    candidate = _toml_edit.set_keys(text, _table(feature), wanted)
    if candidate is not None and _parses_to(path, candidate, new):
        return candidate, before, after, None
    from .control import _to_toml

    note = (
        f"{feature!r} is written in a form that cannot be edited in place, so the file was "
        "written afresh (its comments are not kept)"
    )
    return _to_toml(new), before, after, note


def _parses_to(path: Path, text: str, state: ControlState) -> bool:
    try:
        return parse(path, text) == state
    except ConfigError:
        return False


def _json_text(raw: Any, feature: str, fc: FeatureControl) -> str:
    if not isinstance(raw, dict):
        raw = {}
    if feature == ALL:
        raw["all"] = _entries(fc)
    else:
        features = raw.get("features")
        if not isinstance(features, dict):
            features = raw["features"] = {}
        features[feature] = _entries(fc)
    return json.dumps(raw, indent=2, ensure_ascii=False) + "\n"


def _mended(
    path: Path, text: str, feature: str, changes: Mapping[str, Any], invalid: ConfigError
) -> tuple[str, FeatureControl, FeatureControl, str | None]:
    """An invalid file: replace the feature's own entry; if that makes the file valid, that is
    the new text, else the edit is refused (ConfigError with the original error and line)."""
    suffix = path.suffix.lower()
    before = _salvaged(text, feature, suffix)
    after = _changed(before, changes)
    candidate: str | None = None
    if suffix == ".json":
        try:
            candidate = _json_text(json.loads(text), feature, after)
        except ValueError:
            candidate = None
    else:
        candidate = _toml_edit.replace_table(text, _table(feature), _entries(after))
    if candidate is not None:
        try:
            parse(path, candidate)
        except ConfigError:
            candidate = None
    if candidate is None:
        raise ConfigError(
            f"{invalid}; nothing was written (replicas keep their last good state while the file "
            "is invalid, so an edit there would not reach them): fix that line first"
        ) from None
    who = "every feature's" if feature == ALL else f"{feature!r}'s"
    return (
        candidate,
        before,
        after,
        f"the file was invalid ({invalid}); only {who} entry was replaced",
    )


# -- writing, with the history ---------------------------------------------------------------------


def edit(
    where: str | os.PathLike[str],
    feature: str,
    changes: Mapping[str, Any],
    *,
    prefix: str = "aiguard",
    by: str | None = None,
    why: str | None = None,
    via: str = "cli",
) -> str | None:
    """Change ``feature``'s entry (``ALL``: the global one) in a control file or Redis, and
    record who (``by``, default the OS user), why and through what (``via``) in its history.
    Returns a note for the operator, or None."""
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise ConfigError(f"control edit: unknown field(s) {sorted(unknown)}")
    who = by if by is not None else _history.user()

    def entry(before: FeatureControl, after: FeatureControl) -> _history.Change:
        diff = {k: (getattr(before, k), getattr(after, k)) for k in changes}
        return _history.Change.made(feature, diff, by=who, why=why, via=via)

    if is_redis(where):
        from .redis import edit_control

        def change(control: ControlState) -> ControlState:
            return _with(control, feature, _changed(_entry(control, feature), changes))

        def record(old: ControlState, new: ControlState) -> list[str]:
            return [entry(_entry(old, feature), _entry(new, feature)).to_json()]

        edit_control(url(where), change, prefix=prefix, history=record)
        return None
    path = Path(where)
    with _history.locked(path):
        try:
            text: str | None = path.read_bytes().decode()
        except FileNotFoundError:
            text = None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"control file {str(path)!r} cannot be read: {exc}") from None
        new_text, before, after, note = edited_text(path, text, feature, changes)
        write_control_text(path, new_text)
        try:
            _history.append(path, entry(before, after))
        except OSError as exc:
            extra = f"the change was written but not its history entry ({exc})"
            note = f"{note}; {extra}" if note else extra
    return note


def configured() -> list[tuple[str, dict[str, Any], Any]]:
    """The writable control sources this process polls: ``(where, options, poller)`` for each
    control file and Redis control (other sources, e.g. OpenFeature, cannot be written)."""
    from .redis import RedisControl

    found: list[tuple[str, dict[str, Any], Any]] = []
    with runtime.lock:
        workers = [w for name, w in runtime.workers.items() if name.startswith("aiguard-control[")]
    for worker in workers:
        poller = getattr(worker.step, "__self__", None)
        source = getattr(poller, "source", None)
        if isinstance(source, ControlFile):
            found.append((str(source.path), {}, poller))
        elif isinstance(source, RedisControl):
            prefix = source.key.rpartition(":control")[0]
            found.append((source.url, {"prefix": prefix}, poller))
    return found


def write(
    feature: str,
    control: str | os.PathLike[str] | None,
    *,
    why: str | None = None,
    via: str = "api",
    **changes: Any,
) -> list[str]:
    """Write ``changes`` for ``feature`` to ``control`` (a control file path or redis:// URL),
    or to every writable control source this process polls (each polled again at once, so this
    process sees the change now), recorded in each one's history with ``why`` and ``via``;
    what was written, as labels. ConfigError when there is no place to write."""
    if control is not None:
        edit(control, feature, changes, why=why, via=via)
        return [label(control)]
    targets = configured()
    if not targets:
        raise ConfigError(
            f"feature {feature!r}: no control source to write to: configure(control=...) with a "
            "control file or a redis:// URL, or give control="
        )
    written = []
    for where, options, poller in targets:
        edit(where, feature, changes, why=why, via=via, **options)
        poller.poll_once()
        written.append(label(where))
    return written
