"""Feedback: what the user did with an answer, recorded against the call that produced it.

``aiguard.feedback(call_id, ...)`` (or ``outcome.accept()``, ``.reject()``, ``.edit()``,
``.correct()``, ``.rate()``) writes one row to the store and returns only once it is durable;
``await aiguard.afeedback(...)`` (and ``outcome.aaccept()``, ...) does the same work in a thread,
so the event loop keeps running meanwhile. Feedback given twice for a call keeps both, with their
times; the latest counts in the figures. An edit is measured: the normalised edit distance
between what was served and what the user kept (for text), or the share of fields changed (for
structured values).

Feedback given in one process on a call made in another (two web workers) may arrive before the
other process has written the call's record. A call id names the process that issued it (see
``aiguard._runtime.ids``), and every record writer saves, with each batch, the highest counter its
process has issued (``call_issuers``). So the call is known to be real as soon as its process's
writer has written once after the call: the feedback is then written at once, durable, without
its feature, and attached to the call (its feature set) in the transaction that writes the call's
record. Until then ``feedback()`` looks again for up to ``wait=`` seconds (default
``DEFAULT_WAIT``); an id no process of the store issued (or not yet, by then) is
:class:`~aiguard.UnknownCall`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import math
import numbers
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

from ._checks import shown
from ._runtime import errors, ids, offload
from ._runtime import serialize as _serialize
from ._runtime import telemetry as _telemetry
from ._runtime.records import served_output
from ._runtime.state import UNSET, runtime
from .exceptions import ConfigError, UnknownCall
from .store import configured

__all__ = ["DEFAULT_WAIT", "Feedback", "FeedbackKind", "afeedback", "edit_distance", "feedback"]

DEFAULT_WAIT = 2.0
"""Seconds ``feedback()`` looks for a call of another process that its store does not know yet:
ten times the record writer's interval (0.2 s), so a busy writer has time to write."""
POLL_FIRST, POLL_MAX = 0.01, 0.1  # seconds between two looks at the store: from, doubling to


class FeedbackKind(enum.StrEnum):
    """What the feedback says.

    ``accepted``: served as is; ``edited``: kept with changes; ``rejected``: not used;
    ``corrected``: a corrected label given (the answer was wrong); ``rated``: a score only;
    ``reviewed``: a human review queue resolution (the reviewer's answer is the label);
    ``audited``: a reviewer's verdict on a served answer sampled for audit (``accepted``: the
    served answer was right), written by ``ReviewQueue.resolve`` for an audit item; it is not
    a user's decision: acceptance figures leave it out.

    Example:
        >>> import aiguard
        >>> aiguard.FeedbackKind("edited").value
        'edited'
    """

    ACCEPTED = "accepted"
    EDITED = "edited"
    REJECTED = "rejected"
    CORRECTED = "corrected"
    RATED = "rated"
    REVIEWED = "reviewed"
    COMMENTED = "commented"
    AUDITED = "audited"


@dataclasses.dataclass(frozen=True, slots=True)
class Feedback:
    """One piece of feedback, as stored.

    Example:
        >>> import aiguard
        >>> aiguard.Feedback(id=1, call_id="ag_1", feature="t", kind=aiguard.FeedbackKind.ACCEPTED,
        ...                  accepted=True).accepted
        True
    """

    id: int
    call_id: str
    feature: str | None
    kind: FeedbackKind
    accepted: bool | None = None
    score: float | None = None
    label: Any = None
    edited: Any = None
    edit_distance: float | None = None
    comment: str | None = None
    by: str | None = None
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: float = 0.0
    pending: bool = False
    """True when the call's record was not in the store yet (a call of another process): the
    row is kept, without its ``feature``, and counts once the record is written."""


# -- edit distance --------------------------------------------------------------------------------

_EXACT_LIMIT = 250_000  # |a| * |b| up to which Levenshtein is computed exactly


def _levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edit_distance(served: Any, kept: Any) -> float | None:
    """How much of ``served`` the user changed, from 0 (nothing) to 1 (everything).

    Text: Levenshtein distance over the longer length (for very long texts,
    ``1 - difflib.SequenceMatcher.ratio()``). Mappings, dataclasses and pydantic models: the share
    of fields (of either) that differ. Lists: the share of positions that differ. Otherwise 0 if
    equal, 1 if not. ``None`` when nothing was served.

    Example:
        >>> import aiguard
        >>> aiguard.edit_distance("kitten", "sitting")
        0.42857142857142855
        >>> aiguard.edit_distance({"label": "bug", "team": "web"}, {"label": "bug", "team": "api"})
        0.5
    """
    if served is None:
        return None
    if isinstance(served, str) and isinstance(kept, str):
        longest = max(len(served), len(kept))
        if longest == 0:
            return 0.0
        if len(served) * len(kept) <= _EXACT_LIMIT:
            return _levenshtein(served, kept) / longest
        similarity: float = difflib.SequenceMatcher(None, served, kept, autojunk=False).ratio()
        return 1.0 - similarity
    a, b = _serialize.jsonable(served), _serialize.jsonable(kept)
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() | b.keys()
        return sum(a.get(k) != b.get(k) for k in keys) / len(keys) if keys else 0.0
    if isinstance(a, list) and isinstance(b, list):
        n = max(len(a), len(b))
        if n == 0:
            return 0.0
        changed: int = sum(bool(x != y) for x, y in zip(a, b, strict=False))
        return (changed + abs(len(a) - len(b))) / n
    return 0.0 if bool(a == b) else 1.0


# -- recording ------------------------------------------------------------------------------------


class _Found(tuple):  # type: ignore[type-arg]
    """What feedback needs of its call: (feature, served value, (trace id, span id), the call's
    row when it is not in the store yet, the store the call belongs to, whether the call is
    another process's whose record the store does not have yet)."""

    __slots__ = ()


def _local(call_id: str) -> _Found | None:
    """The call as this process knows it (queued, being written, or remembered), or None."""
    for recorder in [runtime.recorder, *runtime.recorders]:
        if recorder is None:
            continue
        pending = recorder.pending(call_id)
        if pending is not None:
            (feature, served, span), row = pending
            return _Found((feature, served, span, row, recorder.store, False))
        known = recorder.known(call_id)
        if known is not None:
            if recorder.capture is not None:
                found = recorder.store.get_call(call_id)  # written, with its output
                if found is not None:
                    return _stored(found, recorder.store)
            feature, served, span = known
            return _Found((feature, served, span, None, recorder.store, False))
    return None


def _stored(found: dict[str, Any], store: Any) -> _Found:
    served = served_output(found.get("output"))
    span = (found.get("trace_id"), found.get("span_id"))
    return _Found((found["feature"], served, span, None, store, False))


def _lookup(call_id: str, wait: float) -> _Found:
    """The call ``call_id`` (see :class:`_Found`), or UnknownCall.

    Known to this process or in the store: found. Otherwise, an id of the shape aiguard issues
    (``ag_<process>_<counter>``) may be a call of another process whose record is not written
    yet: found (as not recorded yet) once the store says that process has issued that counter,
    or its record lands, looking again until ``wait`` seconds have passed. An id of this
    process is judged at once: it was issued here or not, and is queued or not."""
    found = _local(call_id)
    if found is not None:
        return found
    store = configured()
    row = store.get_call(call_id)
    if row is not None:
        return _stored(row, store)
    issuer = ids.parse(call_id)
    if issuer is None:
        raise UnknownCall(
            f"no guarded call has id {call_id!r} (is call recording on, and the store the one "
            "the call was recorded in?)"
        )
    process, number = issuer
    if process == ids.process_id():
        return _own(call_id, number, store)
    read_issued = getattr(store, "issued", None)
    deadline = time.monotonic() + wait
    pause = POLL_FIRST
    issued = None
    while True:
        if read_issued is not None:
            issued = read_issued(process)
            if issued is not None and number <= issued:
                row = store.get_call(call_id)  # it may have landed meanwhile
                if row is not None:
                    return _stored(row, store)
                return _Found((None, None, (None, None), None, store, True))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(POLL_MAX, pause * 2)
        row = store.get_call(call_id)
        if row is not None:
            return _stored(row, store)
    if read_issued is None:
        why = f"its record did not reach {store!r} within wait={wait:g} s"
    elif issued is None:
        why = f"no process writing to {store!r} has issued ids {process}_..."
    else:
        why = (
            f"the process that issues {process}_... ids had issued them up to "
            f"{process}_{issued:x} when it last wrote to {store!r}"
        )
    raise UnknownCall(
        f"no guarded call has id {call_id!r}: {why} (waited {wait:g} s; is call recording on "
        "in that process, and its store this one?)"
    )


def _own(call_id: str, number: int, store: Any) -> _Found:
    """A call id of this process that is neither queued nor in the store: never issued, or
    its record was dropped or is not written anywhere (recording off)."""
    if number > ids.issued():
        raise UnknownCall(
            f"no guarded call has id {call_id!r}: this process has issued ids up to "
            f"{ids.call_id(ids.issued())} only"
        )
    found = _local(call_id)  # between two places of the writer's when first asked
    if found is not None:
        return found
    row = store.get_call(call_id)
    if row is not None:
        return _stored(row, store)
    raise UnknownCall(
        f"no guarded call has id {call_id!r}: this process made it, but its record is not in "
        f"{store!r} (recording off, a record dropped, or a call made before this store was "
        "configured)"
    )


def _wait(where: str, wait: Any) -> float:
    """``wait`` as seconds: a number of seconds (0 or more, finite) or a timedelta; ConfigError
    naming it otherwise."""
    given = wait
    if isinstance(wait, timedelta):
        wait = wait.total_seconds()
    if isinstance(wait, bool) or not isinstance(wait, numbers.Real):
        wait = math.nan
    try:
        f = float(wait)
    except Exception:
        f = math.inf
    if not (0 <= f <= threading.TIMEOUT_MAX):
        raise ConfigError(
            f"{where}: wait={shown(given)} is invalid: give seconds (0 or more, finite) or a "
            "timedelta"
        )
    return f


def feedback(
    call_id: Any,
    *,
    accepted: bool | None = None,
    score: float | None = None,
    edited: Any = UNSET,
    label: Any = UNSET,
    comment: str | None = None,
    by: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    served: Any = UNSET,
    kind: FeedbackKind | str | None = None,
    wait: float | timedelta = DEFAULT_WAIT,
) -> Feedback:
    """Record what the user did with the answer of call ``call_id`` (a call id or an Outcome).

    Args:
        accepted: the user used the answer (True) or not (False).
        score: a rating, any number (e.g. 1-5 stars, or 0-1).
        edited: the user's edited version of the answer (implies accepted).
        label: the corrected label (implies not accepted: the answer was wrong).
        comment: free text.
        by: who gave the feedback.
        attributes: segment attributes for the figures (e.g. ``{"plan": "pro"}``).
        wait: for a call of another process that the store does not know yet, how long to
            look for it (seconds or a timedelta; default ``DEFAULT_WAIT``, 2 s; 0: not at all).

    The row is durable when this returns. An unknown call id raises :class:`UnknownCall`; a
    store that fails raises :class:`aiguard.StoreError`: feedback is never silently lost.
    Feedback on a call of another process whose record is not written yet is kept all the
    same once the store shows that process issued the id (``Feedback.pending``): it counts
    once the record lands.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> @aiguard.guard("reply")
        ... def reply(text: str) -> str:
        ...     return "Thanks, we are on it."
        >>> outcome = reply.outcome("my order is late")
        >>> fb = aiguard.feedback(outcome, edited="Thanks! We are on it.", by="agent-7")
        >>> fb.kind.value, round(fb.edit_distance, 3)
        ('edited', 0.095)
    """
    response_id = None
    if not isinstance(call_id, str) and _has_call_id(call_id):  # an Outcome
        if served is UNSET:
            served = call_id.value
        response_id = _response_id(call_id)
        call_id = call_id.call_id
    if not isinstance(call_id, str) or not call_id:
        raise ConfigError(
            f"feedback(call_id={shown(call_id)}) is invalid: give a call id or an Outcome"
        )
    where = f"feedback({call_id!r})"
    wait_s = _wait(where, wait)
    if accepted is not None and not isinstance(accepted, bool):
        raise ConfigError(f"{where}: accepted={shown(accepted)} must be True or False")
    score = _score(where, score)
    for name, text in (("comment", comment), ("by", by)):
        if text is not None and not isinstance(text, str):
            raise ConfigError(f"{where}: {name}={shown(text)} must be text or None")
        _storable(where, name, text, text)
    attrs, attrs_text = _attributes(where, attributes)
    stored: dict[str, str | None] = {}
    for name, value in (("label", label), ("edited", edited)):
        stored[name] = None if value is UNSET else _dumps(where, name, value)
    if kind is not None:
        try:
            kind = FeedbackKind(kind)
        except Exception:
            choices = ", ".join(k.value for k in FeedbackKind)
            raise ConfigError(
                f"{where}: kind={shown(kind)} is invalid: choose one of {choices}"
            ) from None
    else:
        if label is not UNSET:
            kind = FeedbackKind.CORRECTED
        elif edited is not UNSET:
            kind = FeedbackKind.EDITED
        elif accepted is not None:
            kind = FeedbackKind.ACCEPTED if accepted else FeedbackKind.REJECTED
        elif score is not None:
            kind = FeedbackKind.RATED
        elif comment:
            kind = FeedbackKind.COMMENTED
        else:
            raise ConfigError(
                f"feedback({call_id!r}) says nothing: give accepted=, score=, edited=, label= "
                "or comment="
            )
    if kind is FeedbackKind.AUDITED and accepted is None:
        raise ConfigError(
            f"{where}: kind='audited' needs accepted=True (the served answer was right) or "
            "accepted=False (it was wrong)"
        )
    if accepted is None:
        if kind in (FeedbackKind.ACCEPTED, FeedbackKind.EDITED):
            accepted = True
        elif kind in (FeedbackKind.REJECTED, FeedbackKind.CORRECTED):
            accepted = False
    feature, served_before, span, record, home, pending = _lookup(call_id, wait_s)
    if served is UNSET:
        served = served_before
    distance = None
    if edited is not UNSET:
        distance = edit_distance(served, edited)
    now = time.time()
    row = {
        "call_id": call_id,
        "feature": feature,
        "kind": kind.value,
        "accepted": None if accepted is None else int(accepted),
        "score": score,
        "label": stored["label"],
        "edited": stored["edited"],
        "edit_distance": distance,
        "comment": comment,
        "by": by,
        "attributes": attrs_text,
        "created_at": now,
    }
    row_id = _write(home, row, record)
    result = Feedback(
        id=row_id,
        call_id=call_id,
        feature=feature,
        kind=kind,
        accepted=accepted,
        score=score,
        label=None if label is UNSET else _serialize.jsonable(label),
        edited=None if edited is UNSET else _serialize.jsonable(edited),
        edit_distance=distance,
        comment=comment,
        by=by,
        attributes=attrs,
        created_at=now,
        pending=pending,
    )
    _emit(result, span, response_id)
    return result


async def afeedback(
    call_id: Any,
    *,
    accepted: bool | None = None,
    score: float | None = None,
    edited: Any = UNSET,
    label: Any = UNSET,
    comment: str | None = None,
    by: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    served: Any = UNSET,
    kind: FeedbackKind | str | None = None,
    wait: float | timedelta = DEFAULT_WAIT,
) -> Feedback:
    """:func:`feedback`, awaited: the same checks and the same write, run in one of aiguard's
    threads, so the event loop keeps running while the store works (each store operation has
    its deadline, and ``wait=`` bounds the look for another process's call). Cancelling the
    awaiting task does not undo the write: once started, the feedback is recorded or fails in
    its thread.

    Example:
        >>> import asyncio, aiguard
        >>> aiguard.configure(store=":memory:")
        >>> @aiguard.guard("reply")
        ... async def reply(text: str) -> str:
        ...     return "Thanks, we are on it."
        >>> async def main() -> str:
        ...     outcome = await reply.outcome("my order is late")
        ...     fb = await aiguard.afeedback(outcome.call_id, accepted=True, by="agent-7")
        ...     return fb.kind.value
        >>> asyncio.run(main())
        'accepted'
    """
    return await offload.run(
        feedback,
        call_id,
        accepted=accepted,
        score=score,
        edited=edited,
        label=label,
        comment=comment,
        by=by,
        attributes=attributes,
        served=served,
        kind=kind,
        wait=wait,
    )


# -- argument checks ------------------------------------------------------------------------------

_MAX_SCORE = 2**53  # every whole number up to it is exact as a float; sums of scores stay finite


def _has_call_id(value: Any) -> bool:
    try:
        return hasattr(value, "call_id")
    except Exception:
        return False


def _score(where: str, score: Any) -> float | None:
    """``score`` as given (an int or a float; another real number type as a float), or
    ConfigError: a finite number whose size is at most 2**53."""
    if score is None:
        return None
    kind = type(score)
    problem = "must be a finite number from -2**53 to 2**53"
    if kind is bool or not isinstance(score, numbers.Real):
        raise ConfigError(f"{where}: score={shown(score)} is invalid: {problem}")
    try:
        f = float(score)
    except Exception:  # too large for a float, or a __float__ that fails
        f = math.inf
    if not (math.isfinite(f) and abs(f) <= _MAX_SCORE):
        raise ConfigError(f"{where}: score={shown(score)} is invalid: {problem}")
    if kind is int or kind is float:
        return cast(float, score)  # an int score is kept as given
    return f


def _storable(where: str, name: str, given: Any, text: str | None) -> None:
    """ConfigError unless ``text`` (what ``given`` is stored as) can be stored: UTF-8 text, so no
    lone surrogate such as "\\ud800"."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{where}: {name}={shown(given)} is invalid: it cannot be stored as UTF-8 text "
            f"({exc.reason} at position {exc.start})"
        ) from None


def _dumps(where: str, name: str, value: Any) -> str:
    """``value`` as the JSON text it is stored as; ConfigError if it cannot be."""
    try:
        text = _serialize.dumps(value)
    except Exception as exc:  # e.g. an int too long for text
        raise ConfigError(
            f"{where}: {name}={shown(value)} is invalid: it cannot be stored as JSON ({exc})"
        ) from None
    _storable(where, name, value, text)
    return text


def _attributes(where: str, attributes: Any) -> tuple[dict[str, Any], str | None]:
    """``attributes`` as a dict, and the JSON text it is stored as: a mapping with text keys,
    or None."""
    if attributes is None:
        return {}, None
    problem = "give a mapping of attribute names (text) to values, e.g. {'plan': 'pro'}"
    if not isinstance(attributes, Mapping):
        raise ConfigError(f"{where}: attributes={shown(attributes)} is invalid: {problem}")
    try:
        attrs = dict(attributes)
    except Exception:
        raise ConfigError(
            f"{where}: attributes={shown(attributes)} is invalid: {problem}"
        ) from None
    if not all(isinstance(k, str) for k in attrs):
        raise ConfigError(f"{where}: attributes={shown(attributes)} is invalid: {problem}")
    return attrs, (_dumps(where, "attributes", attrs) if attrs else None)


def _write(store: Any, row: dict[str, Any], record: tuple[Any, ...] | None) -> int:
    """Write the feedback row; with the call's record when it is not in the store yet, in the
    same transaction, so no acknowledged feedback is ever without its call (even after a crash).
    A store without that parameter gets the record first, then the feedback."""
    if record is None:
        return int(store.add_feedback(row))
    if "call_record" in inspect.signature(store.add_feedback).parameters:
        return int(store.add_feedback(row, call_record=record))
    store.add_call_records([record])  # a store of the earlier protocol: two transactions
    return int(store.add_feedback(row))


_CLIENTS = frozenset({"openai", "anthropic"})


def _response_id(outcome: Any) -> str | None:
    """The id the provider gave the call's response (``chatcmpl-...``, ``resp_...``,
    ``msg_...``), when the Outcome holds the model client's own response object; never
    raises."""
    try:
        result = outcome.model_result
        if result is None:
            return None
        if type(result).__module__.partition(".")[0] not in _CLIENTS:
            return None
        found = getattr(result, "id", None)
        return found if isinstance(found, str) and found else None
    except Exception:
        return None


def _emit(fb: Feedback, ids: tuple[str | None, str | None], response_id: str | None = None) -> None:
    """A ``gen_ai.evaluation.result`` event linked to the call's span, and a counter; never
    raises."""
    try:
        _telemetry.evaluation(fb, ids, response_id)
    except Exception as exc:
        errors.report("feedback telemetry", exc)
