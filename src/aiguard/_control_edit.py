"""Writing to a control source from outside the call path: the CLI, ``tune(apply=True)`` and a
drift rollback. A control file is rewritten atomically; a Redis control document is changed in
an optimistic transaction (``aiguard.redis.edit_control``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._engine.settings import ALL
from ._runtime.state import runtime
from .control import ControlFile, ControlState, FeatureControl, read_control_file
from .control import write_control_file as _write_file
from .exceptions import ConfigError

REDIS_SCHEMES = ("redis:/", "rediss:/", "unix:/")


def is_redis(where: str | os.PathLike[str]) -> bool:
    return str(where).startswith(REDIS_SCHEMES)


def url(where: str | os.PathLike[str]) -> str:
    """A Redis URL, mended if a Path folded its ``//``."""
    text = str(where)
    return text.replace(":/", "://", 1) if "://" not in text else text


def label(where: str | os.PathLike[str]) -> str:
    return f"Redis control {url(where)}" if is_redis(where) else f"control file {where}"


def load(where: str | os.PathLike[str]) -> ControlState:
    """What the control file or Redis document says now (a missing one is an empty state)."""
    if is_redis(where):
        from .redis import RedisControl

        return RedisControl(url(where), timeout=5.0).poll() or ControlState()
    return read_control_file(Path(where))


def edit(
    where: str | os.PathLike[str], feature: str, *, prefix: str = "aiguard", **changes: Any
) -> None:
    """Change ``feature``'s entry (``ALL``: the global one) in a control file or Redis."""

    def change(control: ControlState) -> ControlState:
        if feature == ALL:
            updated = control.all.model_copy(update=changes)
            return control.model_copy(
                update={"all": FeatureControl.model_validate(updated.model_dump())}
            )
        current = control.features.get(feature, FeatureControl())
        fc = FeatureControl.model_validate({**current.model_dump(), **changes})
        return control.model_copy(update={"features": {**control.features, feature: fc}})

    if is_redis(where):
        from .redis import edit_control

        edit_control(url(where), change, prefix=prefix)
    else:
        _write_file(Path(where), change(read_control_file(Path(where))))


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


def write(feature: str, control: str | os.PathLike[str] | None, **changes: Any) -> list[str]:
    """Write ``changes`` for ``feature`` to ``control`` (a control file path or redis:// URL),
    or to every writable control source this process polls (each polled again at once, so this
    process sees the change now); what was written, as labels. ConfigError when there is no
    place to write."""
    if control is not None:
        edit(control, feature, **changes)
        return [label(control)]
    targets = configured()
    if not targets:
        raise ConfigError(
            f"feature {feature!r}: no control source to write to: configure(control=...) with a "
            "control file or a redis:// URL, or give control="
        )
    written = []
    for where, options, poller in targets:
        edit(where, feature, **options, **changes)
        poller.poll_once()
        written.append(label(where))
    return written
