"""Invariants, checked by hypothesis: threshold routing and exception handling."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiguard
from aiguard import Reason, Source

confidences = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.integers(-2, 3),
    st.none(),
    st.text(max_size=3),
    st.booleans(),
)
thresholds = st.floats(min_value=0, max_value=1) | st.none()


@given(confidence=confidences, threshold=thresholds)
def test_routing_for_any_confidence_and_threshold(confidence: Any, threshold: float | None) -> None:
    """Served iff the confidence is a number in [0, 1] at or above the threshold."""

    @aiguard.guard("p", confidence="c", threshold=threshold, fallback=aiguard.Default("fb"))
    def model() -> dict[str, Any]:
        return {"c": confidence}

    outcome = model.outcome()
    valid = (
        isinstance(confidence, int | float)
        and not isinstance(confidence, bool)
        and not math.isnan(confidence)
        and 0 <= confidence <= 1
    )
    if not valid:
        assert outcome.reason is Reason.INVALID_CONFIDENCE and outcome.value == "fb"
    elif threshold is not None and confidence < threshold:
        assert outcome.reason is Reason.LOW_CONFIDENCE and outcome.value == "fb"
        assert outcome.confidence == confidence
    else:
        assert outcome.reason is Reason.SERVED and outcome.source is Source.MODEL
        assert outcome.value == {"c": confidence}


exceptions = st.sampled_from(
    [ValueError, KeyError, RuntimeError, ConnectionError, TimeoutError, ZeroDivisionError, OSError]
).map(lambda t: t("boom"))


@given(exc=exceptions, has_fallback=st.booleans(), fallback_fails=st.booleans())
def test_any_model_exception_gives_fallback_value_or_itself(
    exc: Exception, has_fallback: bool, fallback_fails: bool
) -> None:
    """Any exception from the model ends as a fallback value or as the original exception."""

    def rules() -> str:
        if fallback_fails:
            raise LookupError("rules had nothing")
        return "rules"

    @aiguard.guard("p", fallback=[rules] if has_fallback else None)
    def model() -> str:
        raise exc

    if has_fallback and not fallback_fails:
        outcome = model.outcome()
        assert outcome.value == "rules" and outcome.exception is exc
        assert outcome.reason is (Reason.TIMEOUT if isinstance(exc, TimeoutError) else Reason.ERROR)
    else:
        with pytest.raises(type(exc)) as info:
            model()
        assert info.value is exc
