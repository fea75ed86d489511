"""Call records: every guarded call, written to the store off the call's path.

The call puts its raw figures on a bounded in-memory queue (one ``deque.append``); a daemon thread
turns them into rows and writes them in batches (one transaction per batch). When the queue is
full the record is dropped, counted (``dropped``) and logged once: call records are telemetry.
Feedback and review items never go through here; they are written before their function returns.
``aiguard.flush()`` and interpreter exit write what is queued.
"""

from __future__ import annotations

import atexit
import collections
import threading
from collections.abc import Callable
from typing import Any

from . import _ids, _internal, _serialize
from .outcome import Outcome
from .pricing import to_pico

CAPACITY = 100_000  # queued records at most
BATCH = 1_000  # rows per transaction at most
INTERVAL = 0.2  # seconds between writes when the queue is quiet
RECENT = 50_000  # recent calls remembered for feedback (id -> feature, served value)


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
            text = _serialize.dumps(value)
        except Exception as exc:
            _internal.report("call record capture", exc)
            return None
        if len(text.encode()) > self.max_bytes:
            head = text.encode()[: self.max_bytes].decode(errors="ignore")
            return _serialize.dumps({"$truncated": head})
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


def _bound(inputs: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> Any:
    from .fallbacks import bound_arguments

    return bound_arguments(*inputs)


class Recorder:
    """The queue and its writer thread for one store."""

    def __init__(self, store: Any, capture: Capture | None) -> None:
        self.store = store
        self.capture = capture
        self.queue: collections.deque[Any] = collections.deque()
        self.dropped = 0
        self.written = 0
        # call id -> (feature, served value, (trace id, span id)): what feedback needs; the
        # oldest is forgotten first (an OrderedDict: cheaper per insert than cachetools' LRU)
        self.recent: collections.OrderedDict[
            str, tuple[str, Any, tuple[str | None, str | None]]
        ] = collections.OrderedDict()
        self._recent_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="aiguard-records", daemon=True)
        self.thread.start()

    # -- the call's side: as cheap as it gets --------------------------------------------------

    def put(self, item: Any) -> None:
        """Queue one call (a raw served record or an Outcome, with its inputs if captured)."""
        queue = self.queue
        if len(queue) >= CAPACITY:
            self.dropped += 1
            _internal.warn_once(
                "records-dropped",
                "aiguard: the call-record queue is full (%s): records are being dropped and "
                "counted (aiguard.flush() or a faster store helps)",
                CAPACITY,
            )
            return
        queue.append(item)
        if len(queue) >= BATCH:
            self._wake.set()

    # -- the writer's side ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(INTERVAL)
            self._wake.clear()
            self.drain()

    def drain(self) -> int:
        """Write everything queued now; returns how many rows were written. Never raises."""
        written = 0
        with self._write_lock:
            queue = self.queue
            while queue:
                batch: list[Any] = []
                while queue and len(batch) < BATCH:
                    batch.append(queue.popleft())
                pairs = []
                for item in batch:
                    try:
                        pairs.append((item, self._row(item)))
                    except Exception as exc:
                        self.dropped += 1
                        _internal.report("call record", exc)
                rows = [row for _, row in pairs]
                try:
                    self.store.add_call_records(rows)
                except Exception as exc:
                    _internal.report("call records write", exc)
                    # one bad row must not block the rest: write them one by one; if none can
                    # be written the store is down, and they wait for the next attempt
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
                    written += took
                    if took:
                        self.dropped += len(kept)  # bad rows (the store took the others)
                        continue
                    room = max(0, CAPACITY - len(queue))
                    self.dropped += max(0, len(kept) - room)
                    for item in reversed(kept[:room]):
                        queue.appendleft(item)
                    break
                written += len(rows)
        self.written += written
        return written

    def _row(self, item: Any) -> tuple[Any, ...]:
        inputs = model = None
        ids: tuple[str | None, str | None] = (None, None)
        record = item
        source: str | None
        if item.__class__ is Extras:
            record, inputs, ids, model = item.record, item.inputs, item.span_ids, item.model
        if record.__class__ is tuple:
            # a served call's raw figures, read directly (building its Outcome costs more)
            core, n, value, confidence, s, t0, t1, t2, arm, usage, cost = record
            call_id, feature, source, reason = _ids.call_id(n), core.feature, "model", "served"
            started, latency, model_latency = _ids.wall_time(t0), t2 - t0, t1 - t0
            threshold, percent, detail = s.threshold, s.percent, None
            model = model or core.acct.model
        else:
            o: Outcome[Any] = record
            call_id, feature, value, usage = o.call_id, o.feature, o.value, o.usage
            source = None if o.source is None else o.source.value
            reason, confidence, threshold = o.reason.value, o.confidence, o.threshold
            arm, percent, detail = o.arm, o.rollout_percent, o.detail
            started, latency, model_latency = o.started_at, o.latency, o.model_latency
            cost = None if o.cost is None else to_pico(o.cost)
        capture = self.capture
        in_text = out_text = None
        if capture is not None:
            if inputs is not None:
                in_text = capture.encode(_bound(inputs))
            out_text = capture.encode(value)
        with self._recent_lock:
            recent = self.recent
            recent[call_id] = (feature, value, ids)
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
            ids[0],
            ids[1],
            in_text,
            out_text,
            detail,
        )

    def queued(self, call_id: str) -> tuple[str, Any, tuple[str | None, str | None]] | None:
        """(feature, served value, span ids) of a call still waiting in the queue (no I/O)."""
        for item in list(self.queue):
            record = item
            ids: tuple[str | None, str | None] = (None, None)
            if item.__class__ is Extras:
                record, ids = item.record, item.span_ids
            if record.__class__ is tuple:
                if _ids.call_id(record[1]) == call_id:
                    return record[0].feature, record[2], ids
            elif record.call_id == call_id:
                return record.feature, record.value, ids
        return None

    def known(self, call_id: str) -> tuple[str, Any, tuple[str | None, str | None]] | None:
        """(feature, served value, span ids) of a recent call, if this process remembers it."""
        with self._recent_lock:
            return self.recent.get(call_id)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self.drain()


_recorders: list[Recorder] = []


def flush() -> int:
    """Write every queued call record to the store now; returns how many were written.

    Records are also written in the background every 0.2 s and at interpreter exit.

    Example:
        >>> import aiguard
        >>> aiguard.flush()
        0
    """
    n = 0
    for recorder in list(_recorders):
        n += recorder.drain()
    return n


atexit.register(flush)
