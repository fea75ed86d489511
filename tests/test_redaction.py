"""Free texts on spans (exception messages, a call's detail) only through the redact= hook."""

from __future__ import annotations

import re
from typing import Any

import pytest
from _modes import Mode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiguard
from aiguard._runtime import errors, telemetry
from aiguard._runtime.state import runtime
from aiguard.testing import capture_outcomes, capture_telemetry

SECRET = "sk-live-7f3a9c"


def everything_shown(spans: list[Any]) -> str:
    """Every text a span carries: attributes, status description, events and links."""
    parts: list[str] = []
    for span in spans:
        parts.append(span.name)
        parts.extend(str(v) for v in (span.attributes or {}).values())
        parts.append(str(span.status.description))
        for event in span.events:
            parts.append(event.name)
            parts.extend(str(v) for v in (event.attributes or {}).values())
        for link in span.links:
            parts.extend(str(v) for v in (link.attributes or {}).values())
    return "\n".join(parts)


def failing(mode: Mode, message: str, **kwargs: Any) -> Any:
    @mode.guard("leaky", fallback=[aiguard.Default("fallback")], **kwargs)
    def leaky(text: str) -> str:
        raise ValueError(message)

    return leaky


def test_without_a_hook_a_failed_call_shows_the_exception_type_only(mode: Mode) -> None:
    """No redact= hook: aiguard.detail and the status description name the exception's type;
    its message is on no span (the Outcome keeps it for the application)."""

    @mode.guard("leaky")
    def leaky(text: str) -> str:
        raise ValueError(f"bad key {SECRET}")

    with (
        capture_telemetry() as telemetry,
        capture_outcomes() as outcomes,
        pytest.raises(ValueError, match="bad key"),
    ):
        mode.call(leaky, "x")
    assert SECRET in (outcomes[0].detail or "")
    [span] = telemetry.spans("aiguard leaky")
    assert span.attributes["aiguard.detail"] == "ValueError"
    assert span.status.description == "error: ValueError"
    assert span.attributes["error.type"] == "ValueError"
    assert SECRET not in everything_shown(telemetry.spans())


def test_an_identity_hook_gives_the_messages_back(mode: Mode) -> None:
    """redact=lambda value: value shows the detail as the Outcome has it."""
    aiguard.configure(redact=lambda value: value)
    leaky = failing(mode, f"bad key {SECRET}")
    with capture_telemetry() as telemetry:
        outcome = mode.outcome(leaky, "x")
    [span] = telemetry.spans("aiguard leaky")
    assert span.attributes["aiguard.detail"] == outcome.detail
    assert SECRET in span.attributes["aiguard.detail"]


def test_a_masking_hook_masks_on_spans_but_not_in_the_outcome(mode: Mode) -> None:
    """The hook's text is what the span shows (detail and status); the Outcome's detail is
    untouched."""
    aiguard.configure(redact=lambda text: re.sub(r"sk-[\w-]+", "sk-***", text))

    @mode.guard("leaky")
    def leaky(text: str) -> str:
        raise ValueError(f"bad key {SECRET}")

    with (
        capture_telemetry() as telemetry,
        capture_outcomes() as outcomes,
        pytest.raises(ValueError, match="bad key"),
    ):
        mode.call(leaky, "x")
    [span] = telemetry.spans("aiguard leaky")
    assert span.attributes["aiguard.detail"] == "ValueError('bad key sk-***')"
    assert span.status.description == "error: ValueError('bad key sk-***')"
    assert SECRET in (outcomes[0].detail or "")
    assert SECRET not in everything_shown(telemetry.spans())


def test_a_raising_hook_falls_back_to_the_safe_default_reported_once(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises: the exception type only, the failure logged once and counted."""

    def hook(value: Any) -> Any:
        raise KeyError("the hook expected a dict")

    aiguard.configure(redact=hook)
    leaky = failing(mode, f"bad key {SECRET}")
    with capture_telemetry() as telemetry, caplog.at_level("WARNING", logger="aiguard"):
        for _ in range(3):
            assert mode.call(leaky, "x") == "fallback"
    spans = telemetry.spans("aiguard leaky")
    assert [s.attributes["aiguard.detail"] for s in spans] == ["ValueError"] * 3
    assert SECRET not in everything_shown(telemetry.spans())
    # every text of each call (its detail; its model span's status and exception event) tried
    # the hook: counted each time, a multiple of the 3 calls
    failures = errors.counts()["telemetry: redact hook"]
    assert failures >= 3 and failures % 3 == 0
    assert sum("redact hook" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("returned", "expected"),
    [(None, None), (b"bytes", "ValueError"), ({"text": "x"}, "ValueError")],
)
def test_a_hook_returning_none_leaves_the_detail_out_and_not_text_is_the_default(
    mode: Mode, returned: Any, expected: str | None
) -> None:
    """None from the hook: no detail; anything else than text: the safe default."""
    aiguard.configure(redact=lambda value: returned)
    leaky = failing(mode, f"bad key {SECRET}")
    with capture_telemetry() as telemetry:
        mode.call(leaky, "x")
    [span] = telemetry.spans("aiguard leaky")
    assert span.attributes.get("aiguard.detail") == expected


def test_huge_texts_are_cut(mode: Mode) -> None:
    """A megabyte message through an identity hook: cut after MAX_TEXT characters, and says
    how long it was (the detail and the status description)."""
    aiguard.configure(redact=lambda value: value)

    @mode.guard("huge")
    def huge(text: str) -> str:
        raise ValueError("x" * 1_000_000)

    with capture_telemetry() as telemetry, pytest.raises(ValueError, match="xxx"):
        mode.call(huge, "x")
    [span] = telemetry.spans("aiguard huge")
    detail = span.attributes["aiguard.detail"]
    assert len(detail) < telemetry_max() + 40
    assert detail.endswith(" characters)")
    assert len(span.status.description) < telemetry_max() + 60


def telemetry_max() -> int:
    return telemetry.MAX_TEXT


def test_validator_and_confidence_details_are_not_shown_without_a_hook(mode: Mode) -> None:
    """A validator's words and a confidence's value can hold model output: left out without a
    hook; aiguard's own texts (a threshold) are shown."""

    def check(result: dict[str, Any]) -> bool:
        raise ValueError(f"saw {result['text']}")

    @mode.guard("checked", validate=[check], fallback=[aiguard.Default("f")])
    def checked(text: str) -> dict[str, Any]:
        return {"text": SECRET, "score": 0.2}

    @mode.guard("scored", confidence="score", threshold=0.5, fallback=[aiguard.Default("f")])
    def scored(text: str) -> dict[str, Any]:
        return {"text": SECRET, "score": 0.2}

    @mode.guard("odd", confidence="score", threshold=0.5, fallback=[aiguard.Default("f")])
    def odd(text: str) -> dict[str, Any]:
        return {"text": "x", "score": SECRET}

    with capture_telemetry() as telemetry:
        mode.call(checked, "x")
        mode.call(scored, "x")
        mode.call(odd, "x")
    [c] = telemetry.spans("aiguard checked")
    [s] = telemetry.spans("aiguard scored")
    [o] = telemetry.spans("aiguard odd")
    assert c.attributes["aiguard.reason"] == "invalid_output"
    assert "aiguard.detail" not in c.attributes
    assert o.attributes["aiguard.reason"] == "invalid_confidence"
    assert "aiguard.detail" not in o.attributes
    assert s.attributes["aiguard.detail"] == "confidence 0.2 < threshold 0.5"
    assert SECRET not in everything_shown(telemetry.spans())


def test_a_kill_reason_and_a_timeout_are_shown_as_they_are(mode: Mode) -> None:
    """Texts aiguard writes from configuration and figures need no hook."""
    aiguard.kill("stopped", reason="wrong answers on refunds")

    @mode.guard("stopped", fallback=[aiguard.Default("f")])
    def stopped(text: str) -> str:
        return "x"

    slow = mode.guard("slow", timeout=0.05, fallback=[aiguard.Default("f")])(mode.sleeper(2))
    with capture_telemetry() as telemetry:
        mode.call(stopped, "x")
        mode.call(slow, "x")
    [k] = telemetry.spans("aiguard stopped")
    [t] = telemetry.spans("aiguard slow")
    assert "wrong answers on refunds" in k.attributes["aiguard.detail"]
    assert t.attributes["aiguard.detail"] == "the model gave no result within 0.05 s"


def test_fallback_handler_exceptions_show_their_type_only(mode: Mode) -> None:
    """A fallback handler that raises: an exception event with exception.type, and no message
    or traceback, on its span; with a hook, the message and traceback as it returns them."""

    def rules(text: str) -> str:
        raise LookupError(f"no keyword in {SECRET}")

    @mode.guard("tri", fallback=[rules, aiguard.Default("other")])
    def tri(text: str) -> str:
        raise ConnectionError("down")

    with capture_telemetry() as telemetry:
        mode.call(tri, "x")
    [span] = [s for s in telemetry.spans() if s.name.startswith("aiguard.fallback rules")]
    [event] = span.events
    assert event.name == "exception"
    assert dict(event.attributes) == {"exception.type": "LookupError"}
    assert span.status.description == "LookupError"
    assert SECRET not in everything_shown(telemetry.spans())

    aiguard.configure(redact=lambda text: text.replace(SECRET, "<key>"))
    with capture_telemetry() as telemetry:
        mode.call(tri, "x")
    [span] = [s for s in telemetry.spans() if s.name.startswith("aiguard.fallback rules")]
    [event] = span.events
    assert event.attributes["exception.message"] == "no keyword in <key>"
    assert "LookupError: no keyword in <key>" in event.attributes["exception.stacktrace"]
    assert span.status.description == "LookupError: no keyword in <key>"
    assert SECRET not in everything_shown(telemetry.spans())


def test_exception_attributes_and_safe_text() -> None:
    """The helpers for exception events: a module-qualified type, the message only through
    the hook; a str() that fails is the type alone."""

    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    assert telemetry.exception_attributes(ValueError(SECRET)) == {"exception.type": "ValueError"}
    assert telemetry.safe_text(ValueError(SECRET)) == "ValueError"
    assert telemetry.exception_attributes(aiguard.ConfigError("x"))["exception.type"] == (
        "aiguard.exceptions.ConfigError"
    )
    aiguard.configure(redact=lambda text: text.upper())
    assert telemetry.safe_text(ValueError("abc")) == "ValueError: ABC"
    assert telemetry.safe_text(ValueError()) == "ValueError"
    assert telemetry.safe_text(Odd()) == f"{Odd.__qualname__}"
    assert telemetry.exception_attributes(Odd()) == {
        "exception.type": f"{Odd.__module__}.{Odd.__qualname__}"
    }


def test_the_hook_is_kept_without_capture_and_removed_by_none() -> None:
    """configure(redact=...) holds with capture off, is the one capture uses when it is turned
    on later, and None removes it."""

    def hook(value: Any) -> Any:
        return value

    aiguard.configure(redact=hook)
    assert runtime.redact is hook and runtime.capture is None
    aiguard.configure(store=":memory:", capture=True)
    assert runtime.capture.redact is hook
    aiguard.configure(redact=None)
    assert runtime.redact is None and runtime.capture.redact is None


secret_texts = st.builds(
    lambda before, after: f"{before}{SECRET}{after}",
    st.text(max_size=200),
    st.text(max_size=200),
)


def test_no_secret_reaches_a_span_without_a_hook(mode: Mode) -> None:
    """Property: whatever an exception's message holds, no span shows it without a hook."""
    holder: list[str] = [""]

    @mode.guard("prop", fallback=[aiguard.Default("f")])
    def prop(text: str) -> str:
        raise RuntimeError(holder[0])

    with capture_telemetry() as telemetry:

        @settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
        @given(secret_texts)
        def check(message: str) -> None:
            holder[0] = message
            mode.call(prop, "x")

        check()
        spans = telemetry.spans("aiguard prop")
    assert spans
    assert all(s.attributes["aiguard.detail"] == "RuntimeError" for s in spans)
    assert SECRET not in everything_shown(telemetry.spans())


def test_a_masking_hook_masks_every_message(mode: Mode) -> None:
    """Property: with a hook that masks the secret, the span shows the rest and never it."""
    aiguard.configure(redact=lambda text: text.replace(SECRET, "***"))
    holder: list[str] = [""]

    @mode.guard("prop", fallback=[aiguard.Default("f")])
    def prop(text: str) -> str:
        raise RuntimeError(holder[0])

    with capture_telemetry() as telemetry:

        @settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
        @given(secret_texts)
        def check(message: str) -> None:
            holder[0] = message
            before = len(telemetry.spans("aiguard prop"))
            mode.call(prop, "x")
            span = telemetry.spans("aiguard prop")[before]
            shown = span.attributes["aiguard.detail"]
            assert SECRET not in shown
            assert shown == repr(RuntimeError(message.replace(SECRET, "***")))

        check()
