"""Checked by mypy --strict (nox -s typing): the decorator keeps signatures and return types."""

from __future__ import annotations

from typing import assert_type

import aiguard


@aiguard.guard("sync", confidence="score", threshold=0.8, fallback=aiguard.Default({"score": 1.0}))
def triage(ticket: str, *, lang: str = "en") -> dict[str, float]:
    return {"score": 0.9}


@aiguard.guard("async", timeout=2.0)
async def draft(prompt: str) -> str:
    return prompt


async def use() -> None:
    assert_type(triage("x"), dict[str, float])
    assert_type(triage("x", lang="fr"), dict[str, float])
    assert_type(triage.outcome("x"), aiguard.Outcome[dict[str, float]])
    assert_type(triage.outcome("x").value, dict[str, float])
    assert_type(triage.feature, str)
    assert_type(await draft("p"), str)
    assert_type(await draft.outcome("p"), aiguard.Outcome[str])
    outcome = aiguard.last_outcome()
    if outcome is not None:
        assert_type(outcome.reason, aiguard.Reason)
        assert_type(outcome.call_id, str)


def wrong_arguments_are_errors() -> None:
    triage(1)  # type: ignore[arg-type]
    triage("x", language="fr")  # type: ignore[call-arg]
    draft(2)  # type: ignore[arg-type, unused-coroutine]


class Service:
    @aiguard.guard("method")
    def answer(self, question: str) -> str:
        return question

    @aiguard.guard("async-method")
    async def draft(self, prompt: str) -> str:
        return prompt


async def methods() -> None:
    service = Service()
    assert_type(service.answer("q"), str)
    assert_type(await service.draft("p"), str)
    assert_type(Service.answer.outcome(service, "q"), aiguard.Outcome[str])
    service.answer(1)  # type: ignore[arg-type]
