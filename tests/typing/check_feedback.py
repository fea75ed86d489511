"""Checked by mypy --strict (nox -s typing): feedback and the review queue, sync and async, are
typed alike."""

from __future__ import annotations

from datetime import timedelta
from typing import assert_type

import aiguard


@aiguard.guard("async")
async def draft(prompt: str) -> str:
    return prompt


async def use() -> None:
    outcome = await draft.outcome("p")
    assert_type(outcome.accept(), aiguard.Feedback)
    assert_type(await outcome.aaccept(by="ana"), aiguard.Feedback)
    assert_type(await outcome.areject(reason="off"), aiguard.Feedback)
    assert_type(await outcome.aedit("q"), aiguard.Feedback)
    assert_type(await outcome.acorrect("label"), aiguard.Feedback)
    assert_type(await outcome.arate(4), aiguard.Feedback)
    fb = await aiguard.afeedback(outcome.call_id, accepted=True, wait=timedelta(seconds=1))
    assert_type(fb, aiguard.Feedback)
    assert_type(fb.pending, bool)
    assert_type(aiguard.feedback(outcome, score=3, wait=0), aiguard.Feedback)
    queue = aiguard.ReviewQueue()
    assert_type(await queue.apending(), list[aiguard.ReviewItem])
    assert_type(await queue.aresolved("f"), list[aiguard.ReviewItem])
    assert_type(await queue.acount(status=None), int)
    assert_type(await queue.aclaim("ana", lease=60), aiguard.ReviewItem | None)
    assert_type(await queue.aget("rv_1"), aiguard.ReviewItem)
    assert_type(await queue.aresolve("rv_1", "a", reviewer="ana"), aiguard.ReviewItem)
    item = await queue.asubmit(feature="f", call_id="c", reason="error", arguments={})
    assert_type(item, aiguard.ReviewItem)
