"""The usage readers specialised per SDK response class read exactly what read_usage reads."""

from __future__ import annotations

from typing import Any

import pytest
from _modes import Mode
from anthropic.types import Message
from anthropic.types.beta import BetaMessage
from clients import CHAT, MESSAGE, RESPONSE
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

import aiguard
from aiguard import Usage, read_usage
from aiguard._engine.readers import reader_for

SDK_CLASSES = [ChatCompletion, Response, Message, BetaMessage]

# counts as a provider may send them: usual, zero, negative, astronomical (all read as 0 but
# the usual ones)
count = st.one_of(st.integers(0, 5000), st.just(0), st.integers(-3, -1), st.just(10**31))
optional = st.one_of(st.none(), count)
# what extra fields may say: names read_usage would consult, in either vocabulary
extras = st.dictionaries(
    st.sampled_from(["cached_tokens", "reasoning_tokens", "prompt_tokens", "cache_write_tokens",
                     "cache_write_1h_tokens", "cache_read_tokens", "input_tokens", "type",
                     "role", "provider"]),
    st.one_of(count, st.sampled_from(["message", "assistant", "x"])),
    max_size=3,
)  # fmt: skip


@st.composite
def chat_json(draw: st.DrawFn) -> dict[str, Any]:
    usage: dict[str, Any] = {
        **draw(extras),  # first: the declared fields below keep their own values
        "prompt_tokens": draw(count),
        "completion_tokens": draw(count),
        "total_tokens": draw(count),
    }
    if draw(st.booleans()):
        usage["prompt_tokens_details"] = {
            "cached_tokens": draw(optional), "cache_write_tokens": draw(optional)
        }  # fmt: skip
    if draw(st.booleans()):
        usage["completion_tokens_details"] = {"reasoning_tokens": draw(optional)}
    body = {**CHAT, "model": draw(st.sampled_from(["gpt-4.1-mini", ""]))}
    body["usage"] = draw(st.one_of(st.none(), st.just(usage)))
    return body


@st.composite
def response_json(draw: st.DrawFn) -> dict[str, Any]:
    usage = {
        **draw(extras),
        "input_tokens": draw(count),
        "output_tokens": draw(count),
        "total_tokens": draw(count),
        "input_tokens_details": {
            "cached_tokens": draw(count), "cache_write_tokens": draw(count)
        },
        "output_tokens_details": {"reasoning_tokens": draw(count)},
    }  # fmt: skip
    body = {**draw(extras), **RESPONSE}
    body["usage"] = draw(st.one_of(st.none(), st.just(usage)))
    return body


@st.composite
def message_json(draw: st.DrawFn) -> dict[str, Any]:
    usage: dict[str, Any] = {
        **draw(extras),
        "input_tokens": draw(count),
        "output_tokens": draw(count),
        "cache_read_input_tokens": draw(optional),
        "cache_creation_input_tokens": draw(optional),
    }
    if draw(st.booleans()):
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": draw(count),
            "ephemeral_1h_input_tokens": draw(count),
        }
    return {**MESSAGE, "usage": usage}


def test_every_sdk_response_class_has_its_own_reader() -> None:
    """The installed SDKs' response classes are read by a specialised reader (a change in
    their fields would silently put them back on the slow generic reader)."""
    for cls in SDK_CLASSES:
        assert reader_for(cls) is not read_usage, cls


@given(chat_json())
def test_chat_completion_reader_is_read_usage(body: dict[str, Any]) -> None:
    """A ChatCompletion: the specialised reader gives what read_usage gives."""
    result = ChatCompletion.model_validate(body)
    assert reader_for(ChatCompletion)(result) == read_usage(result)


@given(response_json())
def test_response_reader_is_read_usage(body: dict[str, Any]) -> None:
    """A Responses API Response: the specialised reader gives what read_usage gives."""
    result = Response.model_validate(body)
    assert reader_for(Response)(result) == read_usage(result)


@given(message_json(), st.sampled_from([Message, BetaMessage]))
def test_message_reader_is_read_usage(body: dict[str, Any], cls: Any) -> None:
    """An Anthropic Message (and the beta one): the specialised reader gives what read_usage
    gives, cache writes by duration included."""
    result = cls.model_validate(body)
    assert reader_for(cls)(result) == read_usage(result)


hostile_usage = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["prompt_tokens", "input_tokens", "completion_tokens",
                                     "cache_read_input_tokens", "output_tokens"]),
                    st.one_of(count, st.text(max_size=3), st.floats())),
    st.text(max_size=3),
)  # fmt: skip


@given(
    st.sampled_from(SDK_CLASSES),
    hostile_usage,
    st.one_of(st.none(), st.text(max_size=5), st.integers()),
    st.booleans(),
)
def test_readers_of_odd_objects_are_read_usage(
    cls: Any, usage: Any, model: Any, with_usage: bool
) -> None:
    """Objects built with model_construct (usage a dict, text or missing, a model that is not
    text): the specialised reader gives what read_usage gives, and never raises."""
    fields = {"model": model, "type": "message", "role": "assistant"}
    if with_usage:
        fields["usage"] = usage
    result = cls.model_construct(**fields)
    assert reader_for(cls)(result) == read_usage(result)


@given(st.sampled_from(SDK_CLASSES), st.data())
def test_nested_objects_missing_fields_are_read_usage(cls: Any, data: st.DataObject) -> None:
    """A usage object built with model_construct and some of its fields missing."""
    usage_cls = cls.model_fields["usage"].annotation
    usage_cls = next(a for a in getattr(usage_cls, "__args__", (usage_cls,)) if a is not None)
    names = list(usage_cls.model_fields)
    kept = data.draw(st.lists(st.sampled_from(names), unique=True))
    usage = usage_cls.model_construct(**{n: data.draw(count) for n in kept})
    result = cls.model_construct(usage=usage, model="m", type="message", role="assistant")
    assert reader_for(cls)(result) == read_usage(result)


def test_built_in_values_carry_no_usage() -> None:
    """Strings, numbers and sequences have no usage, as read_usage says."""
    for value in ("text", b"x", 3, 2.5, True, None, [1], (1,), {1}, frozenset()):
        assert reader_for(type(value))(value) is None
        assert read_usage(value) is None


def test_a_subclass_is_read_by_the_generic_reader() -> None:
    """A subclass of an SDK class may change what its fields mean: read_usage reads it."""

    class Mine(ChatCompletion):
        pass

    assert reader_for(Mine) is read_usage
    usage = read_usage(Mine.model_validate(CHAT))
    assert usage is not None and (usage.input_tokens, usage.cache_read_tokens) == (1200, 1000)


def test_one_guard_reads_results_of_several_classes(mode: Mode) -> None:
    """A guard whose function returns a ChatCompletion, then a Message, then a dict, then
    text: each result is read by its own class's reader."""
    results = iter(
        [
            ChatCompletion.model_validate(CHAT),
            Message.model_validate(MESSAGE),
            {"usage": {"input_tokens": 5, "output_tokens": 2}},
            "plain",
        ]
    )

    @mode.guard("several")
    def answer() -> Any:
        return next(results)

    usages = [mode.outcome(answer).usage for _ in range(4)]
    assert [u.provider if u is not None else None for u in usages] == [
        "openai", "anthropic", None, None
    ]  # fmt: skip
    assert usages[1] == Usage(
        450, 20, 300, 50, model="claude-test-1", provider="anthropic"
    )  # Anthropic's input excludes cache reads and writes: 100 + 300 + 50
    assert usages[2] == Usage(5, 2)
    assert aiguard.stats("several").input_tokens == 1200 + 450 + 5


@pytest.mark.parametrize("cls", SDK_CLASSES)
def test_reader_for_an_unrecognised_shape_is_the_generic_reader(
    cls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SDK version whose classes lack a field the reader expects: read_usage, not a
    reader that would fail on every call."""
    fields = dict(cls.model_fields)
    fields.pop("usage")
    monkeypatch.setattr(cls, "model_fields", fields)
    assert reader_for(cls) is read_usage


@given(st.lists(st.integers(0, 10**30), min_size=6, max_size=6), st.sampled_from([None, "m"]))
def test_the_readers_usage_is_a_usage(counts: list[int], model: str | None) -> None:
    """What the fast construction builds is a Usage like any other: equal to the one the
    constructor builds, of that very class, frozen, hashable."""
    import dataclasses

    from aiguard.usage import _usage

    i, o, r, w, w1, reasoning = counts
    w1 = min(w1, w)
    built = _usage(i, o, r, w, w1, reasoning, model, "p")
    expected = Usage(i, o, r, w, reasoning, model, "p", cache_write_1h_tokens=w1)
    assert built == expected and type(built) is Usage and hash(built) == hash(expected)
    assert repr(built) == repr(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.input_tokens = 1  # type: ignore[misc]
