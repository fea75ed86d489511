"""Segments and labels on call records: what each call record says of the call's segment and of
the model answer's label, on every path, whatever the values."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import fresh_store

import aiguard
from aiguard._runtime.records import label_of, text_of
from aiguard.store import configured


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A configured store of each kind (call records go there)."""
    with fresh_store(request.param, tmp_path / "seg.db") as s:
        aiguard.configure(store=s)
        try:
            yield s
        finally:
            aiguard.configure(store=None)


def rows(feature: str) -> list[dict[str, Any]]:
    aiguard.flush()
    return configured().call_records(feature=feature)


def segments_of(feature: str) -> list[dict[str, str] | None]:
    return [None if r["segments"] is None else json.loads(r["segments"]) for r in rows(feature)]


class User:
    def __init__(self, plan: Any) -> None:
        self.plan = plan


class Plan(enum.Enum):
    PRO = "pro"
    FREE = "free"


def plan_of(region: str, user: User, *_: Any) -> str:
    """Takes the call's arguments as the function does."""
    return f"{user.plan}-{region}"


# -- what is recorded -----------------------------------------------------------------------------


def test_names_paths_and_callables_are_recorded_in_order(mode: Mode, store: Any) -> None:
    """Parameter names, dotted paths (attributes and mapping keys) and a named callable: each
    call's values, as text, keys in the order given, for served and fallback calls alike."""

    @mode.guard(
        "seg-all",
        confidence="score",
        threshold=0.5,
        fallback=aiguard.Default({"label": "other", "score": 1.0}),
        segments=("region", "user.plan", "headers.lang", plan_of),
    )
    def f(region: str, user: User, headers: dict[str, str], score: float) -> dict[str, Any]:
        return {"label": "billing", "score": score}

    mode.call(f, "eu", User("pro"), {"lang": "de"}, 0.9)
    mode.call(f, "us", User(Plan.FREE), {"lang": "en"}, 0.1)
    got = rows("seg-all")
    assert [r["reason"] for r in got] == ["served", "low_confidence"]
    first, second = (json.loads(r["segments"]) for r in got)
    assert list(first) == ["region", "user.plan", "headers.lang", "plan_of"]
    assert first == {"region": "eu", "user.plan": "pro", "headers.lang": "de", "plan_of": "pro-eu"}
    assert second["user.plan"] == "free"  # an Enum: its value
    assert second["plan_of"] == "Plan.FREE-us"  # the callable's own text, as it made it
    assert got[0]["segments"] == json.dumps(first, separators=(",", ":"))  # compact


def test_mapping_form_names_segments(mode: Mode, store: Any) -> None:
    """``{"name": spec}`` records each value under its name; a lambda is fine there."""

    @mode.guard("seg-map", segments={"tier": "user.plan", "long": lambda user, text: len(text) > 3})
    def f(user: User, text: str) -> str:
        return text

    mode.call(f, User("pro"), "hello")
    assert segments_of("seg-map") == [{"tier": "pro", "long": "True"}]


def test_values_that_cannot_be_read_are_unknown(mode: Mode, store: Any) -> None:
    """A missing argument, a None, a missing attribute, an attribute that raises and a callable
    that raises are each ``"unknown"``; the call is served unchanged."""

    class Hostile:
        @property
        def plan(self) -> str:
            raise RuntimeError("no plan")

    def broken(*args: Any, **kwargs: Any) -> str:
        raise ValueError("boom")

    @mode.guard("seg-unknown", segments=("region", "user.plan", "user.missing", "opt", broken))
    def f(user: Any, region: str | None = None, opt: Any = None) -> str:
        return "ok"

    assert mode.call(f, Hostile()) == "ok"
    assert mode.call(f, User("pro"), None) == "ok"
    first, second = segments_of("seg-unknown")
    assert first == dict.fromkeys(
        ["region", "user.plan", "user.missing", "opt", "broken"], "unknown"
    )
    assert second == {
        "region": "unknown", "user.plan": "pro", "user.missing": "unknown", "opt": "unknown",
        "broken": "unknown",
    }  # fmt: skip


def test_guard_without_segments_records_null(mode: Mode, store: Any) -> None:
    """No segments configured: the column is NULL."""

    @mode.guard("seg-none")
    def f(x: int) -> int:
        return x

    mode.call(f, 1)
    assert segments_of("seg-none") == [None]


def test_segments_on_retried_and_blocked_calls(store: Any) -> None:
    """A call served after a retry and a call blocked by a kill switch carry their segments."""
    tries = {"n": 0}

    @aiguard.guard(
        "seg-paths",
        segments=("region",),
        retry=aiguard.Retry(attempts=2, backoff=0.001, on=(ConnectionError,)),
        fallback=aiguard.Default("fallback"),
    )
    def f(region: str) -> str:
        tries["n"] += 1
        if tries["n"] == 1:
            raise ConnectionError("flaky")
        return "model"

    assert f("eu") == "model"
    aiguard.kill("seg-paths", reason="test")
    assert f("us") == "fallback"
    got = rows("seg-paths")
    assert [(r["reason"], json.loads(r["segments"])) for r in got] == [
        ("served", {"region": "eu"}),
        ("killed", {"region": "us"}),
    ]


def test_configured_segments_apply_and_the_guard_wins(store: Any) -> None:
    """``features.<name>.segments`` applies to a guard that leaves segments out, takes effect
    on configure(), and a guard's own segments= win over it."""

    @aiguard.guard("seg-cfg")
    def f(region: str, plan: str) -> str:
        return "ok"

    @aiguard.guard("seg-cfg2", segments=("plan",))
    def g(region: str, plan: str) -> str:
        return "ok"

    f("eu", "pro")
    aiguard.configure(
        features={"seg-cfg": {"segments": ["region"]}, "seg-cfg2": {"segments": ["region"]}}
    )
    f("eu", "pro")
    g("eu", "pro")
    assert segments_of("seg-cfg") == [None, {"region": "eu"}]
    assert segments_of("seg-cfg2") == [{"plan": "pro"}]


def test_segments_from_a_config_file(tmp_path: Path) -> None:
    """TOML ``segments = [...]`` under a feature is the same as guard(segments=...)."""
    path = tmp_path / "aiguard.toml"
    path.write_text(
        f'store = "{tmp_path / "c.db"}"\n[features.seg-file]\nsegments = ["region", "user.plan"]\n'
    )
    aiguard.load_config(path)

    @aiguard.guard("seg-file")
    def f(region: str, user: User) -> str:
        return "ok"

    f("eu", User("pro"))
    assert segments_of("seg-file") == [{"region": "eu", "user.plan": "pro"}]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.one_of(
        st.text(max_size=500),
        st.integers(),
        st.floats(allow_nan=True),
        st.binary(max_size=50),
        st.lists(st.integers(), max_size=5),
        st.none(),
    )
)
def test_hostile_values_are_text_of_at_most_100_characters(value: Any, tmp_path: Path) -> None:
    """Any value is recorded as str() of it (cut at 100 characters, lone surrogates and NUL
    replaced), or "unknown" for None: the record is always written, the call never fails."""
    aiguard.configure(store=":memory:")

    @aiguard.guard("seg-hyp", segments=("v",))
    def f(v: Any) -> str:
        return "ok"

    assert f(value) == "ok"
    [got] = segments_of("seg-hyp")
    assert got is not None
    text = got["v"]
    assert len(text) <= 100
    if value is None:
        assert text == "unknown"
    else:
        expected = str(value)[:100]
        expected = "".join(
            "\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in expected
        )
        assert text == expected
    text.encode("utf-8")  # storable as UTF-8 (PostgreSQL text)
    aiguard.configure(store=None)


def test_an_object_whose_str_raises_or_lies_is_unknown(store: Any) -> None:
    """``__str__`` that raises, or returns a non-str: ``"unknown"``; a huge str is cut."""

    class Raises:
        def __str__(self) -> str:
            raise RuntimeError("no")

    class Lies:
        def __str__(self) -> Any:
            return 42

    @aiguard.guard("seg-str", segments=("a", "b", "c"))
    def f(a: Any, b: Any, c: Any) -> str:
        return "ok"

    assert f(Raises(), Lies(), "x" * 1_000_000) == "ok"
    assert segments_of("seg-str") == [{"a": "unknown", "b": "unknown", "c": "x" * 100}]


# -- configuration errors -------------------------------------------------------------------------


def test_a_segment_that_names_no_parameter_is_a_config_error() -> None:
    """At decoration: the feature, the segment and the parameters are named."""
    with pytest.raises(aiguard.ConfigError, match=r"feature 'bad'.*segment 'regon' names no"):

        @aiguard.guard("bad", segments=("regon",))
        def f(region: str) -> str:
            return region

    with pytest.raises(aiguard.ConfigError, match=r"segment 'tier': 'acount.plan' names no"):

        @aiguard.guard("bad", segments={"tier": "acount.plan"})
        def g(account: Any) -> str:
            return "x"


def test_kwargs_functions_take_any_name() -> None:
    """A function with ``**kwargs`` accepts any segment name (it may come as a keyword)."""

    @aiguard.guard("kw", segments=("region",))
    def f(**kwargs: Any) -> str:
        return "ok"

    assert f(region="eu") == "ok"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ((lambda x: x,), "has no name to record its value under: give a mapping"),
        ("region", "give a tuple of parameter names"),
        ((1,), "segment 1 must be a parameter name"),
        (("a", "a"), "the segment name 'a' is given twice"),
        (("a..b",), "is not a parameter name or dotted path"),
        ({"": "a"}, "must be a non-empty text"),
        ({"x": 3}, "segment 'x': 3 must be a parameter name"),
    ],
)
def test_bad_segments_are_config_errors(value: Any, message: str) -> None:
    """Each bad form of segments= is a ConfigError naming the feature and the value."""
    with pytest.raises(aiguard.ConfigError, match=message) as info:
        aiguard.guard("bad-seg", segments=value)
    assert "feature 'bad-seg'" in str(info.value) and "segments=" in str(info.value)


def test_configured_segments_that_do_not_fit_a_live_guard_change_nothing() -> None:
    """configure() checks configured segments against every live guard first: a segment that
    names no parameter is a ConfigError and the configuration stays as it was."""

    @aiguard.guard("seg-live")
    def f(region: str) -> str:
        return region

    with pytest.raises(aiguard.ConfigError, match="segment 'plan' names no parameter"):
        aiguard.configure(features={"seg-live": {"segments": ["plan"]}})
    assert f("eu") == "eu"


# -- labels ---------------------------------------------------------------------------------------


class Labelled:
    def __init__(self, label: Any) -> None:
        self.label = label


class Colour(enum.Enum):
    RED = "red"


class BadLabel:
    @property
    def label(self) -> str:
        raise RuntimeError("unreadable")


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ({"label": "billing", "score": 0.9}, "billing"),
        (Labelled("bug"), "bug"),
        (Labelled(Colour.RED), "red"),  # an Enum inside: its value
        (Colour.RED, "red"),
        (True, "True"),
        ("free text", None),  # a str is not a label
        (42, None),
        ({"text": "no label"}, None),
        (BadLabel(), None),
        ({"label": "x" * 500}, "x" * 100),
        ({"label": 7}, "7"),
    ],
)
def test_the_label_of_each_shape(value: Any, label: str | None, store: Any) -> None:
    """The label column follows the rule: mapping key, attribute, Enum value, bool; else
    NULL; text of at most 100 characters."""
    assert text_of(label_of(value)) == label

    @aiguard.guard("lab")
    def f() -> Any:
        return value

    assert f() is value
    assert [r["label"] for r in rows("lab")] == [label]


def test_label_is_the_models_answer_when_not_served(mode: Mode, store: Any) -> None:
    """A rejected answer's label is recorded (drift is about the model); a fallback's answer
    is not, and a call where the model gave nothing has none."""

    @mode.guard(
        "lab-paths",
        confidence="score",
        threshold=0.5,
        fallback=aiguard.Default({"label": "fallback", "score": 1.0}),
    )
    def f(score: float) -> dict[str, Any]:
        if score < 0:
            raise ValueError("model down")
        return {"label": "model", "score": score}

    mode.call(f, 0.9)
    mode.call(f, 0.1)
    mode.call(f, -1.0)
    got = [(r["reason"], r["label"]) for r in rows("lab-paths")]
    assert got == [("served", "model"), ("low_confidence", "model"), ("error", None)]


def test_label_with_capture_on(store: Any) -> None:
    """With capture on (the record keeps the value), the label is the same."""
    aiguard.configure(capture=True)

    @aiguard.guard("lab-cap", confidence="score", threshold=0.5, fallback=aiguard.Default("d"))
    def f(score: float) -> dict[str, Any]:
        return {"label": "x", "score": score}

    f(0.9)
    f(0.2)
    assert [r["label"] for r in rows("lab-cap")] == ["x", "x"]


@given(
    st.lists(
        st.tuples(st.sampled_from(["region", "plan", "tier"]), st.text(max_size=20)),
        min_size=1,
        max_size=50,
    )
)
def test_segments_json_remembered_text_is_the_encoding(pairs: list[tuple[str, str]]) -> None:
    """The writer remembers the JSON of the segment values it has seen: the remembered text is
    always the encoding of the values asked for, however many distinct ones come by."""

    from aiguard._runtime import records

    for name, value in pairs:
        for names, values in (((name,), (value,)), ((name, "x"), (value, value[::-1]))):
            text = records.segments_json(names, values)
            assert json.loads(text) == dict(zip(names, values, strict=True))
            assert list(json.loads(text)) == list(names)
