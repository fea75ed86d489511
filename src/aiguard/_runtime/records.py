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
import enum
import functools
import hashlib
import inspect
import json
import operator
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import errors, ids, serialize
from .money import pico_of
from .state import runtime, track
from .workers import Worker

ITEM_BYTES = 512  # a queued record without captured values, at most (measured: ~350 B)
RECENT_ITEM_BYTES = 320  # a remembered call: its id, feature and span ids (measured: ~250 B)
BATCH = 1_000  # rows per transaction at most
INTERVAL = 0.2  # seconds between writes when the queue is quiet
MIN_PAUSE, MAX_PAUSE = 0.002, 0.05  # seconds between two batches of a backlog
PROBES = 2  # rows refused, none taken: the store is down
REFUSALS = 2  # a row refused this often while the store took others is dropped
MAX_BACKOFF = 5.0  # seconds at most between two tries while the store is down

CALL_RECORD_COLUMNS = (
    "call_id", "feature", "started_at", "source", "reason", "confidence", "threshold", "arm",
    "rollout_percent", "model", "input_tokens", "output_tokens", "cache_read_tokens",
    "cost_pico", "latency", "model_latency", "trace_id", "span_id", "inputs", "output", "detail",
    "cache_write_tokens", "cache_write_1h_tokens", "segments", "label", "unit", "escalated",
    "saved_pico",
)  # fmt: skip
"""The columns of a call record, in the order of its row. Columns added by a later schema come
last (where ``ALTER TABLE ... ADD COLUMN`` puts them), so the order of an old row stays a prefix
of this one. Code that reads a row by position uses the indices below, never a number."""

SHADOW_COLUMNS = (
    "call_id", "feature", "candidate", "started_at", "latency", "model", "input_tokens",
    "output_tokens", "cost_pico", "confidence", "agreed", "error",
)  # fmt: skip
"""The columns of a shadow call's row (table ``shadow_calls``), in the order of its row."""

COLUMN = {name: i for i, name in enumerate(CALL_RECORD_COLUMNS)}
CALL_ID, FEATURE, OUTPUT = COLUMN["call_id"], COLUMN["feature"], COLUMN["output"]
TRACE_ID, SPAN_ID = COLUMN["trace_id"], COLUMN["span_id"]


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


def compact(record: Served) -> tuple[Any, ...]:
    """A served record without its value (core, number, confidence, settings, start, model end,
    end, arm, usage, cost, the value's label as :func:`label_of` reads it): what the queue keeps
    when no output is captured, so a queued record never holds the model's answer in memory,
    only its label (the served path builds this tuple inline)."""
    return (*record[:2], *record[3:], label_of(record[2]))


class Brief(tuple):  # type: ignore[type-arg]
    """An Outcome's figures without its values (the queue's form of a call that was not
    served, when no output is captured): call id, feature, source, reason, confidence,
    threshold, arm, rollout percent, detail, start, latency, model latency, usage, cost, the
    label of the model's answer (:func:`label_of`, not yet text), whether it was escalated (1 or
    0) and what a cache hit saved (pico-units, or None)."""

    __slots__ = ()

    @property
    def call_id(self) -> str:
        return self[0]  # type: ignore[no-any-return]


def brief(o: Any) -> Brief:
    """The Brief of Outcome ``o``."""
    return tuple.__new__(
        Brief,
        (
            o.call_id,
            o.feature,
            None if o.source is None else o.source.value,
            o.reason.value,
            o.confidence,
            o.threshold,
            o.arm,
            o.rollout_percent,
            o.detail,
            o.started_at,
            o.latency,
            o.model_latency,
            o.usage,
            None if o.cost is None else pico_of(o.cost),
            label_of(o.model_result),
            int(o.escalated),
            None if o.saved_cost is None else pico_of(o.saved_cost),
        ),
    )


# -- labels -----------------------------------------------------------------------------------

LABEL_CHARS = 100  # the most characters kept of a label or a segment value


def label_of(value: Any) -> Any:
    """The label of a model's answer, not yet text: ``value["label"]`` for a mapping with a
    ``"label"`` key, ``value.label`` for an object with a ``label`` attribute, the member's value
    for an Enum, the value itself for a bool; None otherwise (a plain ``str`` is free text, not a
    label). Never raises: a label that cannot be read is None. Cheap for the common shapes: the
    served path calls it when call records are written."""
    try:
        cls = value.__class__  # a proxy may fail even at this
        if cls is dict:
            return value.get("label")
        if cls is str or value is None:
            return None
        if cls is bool:
            return value
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, Mapping):
            return value.get("label")
        return getattr(value, "label", None)
    except Exception:
        return None


def text_of(value: Any) -> str | None:
    """A label or segment value as stored: ``str()`` of it (an Enum's value), at most
    ``LABEL_CHARS`` characters, lone surrogates and NUL replaced by U+FFFD (what PostgreSQL
    text and UTF-8 take); None when ``str()`` fails or for None."""
    if value is None:
        return None
    try:
        if isinstance(value, enum.Enum):
            value = value.value
        text = value if value.__class__ is str else str(value)
        if not isinstance(text, str):
            return None
        text = text[:LABEL_CHARS]
        if not text.isascii() or "\x00" in text:
            text = "".join(
                "\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text
            )
        return text
    except Exception:
        return None


def call_id_of(item: Any) -> str:
    """The call id of anything the queue holds."""
    if item.__class__ is Extras:
        item = item.record
    if item.__class__ is tuple:  # a compact served record
        return ids.call_id(item[1])
    return item.call_id  # type: ignore[no-any-return]


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
    """A queued call with what the bare record lacks: inputs, span ids, the guard's model, its
    segment values (``(names, values)``, values already text) and whether it is an audit item
    (then ``record`` keeps the served value and ``inputs`` the call's arguments)."""

    __slots__ = ("audit", "inputs", "model", "record", "segments", "span_ids")

    def __init__(
        self,
        record: Any,
        inputs: tuple[Any, tuple[Any, ...], dict[str, Any]] | None,
        span_ids: tuple[str | None, str | None],
        model: str | None,
        segments: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
        audit: bool = False,
    ) -> None:
        self.record = record
        self.inputs = inputs
        self.span_ids = span_ids
        self.model = model
        self.segments = segments
        self.audit = audit

    @property
    def call_id(self) -> str:
        return call_id_of(self.record)


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


def served_output(text: str | None) -> Any:
    """The served value kept in a record's ``output`` column (capture on), or None when none
    was kept or it was cut by the size cap (then it is not what was served)."""
    if not text:
        return None
    value = serialize.loads(text)
    if isinstance(value, dict) and set(value) == {"$truncated"}:
        return None
    return value


_SEGMENTS_KEPT = 4096  # distinct (names, values) whose JSON is remembered by the writer
_segments_seen: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}


def segments_json(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """A call's segment values as stored: a compact JSON object, keys in the order given.
    Segments take few distinct values, so each one's text is made once (up to
    ``_SEGMENTS_KEPT`` of them; past that, the memory is emptied and filled again)."""
    key = (names, values)
    text = _segments_seen.get(key)
    if text is None:
        text = json.dumps(
            dict(zip(names, values, strict=True)), ensure_ascii=False, separators=(",", ":")
        )
        if len(_segments_seen) >= _SEGMENTS_KEPT:
            _segments_seen.clear()
        _segments_seen[key] = text
    return text


def _jsonable(value: Any) -> Any:
    """``serialize.jsonable(value)``, or the value's repr when an attribute read fails in it
    (an audit item is kept for the reviewer with what can be shown)."""
    try:
        return serialize.jsonable(value)
    except Exception:
        return serialize._repr(value)


def _utf8(value: Any) -> Any:
    """A JSON-ready value with its lone surrogates (text UTF-8 cannot hold, so no store takes
    it) replaced by U+FFFD."""
    text = json.dumps(value, ensure_ascii=False)
    if text.isascii() or not _SURROGATE.search(text):
        return value
    return json.loads(_SURROGATE.sub("\ufffd", text))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _review_of(item: Any) -> dict[str, Any] | None:
    return item.review if item.__class__ is _Retry else None


# -- audit sampling ----------------------------------------------------------------------------


def audit_cut(share: float) -> int:
    """The bound under which a call id's audit hash chooses it, for a share in [0, 1]."""
    return int(share * 2**64)


_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64's finalizer: a bijection of 64-bit integers that spreads every input bit."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def audit_hash(call_id: str) -> int:
    """A call id's audit hash, in [0, 2**64): for an aiguard call id ``ag_<prefix>_<counter>``
    (both hex), SplitMix64's finalizer of ``prefix XOR counter``; for any other text, the
    first 8 bytes of its BLAKE2b digest. The same id gives the same hash on every replica, so
    whether a call is audited is a fact of its id. (The served path computes it from the
    counter without building the id: ``audit_hash_of``.)"""
    parts = call_id.split("_")
    if len(parts) == 3 and parts[0] == "ag" and len(parts[1]) == 16:
        try:
            return _mix(int(parts[1], 16) ^ int(parts[2], 16))
        except ValueError:
            pass
    digest = hashlib.blake2b(call_id.encode(), digest_size=16, person=b"aiguard-audit").digest()
    return int.from_bytes(digest[:8], "big")


def audit_hash_of(number: int) -> int:
    """``audit_hash`` of this process's call id for counter value ``number`` (its id not
    built)."""
    return _mix(ids.prefix_number ^ number)


def audit_review_id(call_id: str) -> str:
    """The review item id of a call's audit item: derived from the call id (the last 8 bytes
    of its BLAKE2b digest, person ``aiguard-audit``), so writing it twice writes one item."""
    digest = hashlib.blake2b(call_id.encode(), digest_size=16, person=b"aiguard-audit").digest()
    return "rv_a" + digest[8:].hex()


AuditWriter = Callable[
    [Any, list[tuple[Any, ...]], list[dict[str, Any]], tuple[str, int] | None], int
]
_audit_writer: AuditWriter | None = None


def issued_argument(write: Callable[..., Any], issued: tuple[str, int] | None) -> dict[str, Any]:
    """``{"issued": issued}`` when the store's ``write`` method takes that keyword (aiguard's
    stores do; a store of your own may not), else nothing."""
    if issued is None:
        return {}
    try:
        parameters = inspect.signature(write).parameters
    except (TypeError, ValueError):
        return {}
    takes = "issued" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    return {"issued": issued} if takes else {}


def set_audit_writer(writer: AuditWriter) -> None:
    """How call records and audit items are written together: ``aiguard.store`` registers its
    writer here when it is imported (this package builds no review item itself)."""
    global _audit_writer
    _audit_writer = writer


class _Retry:
    """A record whose row is built: one the store refused (and how often a store that took other
    rows refused it), or an audited call's, with its audit item (``review``: the fields of its
    review item), written with the row in one transaction and retried with it."""

    __slots__ = ("refusals", "review", "row")

    def __init__(
        self, row: tuple[Any, ...], refusals: int, review: dict[str, Any] | None = None
    ) -> None:
        self.row = row
        self.refusals = refusals
        self.review = review

    @property
    def call_id(self) -> str:
        return str(self.row[CALL_ID])


class Recorder:
    """The queue and its writer for one store."""

    def __init__(
        self,
        store: Any,
        capture: Capture | None,
        queue_bytes: int = 64 * 2**20,
        recent_bytes: int = 16 * 2**20,
    ) -> None:
        self.store = store
        self.capture = capture
        # the byte budgets as counts: a queued record holds at most ITEM_BYTES, plus its
        # captured input and output (each cut to capture.max_bytes) when capture is on
        per_item = ITEM_BYTES + (2 * capture.max_bytes if capture is not None else 0)
        self.queue_max = max(1, queue_bytes // per_item)
        self.recent_max = max(1, recent_bytes // RECENT_ITEM_BYTES)
        self.queue: collections.deque[Any] = collections.deque()
        self.dropped = 0
        self.written = 0
        self.retired = False  # set by retire(): what still arrives goes to the new recorder
        self.inflight = 0  # records in the batch being written now
        self.writing: dict[str, tuple[Any, ...]] = {}  # call id -> row, of that batch
        self.popped: list[Any] = []  # that batch's records, from the moment they leave the queue
        self.recorded = 0  # records put (written + dropped + queued + in flight)
        self.drop_reasons: dict[str, int] = {}
        self.audits_written = 0  # audit items written with their call records
        self.audits_dropped = 0  # audit items the store refused twice, or unreadable
        self.backoff = 0.0  # seconds to wait after the store refused everything
        self.retry_at = 0.0  # time.monotonic() before which the writer does not try again
        # call id -> (feature, None, (trace id, span id)): what feedback needs, without the
        # served value (memory); the oldest is forgotten first (an OrderedDict: cheaper per
        # insert than cachetools' LRU)
        self.recent: collections.OrderedDict[str, Known] = collections.OrderedDict()
        self._recent_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._takes_issued: bool | None = None  # add_call_records(issued=...) is known
        # shadow calls' rows (SHADOW_COLUMNS), written after the call records of each pass
        self.shadows: collections.deque[tuple[Any, ...]] = collections.deque()
        self.shadow_counts = {"written": 0, "dropped": 0, "refused": 0}
        self.worker = Worker("aiguard-records", self.drain, INTERVAL)
        self.put: Callable[[Any], None] = self._put_first
        track(self)

    # -- the call's side: as cheap as it gets --------------------------------------------------

    def _put_first(self, item: Any) -> None:
        """The first record (in this process): start the writer, then queue as usual (if no
        thread can start now, the next record tries again)."""
        if self.worker.ensure():
            self.put = self._put
        self._put(item)

    def _put(self, item: Any) -> None:
        """Queue one call (a served record or an Outcome, with its inputs if captured)."""
        if self.retired:  # replaced: new records go to the recorder in charge now
            target = runtime.recorder
            if target is not None and target is not self:
                target.put(item)
                return
        self.recorded += 1
        queue = self.queue
        # the batch being written counts too: it is still in memory, and goes back to the
        # queue if the store refuses it
        if len(queue) + len(self.popped) >= self.queue_max:
            self._drop(1, "queue full")
            errors.warn_once(
                "records-dropped",
                "aiguard: the call-record queue is full (%s records, its byte budget): records "
                "are being dropped and counted (a faster or reachable store helps)",
                self.queue_max,
            )
            return
        queue.append(item)
        if len(queue) >= BATCH:
            self.worker.wake()

    def put_shadow(self, row: tuple[Any, ...]) -> bool:
        """Queue one shadow call's row; False (dropped, counted) when the queue is full."""
        if self.retired:
            target = runtime.recorder
            if target is not None and target is not self:
                return bool(target.put_shadow(row))
        if len(self.shadows) >= self.queue_max:
            self.shadow_counts["dropped"] += 1
            return False
        self.shadows.append(row)
        self.worker.ensure()
        return True

    # -- the writer's side ---------------------------------------------------------------------

    def drain(self, deadline: float | None = None, *, force: bool = False) -> int:
        """Write what is queued now (not what arrives meanwhile), by ``deadline`` (a
        ``time.monotonic()`` value) if given; returns how many rows were written. Never raises.

        While the store is down the writer backs off (``retry_at``); ``force`` (a flush, exit)
        tries anyway."""
        written = 0
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._write_lock.acquire(timeout=wait):
            return 0  # the writer is inside a store call that outlasts the deadline
        try:
            if not force and time.monotonic() < self.retry_at:
                return 0
            queue = self.queue
            left = len(queue)
            while left > 0 and queue:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                batch: list[Any] = []
                self.popped = batch  # visible to feedback (pending()) from the first pop
                while queue and len(batch) < min(BATCH, left):
                    batch.append(queue.popleft())
                left -= len(batch)
                began = time.monotonic()
                self.inflight = len(batch)
                try:
                    took, down = self._write(batch)
                finally:
                    self.inflight = 0
                    self.popped = []
                written += took
                self.written += took  # at once: the books balance between two batches too
                if down:
                    break
                if left > 0:
                    # let other processes' writers in between two transactions, for as long
                    # as the last one took: a backlog written back to back would starve them
                    # (SQLite's busy wait polls, it does not queue)
                    time.sleep(min(MAX_PAUSE, max(MIN_PAUSE, time.monotonic() - began)))
            if self.shadows and time.monotonic() >= self.retry_at:
                self._write_shadows(deadline)
        finally:
            self._write_lock.release()
        return written

    def _write_shadows(self, deadline: float | None) -> None:
        """Write the queued shadow rows in batches. A store without ``add_shadow_calls`` (one
        of your own) drops them, counted and logged once; a batch the store refuses goes back
        to the front and the writer backs off, and is dropped (counted) when refused a third
        time in a row."""
        add = getattr(self.store, "add_shadow_calls", None)
        shadows = self.shadows
        if add is None:
            n = len(shadows)
            shadows.clear()
            self.shadow_counts["dropped"] += n
            errors.warn_once(
                "shadow-unstored",
                "aiguard: the store %r cannot keep shadow calls (no add_shadow_calls): their "
                "rows are dropped and counted",
                type(self.store).__name__,
            )
            return
        while shadows:
            if deadline is not None and time.monotonic() >= deadline:
                return
            batch = [shadows.popleft() for _ in range(min(BATCH, len(shadows)))]
            try:
                add(batch)
            except Exception as exc:
                errors.report("shadow calls write", exc)
                self.shadow_counts["refused"] += 1
                if self.shadow_counts["refused"] >= 3:
                    self.shadow_counts["refused"] = 0
                    self.shadow_counts["dropped"] += len(batch)
                else:
                    shadows.extendleft(reversed(batch))
                    self._store_down()
                return
            self.shadow_counts["refused"] = 0
            self.shadow_counts["written"] += len(batch)

    def _write(self, batch: list[Any]) -> tuple[int, bool]:
        """Write one batch: (rows written, whether the store looks down).

        A batch the store refuses is written row by row, so one bad row never holds back the
        others. A row refused while the store took others is bad: it goes to the back of the
        queue, and is dropped (counted, with the reason) when refused a second time. When the
        store takes no row at all, it is down: the rows keep their place and the writer backs
        off (doubling up to ``MAX_BACKOFF``); nothing is dropped for that."""
        pairs = []
        for item in batch:
            if item.__class__ is _Retry:
                pairs.append((item, item.row))
                continue
            try:
                row = self._row(item)
            except Exception as exc:
                self._drop(1, f"unreadable record: {type(exc).__name__}")
                errors.report("call record", exc)
                continue
            if item.__class__ is Extras and item.audit:
                review = self._review(item, row)
                if review is not None:  # written with its row, retried with it
                    item = _Retry(row, 0, review)
            pairs.append((item, row))
        if not pairs:
            return 0, False
        self.writing = {row[CALL_ID]: row for _, row in pairs}  # for feedback meanwhile
        try:
            return self._write_rows(pairs)
        finally:
            self.writing = {}

    def _add(self, pairs: list[tuple[Any, tuple[Any, ...]]]) -> None:
        """Write rows, with the audit items of theirs that have one, in one transaction when
        the store can (``aiguard.store`` says how)."""
        rows = [row for _, row in pairs]
        reviews = [
            item.review for item, _ in pairs if item.__class__ is _Retry and item.review is not None
        ]
        # this process's highest call counter, read after the batch's ids were issued: every
        # id up to it was handed out, so feedback elsewhere on one of them is on a real call
        issued = (ids.process_id(), ids.issued())
        if reviews and _audit_writer is not None:
            self.audits_written += _audit_writer(self.store, rows, reviews, issued)
        else:
            self.store.add_call_records(rows, **self._issued(issued))

    def _issued(self, issued: tuple[str, int]) -> dict[str, Any]:
        """The ``issued=`` argument for this store's ``add_call_records``, if it takes one
        (looked up once)."""
        if self._takes_issued is None:
            self._takes_issued = bool(issued_argument(self.store.add_call_records, issued))
        return {"issued": issued} if self._takes_issued else {}

    def _write_rows(self, pairs: list[tuple[Any, tuple[Any, ...]]]) -> tuple[int, bool]:
        try:
            self._add(pairs)
            self._store_up()
            return len(pairs), False
        except Exception as exc:
            errors.report("call records write", exc)
        took = 0
        refused: list[tuple[Any, tuple[Any, ...], BaseException]] = []
        untried: list[tuple[Any, tuple[Any, ...]]] = []
        for i, (item, row) in enumerate(pairs):
            if not took and len(refused) >= PROBES:
                untried = pairs[i:]  # no row taken yet: the store looks down
                break
            try:
                self._add([(item, row)])
                took += 1
            except Exception as refusal:
                refused.append((item, row, refusal))
        queue = self.queue
        if took:
            self._store_up()
            for item, row, why in refused:
                refusals = (item.refusals if item.__class__ is _Retry else 0) + 1
                if refusals >= REFUSALS:
                    self._refuse(item, row, why)
                else:  # behind the good rows
                    queue.append(_Retry(row, refusals, _review_of(item)))
            return took, False
        # nothing taken: the store is down, or every row tried is bad. The rows tried go to the
        # back (so that a bad row at the front cannot hold the others back), the rest keep their
        # place; nobody is dropped for it.
        was_up = self.backoff == 0.0  # the last write before this one went through
        for item, row in reversed(untried):
            queue.appendleft(item if item.__class__ is _Retry else _Retry(row, 0))
        for item, row, why in refused:
            if item.__class__ is not _Retry:
                queue.append(_Retry(row, 0))
            elif was_up and item.refusals >= 1:  # refused again, and the store was up before
                self._refuse(item, row, why)
            else:
                queue.append(item)
        self._store_down()
        return 0, True

    def _store_up(self) -> None:
        self.backoff = 0.0
        self.retry_at = 0.0

    def _store_down(self) -> None:
        self.backoff = min(MAX_BACKOFF, max(INTERVAL, self.backoff * 2))
        self.retry_at = time.monotonic() + self.backoff

    def _refuse(self, item: Any, row: tuple[Any, ...], why: BaseException) -> None:
        """Drop a row the store refused twice; the call is forgotten too, so feedback on it is
        UnknownCall rather than a feedback row without its call. A row with an audit item loses
        the audit item (counted, logged) and is tried again alone: the item may be what the
        store refuses."""
        if _review_of(item) is not None:
            self.audits_dropped += 1
            errors.warn_once(
                "audit-dropped",
                "aiguard: the store refused an audit item twice (%s: %s): it is dropped and "
                "counted (aiguard.records.counts().audits_dropped); its call record is kept",
                type(why).__name__,
                why,
            )
            self.queue.append(_Retry(row, 0))
            return
        with self._recent_lock:
            self.recent.pop(row[CALL_ID], None)
        self._drop(1, f"refused by the store: {type(why).__name__}: {why}")

    def _drop(self, n: int, reason: str) -> None:
        self.dropped += n
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + n

    def _review(self, item: Extras, row: tuple[Any, ...]) -> dict[str, Any] | None:
        """The fields of an audited call's review item (reason ``audit``): its arguments by
        parameter name and the served value, as JSON-ready values. None (counted, logged) when
        they cannot be read."""
        try:
            record = item.record
            value = record.value if record.__class__ is Served else record.model_result
            inputs = item.inputs
            arguments = {} if inputs is None else bound_arguments(*inputs)
            call_id = row[CALL_ID]
            return {
                "id": audit_review_id(call_id),
                "feature": row[FEATURE],
                "call_id": call_id,
                "reason": "audit",
                "arguments": _utf8(_jsonable(arguments)),
                "model_result": _utf8(_jsonable(value)),
                "confidence": row[COLUMN["confidence"]],
                "created_at": row[COLUMN["started_at"]],
            }
        except Exception as exc:
            self.audits_dropped += 1
            errors.report("audit item", exc)
            return None

    def _row(self, item: Any) -> tuple[Any, ...]:
        inputs = model = segments = None
        span: tuple[str | None, str | None] = (None, None)
        record = item
        source: str | None
        if item.__class__ is Extras:
            record, inputs, span, model = item.record, item.inputs, item.span_ids, item.model
            segments = item.segments
        cls = record.__class__
        if cls is Served or cls is tuple:
            # a served call's raw figures, read directly (building its Outcome costs more);
            # unpacked in the field order this module defines (cheaper than ten properties)
            if cls is Served:
                core, number, value, confidence, s, t0, t1, t2, arm, usage, cost = record
                label = label_of(value)
            else:  # compact: no value kept, its label instead
                core, number, confidence, s, t0, t1, t2, arm, usage, cost, label = record
                value = None
            call_id, feature, source, reason = ids.call_id(number), core.feature, "model", "served"
            started, latency, model_latency = ids.wall_time(t0), t2 - t0, t1 - t0
            threshold, percent, detail = s.threshold, s.percent, None
            model = model or core.acct.model
            escalated, saved = 0, None
        elif cls is Brief:
            value = None
            (call_id, feature, source, reason, confidence, threshold, arm, percent, detail,
             started, latency, model_latency, usage, cost, label, escalated,
             saved) = record  # fmt: skip
        else:  # an Outcome
            o = record
            call_id, feature, value, usage = o.call_id, o.feature, o.value, o.usage
            source = None if o.source is None else o.source.value
            reason, confidence, threshold = o.reason.value, o.confidence, o.threshold
            arm, percent, detail = o.arm, o.rollout_percent, o.detail
            started, latency, model_latency = o.started_at, o.latency, o.model_latency
            cost = None if o.cost is None else pico_of(o.cost)
            label = label_of(o.model_result)
            escalated = int(o.escalated)
            saved = None if o.saved_cost is None else pico_of(o.saved_cost)
        unit = None
        if arm is not None and arm.__class__ is not str:  # a rollout arm that knows its unit
            unit = getattr(arm, "unit", None)
            arm = str(arm)
        capture = self.capture
        in_text = out_text = None
        if capture is not None:
            if inputs is not None:
                in_text = capture.encode(bound_arguments(*inputs))
            out_text = capture.encode(value)
        with self._recent_lock:
            recent = self.recent
            recent[call_id] = (feature, None, span)  # ids and figures, never the served value
            if len(recent) > self.recent_max:
                recent.popitem(last=False)
        return (  # in CALL_RECORD_COLUMNS order
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
            None if usage is None else usage.cache_write_tokens,
            None if usage is None else usage.cache_write_1h_tokens,
            None if segments is None else segments_json(*segments),
            text_of(label),  # the model's answer's label (served or not), for drift
            unit,  # a hash of the rollout unit (never the key itself), for adoption
            escalated,  # 1: an Escalate handler ran its bigger model
            saved,  # a cache hit: what the model call that produced the answer cost
        )

    # -- what feedback asks ------------------------------------------------------------------

    def pending(self, call_id: str) -> tuple[Known, tuple[Any, ...]] | None:
        """A call whose record is not in the store yet (queued, or in the batch being written):
        what feedback needs to know of it, and its row, for feedback to write both in one
        transaction. No I/O."""
        for item in list(self.queue):
            if item.__class__ is _Retry:
                if item.call_id == call_id:
                    return self._known_of(item.row), item.row
                continue
            if call_id_of(item) != call_id:
                continue
            row = self._row(item)
            feature, served, span = self._known_of(row)
            record = item.record if item.__class__ is Extras else item
            if hasattr(record, "value"):
                served = record.value  # still in memory (captured calls): the served value
            return (feature, served, span), row
        writing = self.writing.get(call_id)
        if writing is not None:
            return self._known_of(writing), writing
        for item in list(self.popped):  # taken from the queue, its row not built yet
            if (item.call_id if item.__class__ is _Retry else call_id_of(item)) == call_id:
                row = item.row if item.__class__ is _Retry else self._row(item)
                return self._known_of(row), row
        return None

    @staticmethod
    def _known_of(row: tuple[Any, ...]) -> Known:
        return row[FEATURE], served_output(row[OUTPUT]), (row[TRACE_ID], row[SPAN_ID])

    def known(self, call_id: str) -> Known | None:
        """(feature, served value, span ids) of a recent call, if this process remembers it."""
        with self._recent_lock:
            return self.recent.get(call_id)

    # -- life cycle ----------------------------------------------------------------------------

    def retire(self) -> None:
        """Stop taking records: from now on what reaches this recorder goes to the runtime's
        current one. What it holds is its own store's: ``finish()`` writes it there (a record
        that read the flag just before it was set is written by finish's second pass)."""
        self.retired = True

    def finish(self, deadline: float) -> int:
        """Write what is left (by ``deadline``, a ``time.monotonic()`` value) and stop the
        writer; returns how many records are still unwritten."""
        self.worker.stop()
        self.drain(deadline, force=True)
        if self.retired:  # a late record that read this recorder before it retired
            time.sleep(min(INTERVAL, max(0.0, deadline - time.monotonic())))
            self.drain(deadline, force=True)
        while self.unwritten() and time.monotonic() < deadline:  # the store is down: retry
            time.sleep(min(INTERVAL, max(0.0, deadline - time.monotonic())))
            self.drain(deadline, force=True)
        return self.unwritten()

    def drop_unwritten(self, reason: str) -> None:
        """Count what is still unwritten as dropped (at exit, or when a replaced recorder ran
        out of time), with ``reason``."""
        left = len(self.queue)  # a batch in flight is the writer's: written or not, it says
        if left:
            self.queue.clear()
            self._drop(left, reason)
        shadows = len(self.shadows)
        if shadows:
            self.shadows.clear()
            self.shadow_counts["dropped"] += shadows

    def counts(self) -> dict[str, int]:
        """recorded, written, dropped (and each ``dropped: reason``), queued (in flight too)."""
        out = {
            "recorded": self.recorded,
            "written": self.written,
            "dropped": self.dropped,
            "queued": self.recorded - self.written - self.dropped,  # balanced by construction
        }
        out.update({f"dropped: {why}": n for why, n in self.drop_reasons.items()})
        out["audits written"] = self.audits_written
        out["audits dropped"] = self.audits_dropped
        out["shadow rows written"] = self.shadow_counts["written"]
        out["shadow rows dropped"] = self.shadow_counts["dropped"]
        out["shadow rows queued"] = len(self.shadows)
        return out

    def unwritten(self) -> int:
        """Records not written yet: queued, and in a batch being written now."""
        return len(self.queue) + self.inflight + len(self.shadows)

    def _after_fork(self) -> None:
        self.queue.clear()  # the parent's records: the parent writes and counts them
        self.inflight = 0
        self.recorded = self.written = self.dropped = 0  # this process's own, from here
        self.audits_written = self.audits_dropped = 0
        self.drop_reasons = {}
        self.shadows.clear()
        self.shadow_counts = {"written": 0, "dropped": 0, "refused": 0}
        self.put = self._put_first  # the writer starts again on the first record here
