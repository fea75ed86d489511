"""Control state: kill switches, rollout percentages and thresholds, changed without a deploy.

Control state comes from three places, merged per feature when a guard compiles its settings:

1. this process: :func:`kill`, :func:`revive`, :func:`kill_all`, :func:`revive_all`,
   :func:`set_rollout`, and automatic rollbacks by rollout gates;
2. control sources polled in the background: a control file (TOML or JSON) that every replica
   reads, an OpenFeature client (``aiguard.openfeature``), or your own :class:`ControlSource`;
3. the guard's own arguments and configuration.

A feature is killed if any of them kills it (a kill always wins). For the rollout percentage and
the threshold, this process wins over sources, and sources over code. Every change bumps the
configuration generation, so the next call in every thread and task sees it, and no call ever
sees half of an old state and half of a new one. Nothing here runs per call: sources are polled
by a daemon thread each, at their interval (default 1 s).

A control file::

    [all]                      # a global kill of every AI path
    killed = false

    [features.ticket-triage]
    killed = true
    reason = "wrong answers on refunds"
    by = "ana"
    rollout = 25               # percent
    threshold = 0.85
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tempfile
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from . import events
from ._checks import FeatureName, check_feature, explain, seconds
from ._engine.settings import ALL, Kill, effective
from ._runtime import errors, lifecycle
from ._runtime.state import runtime
from ._toml_edit import key as toml_key
from ._toml_edit import value as toml_value
from .events import ControlEvent, EventKind
from .exceptions import ConfigError
from .rollout import check_percent

__all__ = [
    "ControlFile",
    "ControlSource",
    "ControlState",
    "FeatureControl",
    "kill",
    "kill_all",
    "revive",
    "revive_all",
    "set_rollout",
]

CONTROL_ENV = "AIGUARD_CONTROL"

logger = logging.getLogger("aiguard")


class FeatureControl(BaseModel):
    """A feature's control state as a control source gives it.

    Example:
        >>> import aiguard
        >>> aiguard.FeatureControl(killed=True, reason="bad answers").killed
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    killed: bool = False
    reason: str | None = None
    by: str | None = None
    rollout: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    threshold: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)


class ControlState(BaseModel):
    """Everything a control source says: a global kill (``all``) and per-feature state.

    Example:
        >>> import aiguard
        >>> s = aiguard.ControlState.model_validate({"features": {"t": {"rollout": 5}}})
        >>> s.features["t"].rollout
        5.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    all: FeatureControl = Field(default_factory=FeatureControl)
    features: dict[FeatureName, FeatureControl] = Field(default_factory=dict)


def _check_feature(feature: Any) -> str:
    if feature == ALL:
        return feature  # type: ignore[no-any-return]
    return check_feature(feature)


def kill(feature: str, *, reason: str, by: str | None = None) -> None:
    """Switch a feature's AI path off in this process: its fallback chain serves (``killed``).

    Takes effect for the next call in every thread and task. For every replica, use a control
    file (``aiguard kill FEATURE``), OpenFeature or Redis.

    Example:
        >>> import aiguard
        >>> aiguard.kill("ticket-triage", reason="wrong answers on refunds", by="ana")
        >>> aiguard.revive("ticket-triage")
    """
    _check_feature(feature)
    if not isinstance(reason, str) or not reason:
        raise ConfigError(f"kill({feature!r}): reason={reason!r} is invalid: say why")
    with runtime.lock:
        runtime.kills[feature] = Kill(reason, by, "process")
        runtime.bump()
    events.emit(ControlEvent(EventKind.KILL, feature, reason, by))
    warn_unknown([feature], f"kill({feature!r})")


def revive(feature: str, *, by: str | None = None) -> None:
    """Lift this process's kill of a feature and reset its automatic kill (breaker).

    A kill said by a control source stays until that source lifts it.

    Example:
        >>> import aiguard
        >>> aiguard.revive("ticket-triage")
    """
    _check_feature(feature)
    with runtime.lock:
        had = runtime.kills.pop(feature, None)
        reset = False
        for core in list(runtime.cores):
            if core.feature == feature and core.breaker is not None:
                reset = core.breaker.reset() or reset
        still = effective(feature).kill
        runtime.bump()
    if had is not None or reset:
        what = "revived in this process" if had is not None else "automatic kill reset"
        events.emit(ControlEvent(EventKind.REVIVE, feature, what, by))
    if still is not None:
        errors.warn_once(
            f"revive:{feature}:{still.source}",
            "aiguard: %s revived in this process but still %s",
            feature,
            still.describe(),
        )


def kill_all(*, reason: str, by: str | None = None) -> None:
    """Switch every AI path off in this process: a global kill.

    Example:
        >>> import aiguard
        >>> aiguard.kill_all(reason="provider outage")
        >>> aiguard.revive_all()
    """
    kill(ALL, reason=reason, by=by)


def revive_all(*, by: str | None = None) -> None:
    """Lift this process's global kill (feature kills stay).

    Example:
        >>> import aiguard
        >>> aiguard.revive_all()
    """
    revive(ALL, by=by)


def set_rollout(feature: str, percent: float | None) -> None:
    """Set a feature's rollout percentage in this process (``None``: back to the sources/code).

    Example:
        >>> import aiguard
        >>> aiguard.set_rollout("reply-draft", 50)
        >>> aiguard.set_rollout("reply-draft", None)
    """
    _check_feature(feature)
    if percent is not None:
        percent = check_percent(f"set_rollout({feature!r}, percent)", percent)
    with runtime.lock:
        if percent is None:
            runtime.rollouts.pop(feature, None)
        else:
            runtime.rollouts[feature] = percent
        runtime.rollbacks.pop(feature, None)
        runtime.bump()
    if percent is not None:
        warn_unknown([feature], f"set_rollout({feature!r}, {percent:g})")


# -- sources ---------------------------------------------------------------------------------------


@runtime_checkable
class ControlSource(Protocol):
    """Something that says a fleet's control state; polled off the hot path.

    ``poll()`` returns the current :class:`ControlState`, or ``None`` when nothing changed since
    the last poll; it raises when the state cannot be read (the last good state is kept).

    Example:
        >>> import aiguard
        >>> class Fixed:
        ...     name = "fixed"
        ...     interval = 1.0
        ...     def poll(self) -> aiguard.ControlState | None:
        ...         return aiguard.ControlState()
        >>> isinstance(Fixed(), aiguard.ControlSource)
        True
    """

    name: str
    interval: float

    def poll(self) -> ControlState | None:
        """The current state, or None if unchanged; raises if it cannot be read."""


class ControlFile:
    """A TOML or JSON control file, re-read when it changes (checked every ``interval`` s).

    A missing file is an empty state (``configure(control=...)`` refuses a file that does not
    exist unless ``missing_ok=True``); a file that becomes invalid keeps the last good state and
    logs the error once.

    Example:
        >>> import aiguard, pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "control.toml"
        >>> _ = path.write_text('[features.triage]\\nrollout = 25\\n')
        >>> aiguard.ControlFile(path).poll().features["triage"].rollout
        25.0
    """

    def __init__(self, path: str | os.PathLike[str], *, interval: float | timedelta = 1.0) -> None:
        self.path = Path(path)
        self.name = f"control file {str(self.path)!r}"
        self.interval = seconds("control interval", interval)
        self._stamp: tuple[int, int, int] | None = None

    def poll(self) -> ControlState | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp == (0, 0, 0):
                return None
            self._stamp = (0, 0, 0)
            return ControlState()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return None
        parsed = read_control_file(self.path)
        self._stamp = stamp
        return parsed

    def __repr__(self) -> str:
        return f"ControlFile({str(self.path)!r})"


def read_control_file(path: Path) -> ControlState:
    """Parse and validate a control file; ConfigError naming the file, feature, field, value."""
    try:
        data = path.read_bytes()
        raw = json.loads(data) if path.suffix.lower() == ".json" else tomllib.loads(data.decode())
    except FileNotFoundError:
        return ControlState()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"control file {str(path)!r} cannot be read: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"control file {str(path)!r} cannot be read: it is nested too deep"
        ) from None
    try:
        return ControlState.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(explain(exc, f"control file {str(path)!r}")) from None
    except RecursionError:  # pragma: no cover - pydantic-core stops deep nesting itself
        raise ConfigError(f"control file {str(path)!r} is invalid: it is nested too deep") from None


def write_control_file(path: Path, control: ControlState) -> None:
    """Write ``control`` to ``path`` atomically (readers never see half a file)."""
    if path.suffix.lower() == ".json":
        text = json.dumps(control.model_dump(exclude_defaults=True), indent=2) + "\n"
    else:
        text = _to_toml(control)
    write_control_text(path, text)


def write_control_text(path: Path, text: str) -> None:
    """Replace the control file at ``path`` by ``text`` atomically, keeping its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777  # keep the file readable by whoever read it before
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


CONTROL_FILE_HEADER = "# aiguard control file: read by every replica; edit with the `aiguard` CLI."


def _to_toml(control: ControlState) -> str:
    def table(header: str, fc: FeatureControl) -> list[str]:
        lines = [f"[{header}]"]
        for key, value in fc.model_dump(exclude_none=True).items():
            if key == "killed" or value != FeatureControl.model_fields[key].default:
                lines.append(f"{key} = {toml_value(value)}")
        return [*lines, ""]

    out = [CONTROL_FILE_HEADER, ""]
    if control.all != FeatureControl():
        out += table("all", control.all)
    for name in sorted(control.features):
        out += table(f"features.{toml_key(name)}", control.features[name])
    return "\n".join(out)


class _Poller:
    """What one runtime worker does for one source: poll it, apply what it says."""

    def __init__(self, source: ControlSource) -> None:
        self.source = source
        self.worker_name = f"aiguard-control[{source.name}]"
        self._last_error: str | None = None

    def poll_once(self) -> None:
        try:
            snapshot = checked(self.source.name, self.source.poll())
        except Exception as exc:
            errors.count(f"control poll: {self.source.name}")
            message = str(exc)
            if message != self._last_error:
                self._last_error = message
                events.emit(
                    ControlEvent(
                        EventKind.CONTROL_ERROR,
                        ALL,
                        f"{message}; keeping the last good state of {self.source.name}",
                    )
                )
            return
        self._last_error = None
        if snapshot is not None:
            apply(self.source.name, snapshot, poller=self)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def checked(name: str, snapshot: Any) -> ControlState | None:
    """What a source's ``poll()`` returned, as a ControlState (ConfigError if it is not one)."""
    if snapshot is None or isinstance(snapshot, ControlState):
        return snapshot
    try:
        return ControlState.model_validate(snapshot)
    except pydantic.ValidationError as exc:
        raise ConfigError(explain(exc, f"control source {name}")) from None


def apply(source: str, snapshot: ControlState, poller: _Poller | None = None) -> None:
    """Install ``snapshot`` as what ``source`` says; emit kill/revive events for changes."""
    with runtime.lock:
        if poller is not None:
            worker = runtime.workers.get(poller.worker_name)
            if worker is None or worker.step != poller.poll_once:
                return  # stopped while it was polling: what it read no longer counts
        old = runtime.controls.get(source)
        runtime.controls[source] = snapshot
        runtime.bump()
    warn_unknown(snapshot.features, source)
    before = _killed(old)
    after = _killed(snapshot)
    for feature in sorted(after.keys() - before.keys()):
        fc = after[feature]
        events.emit(ControlEvent(EventKind.KILL, feature, fc.reason or source, fc.by))
    for feature in sorted(before.keys() - after.keys()):
        events.emit(ControlEvent(EventKind.REVIVE, feature, f"lifted in {source}"))


def warn_unknown(features: Any, where: str) -> None:
    """Warn (once per name in the process) about settings or control state for features no
    guard in this process has declared: a misspelt name would do nothing, silently. Not an
    error: the guard may be declared later (a module imported after configuration)."""
    with runtime.lock:
        known = {core.feature for core in runtime.cores}
    unknown = [name for name in features if name != ALL and name not in known]
    for name in unknown:
        if not errors.first_time(f"unknown-feature:{name}"):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        logger.warning(
            "aiguard: %s names feature %r, which no guard in this process has declared "
            "(yet)%s: it takes effect only if a guard for it is declared",
            where,
            name,
            hint,
        )


def warn_near(feature: str) -> None:
    """At a guard's declaration: warn (once) about names in the settings or control state that
    no guard has declared and that look like a misspelling of ``feature`` (configuration is
    often loaded before the modules that declare the guards)."""
    with runtime.lock:
        known = {core.feature for core in runtime.cores}
        named = {*runtime.features, *runtime.kills, *runtime.rollouts}
        for snapshot in runtime.controls.values():
            named.update(snapshot.features)
    for name in sorted(named - known - {ALL, feature}):
        if not difflib.get_close_matches(feature, [name], n=1):
            continue
        if errors.first_time(f"unknown-feature-near:{name}:{feature}"):
            logger.warning(
                "aiguard: feature %r is declared, and the settings or control state name %r, "
                "which no guard has declared: did you mean %r?",
                feature,
                name,
                feature,
            )


def _killed(snapshot: ControlState | None) -> dict[str, FeatureControl]:
    if snapshot is None:
        return {}
    out = {name: fc for name, fc in snapshot.features.items() if fc.killed}
    if snapshot.all.killed:
        out[ALL] = snapshot.all
    return out


def read_sources(sources: list[ControlSource]) -> dict[str, ControlState]:
    """Read each source once (configuration time: a source that cannot be read raises here,
    before anything is changed); what each says, by name."""
    first: dict[str, ControlState] = {}
    for source in sources:
        if not isinstance(source, ControlSource):
            raise ConfigError(
                f"control={source!r} is invalid: give a control file path or a ControlSource"
            )
        if source.name in first:
            raise ConfigError(
                f"control: two sources are named {source.name!r}; each source needs its own name"
            )
        snapshot = checked(source.name, source.poll())
        first[source.name] = snapshot if snapshot is not None else ControlState()
    return first


def start_sources(sources: list[ControlSource], first: dict[str, ControlState]) -> None:
    """Replace the polled sources by ``sources`` (read once already: ``first``), each polled
    in a runtime worker at its interval."""
    stop_sources()
    with runtime.lock:
        runtime.controls = {}
    for name, snapshot in first.items():
        apply(name, snapshot)
    for source in sources:
        p = _Poller(source)
        lifecycle.add_worker(p.worker_name, p.poll_once, p.source.interval, close=p.close)


def stop_sources() -> None:
    """Stop polling (the state they gave is dropped)."""
    with runtime.lock:
        names = [name for name in runtime.workers if name.startswith("aiguard-control[")]
        runtime.controls = {}
        runtime.bump()
    for name in names:
        lifecycle.remove_worker(name)


def default_control_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The control file the CLI edits: ``--control``, else $AIGUARD_CONTROL, else
    ``./aiguard-control.toml``."""
    return Path(explicit or os.environ.get(CONTROL_ENV) or "aiguard-control.toml")
