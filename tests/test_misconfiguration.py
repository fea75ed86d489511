"""Settings that would silently disable a safety feature are caught: at decoration when they can
be known, on the first calls otherwise, and at ``configure()`` for every argument."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple, Optional, TypedDict

import attrs
import pydantic
import pytest
from _modes import Mode
from hypothesis import given
from hypothesis import strategies as st
from services import require_redis

import aiguard
from aiguard import EventKind, Reason
from aiguard._engine.watch import WATCHED
from aiguard.cli import main
from aiguard.testing import capture_telemetry

# -- decoration: callables that cannot take the result ----------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"confidence": lambda: 0.9}, "confidence="),
        ({"confidence": lambda result, other: 0.9}, "confidence="),
        ({"confidence": lambda *, result: 0.9}, "confidence="),
        ({"validate": lambda: True}, "validate="),
        ({"validate": [lambda r: True, lambda: True]}, "validate[1]="),
        ({"usage": lambda: None}, "usage="),
    ],
)
def test_a_callable_that_cannot_take_the_result_fails_at_decoration(
    kwargs: dict[str, Any], name: str
) -> None:
    """``confidence=lambda: 0.9`` or ``validate=lambda: True`` would fail on every call: a
    ConfigError at decoration names the setting, the value and its signature."""
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.guard("arity", **kwargs)
    message = str(info.value)
    assert message.startswith("feature 'arity': ") and name in message
    assert "<lambda>" in message and "signature (" in message and "one positional" in message


class _Reader:
    def __call__(self, result: Any) -> float:
        return 0.5

    def method(self, result: Any) -> float:
        return 0.5


def _two(result: Any, scale: float = 1.0) -> float:
    return 0.5 * scale


@pytest.mark.parametrize(
    "reader",
    [
        lambda result: 0.5,
        lambda *args: 0.5,
        _two,
        functools.partial(_two, scale=1.0),
        _Reader(),
        _Reader().method,
        float,  # a built-in: its signature may not be readable, it is accepted as it is
    ],
)
def test_callables_that_take_the_result_are_accepted(mode: Mode, reader: Any) -> None:
    """Every callable that can take the result as one positional argument is accepted, and
    used."""

    @mode.guard("arity-ok", confidence=reader, validate=reader, usage=False)
    def f() -> Any:
        return 0.5

    assert mode.call(f) == 0.5


# -- decoration: a confidence name the result cannot have --------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DataAnswer:
    label: str
    score: float


class PydanticAnswer(pydantic.BaseModel):
    label: str
    score: float


class DictAnswer(TypedDict):
    label: str
    score: float


class TupleAnswer(NamedTuple):
    label: str
    score: float


@attrs.frozen
class AttrsAnswer:
    label: str
    score: float


class PlainAnswer:
    label: str
    score: float

    def __init__(self, label: str, score: float) -> None:
        self.label = label
        self.score = score


ANSWERS: list[tuple[type, Any]] = [
    (DataAnswer, DataAnswer("billing", 0.9)),
    (PydanticAnswer, PydanticAnswer(label="billing", score=0.9)),
    (DictAnswer, DictAnswer(label="billing", score=0.9)),
    (TupleAnswer, TupleAnswer("billing", 0.9)),
    (AttrsAnswer, AttrsAnswer("billing", 0.9)),
    (PlainAnswer, PlainAnswer("billing", 0.9)),
]


@pytest.mark.parametrize(("cls", "value"), ANSWERS, ids=lambda x: getattr(x, "__name__", ""))
def test_a_confidence_name_absent_from_the_return_type_fails_at_decoration(
    mode: Mode, cls: type, value: Any
) -> None:
    """``confidence="scor"`` on a function annotated to return a dataclass, a pydantic model,
    a TypedDict, a NamedTuple, an attrs class or an annotated class: a ConfigError at
    decoration names the value, the type, its fields and the closest one; the right name
    works."""

    def model() -> Any:
        return value

    model.__annotations__["return"] = cls
    with pytest.raises(aiguard.ConfigError) as info:
        mode.guard("typo", confidence="scor", threshold=0.5)(model)
    message = str(info.value)
    assert "feature 'typo': confidence='scor' is invalid" in message
    assert f"returns {cls.__qualname__} (fields: label, score)" in message
    assert "did you mean 'score'?" in message and "invalid_confidence" in message

    guarded = mode.guard("typo", confidence="score", threshold=0.5)(model)
    assert mode.outcome(guarded).reason is Reason.SERVED


def test_a_result_that_is_a_scalar_has_no_confidence_field() -> None:
    """``-> str`` with ``confidence="score"``: no string has it."""
    with pytest.raises(aiguard.ConfigError, match=r"returns str, which has no 'score'"):

        @aiguard.guard("scalar", confidence="score")
        def f() -> str:
            return "x"


def test_optional_and_union_returns_are_checked_member_by_member() -> None:
    """``Optional[DataAnswer]`` has ``score`` (from DataAnswer): accepted; ``scor`` is in no
    member: refused."""

    @aiguard.guard("opt", confidence="score")
    def ok() -> Optional[DataAnswer]:  # noqa: UP045 - the typing spelling, on purpose
        return None

    with pytest.raises(aiguard.ConfigError, match=r"returns DataAnswer \| None"):

        @aiguard.guard("opt", confidence="scor")
        def bad() -> DataAnswer | None:
            return None


class Open(pydantic.BaseModel, extra="allow"):
    label: str


class Dynamic:
    label: str

    def __getattr__(self, name: str) -> Any:
        return 0.5


class SetsByName:
    label: str

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)


class Undeclared:
    pass


class Later:
    label: str

    def __init__(self) -> None:
        self.label = "x"
        self.score = 0.5


class WithProperty:
    label: str

    @property
    def score(self) -> float:
        return 0.9


@pytest.mark.parametrize(
    "annotation",
    [dict, "dict[str, float]", Any, Open, Dynamic, SetsByName, Undeclared, "Missing", None],
    ids=str,
)
def test_what_cannot_be_known_is_left_to_the_first_calls(annotation: Any) -> None:
    """No annotation, a mapping, Any, a name that cannot be resolved, a pydantic model with
    extra fields, a class with ``__getattr__`` or that sets attributes by name, a class that
    declares nothing: accepted at decoration."""

    def f() -> Any:
        return {"score": 0.9}

    if annotation is None:
        del f.__annotations__["return"]
    else:
        f.__annotations__["return"] = annotation
    aiguard.guard("unknowable", confidence="scor")(f)


def test_properties_and_attributes_set_in_init_are_names_a_result_has() -> None:
    """A property and an attribute the class's own code sets are readable: accepted (a name
    set nowhere is not)."""

    @aiguard.guard("prop", confidence="score")
    def f() -> WithProperty:
        return WithProperty()

    @aiguard.guard("init", confidence="score")
    def g() -> Later:
        return Later()

    assert f().score == 0.9 and g().score == 0.5
    with pytest.raises(aiguard.ConfigError, match="returns Later"):
        aiguard.guard("init", confidence="scor")(g.__wrapped__)


def test_a_configured_confidence_name_is_checked_against_live_guards() -> None:
    """``configure(features=...)`` naming a field the guard's results lack fails, and changes
    nothing; configured before the guard, the decoration fails."""

    @aiguard.guard("cfg-typo", fallback=aiguard.Default("fb"))
    def f() -> DataAnswer:
        return DataAnswer("billing", 0.9)

    with pytest.raises(aiguard.ConfigError, match="confidence='scor' is invalid"):
        aiguard.configure(features={"cfg-typo": {"confidence": "scor", "threshold": 0.5}})
    assert f() == DataAnswer("billing", 0.9)
    assert aiguard.last_outcome().confidence is None  # type: ignore[union-attr]

    aiguard.configure(features={"cfg-later": {"confidence": "scor", "threshold": 0.5}})
    with pytest.raises(aiguard.ConfigError, match="did you mean 'score'"):

        @aiguard.guard("cfg-later")
        def g() -> DataAnswer:
            return DataAnswer("billing", 0.9)


@given(
    fields=st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=5),
    name=st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
)
def test_the_declared_check_refuses_exactly_the_names_a_result_cannot_have(
    fields: list[str], name: str
) -> None:
    """For any dataclass, a confidence name is refused if and only if reading it from a result
    finds nothing."""
    fields = list(dict.fromkeys(f for f in fields if not hasattr(object, f)))
    if not fields:
        return
    cls = dataclasses.make_dataclass("Shape", [(f, float) for f in fields])
    result = cls(*[0.5] * len(fields))

    def f() -> Any:
        return result

    f.__annotations__["return"] = cls
    if hasattr(result, name):
        aiguard.guard("shape", confidence=name)(f)
    else:
        with pytest.raises(aiguard.ConfigError, match=f"has no {name!r}"):
            aiguard.guard("shape", confidence=name)(f)


# -- the first calls --------------------------------------------------------------------------


def _misconfigured(feature: str) -> list[aiguard.ControlEvent]:
    return [e for e in aiguard.recent_events(feature) if e.kind is EventKind.MISCONFIGURED]


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "aiguard" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


def test_a_missing_confidence_on_every_first_call_is_reported_once(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A confidence name no result has (not knowable from a dict annotation): the first
    calls all fall back with invalid_confidence; at the 20th, one warning, one control event
    and one count in aiguard.control.events, never again."""
    caplog.set_level(logging.WARNING, logger="aiguard")

    @mode.guard("first-typo", confidence="scor", threshold=0.5, fallback=aiguard.Default("fb"))
    def f() -> dict[str, float]:
        return {"score": 0.9}

    with capture_telemetry() as telemetry:
        for _ in range(WATCHED - 1):
            assert mode.call(f) == "fb"
        assert _misconfigured("first-typo") == []
        assert mode.outcome(f).reason is Reason.INVALID_CONFIDENCE
        for _ in range(2 * WATCHED):
            mode.call(f)
        points = [
            p
            for p in telemetry.metric_points("aiguard.control.events")
            if p.attributes["aiguard.event"] == "misconfigured"
        ]
    [event] = _misconfigured("first-typo")
    assert event.feature == "first-typo"
    assert f"first {WATCHED} results" in event.reason and "check confidence='scor'" in event.reason
    assert "confidence 'scor' is missing" in event.reason
    [warning] = _warnings(caplog, "misconfigured")
    assert "first-typo" in warning and "confidence='scor'" in warning
    assert [(p.attributes["aiguard.feature"], p.value) for p in points] == [("first-typo", 1)]


def test_a_confidence_reader_that_raises_is_reported(mode: Mode) -> None:
    """A confidence callable that raises on every result: reported, naming the callable."""

    def read(result: Any) -> float:
        return float(result["confidence"])

    @mode.guard("first-reader", confidence=read, fallback=aiguard.Default("fb"))
    def f() -> dict[str, float]:
        return {"score": 0.9}

    for _ in range(WATCHED):
        mode.call(f)
    [event] = _misconfigured("first-reader")
    assert "the confidence= callable" in event.reason and "KeyError" in event.reason


def test_a_validator_that_rejects_everything_is_reported(mode: Mode) -> None:
    """A validator that rejects every first result: reported, pointing at validate=."""

    @mode.guard("first-validate", validate=lambda r: r["label"] in {"a", "b"},
                fallback=aiguard.Default("fb"))  # fmt: skip
    def f() -> dict[str, str]:
        return {"label": "billing"}

    for _ in range(WATCHED):
        mode.call(f)
    [event] = _misconfigured("first-validate")
    assert "invalid_output" in event.reason and "check validate=" in event.reason


def test_one_served_result_means_no_report(mode: Mode) -> None:
    """A feature that served one result among its first is not misconfigured."""
    answers = iter([{"score": 0.9}] + [{"other": 1.0}] * (2 * WATCHED))

    @mode.guard("first-served", confidence="score", fallback=aiguard.Default("fb"))
    def f() -> dict[str, float]:
        return next(answers)

    assert mode.call(f) == {"score": 0.9}
    for _ in range(2 * WATCHED):
        assert mode.call(f) == "fb"
    assert _misconfigured("first-served") == []


def test_a_confidence_that_was_read_stops_the_watch(mode: Mode) -> None:
    """A result judged on its confidence (low_confidence) shows the setting works: the watch
    stops for good, and later invalid results are never reported."""
    answers = iter([{"score": 0.1}] + [{"other": 1.0}] * (2 * WATCHED))

    @mode.guard("first-low", confidence="score", threshold=0.5, fallback=aiguard.Default("fb"))
    def f() -> dict[str, float]:
        return next(answers)

    assert mode.outcome(f).reason is Reason.LOW_CONFIDENCE
    assert f._aiguard_core.watch is None  # off the fallback path from now on
    for _ in range(2 * WATCHED):
        mode.call(f)
    assert _misconfigured("first-low") == []


def test_calls_without_a_result_do_not_count(mode: Mode) -> None:
    """Errors and kills give nothing to judge: they neither count nor stop the watch."""
    failing = [True] * 30

    @mode.guard("first-errors", confidence="scor", fallback=aiguard.Default("fb"))
    def f() -> dict[str, float]:
        if failing:
            failing.pop()
            raise RuntimeError("provider down")
        return {"score": 0.9}

    for _ in range(30):
        assert mode.outcome(f).reason is Reason.ERROR
    aiguard.kill("first-errors", reason="maintenance")
    for _ in range(5):
        assert mode.outcome(f).reason is Reason.KILLED
    aiguard.revive("first-errors")
    for _ in range(WATCHED - 1):
        mode.call(f)
    assert _misconfigured("first-errors") == []
    mode.call(f)
    assert len(_misconfigured("first-errors")) == 1


def test_a_stream_judged_at_its_end_is_watched_too() -> None:
    """A buffered stream whose answer has no confidence is reported like any result."""

    @aiguard.guard("first-stream", stream="buffer", confidence=lambda text: None,
                   fallback=aiguard.Default("fb"))  # fmt: skip
    def f() -> Any:
        yield "a"
        yield "b"

    for _ in range(WATCHED):
        assert "".join(f()) == "fb"
    assert len(_misconfigured("first-stream")) == 1


def test_two_guards_of_one_feature_report_once() -> None:
    """The report is once per feature in the process."""

    @aiguard.guard("first-twice", confidence="scor", fallback=aiguard.Default("fb"))
    def f() -> dict[str, float]:
        return {"score": 0.9}

    @aiguard.guard("first-twice", confidence="scor", fallback=aiguard.Default("fb"))
    async def g() -> dict[str, float]:
        return {"score": 0.9}

    for _ in range(WATCHED):
        f()
    import asyncio

    async def many() -> None:
        for _ in range(WATCHED):
            await g()

    asyncio.run(many())
    assert len(_misconfigured("first-twice")) == 1


# -- guard without parentheses ----------------------------------------------------------------


def test_guard_without_parentheses_says_it_needs_a_name() -> None:
    """``@aiguard.guard`` over a function: the error says guard needs a feature name and must
    be called."""
    with pytest.raises(aiguard.ConfigError) as info:

        @aiguard.guard  # type: ignore[arg-type]
        def triage(ticket: str) -> str:
            return ticket

    message = str(info.value)
    assert "guard needs a feature name and must be called" in message
    assert '@aiguard.guard("name", ...)' in message and "triage" in message


# -- configure(): every argument, every call --------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"control_interval": -1}, "control_interval=-1 is invalid"),
        ({"control_interval": 0}, "control_interval=0 is invalid"),
        ({"control_interval": "1s"}, "control_interval='1s' is invalid"),
        ({"control_interval": timedelta(0)}, "control_interval=datetime.timedelta(0) is invalid"),
        ({"features": [1]}, "features=[1] is invalid: give a mapping"),
        ({"features": "triage"}, "features='triage' is invalid: give a mapping"),
        ({"features": {"": {}}}, "feature name '' is invalid"),
        ({"features": {" spaced ": {}}}, "feature name ' spaced ' is invalid"),
        ({"missing_ok": "yes"}, "missing_ok='yes' is invalid"),
        ({"redact": lambda: "x"}, "redact=<function"),
        ({"store": "http://db.example/aiguard"}, "store='http://db.example/aiguard' is invalid"),
        ({"budgets": "http://cache:6379"}, "the URL scheme 'http' is not supported"),
        ({"budgets": "cache:6379"}, "budgets='cache:6379' is invalid"),
        ({"control": "http://ops.example/control.json"}, "the URL scheme 'http'"),
        ({"control": "s3://bucket/control.toml"}, "the URL scheme 's3'"),
        ({"control": "file://host/control.toml"}, "a file:// URL names a local file"),
    ],
)
def test_configure_checks_every_argument_in_every_call(
    kwargs: dict[str, Any], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bad argument is a ConfigError naming it and its value, whatever else is given (or
    not) in the same call, and nothing is applied: no file is made for a URL."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(**kwargs)
    assert type(info.value) is aiguard.ConfigError
    assert expected in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_config_file_with_an_invalid_feature_name_is_refused(tmp_path: Path) -> None:
    """``load_config`` of a file with ``[features." triage"]``: a ConfigError naming the file
    and the name."""
    path = tmp_path / "aiguard.toml"
    path.write_text('[features." triage"]\ntimeout = 2.0\n')
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.load_config(path)
    assert str(info.value) == (
        f"config file {str(path)!r}: feature ' triage': feature name ' triage' is invalid: "
        "must be a non-empty name without surrounding spaces"
    )


def test_a_bad_argument_changes_nothing(tmp_path: Path) -> None:
    """A later bad argument leaves the store, features and control as they were."""
    aiguard.configure(features={"keep": {"timeout": 2.0}})
    with pytest.raises(aiguard.ConfigError, match="control_interval"):
        aiguard.configure(store=tmp_path / "s.db", features={}, control_interval=-1)
    from aiguard._runtime.state import runtime

    assert runtime.store is None and "keep" in runtime.features
    assert not (tmp_path / "s.db").exists()


def test_control_interval_alone_applies_to_sources_given_later(tmp_path: Path) -> None:
    """``configure(control_interval=...)`` on its own is remembered for later sources."""
    path = tmp_path / "control.toml"
    path.write_text("")
    aiguard.configure(control_interval=timedelta(seconds=7))
    aiguard.configure(control=path)
    from aiguard._runtime.state import runtime

    [worker] = [w for n, w in runtime.workers.items() if n.startswith("aiguard-control[")]
    assert worker.step.__self__.source.interval == 7.0


# -- control sources --------------------------------------------------------------------------


def test_a_missing_control_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    """``configure(control="missing.json")``: a ConfigError naming the path and missing_ok;
    nothing is polled; a ControlFile given as a source is checked alike."""
    path = tmp_path / "missing.json"
    for control in (str(path), path, aiguard.ControlFile(path)):
        with pytest.raises(aiguard.ConfigError) as info:
            aiguard.configure(control=control)
        assert f"control file {str(path)!r} does not exist" in str(info.value)
        assert "missing_ok=True" in str(info.value)
    from aiguard._runtime.state import runtime

    assert not any(name.startswith("aiguard-control[") for name in runtime.workers)


def test_missing_ok_accepts_it_and_reads_it_when_it_appears(mode: Mode, tmp_path: Path) -> None:
    """With ``missing_ok=True`` nothing is killed until the file appears; then it is read
    within the interval."""
    path = tmp_path / "later.toml"
    aiguard.configure(control=str(path), missing_ok=True, control_interval=0.02)

    @mode.guard("appears", fallback=aiguard.Default("fb"))
    def f() -> str:
        return "ai"

    assert mode.call(f) == "ai"
    path.write_text('[features.appears]\nkilled = true\nreason = "bad answers"\n')
    deadline = time.monotonic() + 5
    while mode.outcome(f).reason is not Reason.KILLED:
        assert time.monotonic() < deadline, "the control file was never read"
        time.sleep(0.02)


def test_a_file_url_is_a_control_file(mode: Mode, tmp_path: Path) -> None:
    """``file:///path`` names a local control file."""
    path = tmp_path / "control.json"
    path.write_text(json.dumps({"features": {"by-url": {"killed": True, "reason": "x"}}}))

    @mode.guard("by-url", fallback=aiguard.Default("fb"))
    def f() -> str:
        return "ai"

    aiguard.configure(control=path.as_uri())
    assert mode.outcome(f).reason is Reason.KILLED


def test_an_invalid_feature_name_in_a_control_file_is_an_error(tmp_path: Path) -> None:
    """A control file with a feature named ``" spaced "``: a ConfigError naming the file and
    the name, at configure."""
    path = tmp_path / "control.toml"
    path.write_text('[features." spaced "]\nkilled = true\n')
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(control=path)
    assert "control.toml" in str(info.value) and "feature name ' spaced ' is invalid" in str(
        info.value
    )


def test_the_cli_refuses_an_invalid_feature_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``aiguard kill " spaced "`` exits 2 naming the value, and writes nothing."""
    path = tmp_path / "control.toml"
    code = main(["--control", str(path), "kill", " spaced ", "--reason", "x"])
    assert code == 2
    assert "' spaced ' is invalid" in capsys.readouterr().err
    assert not path.exists()


# -- Redis URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["control", "budgets"])
def test_an_unreachable_redis_is_a_config_error_naming_the_url(argument: str) -> None:
    """``control=`` and ``budgets=`` with a Redis that does not answer: the same ConfigError
    naming the URL (its password hidden), never a raw redis exception."""
    url = "redis://ops:s3cret@127.0.0.1:1/0"
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(**{argument: url})
    assert type(info.value) is aiguard.ConfigError
    message = str(info.value)
    assert f"{argument}='redis://ops:***@127.0.0.1:1/0' cannot be" in message
    assert "s3cret" not in message and "ConnectionError" in message
    from aiguard._runtime.state import runtime

    assert runtime.budget_store is None


@pytest.mark.parametrize("argument", ["control", "budgets"])
def test_a_redis_url_redis_cannot_use_is_a_config_error(argument: str) -> None:
    """A port that is not a number: a ConfigError naming the URL for both arguments."""
    with pytest.raises(aiguard.ConfigError, match=rf"{argument}='redis://h:port/0' is invalid"):
        aiguard.configure(**{argument: "redis://h:port/0"})


def test_budgets_from_a_reachable_redis_url() -> None:
    """A Redis that answers: budgets are shared through it."""
    url = require_redis()
    aiguard.configure(budgets=url)
    from aiguard._runtime.state import runtime
    from aiguard.redis import RedisBudgets

    assert isinstance(runtime.budget_store, RedisBudgets) and runtime.budget_store.url == url
    aiguard.configure(budgets=None)


# -- unknown features -------------------------------------------------------------------------


def test_settings_for_a_feature_no_guard_declares_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``configure(features={"x": ...})`` with no guard for ``x``: one warning naming it (and
    the closest declared name), not an error; a declared feature gets none."""
    caplog.set_level(logging.WARNING, logger="aiguard")

    @aiguard.guard("ticket-triage")
    def f() -> str:
        return "x"

    aiguard.configure(features={"ticket-triag": {"timeout": 1.0}, "ticket-triage": {}})
    aiguard.configure(features={"ticket-triag": {"timeout": 2.0}})
    [warning] = _warnings(caplog, "no guard")
    assert "configure(features=...)" in warning and "'ticket-triag'" in warning
    assert "did you mean 'ticket-triage'?" in warning


def test_a_guard_declared_after_a_near_name_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Configuration loaded before the guards (the usual order): the warning at configure has
    no declared name to suggest; declaring ``ticket-triage`` then names the misspelt
    ``ticket-triag`` once. A guard with an unrelated name says nothing."""
    caplog.set_level(logging.WARNING, logger="aiguard")
    aiguard.configure(features={"ticket-triag": {"timeout": 1.0}})
    [at_configure] = _warnings(caplog, "no guard in this process")
    assert "did you mean" not in at_configure

    @aiguard.guard("summary")
    def g() -> str:
        return "x"

    assert _warnings(caplog, "is declared, and") == []
    for _ in range(2):

        @aiguard.guard("ticket-triage")
        def f() -> str:
            return "x"

    [declared] = _warnings(caplog, "is declared, and")
    assert "'ticket-triag'" in declared and "did you mean 'ticket-triage'?" in declared


def test_a_kill_for_a_feature_no_guard_declares_warns(caplog: pytest.LogCaptureFixture) -> None:
    """``aiguard.kill("nope")`` and a control file naming an undeclared feature warn; the kill
    still applies (the guard may be declared later)."""
    caplog.set_level(logging.WARNING, logger="aiguard")
    aiguard.kill("declared-later", reason="bad answers")
    assert any("kill('declared-later')" in w for w in _warnings(caplog, "no guard"))

    @aiguard.guard("declared-later", fallback=aiguard.Default("fb"))
    def f() -> str:
        return "ai"

    assert f() == "fb"


def test_a_control_file_naming_an_undeclared_feature_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At load, and again when a later version of the file names a new one."""
    caplog.set_level(logging.WARNING, logger="aiguard")

    @aiguard.guard("known")
    def f() -> str:
        return "x"

    path = tmp_path / "control.toml"
    path.write_text("[features.known]\nrollout = 5\n[features.unknwn]\nkilled = true\n")
    aiguard.configure(control=path, control_interval=0.02)
    [first] = _warnings(caplog, "no guard")
    assert "control file" in first and "'unknwn'" in first
    path.write_text("[features.known]\nrollout = 5\n[features.other]\nrollout = 1\n")
    deadline = time.monotonic() + 5
    while len(_warnings(caplog, "no guard")) < 2:
        assert time.monotonic() < deadline, "the new name was never warned about"
        time.sleep(0.02)
    assert "'other'" in _warnings(caplog, "no guard")[1]
