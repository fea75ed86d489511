"""Call records: every guarded call, written to the store off the call's path.

This module owns the record layouts: the served call's raw figures (:class:`Served`, named
fields; nobody else indexes it) and the row written to the store (``CALL_RECORD_COLUMNS``).

The call puts its record on a bounded in-memory queue (one ``deque.append``); a worker thread,
started on the first record, turns them into rows and writes them in batches (one transaction
per batch). When the queue is full the record is dropped, counted (``dropped``) and logged once.
Feedback and review items never go through here; they are written before their function returns.

Changing the recording settings never loses a record: the new recorder takes over at once, and
the old one (``retire``) forwards what still reaches it to the new one and writes what it holds
to its own store in the background. ``aiguard.flush()`` writes what is queued; at exit the
runtime writes it within ``exit_timeout``.
"""

from __future__ import annotations

import collections
import functools
import inspect
import operator
import threading
import time
from collections.abc import Callable
from typing import Any

from . import errors, ids, serialize
from .money import pico_of
from .state import runtime, track
from .workers import Worker

CAPACITY = 100_000  # queued records at most
BATCH = 1_000  # rows per transaction at most
INTERVAL = 0.2  # seconds between writes when the queue is quiet
MIN_PAUSE, MAX_PAUSE = 0.002, 0.05  # seconds between two batches of a backlog
RECENT = 50_000  # recent calls remembered for feedback (id -> feature, served value)

CALL_RECORD_COLUMNS = (
    "call_id", "feature", "started_at", "source", "reason", "confidence", "threshold", "arm",
    "rollout_percent", "model", "input_tokens", "output_tokens", "cache_read_tokens",
    "cost_pico", "latency", "model_latency", "trace_id", "span_id", "inputs", "output", "detail",
)  # fmt: skip


class Served(tuple):  # type: ignore[type-arg]
    """A served call's raw figures: all the served path keeps until somebody asks for its
    Outcome. Built by :data:`served`; read by name."""

    __slots__ = ()

    core: Any = property(operator.itemgetter(0))
    number: int = property(operator.itemgetter(1))  # type: ignore[assignment]
    value: Any = property(operator.itemgetter(2))
    confidence: float | None = property(operator.itemgetter(3))  # type: ignore[assignment]
    settings: Any = property(operator.itemgetter(4))
    t0: float = property(operator.itemgetter(5))  # type: ignore[assignment]
    t1: float = property(operator.itemgetter(6))  # type: ignore[assignment]
    t2: float = property(operator.itemgetter(7))  # type: ignore[assignment]
    arm: str | None = property(operator.itemgetter(8))  # type: ignore[assignment]
    usage: Any = property(operator.itemgetter(9))
    cost: int | None = property(operator.itemgetter(10))  # type: ignore[assignment]

    @property
    def call_id(self) -> str:
        return ids.call_id(self[1])


served: Callable[[tuple[Any, ...]], Served] = functools.partial(tuple.__new__, Served)
"""The record of a served call, from the tuple (core, call number, value, confidence, settings,
start, model end, end, rollout arm, usage, cost in pico-units): a C-level call, for the hot path."""


class Capture:
    """What to keep of a call's inputs and output (off by default)."""

    __slots__ = ("max_bytes", "redact")

    def __init__(self, redact: Callable[[Any], Any] | None, max_bytes: int) -> None:
        self.redact = redact
        self.max_bytes = max_bytes

    def encode(self, value: Any) -> str | None:
        try:
            if self.redact is not None:
                value = self.redact(value)
            text = serialize.dumps(value)
        except Exception as exc:
            errors.report("call record capture", exc)
            return None
        if len(text.encode()) > self.max_bytes:
            head = text.encode()[: self.max_bytes].decode(errors="ignore")
            return serialize.dumps({"$truncated": head})
        return text


class Extras:
    """A queued call with what the bare record lacks: inputs, span ids, the guard's model."""

    __slots__ = ("inputs", "model", "record", "span_ids")

    def __init__(
        self,
        record: Any,
        inputs: tuple[Any, tuple[Any, ...], dict[str, Any]] | None,
        span_ids: tuple[str | None, str | None],
        model: str | None,
    ) -> None:
        self.record = record
        self.inputs = inputs
        self.span_ids = span_ids
        self.model = model


def span_ids(span: Any) -> tuple[str | None, str | None]:
    """The hex trace and span ids of a span (None, None when there is none)."""
    if span is None:
        return None, None
    try:
        ctx = span.get_span_context()
        if not ctx.is_valid:
            return None, None
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    except Exception:
        return None, None


def bound_arguments(
    signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """A call's arguments by parameter name, defaults applied, a method's ``self``/``cls`` left
    out; ``{"args": [...], "kwargs": {...}}`` when they do not bind."""
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            pass
        else:
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            first = next(iter(signature.parameters), None)
            if first in ("self", "cls"):
                arguments.pop(first)
            return arguments
    return {"args": list(args), "kwargs": dict(kwargs)}


Known = tuple[str, Any, tuple[str | None, str | None]]  # feature, served value, span ids


class Recorder:
    """The queue and its writer for one store."""

    def __init__(self, store: Any, capture: Capture | None) -> None:
        self.store = store
        self.capture = capture
        self.queue: collections.deque[Any] = collections.deque()
        self.dropped = 0
        self.written = 0
        self.retired = False  # set by retire(): what still arrives goes to the new recorder
        self.inflight = 0  # records in the batch being written now
        # call id -> (feature, served value, (trace id, span id)): what feedback needs; the
        # oldest is forgotten first (an OrderedDict: cheaper per insert than cachetools' LRU)
        self.recent: collections.OrderedDict[str, Known] = collections.OrderedDict()
        self._recent_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.worker = Worker("aiguard-records", self.drain, INTERVAL)
        self.put: Callable[[Any], None] = self._put_first
        track(self)

    # -- the call's side: as cheap as it gets --------------------------------------------------

    def _put_first(self, item: Any) -> None:
        """The first record (in this process): start the writer, then queue as usual."""
        self.put = self._put
        self.worker.ensure()
        self._put(item)

    def _put(self, item: Any) -> None:
        """Queue one call (a served record or an Outcome, with its inputs if captured)."""
        queue = self.queue
        if len(queue) >= CAPACITY:
            self.dropped += 1
            errors.warn_once(
                "records-dropped",
                "aiguard: the call-record queue is full (%s): records are being dropped and "
                "counted (aiguard.flush() or a faster store helps)",
                CAPACITY,
            )
            return
        queue.append(item)
        if self.retired:  # read after the append: see retire()
            self._forward()
        elif len(queue) >= BATCH:
            self.worker.wake()

    def _forward(self) -> None:
        """Hand what is queued here to the runtime's current recorder, if there is one (else
        the retiring drain writes it to this recorder's store)."""
        target = runtime.recorder
        if target is None or target is self:
            return
        queue = self.queue
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                return
            target.put(item)

    # -- the writer's side ---------------------------------------------------------------------

    def drain(self, deadline: float | None = None) -> int:
        """Write what is queued now (not what arrives meanwhile), by ``deadline`` (a
        ``time.monotonic()`` value) if given; returns how many rows were written. Never raises."""
        written = 0
        with self._write_lock:
            queue = self.queue
            left = len(queue)
            while left > 0 and queue:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                batch: list[Any] = []
                while queue and len(batch) < min(BATCH, left):
                    batch.append(queue.popleft())
                left -= len(batch)
                began = time.monotonic()
                self.inflight = len(batch)
                took, kept = self._write(batch)
                self.inflight = 0
                written += took
                if kept:  # the store is down: they wait for the next attempt
                    room = max(0, CAPACITY - len(queue))
                    self.dropped += max(0, len(kept) - room)
                    for item in reversed(kept[:room]):
                        queue.appendleft(item)
                    break
                if left > 0:
                    # let other processes' writers in between two transactions, for as long
                    # as the last one took: a backlog written back to back would starve them
                    # (SQLite's busy wait polls, it does not queue)
                    time.sleep(min(MAX_PAUSE, max(MIN_PAUSE, time.monotonic() - began)))
        self.written += written
        return written

    def _write(self, batch: list[Any]) -> tuple[int, list[Any]]:
        """Write one batch: (rows written, items to try again later)."""
        pairs = []
        for item in batch:
            try:
                pairs.append((item, self._row(item)))
            except Exception as exc:
                self.dropped += 1
                errors.report("call record", exc)
        rows = [row for _, row in pairs]
        if not rows:
            return 0, []
        try:
            self.store.add_call_records(rows)
            return len(rows), []
        except Exception as exc:
            errors.report("call records write", exc)
        # one bad row must not block the rest: write them one by one; if none can be written
        # the store is down, and they wait for the next attempt
        kept: list[Any] = []
        took = 0
        for i, (item, row) in enumerate(pairs):
            if took == 0 and len(kept) >= 2:  # two failures, no success: store down
                kept += [it for it, _ in pairs[i:]]
                break
            try:
                self.store.add_call_records([row])
                took += 1
            except Exception:
                kept.append(item)
        if took:
            self.dropped += len(kept)  # bad rows (the store took the others)
            return took, []
        return 0, kept

    def _row(self, item: Any) -> tuple[Any, ...]:
        inputs = model = None
        span: tuple[str | None, str | None] = (None, None)
        record = item
        source: str | None
        if item.__class__ is Extras:
            record, inputs, span, model = item.record, item.inputs, item.span_ids, item.model
        if record.__class__ is Served:
            # a served call's raw figures, read directly (building its Outcome costs more);
            # unpacked in the field order this module defines (cheaper than ten properties)
            core, number, value, confidence, s, t0, t1, t2, arm, usage, cost = record
            call_id, feature, source, reason = ids.call_id(number), core.feature, "model", "served"
            started, latency, model_latency = ids.wall_time(t0), t2 - t0, t1 - t0
            threshold, percent, detail = s.threshold, s.percent, None
            model = model or core.acct.model
        else:  # an Outcome
            o = record
            call_id, feature, value, usage = o.call_id, o.feature, o.value, o.usage
            source = None if o.source is None else o.source.value
            reason, confidence, threshold = o.reason.value, o.confidence, o.threshold
            arm, percent, detail = o.arm, o.rollout_percent, o.detail
            started, latency, model_latency = o.started_at, o.latency, o.model_latency
            cost = None if o.cost is None else pico_of(o.cost)
        capture = self.capture
        in_text = out_text = None
        if capture is not None:
            if inputs is not None:
                in_text = capture.encode(bound_arguments(*inputs))
            out_text = capture.encode(value)
        with self._recent_lock:
            recent = self.recent
            recent[call_id] = (feature, value, span)
            if len(recent) > RECENT:
                recent.popitem(last=False)
        return (
            call_id,
            feature,
            started,
            source,
            reason,
            confidence,
            threshold,
            arm,
            percent,
            (usage.model if usage is not None and usage.model else None) or model,
            None if usage is None else usage.input_tokens,
            None if usage is None else usage.output_tokens,
            None if usage is None else usage.cache_read_tokens,
            cost,
            latency,
            model_latency,
            span[0],
            span[1],
            in_text,
            out_text,
            detail,
        )

    # -- what feedback asks ------------------------------------------------------------------

    def queued(self, call_id: str) -> Known | None:
        """(feature, served value, span ids) of a call still waiting in the queue (no I/O)."""
        for item in list(self.queue):
            record = item
            span: tuple[str | None, str | None] = (None, None)
            if item.__class__ is Extras:
                record, span = item.record, item.span_ids
            if record.call_id == call_id:
                feature = record.core.feature if record.__class__ is Served else record.feature
                return feature, record.value, span
        return None

    def known(self, call_id: str) -> Known | None:
        """(feature, served value, span ids) of a recent call, if this process remembers it."""
        with self._recent_lock:
            return self.recent.get(call_id)

    # -- life cycle ----------------------------------------------------------------------------

    def retire(self) -> None:
        """Stop taking records: from now on what reaches this recorder goes to the runtime's
        current one. The writer keeps running until ``finish()`` has written what is left."""
        self.retired = True
        self._forward()

    def finish(self, deadline: float) -> int:
        """Write what is left (by ``deadline``, a ``time.monotonic()`` value) and stop the
        writer; returns how many records are still unwritten."""
        self.worker.stop()
        self.drain(deadline)
        if self.retired:  # a late record that read this recorder before it retired
            time.sleep(min(INTERVAL, max(0.0, deadline - time.monotonic())))
            self.drain(deadline)
        return self.unwritten()

    def unwritten(self) -> int:
        """Records not written yet: queued, and in a batch being written now."""
        return len(self.queue) + self.inflight

    def _after_fork(self) -> None:
        self.queue.clear()  # the parent's records: the parent writes them
        self.inflight = 0
        self.put = self._put_first  # the writer starts again on the first record here
