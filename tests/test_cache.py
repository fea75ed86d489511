"""aiguard.Cache: repeated calls served from the cache, what is never cached, expiry, size,
kills, concurrency, and a Redis cache shared by processes (and down)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode
from services import require_redis, unique

import aiguard

PRICES = {"currency": "USD", "models": {"m": {"per_call": "0.01"}}}
SRC = Path(aiguard.__file__).resolve().parent.parent


def test_a_repeated_call_is_served_from_the_cache(mode: Mode, tmp_path: Path) -> None:
    """The second call with the same arguments does not call the model: source cache, no
    cost, the saved cost in the Outcome and in the call record."""
    store = aiguard.SQLiteStore(tmp_path / "c.db")
    aiguard.configure(store=store, prices=PRICES)
    calls: list[str] = []

    def answer(question: str, lang: str = "en") -> dict[str, Any]:
        calls.append(question)
        return {"answer": question.upper(), "score": 0.9}

    guarded = mode.guard(
        "faq", model="m", confidence="score", threshold=0.5, cache=aiguard.Cache(ttl=60)
    )(answer)
    first = mode.outcome(guarded, "hours?")
    again = mode.outcome(guarded, question="hours?", lang="en")  # the same call, by name
    assert calls == ["hours?"]
    assert (first.source, again.source) == (aiguard.Source.MODEL, aiguard.Source.CACHE)
    assert again.value == first.value and again.reason is aiguard.Reason.SERVED
    assert again.confidence == 0.9
    assert (again.cost, again.saved_cost) == (Decimal(0), Decimal("0.01"))
    mode.outcome(guarded, "hours?", lang="fr")  # another key
    assert len(calls) == 2
    aiguard.flush()
    row = {r["call_id"]: r for r in store.call_records(feature="faq")}[again.call_id]
    assert (row["source"], row["cost_pico"], row["saved_pico"]) == ("cache", 0, 10**10)
    figures = aiguard.report("faq").features[0]
    assert (figures.cache_hits, figures.saved_cost) == (1, Decimal("0.01"))


def test_only_answers_the_model_served_are_cached(mode: Mode) -> None:
    """Low confidence, errors and fallback answers are never cached."""
    calls: list[str] = []

    def model(text: str) -> dict[str, Any]:
        calls.append(text)
        if text == "boom":
            raise RuntimeError("down")
        return {"score": 0.1 if text == "low" else 0.9}

    guarded = mode.guard(
        "never",
        confidence="score",
        threshold=0.5,
        fallback=aiguard.Default({"score": 1.0}),
        cache=aiguard.Cache(),
    )(model)
    for text in ("low", "low", "boom", "boom"):
        assert mode.outcome(guarded, text).source is aiguard.Source.DEFAULT
    assert calls == ["low", "low", "boom", "boom"]


def test_custom_key_ttl_and_maxsize() -> None:
    """key= decides what counts as the same call; entries expire after ttl; the least recently
    used goes when maxsize is reached."""
    calls: list[str] = []

    @aiguard.guard("k", cache=aiguard.Cache(ttl=0.3, maxsize=2, key=lambda text: text.lower()))
    def model(text: str) -> str:
        calls.append(text)
        return text.lower()

    model("Hello"), model("HELLO")
    assert calls == ["Hello"]
    time.sleep(0.4)
    model("hello")
    assert calls == ["Hello", "hello"]
    model("a"), model("b"), model("hello")  # "hello" was the least recently used
    assert calls == ["Hello", "hello", "a", "b", "hello"]


def test_a_kill_clears_the_cache() -> None:
    """Killing the feature clears its entries at once: after a revive the model is called."""
    calls: list[str] = []

    @aiguard.guard("killme", fallback=aiguard.Default("off"), cache=aiguard.Cache())
    def model(text: str) -> str:
        calls.append(text)
        return "on"

    model("x"), model("x")
    aiguard.kill("killme", reason="bad answers")
    assert model("x") == "off"
    aiguard.revive("killme")
    assert model("x") == "on" and calls == ["x", "x"]


def test_bad_arguments_are_config_errors() -> None:
    """Cache's arguments are checked where it is built; streams are refused at decoration."""
    with pytest.raises(aiguard.ConfigError, match="maxsize=0"):
        aiguard.Cache(maxsize=0)
    with pytest.raises(aiguard.ConfigError, match=r"ttl\)?=-1"):
        aiguard.Cache(ttl=-1)
    with pytest.raises(aiguard.ConfigError, match="key=3"):
        aiguard.Cache(key=3)  # type: ignore[arg-type]
    with pytest.raises(aiguard.ConfigError, match="cache="):
        aiguard.guard("bad", cache={"ttl": 1})  # type: ignore[arg-type]
    with pytest.raises(aiguard.ConfigError, match="generator"):

        @aiguard.guard("stream", cache=aiguard.Cache())
        def stream(text: str) -> Any:
            yield text


def test_hits_under_thread_concurrency() -> None:
    """Threads calling with a few keys at once: every answer is right, and once a key is
    cached no thread calls the model for it again."""
    calls: dict[str, int] = {}
    lock = threading.Lock()

    @aiguard.guard("threads", cache=aiguard.Cache(maxsize=100))
    def model(n: int) -> int:
        with lock:
            calls[str(n)] = calls.get(str(n), 0) + 1
        time.sleep(0.001)
        return n * n

    for n in range(5):  # warm
        model(n)
    wrong: list[Any] = []

    def worker() -> None:
        for i in range(200):
            n = i % 5
            if model(n) != n * n:
                wrong.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [] and calls == {str(n): 1 for n in range(5)}
    assert aiguard.stats("threads").by_source["cache"] == 8 * 200


def test_hits_under_asyncio_concurrency() -> None:
    """Tasks calling at once on one loop: right answers, one model call per key once cached,
    and concurrent misses each call the model (no single flight)."""
    calls: list[int] = []

    @aiguard.guard("tasks", cache=aiguard.Cache())
    async def model(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0.01)
        return -n

    async def main() -> list[int]:
        first = await asyncio.gather(*(model(1) for _ in range(3)))  # all miss at once
        await model(0), await model(2)
        rest = await asyncio.gather(*(model(i % 3) for i in range(300)))  # all hit
        return [*first, *rest]

    results = asyncio.run(main())
    assert results[:3] == [-1, -1, -1] and calls.count(1) == 3
    assert results[3:] == [-(i % 3) for i in range(300)]
    assert calls == [1, 1, 1, 0, 2]
    assert aiguard.stats("tasks").by_source["cache"] == 300


_CHILD = """
import sys, aiguard
calls = []
@aiguard.guard("fleet", cache=aiguard.Cache(redis=sys.argv[1], prefix=sys.argv[2]))
def model(text: str) -> dict:
    calls.append(text)
    return {"answer": text[::-1], "n": [1, 2]}
outcome = model.outcome("shared question")
print(outcome.source, len(calls), outcome.value == {"answer": "noitseuq derahs", "n": [1, 2]})
"""


def test_redis_is_shared_between_processes(tmp_path: Path) -> None:
    """Two processes with the same Redis cache: the second is served the first one's answer;
    a kill in either moves the feature's version on."""
    url = require_redis()
    prefix = unique("aiguard_cache")
    script = tmp_path / "child.py"
    script.write_text(_CHILD)

    def child() -> str:
        done = subprocess.run(
            [sys.executable, str(script), url, prefix],
            capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(SRC)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert child() == "model 1 True"
    assert child() == "cache 0 True"
    cache = aiguard.Cache(redis=url, prefix=prefix)
    cache.clear("fleet")  # what a kill does
    cache.close()
    assert child() == "model 1 True"


def test_redis_down_is_a_miss_within_its_deadline() -> None:
    """A Redis that does not answer: calls are served by the model, each waits at most the
    deadline once, and nothing is raised."""
    calls: list[str] = []

    @aiguard.guard("down", cache=aiguard.Cache(redis="redis://10.255.255.1:6390/0", timeout=0.2))
    def model(text: str) -> str:
        calls.append(text)
        return text

    started = time.perf_counter()
    assert [model("a") for _ in range(20)] == ["a"] * 20
    assert time.perf_counter() - started < 2.0
    assert len(calls) == 1  # the local cache still serves
