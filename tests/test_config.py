"""configure() and load_config(): files, validation messages, precedence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import aiguard
from aiguard import Reason


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_file_sets_feature_settings(tmp_path: Path) -> None:
    """Settings a guard leaves out come from the loaded file, even after decoration."""

    @aiguard.guard("triage", fallback=aiguard.Default("fallback"))
    def triage(score: float) -> dict[str, float]:
        return {"score": score}

    assert triage(0.5) == {"score": 0.5}  # no threshold yet
    path = write(
        tmp_path,
        "aiguard.toml",
        '[features.triage]\nconfidence = "score"\nthreshold = 0.8\n',
    )
    cfg = aiguard.load_config(path)
    assert cfg.features["triage"].threshold == 0.8
    assert triage(0.5) == "fallback"
    assert aiguard.last_outcome().reason is Reason.LOW_CONFIDENCE  # type: ignore[union-attr]
    assert triage(0.9) == {"score": 0.9}


def test_json_file_and_store(tmp_path: Path) -> None:
    """A JSON file works the same; a relative store path is relative to the file."""
    path = write(
        tmp_path,
        "aiguard.json",
        json.dumps({"store": "reviews.db", "features": {"f": {"timeout": 1.5}}}),
    )
    aiguard.load_config(path)
    aiguard.ReviewQueue().count()
    assert (tmp_path / "reviews.db").exists()


def test_decorator_arguments_win_over_configuration() -> None:
    """An argument given to guard() is not overridden by configuration."""
    aiguard.configure(features={"f": {"confidence": "score", "threshold": 0.9}})

    @aiguard.guard("f", threshold=0.5, fallback=aiguard.Default("fb"))
    def f(score: float) -> dict[str, float]:
        return {"score": score}

    assert f(0.6) == {"score": 0.6}  # 0.5 from code wins over 0.9 from config
    assert f(0.4) == "fb"


def test_explicit_none_turns_a_configured_setting_off() -> None:
    """threshold=None in code means "no threshold", not "inherit"."""
    aiguard.configure(features={"f": {"confidence": "score", "threshold": 0.9}})

    @aiguard.guard("f", threshold=None)
    def f(score: float) -> dict[str, float]:
        return {"score": score}

    assert f(0.1) == {"score": 0.1}
    assert aiguard.last_outcome().confidence == 0.1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[features.ticket-triage]\nthreshold = 1.5\nconfidence = "s"\n',
            ["feature 'ticket-triage'", "field 'threshold'", "value 1.5"],
        ),
        (
            "[features.ticket-triage]\ntimeout = -2\n",
            ["feature 'ticket-triage'", "field 'timeout'", "value -2"],
        ),
        (
            "[features.ticket-triage]\nthreshhold = 0.5\n",
            ["feature 'ticket-triage'", "field 'threshhold'", "value 0.5"],
        ),
        (
            '[features.ticket-triage]\nthreshold = "high"\n',
            ["feature 'ticket-triage'", "field 'threshold'", "value 'high'"],
        ),
        ("storage = 'x'\n", ["field 'storage'", "value 'x'"]),
    ],
)
def test_bad_file_names_feature_field_and_value(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    """A bad file fails at load time with the file, feature, field and value in the message."""
    path = write(tmp_path, "bad.toml", body)
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.load_config(path)
    message = str(info.value)
    assert "bad.toml" in message
    for part in expected:
        assert part in message


def test_bad_file_changes_nothing(tmp_path: Path) -> None:
    """A file that fails validation leaves the previous configuration in place."""
    aiguard.configure(features={"f": {"confidence": "s", "threshold": 0.3}})
    path = write(tmp_path, "bad.toml", "[features.f]\nthreshold = 3\n")
    with pytest.raises(aiguard.ConfigError):
        aiguard.load_config(path)

    @aiguard.guard("f", fallback=aiguard.Default("fb"))
    def f(s: float) -> dict[str, float]:
        return {"s": s}

    assert f(0.2) == "fb" and f(0.4) == {"s": 0.4}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.toml", "[features\n", "is not valid TOML"),
        ("broken.json", "{", "is not valid JSON"),
        ("list.json", "[1]", "top level must be"),
    ],
)
def test_unparsable_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    """Syntax errors are ConfigErrors naming the file."""
    with pytest.raises(aiguard.ConfigError, match=message) as info:
        aiguard.load_config(write(tmp_path, name, text))
    assert name in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it."""
    with pytest.raises(aiguard.ConfigError, match=r"nope\.toml"):
        aiguard.load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_workers": 0}, "timeout_workers=0 is invalid"),
        ({"features": {"f": {"threshold": 2}}}, "feature 'f', field 'threshold': value 2"),
        ({"store": 3.5}, "store=3.5 is invalid"),
    ],
)
def test_configure_validates(kwargs: dict[str, Any], message: str) -> None:
    """configure() rejects bad values with the field and value in the message."""
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(**kwargs)
    assert message in str(info.value)


def test_threshold_without_confidence_fails_where_it_is_set(tmp_path: Path) -> None:
    """A threshold with no confidence anywhere fails at decoration or at load time."""

    @aiguard.guard("f", fallback=aiguard.Default(0))
    def f() -> int:
        return 1

    path = write(tmp_path, "c.toml", "[features.f]\nthreshold = 0.5\n")
    with pytest.raises(aiguard.ConfigError, match=r"'f': threshold=0\.5 needs confidence="):
        aiguard.load_config(path)
    assert f() == 1  # nothing was applied

    aiguard.configure(features={"g": {"threshold": 0.5}})
    with pytest.raises(aiguard.ConfigError, match="needs confidence="):
        aiguard.guard("g")(lambda: 1)
    with pytest.raises(aiguard.ConfigError, match="needs confidence="):
        aiguard.guard("h", threshold=0.5, confidence=None)


def test_file_without_features_keeps_configured_features(tmp_path: Path) -> None:
    """A file that sets only the store leaves features configured in code alone."""
    aiguard.configure(features={"f": {"confidence": "s", "threshold": 0.3}})
    aiguard.load_config(write(tmp_path, "store.toml", 'store = ":memory:"\n'))

    @aiguard.guard("f", fallback=aiguard.Default("fb"))
    def f(s: float) -> dict[str, float]:
        return {"s": s}

    assert f(0.2) == "fb"


def test_isolated_restores_settings_compiled_inside() -> None:
    """Settings a guard compiled inside isolated() do not outlive the block."""
    from aiguard.testing import isolated

    @aiguard.guard("iso", confidence="s", fallback=aiguard.Default("fb"))
    def f(s: float) -> dict[str, float]:
        return {"s": s}

    with isolated():
        aiguard.configure(features={"iso": {"threshold": 0.9}})
        assert f(0.5) == "fb"
    assert f(0.5) == {"s": 0.5}


def test_isolated_keeps_a_store_configured_before(tmp_path: Path) -> None:
    """A store configured before isolated() and first used inside stays open after it."""
    from aiguard.testing import isolated

    aiguard.configure(store=tmp_path / "s.db")
    with isolated():
        assert aiguard.ReviewQueue().count() == 0
    assert aiguard.ReviewQueue().count() == 0


def test_replacing_a_store_closes_only_what_aiguard_opened(tmp_path: Path) -> None:
    """A Store you pass in is yours: configure() does not close it when replaced."""
    mine = aiguard.SQLiteStore(tmp_path / "mine.db")
    aiguard.configure(store=mine)
    aiguard.configure(store=tmp_path / "other.db")
    assert mine.count_reviews(feature=None, status=None) == 0  # still open


def test_isolated_hands_back_working_store_recorder_and_sources(tmp_path: Path) -> None:
    """Switching store and control source inside isolated() leaves the outer ones working."""
    import time

    from aiguard._runtime.state import runtime as state
    from aiguard.testing import isolated

    control = tmp_path / "control.toml"
    aiguard.configure(
        store=tmp_path / "outer.db", control=control, control_interval=0.05, missing_ok=True
    )
    outer_recorder = state.recorder
    with isolated():
        aiguard.configure(store=tmp_path / "inner.db", control=None)

        @aiguard.guard("iso-in")
        def inner() -> int:
            return 1

        inner()
    assert state.recorder is outer_recorder and not outer_recorder.retired

    @aiguard.guard("iso-out", fallback=aiguard.Default(0))
    def outer() -> int:
        return 1

    outer.outcome().accept()  # the outer store is open
    control.write_text('[features.iso-out]\nkilled = true\nreason = "x"\n')
    deadline = time.monotonic() + 5
    while outer() != 0:  # the outer poller still polls
        assert time.monotonic() < deadline
        time.sleep(0.02)
    aiguard.configure(control=None)
