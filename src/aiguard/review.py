"""The human review queue: calls a model could not answer well enough, waiting for a person.

Every method has an async twin named with an ``a`` in front (``await queue.aclaim("ana")``): the
same method, run in one of aiguard's threads (``aiguard._runtime.offload``) and awaited, so an
async service's event loop keeps running while the store works.
"""

from __future__ import annotations

import inspect
import os
import secrets
import time
from datetime import timedelta
from typing import Any

from ._checks import seconds
from ._runtime import offload
from ._runtime import serialize as _serialize
from ._runtime.records import label_of
from ._sql import ReviewStatus
from .exceptions import ConfigError, ReviewError
from .store import ReviewItem, Store, configured, open_store

__all__ = ["ReviewQueue"]

AUDIT = "audit"  # the reason of an audit item: a served answer sampled by guard(audit=...)


class ReviewQueue:
    """List, read and resolve review items; resolutions are kept as labelled examples.

    With no ``store`` given, the queue uses the store set by ``aiguard.configure(store=...)`` (or
    the ``AIGUARD_STORE`` environment variable), looked up at each operation; with none set, each
    operation raises :class:`aiguard.ConfigError` naming the fix.

    Example:
        >>> import aiguard
        >>> queue = aiguard.ReviewQueue(":memory:")
        >>> queue.pending("ticket-triage")
        []
    """

    def __init__(self, store: Store | str | os.PathLike[str] | None = None) -> None:
        self._store = None if store is None else open_store(store)

    @property
    def store(self) -> Store:
        """The store this queue reads and writes."""
        return self._store if self._store is not None else configured()

    def pending(self, feature: str | None = None, *, limit: int = 100) -> list[ReviewItem]:
        """Pending items, oldest first, for one feature or all."""
        return self.store.list_reviews(feature=feature, status="pending", limit=limit)

    def resolved(self, feature: str | None = None, *, limit: int = 10_000) -> list[ReviewItem]:
        """Resolved items, oldest first: labelled examples (``arguments`` -> ``answer``)."""
        return self.store.list_reviews(feature=feature, status="resolved", limit=limit)

    def count(self, feature: str | None = None, *, status: ReviewStatus | None = "pending") -> int:
        """How many items there are with this status (``None``: any) for one feature or all."""
        return self.store.count_reviews(feature=feature, status=status)

    def claim(
        self,
        reviewer: str,
        feature: str | None = None,
        *,
        lease: float | timedelta = timedelta(minutes=15),
    ) -> ReviewItem | None:
        """Take the oldest pending item nobody holds, for ``lease`` (default 15 minutes).

        Several reviewers (and replicas) can claim at once: each item goes to one of them. A
        claim that is not resolved in time lapses and the item returns to the queue. Returns
        None when nothing is waiting.

        Example:
            >>> import aiguard
            >>> queue = aiguard.ReviewQueue(":memory:")
            >>> queue.claim("ana") is None
            True
        """
        if not isinstance(reviewer, str) or not reviewer:
            raise ConfigError(f"claim(reviewer={reviewer!r}) is invalid: name the reviewer")
        lease_s = seconds("claim(lease)", lease)
        return self.store.claim_review(reviewer=reviewer, feature=feature, lease=lease_s)

    def get(self, review_id: str) -> ReviewItem:
        """The item with this id; :class:`aiguard.ReviewError` if there is none."""
        item = self.store.get_review(review_id)
        if item is None:
            raise ReviewError(f"no review item with id {review_id!r}")
        return item

    def resolve(
        self,
        review_id: str,
        answer: Any,
        *,
        reviewer: str | None = None,
        note: str | None = None,
        correct: bool | None = None,
    ) -> ReviewItem:
        """Record the reviewer's answer; it becomes the item's label.

        Raises :class:`aiguard.ReviewError` for an unknown id or an item already resolved. The
        resolution is also recorded as feedback on the item's call, with the reviewer's answer
        as the label: of kind ``reviewed``, or, for an audit item (reason ``"audit"``: a served
        answer sampled by ``guard(audit=...)``), of kind ``audited``, the verdict on the served
        answer, with ``accepted`` = 1 when it was right and 0 when it was wrong.

        ``correct`` (audit items only; a ReviewError on others, where it means nothing) says
        whether the served answer was right. Left out, it is whether the answer matches the
        served one (``model_result``): their labels are compared (the ``"label"`` key or
        attribute, an Enum's value, a bool; :mod:`aiguard.feedback`'s rule), and a value with
        no label is compared as a whole, as JSON.

        Example:
            >>> import aiguard
            >>> queue = aiguard.ReviewQueue(":memory:")
            >>> item = queue.submit(feature="triage", call_id="ag_1", reason="audit",
            ...                     arguments={"ticket": "refund?"},
            ...                     model_result={"label": "billing", "score": 0.9})
            >>> queue.resolve(item.id, {"label": "billing"}).status
            'resolved'
            >>> [(f["kind"], f["accepted"]) for f in queue.store.feedback_rows(call_id="ag_1")]
            [('audited', 1)]
        """
        if correct is not None and not isinstance(correct, bool):
            raise ConfigError(
                f"resolve({review_id!r}): correct={correct!r} is invalid: True, False or None"
            )
        store = self.store
        current = self.get(review_id)  # ReviewError if there is no such item
        kind = "reviewed"
        accepted: int | None = None
        if current.reason == AUDIT:
            kind = "audited"
            if correct is None:
                correct = matches(answer, current.model_result)
            accepted = int(correct)
        elif correct is not None:
            raise ReviewError(
                f"review item {review_id!r} is not an audit item (reason {current.reason!r}): "
                "correct= is a verdict on a served answer, for audit items only"
            )
        row = {
            "call_id": current.call_id,
            "feature": current.feature,
            "kind": kind,
            "accepted": accepted,
            "label": _serialize.dumps(answer),
            "comment": note,
            "by": reviewer,
            "created_at": time.time(),
        }
        if "feedback" in inspect.signature(store.resolve_review).parameters:
            # the resolution and its feedback row commit together: neither without the other
            item = store.resolve_review(
                review_id, answer=answer, reviewer=reviewer, note=note, feedback=row
            )
        else:  # a store of your own without it: two writes
            item = store.resolve_review(review_id, answer=answer, reviewer=reviewer, note=note)
            add = getattr(store, "add_feedback", None)
            if add is not None:
                add(row)
        _review_feedback_telemetry(item, answer, 0, accepted)
        return item

    def submit(
        self,
        *,
        feature: str,
        call_id: str,
        reason: str,
        arguments: dict[str, Any],
        model_result: Any = None,
        confidence: float | None = None,
    ) -> ReviewItem:
        """Queue a new item and return it once it is durable."""
        item = ReviewItem(
            id="rv_" + secrets.token_hex(10),
            feature=feature,
            call_id=call_id,
            reason=reason,
            arguments=_serialize.jsonable(arguments),
            model_result=_serialize.jsonable(model_result),
            confidence=confidence,
            created_at=time.time(),
        )
        self.store.add_review(item)
        return item

    # -- async twins: the method above, in a thread, awaited ----------------------------------

    async def apending(self, feature: str | None = None, *, limit: int = 100) -> list[ReviewItem]:
        """:meth:`pending`, awaited: the store is read in a thread, the event loop runs on.

        Example:
            >>> import asyncio, aiguard
            >>> queue = aiguard.ReviewQueue(":memory:")
            >>> asyncio.run(queue.apending("ticket-triage"))
            []
        """
        return await offload.run(self.pending, feature, limit=limit)

    async def aresolved(
        self, feature: str | None = None, *, limit: int = 10_000
    ) -> list[ReviewItem]:
        """:meth:`resolved`, awaited (see :meth:`apending`)."""
        return await offload.run(self.resolved, feature, limit=limit)

    async def acount(
        self, feature: str | None = None, *, status: ReviewStatus | None = "pending"
    ) -> int:
        """:meth:`count`, awaited (see :meth:`apending`)."""
        return await offload.run(self.count, feature, status=status)

    async def aclaim(
        self,
        reviewer: str,
        feature: str | None = None,
        *,
        lease: float | timedelta = timedelta(minutes=15),
    ) -> ReviewItem | None:
        """:meth:`claim`, awaited (see :meth:`apending`).

        Example:
            >>> import asyncio, aiguard
            >>> queue = aiguard.ReviewQueue(":memory:")
            >>> item = queue.submit(feature="triage", call_id="ag_1", reason="error",
            ...                     arguments={"ticket": "refund?"})
            >>> async def main() -> str:
            ...     held = await queue.aclaim("ana")
            ...     return (await queue.aresolve(held.id, "refunds", reviewer="ana")).status
            >>> asyncio.run(main())
            'resolved'
        """
        return await offload.run(self.claim, reviewer, feature, lease=lease)

    async def aget(self, review_id: str) -> ReviewItem:
        """:meth:`get`, awaited (see :meth:`apending`)."""
        return await offload.run(self.get, review_id)

    async def aresolve(
        self,
        review_id: str,
        answer: Any,
        *,
        reviewer: str | None = None,
        note: str | None = None,
        correct: bool | None = None,
    ) -> ReviewItem:
        """:meth:`resolve`, awaited (see :meth:`apending`)."""
        return await offload.run(
            self.resolve, review_id, answer, reviewer=reviewer, note=note, correct=correct
        )

    async def asubmit(
        self,
        *,
        feature: str,
        call_id: str,
        reason: str,
        arguments: dict[str, Any],
        model_result: Any = None,
        confidence: float | None = None,
    ) -> ReviewItem:
        """:meth:`submit`, awaited (see :meth:`apending`)."""
        return await offload.run(
            self.submit,
            feature=feature,
            call_id=call_id,
            reason=reason,
            arguments=arguments,
            model_result=model_result,
            confidence=confidence,
        )

    def __repr__(self) -> str:
        return f"ReviewQueue({self._store!r})" if self._store is not None else "ReviewQueue()"


def matches(answer: Any, served: Any) -> bool:
    """Whether a reviewer's ``answer`` says the same as the ``served`` answer: their labels
    (each value's own, or the value itself when it has none), compared as JSON values."""
    mine, theirs = label_of(answer), label_of(served)
    mine = answer if mine is None else mine
    theirs = served if theirs is None else theirs
    return bool(_serialize.jsonable(mine) == _serialize.jsonable(theirs))


def _review_feedback_telemetry(
    item: ReviewItem, answer: Any, row_id: int, accepted: int | None = None
) -> None:
    """The resolution's ``gen_ai.evaluation.result`` event and counter, like other feedback."""
    from .feedback import Feedback, FeedbackKind, _emit

    fb = Feedback(
        id=row_id,
        call_id=item.call_id,
        feature=item.feature,
        kind=FeedbackKind.REVIEWED if accepted is None else FeedbackKind.AUDITED,
        accepted=None if accepted is None else bool(accepted),
        label=_serialize.jsonable(answer),
        comment=item.note,
        by=item.reviewer,
        created_at=item.resolved_at or time.time(),
    )
    _emit(fb, (None, None))
