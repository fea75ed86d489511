"""Kill switches and control sources: manual, global, from a file and from OpenFeature."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode

import aiguard
from aiguard import Reason, Source


def guarded(mode: Mode, feature: str = "triage") -> Any:
    @mode.guard(feature, fallback=aiguard.Rules(lambda ticket: "rules"))
    def triage(ticket: str) -> str:
        return "model"

    return triage


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_kill_serves_the_fallback_with_who_and_why(mode: Mode) -> None:
    """A killed feature serves its fallback chain with reason killed, saying who and why."""
    triage = guarded(mode)
    assert mode.call(triage, "t") == "model"
    aiguard.kill("triage", reason="wrong answers on refunds", by="ana")
    outcome = mode.outcome(triage, "t")
    assert outcome.value == "rules" and outcome.reason is Reason.KILLED
    assert outcome.source is Source.RULES
    assert outcome.detail == "killed by ana (process): wrong answers on refunds"
    aiguard.revive("triage")
    assert mode.outcome(triage, "t").reason is Reason.SERVED
    kinds = [e.kind.value for e in aiguard.recent_events("triage")]
    assert kinds == ["kill", "revive"]


def test_kill_all_kills_every_feature(mode: Mode) -> None:
    """The global kill stops every AI path; feature kills survive revive_all."""
    a, b = guarded(mode, "a"), guarded(mode, "b")
    aiguard.kill("b", reason="own reason")
    aiguard.kill_all(reason="provider outage", by="oncall")
    assert mode.outcome(a, "t").reason is Reason.KILLED and mode.call(b, "t") == "rules"
    aiguard.revive_all()
    assert mode.call(a, "t") == "model"
    assert mode.outcome(b, "t").reason is Reason.KILLED


def test_killed_without_fallback_raises_not_served(mode: Mode) -> None:
    """With no fallback, a killed feature raises NotServed carrying reason killed."""

    @mode.guard("bare")
    def f() -> int:
        return 1

    aiguard.kill("bare", reason="off")
    with pytest.raises(aiguard.NotServed) as info:
        mode.call(f)
    assert info.value.outcome.reason is Reason.KILLED


def test_kill_requires_a_reason() -> None:
    """kill() without a reason is refused, naming the feature."""
    with pytest.raises(aiguard.ConfigError, match="kill\\('triage'\\): reason=''"):
        aiguard.kill("triage", reason="")


def test_kill_and_revive_reach_every_thread_and_task_with_no_torn_state() -> None:
    """While the switch flips, each call is either served or killed: never anything else."""
    calls = {"n": 0}

    @aiguard.guard("flip", fallback=aiguard.Default("fallback"))
    def model() -> str:
        calls["n"] += 1
        return "model"

    @aiguard.guard("flip", fallback=aiguard.Default("fallback"))
    async def amodel() -> str:
        await asyncio.sleep(0)
        return "model"

    stop = threading.Event()
    bad: list[Any] = []

    def worker() -> None:
        while not stop.is_set():
            o = model.outcome()
            if (o.reason, o.value) not in {(Reason.SERVED, "model"), (Reason.KILLED, "fallback")}:
                bad.append(o)

    async def tasks() -> None:
        async def one() -> None:
            while not stop.is_set():
                o = await amodel.outcome()
                ok = {(Reason.SERVED, "model"), (Reason.KILLED, "fallback")}
                if (o.reason, o.value) not in ok:
                    bad.append(o)
                await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(50)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    loop_thread = threading.Thread(target=lambda: asyncio.run(tasks()))
    for t in [*threads, loop_thread]:
        t.start()
    for i in range(200):
        if i % 2:
            aiguard.revive("flip")
        else:
            aiguard.kill("flip", reason="flip")
    # the very next call after a kill sees it, in this thread and in a new one
    aiguard.kill("flip", reason="final")
    assert model.outcome().reason is Reason.KILLED
    seen: list[Reason] = []
    t = threading.Thread(target=lambda: seen.append(model.outcome().reason))
    t.start()
    t.join()
    assert seen == [Reason.KILLED]
    stop.set()
    for t in [*threads, loop_thread]:
        t.join()
    assert bad == []


def write_toml(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_control_file_changes_take_effect_within_the_interval(mode: Mode, tmp_path: Path) -> None:
    """Editing the control file kills, rolls out and revives without a restart."""
    path = tmp_path / "control.toml"
    aiguard.configure(control=path, control_interval=0.05, missing_ok=True)

    @mode.guard(
        "draft",
        rollout=aiguard.Rollout(percent=0, key="user"),
        fallback=aiguard.Default("template"),
    )
    def draft(user: str) -> str:
        return "ai"

    assert mode.call(draft, "u1") == "template"
    write_toml(path, "[features.draft]\nrollout = 100\n")
    wait_for(lambda: mode.call(draft, "u1") == "ai")
    write_toml(path, '[features.draft]\nrollout = 100\nkilled = true\nreason = "bad"\nby = "ana"\n')
    wait_for(lambda: mode.outcome(draft, "u1").reason is Reason.KILLED)
    assert mode.outcome(draft, "u1").detail == f"killed by ana (control file {str(path)!r}): bad"
    write_toml(path, '[all]\nkilled = true\nreason = "outage"\n[features.draft]\nrollout = 100\n')
    wait_for(lambda: "outage" in (mode.outcome(draft, "u1").detail or ""))
    write_toml(path, "[features.draft]\nrollout = 100\n")
    wait_for(lambda: mode.call(draft, "u1") == "ai")


def test_invalid_control_file_keeps_last_good_state_and_logs_once(
    mode: Mode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that becomes invalid changes nothing; the error is logged once."""
    path = tmp_path / "control.json"
    path.write_text(json.dumps({"features": {"t": {"killed": True, "reason": "x"}}}))
    aiguard.configure(control=path, control_interval=0.02)
    triage = guarded(mode, "t")
    assert mode.outcome(triage, "a").reason is Reason.KILLED
    with caplog.at_level("WARNING", logger="aiguard"):
        path.write_text('{"features": {"t": {"killed": "maybe"}}}')
        time.sleep(0.3)
        path.write_text('{"features": {"t": {"killed": "maybe"}}}  ')  # touched, still bad
        time.sleep(0.3)
    assert mode.outcome(triage, "a").reason is Reason.KILLED
    errors = [r for r in caplog.records if "keeping the last good state" in r.getMessage()]
    assert len(errors) == 1
    assert "field 'killed'" in errors[0].getMessage() and "'maybe'" in errors[0].getMessage()


def test_invalid_control_file_at_configure_time_raises(tmp_path: Path) -> None:
    """At configuration time, a bad control file is an error naming file, feature and field."""
    path = tmp_path / "control.toml"
    path.write_text("[features.t]\nrollout = 150\n")
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(control=path)
    assert "control.toml" in str(info.value) and "feature 't'" in str(info.value)
    assert "field 'rollout'" in str(info.value) and "value 150" in str(info.value)


def test_control_threshold_overrides_the_code(mode: Mode, tmp_path: Path) -> None:
    """A threshold in control state wins over the decorator's."""
    path = tmp_path / "control.toml"
    path.write_text("[features.th]\nthreshold = 0.95\n")

    @mode.guard("th", confidence="p", threshold=0.5, fallback=aiguard.Default("fb"))
    def f() -> dict[str, float]:
        return {"p": 0.9}

    assert mode.call(f) == {"p": 0.9}
    aiguard.configure(control=path)
    assert mode.call(f) == "fb"
    assert mode.last_outcome().threshold == 0.95  # type: ignore[union-attr]


def test_no_syscall_per_call(mode: Mode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a control file configured, calls do not touch the file system."""
    path = tmp_path / "control.toml"
    path.write_text("")
    aiguard.configure(control=path, control_interval=60)
    triage = guarded(mode, "quiet")
    import os

    stats: list[Any] = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: stats.append(a) or real_stat(*a, **k))
    for _ in range(100):
        mode.call(triage, "t")
    assert stats == []


def test_openfeature_source_kills_and_rolls_out(mode: Mode) -> None:
    """Flags from an OpenFeature provider drive kills and rollout percentages."""
    from openfeature import api
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from aiguard.openfeature import OpenFeatureControl

    flags: dict[str, InMemoryFlag] = {"ofd.rollout": InMemoryFlag("on", {"on": 100})}
    api.set_provider(InMemoryProvider(flags))
    try:

        @mode.guard(
            "ofd",
            rollout=aiguard.Rollout(percent=0, key="user"),
            fallback=aiguard.Default("template"),
        )
        def draft(user: str) -> str:
            return "ai"

        assert mode.call(draft, "u") == "template"
        aiguard.configure(control=OpenFeatureControl(interval=0.05))
        assert mode.call(draft, "u") == "ai"
        api.set_provider(
            InMemoryProvider({**flags, "ofd.killed": InMemoryFlag("on", {"on": True})})
        )
        wait_for(lambda: mode.outcome(draft, "u").reason is Reason.KILLED)
        assert "OpenFeature" in (mode.outcome(draft, "u").detail or "")
        api.set_provider(InMemoryProvider({"aiguard.killed": InMemoryFlag("on", {"on": False})}))
        wait_for(lambda: mode.outcome(draft, "u").reason is Reason.NOT_IN_ROLLOUT)
    finally:
        aiguard.configure(control=None)
        api.clear_providers()


def test_openfeature_provider_errors_keep_the_kill(mode: Mode) -> None:
    """A provider that errors does not lift a kill: the last good state is kept."""
    from openfeature import api
    from openfeature.exception import GeneralError
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from aiguard.openfeature import OpenFeatureControl

    api.set_provider(InMemoryProvider({"ofk.killed": InMemoryFlag("on", {"on": True})}))
    try:
        triage = guarded(mode, "ofk")
        source = OpenFeatureControl(["ofk"], interval=0.05)
        aiguard.configure(control=source)
        assert mode.outcome(triage, "t").reason is Reason.KILLED

        class Broken(InMemoryProvider):
            def resolve_boolean_details(
                self, flag_key: str, default_value: bool, evaluation_context: Any = None
            ) -> Any:
                raise GeneralError("provider unreachable")

        api.set_provider(Broken({}))
        time.sleep(0.3)
        assert mode.outcome(triage, "t").reason is Reason.KILLED
        assert any(e.kind.value == "control_error" for e in aiguard.recent_events())
    finally:
        aiguard.configure(control=None)
        api.clear_providers()


def test_two_sources_with_one_name_are_refused(tmp_path: Path) -> None:
    """Each control source needs its own name."""
    path = tmp_path / "c.toml"
    with pytest.raises(aiguard.ConfigError, match="two sources are named"):
        aiguard.configure(control=[path, path], missing_ok=True)


def test_misuse_does_not_count_against_the_breaker(mode: Mode) -> None:
    """Calls with wrong arguments are the caller's bug: they never trip the breaker."""

    @mode.guard(
        "misuse",
        breaker=aiguard.Breaker(max_error_rate=0.5, min_calls=3, window=3),
        fallback=aiguard.Default("fb"),
    )
    def f(x: int) -> int:
        return x

    for _ in range(5):
        with pytest.raises(TypeError):
            mode.call(f, 1, 2)
    assert mode.outcome(f, 1).reason is Reason.SERVED


def test_a_source_returning_the_wrong_type_is_refused(mode: Mode) -> None:
    """A custom source whose poll() returns something else is a ConfigError, not a broken guard."""

    class Odd:
        name = "odd"
        interval = 60.0

        def poll(self) -> Any:
            return {"features": {"t": {"killed": "nope"}}}

    with pytest.raises(aiguard.ConfigError, match="control source odd"):
        aiguard.configure(control=Odd())
    assert mode.call(guarded(mode, "t"), "x") == "model"
