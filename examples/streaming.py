"""Streaming: a guarded model that answers in chunks, four ways a stream can go.

Run it from the repository root (no network, no API key)::

    python examples/streaming.py

The model is a generator function that yields its answer word by word and returns its token
usage. The script shows a stream passed through as it comes, a stream held back until the whole
answer is checked (``stream="buffer"``), a stream that breaks midway (``StreamInterrupted``) and
one the caller stops reading (``abandoned``), and prints each call's Outcome.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator

import aiguard

ANSWERS = {
    "refund": "Your refund was sent on Monday and should arrive within three days.",
    "warranty": "I am not sure whether your warranty covers this.",
}


Answer = Generator[str, None, dict[str, int]]  # chunks of text, then the token usage


def model(question: str, *, fail_after: int | None = None) -> Answer:
    """A model streaming its answer word by word; it may drop the connection midway."""
    words = ANSWERS[question].split(" ")
    for i, word in enumerate(words):
        if i == fail_after:
            raise ConnectionError("connection reset by peer")
        time.sleep(0.005)
        yield word if i == 0 else " " + word
    return {"input_tokens": 40, "output_tokens": len(words)}


def sure(text: str) -> bool:
    """A validator: the whole answer must not hedge."""
    return "not sure" not in text


FALLBACK = aiguard.Default("A colleague will answer you shortly.")


@aiguard.guard("assistant", validate=sure, fallback=FALLBACK, timeout=5, first_chunk_timeout=1)
def assistant(question: str, fail_after: int | None = None) -> Answer:
    return model(question, fail_after=fail_after)


@aiguard.guard("assistant-checked", stream="buffer", validate=sure, fallback=FALLBACK)
def checked(question: str) -> Answer:
    return model(question)


def show(title: str, chunks: list[str], outcome: aiguard.Outcome[object] | None) -> None:
    assert outcome is not None
    print(f"{title}")
    print(f"  the user saw: {''.join(chunks)!r}")
    print(f"  reason={outcome.reason} source={outcome.source} chunks={len(chunks)}")
    ttfc = outcome.time_to_first_chunk
    first = "-" if ttfc is None else f"{ttfc * 1000:.0f} ms"
    print(f"  first chunk after {first}, whole stream {outcome.latency * 1000:.0f} ms")
    if outcome.usage is not None:
        print(f"  tokens: {outcome.usage.input_tokens} in, {outcome.usage.output_tokens} out")
    if outcome.detail:
        print(f"  detail: {outcome.detail}")


def main() -> None:
    # 1. pass-through: each chunk reaches the user as it comes; the whole answer is judged at
    #    the end and the verdict recorded (a hedging answer was already sent: invalid_output)
    for question in ("refund", "warranty"):
        chunks = list(assistant(question))
        show(f"pass-through, {question}:", chunks, aiguard.last_outcome())

    # 2. buffer: nothing is released before the whole answer passed its checks; a rejected
    #    answer never reaches the user, the fallback answers instead
    for question in ("refund", "warranty"):
        chunks = list(checked(question))
        show(f"buffer, {question}:", chunks, aiguard.last_outcome())

    # 3. interrupted: the connection drops after 4 chunks; what was sent cannot be taken back
    chunks = []
    try:
        for chunk in assistant("refund", fail_after=4):
            chunks.append(chunk)
    except aiguard.StreamInterrupted as exc:
        show("interrupted:", chunks, exc.outcome)
        print(f"  cause: {exc.__cause__!r}")

    # 4. abandoned: the user closes the window after 3 chunks; the model's stream is closed
    chunks = []
    with contextlib.closing(assistant("refund")) as stream:
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 3:
                break
    show("abandoned:", chunks, aiguard.last_outcome())

    stats = aiguard.stats("assistant")
    print(f"'assistant': {stats.calls} calls")


if __name__ == "__main__":
    main()
