"""Reading tokens and model names from the real clients' response types and from dicts."""

from __future__ import annotations

from typing import Any

import pytest
from clients import CHAT, MESSAGE, RESPONSE, anthropic_client, openai_client
from hypothesis import given
from hypothesis import strategies as st

import aiguard
from aiguard import Usage, read_usage


def test_openai_chat_completion() -> None:
    """OpenAI prompt tokens already include cached ones; completion includes reasoning."""
    completion = openai_client().chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert read_usage(completion) == Usage(
        input_tokens=1200,
        output_tokens=80,
        cache_read_tokens=1000,
        reasoning_tokens=30,
        model="gpt-4.1-mini-2025-04-14",
        provider="openai",
    )


def test_openai_response() -> None:
    """OpenAI Responses: input tokens include cached ones."""
    response = openai_client(RESPONSE).responses.create(model="gpt-4.1-mini", input="hi")
    usage = read_usage(response)
    assert usage == Usage(
        input_tokens=500, output_tokens=40, cache_read_tokens=200, reasoning_tokens=10,
        model="gpt-4.1-mini", provider="openai",
    )  # fmt: skip
    assert usage is not None and usage.uncached_input_tokens == 300


def test_anthropic_message_counts_cache_tokens_once() -> None:
    """Anthropic input tokens exclude cache reads and writes: the total adds them."""
    message = anthropic_client().messages.create(
        model="claude-test-1", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    usage = read_usage(message)
    assert usage == Usage(
        input_tokens=450, output_tokens=20, cache_read_tokens=300, cache_write_tokens=50,
        model="claude-test-1", provider="anthropic",
    )  # fmt: skip
    assert usage is not None and usage.uncached_input_tokens == 100


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"usage": {"prompt_tokens": 10, "completion_tokens": 2}}, Usage(10, 2)),
        ({"input_tokens": 7, "output_tokens": 3, "model": "m"}, Usage(7, 3, model="m")),
        ({"input_tokens": 7, "output_tokens": 3, "cached_tokens": 5}, Usage(7, 3, 5)),
        ({"label": "x"}, None),
        ("plain string", None),
        (None, None),
        ({"usage": {"prompt_tokens": "lots"}}, Usage(0, 0)),
    ],
)
def test_plain_shapes(result: Any, expected: Usage | None) -> None:
    """Dicts in either vocabulary; results with no usage give None; junk counts as 0."""
    assert read_usage(result) == expected


def test_guard_records_usage_and_model() -> None:
    """The Outcome carries the tokens and model of the call."""
    client = openai_client()

    @aiguard.guard("draft")
    def draft(text: str) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": text}]
        )

    outcome = draft.outcome("hi")
    assert outcome.usage is not None and outcome.usage.input_tokens == 1200
    assert outcome.usage.model == "gpt-4.1-mini-2025-04-14"


def test_custom_reader_and_reading_off() -> None:
    """usage= may be a callable returning a Usage or a mapping; usage=False reads nothing."""

    @aiguard.guard("c", usage=lambda r: {"input_tokens": r["n"], "output_tokens": 1})
    def custom() -> dict[str, int]:
        return {"n": 42}

    @aiguard.guard("off", usage=False)
    def off() -> dict[str, Any]:
        return dict(CHAT)

    assert custom.outcome().usage == Usage(42, 1)
    assert off.outcome().usage is None


def test_a_malformed_usage_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A reader that raises is an internal failure: logged once, the call is served."""

    def broken(result: Any) -> Usage:
        raise ValueError("odd usage object")

    @aiguard.guard("m", usage=broken)
    def f() -> str:
        return "ok"

    with caplog.at_level("WARNING", logger="aiguard"):
        assert [f(), f()] == ["ok", "ok"]
        assert f.outcome().usage is None
    assert sum("odd usage object" in r.getMessage() for r in caplog.records) == 1


def test_anthropic_dict_message_too() -> None:
    """The same Anthropic rule applies to the message as a plain dict."""
    assert read_usage(dict(MESSAGE)) == Usage(450, 20, 300, 50, model="claude-test-1",
                                               provider="anthropic")  # fmt: skip


def test_reader_values_become_whole_token_counts() -> None:
    """A custom reader returning Decimals, floats or numeric strings gives whole counts."""
    from decimal import Decimal

    aiguard.configure(prices={"models": {"m": {"input": "1", "output": "1"}}})

    def reader(result: Any) -> dict[str, Any]:
        return {"input_tokens": Decimal(5), "output_tokens": "7.0x"}

    @aiguard.guard("odd", model="m", usage=reader)
    def f() -> str:
        return "ok"

    outcome = f.outcome()
    assert outcome.usage == Usage(5, 0, model=None)
    assert outcome.cost is not None


# -- cache writes by duration ------------------------------------------------------------------

MESSAGE_1H = {
    **MESSAGE,
    "usage": {
        **MESSAGE["usage"],
        "cache_creation_input_tokens": 50,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 20},
    },
}


def test_anthropic_message_splits_cache_writes_by_duration() -> None:
    """A real Message with 5-minute and 1-hour writes: the total, and the 1-hour part."""
    message = anthropic_client(MESSAGE_1H).messages.create(
        model="claude-test-1", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    usage = read_usage(message)
    assert usage == Usage(
        input_tokens=450, output_tokens=20, cache_read_tokens=300, cache_write_tokens=50,
        cache_write_1h_tokens=20, model="claude-test-1", provider="anthropic",
    )  # fmt: skip
    assert usage is not None and (usage.cache_write_5m_tokens, usage.uncached_input_tokens) == (
        30,
        100,
    )
    assert read_usage(MESSAGE_1H) == usage  # the same message as a plain dict


def test_without_the_breakdown_every_write_is_a_5_minute_one() -> None:
    """An Anthropic response with no cache_creation (older API versions): all 5-minute."""
    usage = read_usage(dict(MESSAGE))
    assert usage is not None
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (50, 0)
    assert usage.cache_write_5m_tokens == 50


@pytest.mark.parametrize(
    ("given", "writes", "writes_1h"),
    [
        ({"cache_creation_input_tokens": None}, 50, 20),  # no total: the parts' sum
        ({"cache_creation_input_tokens": 10}, 50, 20),  # a total under its parts: the parts
        ({"cache_creation_input_tokens": 80}, 80, 20),  # a total over its parts: the total
    ],
)
def test_writes_are_never_fewer_than_their_parts(
    given: dict[str, Any], writes: int, writes_1h: int
) -> None:
    """Whatever the response says of the total, no write goes uncounted."""
    body = {
        "type": "message", "role": "assistant",
        "usage": {"input_tokens": 100, "output_tokens": 1, "cache_read_input_tokens": 0,
                  "cache_creation": {"ephemeral_5m_input_tokens": 30,
                                     "ephemeral_1h_input_tokens": 20},
                  **given},
    }  # fmt: skip
    usage = read_usage(body)
    assert usage is not None
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (writes, writes_1h)
    assert usage.input_tokens == 100 + writes


def test_plain_dicts_in_aiguard_vocabulary_carry_1_hour_writes() -> None:
    """A dict with cache_write_1h_tokens: the part; with it alone, the writes are that many."""
    both = {"input_tokens": 90, "cache_write_tokens": 40, "cache_write_1h_tokens": 10}
    alone = {"input_tokens": 90, "cache_write_1h_tokens": 10}
    assert read_usage(both) == Usage(90, cache_write_tokens=40, cache_write_1h_tokens=10)
    assert read_usage(alone) == Usage(90, cache_write_tokens=10, cache_write_1h_tokens=10)


def test_usage_refuses_more_1_hour_writes_than_writes() -> None:
    """A Usage whose part exceeds its total cannot be built; positional arguments are
    unchanged (the 1-hour writes are keyword only)."""
    with pytest.raises(ValueError, match="cache_write_1h_tokens=5"):
        Usage(10, cache_write_tokens=4, cache_write_1h_tokens=5)
    assert Usage(10, 2, 3, 4, 5, "m", "p").reasoning_tokens == 5


def test_as_usage_keeps_parts_within_totals() -> None:
    """A custom reader's mapping: the writes are at least the 1-hour ones; a Usage that says
    otherwise (numpy-like counts slip past its own check) is refused."""
    from aiguard.usage import as_usage

    assert as_usage({"cache_write_1h_tokens": 7}) == Usage(
        cache_write_tokens=7, cache_write_1h_tokens=7
    )

    class Count(int):  # an Integral that is not exactly an int, as numpy's are
        pass

    odd = Usage(cache_write_tokens=Count(3), cache_write_1h_tokens=Count(5))
    with pytest.raises(ValueError, match="1-hour writes are a part"):
        as_usage(odd)


counts = st.one_of(
    st.none(), st.integers(-10, 10**6), st.just(10**31), st.text(max_size=3), st.floats()
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": counts,
            "output_tokens": counts,
            "cache_read_input_tokens": counts,
            "cache_creation_input_tokens": counts,
            "cache_creation": st.one_of(
                st.none(),
                st.text(max_size=2),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "ephemeral_5m_input_tokens": counts,
                        "ephemeral_1h_input_tokens": counts,
                    },
                ),
            ),
            "cache_write_tokens": counts,
            "cache_write_1h_tokens": counts,
            "cache_read_tokens": counts,
            "prompt_tokens": counts,
        },
    ),
    st.booleans(),
)
def test_parts_never_exceed_totals(usage: dict[str, Any], anthropic: bool) -> None:
    """For any usage a provider or a dict may say, hostile values included: the 1-hour
    writes are a part of the writes, the cache reads and writes parts of an Anthropic input,
    every count a whole number from 0; and a custom reader's mapping obeys the same."""
    from aiguard.usage import as_usage

    result: dict[str, Any] = {"usage": usage}
    if anthropic:
        result.update(type="message", role="assistant")
    read = read_usage(result)
    if read is not None:
        assert 0 <= read.cache_write_1h_tokens <= read.cache_write_tokens
        assert read.cache_write_5m_tokens + read.cache_write_1h_tokens == read.cache_write_tokens
        assert min(read.input_tokens, read.output_tokens, read.cache_read_tokens) >= 0
        if read.provider == "anthropic":
            assert read.cache_read_tokens + read.cache_write_tokens <= read.input_tokens
    try:
        mapped = as_usage(usage)
    except ValueError:  # a count out of range: refused, as documented
        return
    assert mapped is not None and 0 <= mapped.cache_write_1h_tokens <= mapped.cache_write_tokens
