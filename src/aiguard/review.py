"""The human review queue: calls a model could not answer well enough, waiting for a person."""

from __future__ import annotations

import inspect
import os
import secrets
import time
from datetime import timedelta
from typing import Any

from ._checks import seconds
from ._runtime import serialize as _serialize
from ._sql import ReviewStatus
from .exceptions import ConfigError, ReviewError
from .store import ReviewItem, Store, configured, open_store

__all__ = ["ReviewQueue"]


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
    ) -> ReviewItem:
        """Record the reviewer's answer; it becomes the item's label.

        Raises :class:`aiguard.ReviewError` for an unknown id or an item already resolved. The
        resolution is also recorded as feedback of kind ``reviewed`` on the item's call, with the
        reviewer's answer as the label.
        """
        store = self.store
        current = self.get(review_id)  # ReviewError if there is no such item
        row = {
            "call_id": current.call_id,
            "feature": current.feature,
            "kind": "reviewed",
            "accepted": None,
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
        _review_feedback_telemetry(item, answer, 0)
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

    def __repr__(self) -> str:
        return f"ReviewQueue({self._store!r})" if self._store is not None else "ReviewQueue()"


def _review_feedback_telemetry(item: ReviewItem, answer: Any, row_id: int) -> None:
    """The resolution's ``gen_ai.evaluation.result`` event and counter, like other feedback."""
    from .feedback import Feedback, FeedbackKind, _emit

    fb = Feedback(
        id=row_id,
        call_id=item.call_id,
        feature=item.feature,
        kind=FeedbackKind.REVIEWED,
        label=_serialize.jsonable(answer),
        comment=item.note,
        by=item.reviewer,
        created_at=item.resolved_at or time.time(),
    )
    _emit(fb, (None, None))
