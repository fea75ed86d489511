"""Guarded streams: a model answer that arrives in chunks.

A stream is what a generator function yields, or an iterator a guarded function returns (the
``openai`` and ``anthropic`` ``Stream`` objects among them). The call is judged over the whole
stream: its latency runs to the last chunk, its time to first chunk is measured, its tokens come
from the usage the stream carries (OpenAI's last chunk with ``include_usage``, Anthropic's
``message_start``/``message_delta`` events, a generator's ``return`` value), and ``timeout=``
bounds the whole stream while ``first_chunk_timeout=`` bounds the wait for its first chunk.

Until the first chunk, a stream is a call like any other: a failure or a timeout goes to the
fallback chain, whose answer becomes the stream (an iterator's items, or one chunk). After chunks
were released nothing can be taken back: a failure is recorded (reason ``interrupted``) and the
caller gets :class:`~aiguard.StreamInterrupted`; a caller that stops early is recorded (reason
``abandoned``) and the stream closed. ``stream="buffer"`` holds every chunk until the whole
answer is judged; the default passes chunks through and judges at the end, recording the verdict
without un-sending anything.

Each stream runs as one generator (sync) or async generator (async) here: the code that
releases chunks is the code that records the call, whatever way it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator, Iterator
from time import perf_counter
from typing import Any

from .._runtime import deadlines, errors, ids, telemetry
from .._runtime.budgets import held
from .._runtime.money import to_decimal
from ..exceptions import StreamInterrupted
from ..outcome import Attempt, Outcome, Reason, Source
from ..usage import Usage, as_usage, read_usage
from . import decide, facts, finish
from .chain import drive_async, drive_sync

SERVED = Reason.SERVED
_NOT_STREAMS = (str, bytes, bytearray, memoryview, dict, list, tuple, set, frozenset, io.IOBase)
_kinds: dict[type, int] = {}  # result class -> 0 not a stream, 1 sync stream, 2 async stream


def kind(result: Any) -> int:
    """0: not a stream; 1: a sync iterator; 2: an async iterator. Cached per class."""
    cls = result.__class__
    found = _kinds.get(cls)
    if found is None:
        if issubclass(cls, _NOT_STREAMS):
            found = 0
        elif hasattr(cls, "__anext__"):
            found = 2
        elif hasattr(cls, "__next__"):
            found = 1
        else:
            found = 0
        if len(_kinds) < 4096:
            _kinds[cls] = found
    return found


# -- usage carried by the chunks ---------------------------------------------------------------


class Tally:
    """What the chunks said about tokens, read as they pass."""

    __slots__ = ("chunks", "finish", "model", "openai", "rid", "start", "usage")

    def __init__(self) -> None:
        self.model: str | None = None  # the model the chunks named
        self.rid: str | None = None  # the response id the chunks carried
        self.finish: list[str] = []  # the finish reasons they gave
        self.usage: Usage | None = None  # the latest complete usage read
        self.start: Usage | None = None  # Anthropic's message_start usage (input side)
        self.chunks = 0
        self.openai = False

    def see(self, chunk: Any) -> None:
        self.chunks += 1
        cls = chunk.__class__
        if cls is str or cls is bytes:
            return
        try:
            kind = getattr(chunk, "type", None)
            if kind == "message_start":  # Anthropic: input figures, and the model
                self.start = read_usage(chunk.message)
                self.usage = self.start
                rid = getattr(chunk.message, "id", None)
                if isinstance(rid, str):
                    self.rid = rid
            elif kind == "message_delta":  # Anthropic: output tokens so far (cumulative)
                self._delta(chunk.usage)
                stop = getattr(getattr(chunk, "delta", None), "stop_reason", None)
                if isinstance(stop, str) and len(self.finish) < 16:
                    self.finish.append(stop)
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                self.usage = read_usage(chunk.response)  # OpenAI responses
            else:
                if cls.__module__.startswith("openai."):
                    self.openai = True
                    if self.model is None:
                        self.model = getattr(chunk, "model", None)
                    if self.rid is None:
                        rid = getattr(chunk, "id", None)
                        self.rid = rid if isinstance(rid, str) else None
                    for choice in getattr(chunk, "choices", None) or ():
                        reason = getattr(choice, "finish_reason", None)
                        if isinstance(reason, str) and len(self.finish) < 16:
                            self.finish.append(reason)
                usage = (
                    chunk.get("usage") if isinstance(chunk, dict) else getattr(chunk, "usage", None)
                )
                if usage is not None:  # OpenAI chat: the last chunk, with include_usage
                    self.usage = read_usage(chunk)
        except Exception as exc:
            errors.report("reading a stream chunk's usage", exc)

    def _delta(self, delta: Any) -> None:
        if delta is None:
            return
        base = self.start or Usage()
        output = getattr(delta, "output_tokens", None)
        figures: dict[str, Any] = {
            "input_tokens": base.input_tokens,
            "output_tokens": base.output_tokens if output is None else int(output),
            "cache_read_tokens": base.cache_read_tokens,
            "cache_write_tokens": base.cache_write_tokens,
            "cache_write_1h_tokens": base.cache_write_1h_tokens,
            "model": base.model,
            "provider": base.provider,
        }
        if getattr(delta, "input_tokens", None) is not None:  # newer events repeat the input
            full = read_usage(delta)
            if full is not None:
                figures.update(
                    input_tokens=full.input_tokens,
                    cache_read_tokens=full.cache_read_tokens,
                    cache_write_tokens=full.cache_write_tokens,
                    cache_write_1h_tokens=full.cache_write_1h_tokens,
                )
        self.usage = Usage(**figures)

    def returned(self, value: Any) -> None:
        """A generator's return value: its usage, if it is one."""
        if value is None:
            return
        try:
            usage = as_usage(value)
        except Exception as exc:
            errors.report("reading a stream's returned usage", exc)
            return
        if usage is not None:
            self.usage = usage

    def why_unknown(self) -> str:
        if self.openai:
            return (
                "the stream's chunks carried no usage: pass stream_options={'include_usage': "
                "True} to the client's create()"
            )
        return (
            "the stream carried no token usage (OpenAI: stream_options={'include_usage': True}; "
            "a generator can return its usage)"
        )


_OPENING = frozenset(
    {
        "message_start", "content_block_start", "ping", "response.created",
        "response.in_progress", "response.output_item.added", "response.content_part.added",
    }
)  # fmt: skip


def has_content(chunk: Any) -> bool:
    """Does the chunk carry some of the answer? False for the events a provider sends before
    it: an OpenAI chat chunk with only the role, Anthropic's ``message_start`` and
    ``content_block_start``, ``ping``. Anything else (text, dicts, other objects) does."""
    cls = chunk.__class__
    if cls is str or cls is bytes:
        return True
    try:
        choices = getattr(chunk, "choices", None)
        if choices is not None and cls.__module__.startswith("openai."):
            for choice in choices:
                delta = getattr(choice, "delta", None)
                if delta is not None and (
                    getattr(delta, "content", None)
                    or getattr(delta, "tool_calls", None)
                    or getattr(delta, "refusal", None)
                ):
                    return True
            return False
        kind = getattr(chunk, "type", None)
        return not (isinstance(kind, str) and kind in _OPENING)
    except Exception:
        return True


def assemble(chunks: list[Any]) -> Any:
    """The whole answer, for validators, confidence and the Outcome: the text when the chunks are
    text (str, bytes, OpenAI chat chunks, Anthropic text deltas), else the list of chunks."""
    if not chunks:
        return ""
    first = type(chunks[0])  # type(), not __class__: a chunk may claim to be what it is not
    if first is str and all(type(c) is str for c in chunks):
        return "".join(chunks)
    if first is bytes and all(type(c) is bytes for c in chunks):
        return b"".join(chunks)
    try:
        parts: list[str] = []
        text = False
        for c in chunks:
            choices = getattr(c, "choices", None)
            if choices is not None:  # OpenAI chat chunk
                text = True
                for choice in choices:
                    content = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(content, str):
                        parts.append(content)
            elif getattr(c, "type", None) == "content_block_delta":  # Anthropic
                text = True
                piece = getattr(getattr(c, "delta", None), "text", None)
                if isinstance(piece, str):
                    parts.append(piece)
            elif getattr(c, "type", None) == "response.output_text.delta":  # OpenAI responses
                text = True
                piece = getattr(c, "delta", None)
                if isinstance(piece, str):
                    parts.append(piece)
        if text:
            return "".join(parts)
    except Exception as exc:
        errors.report("assembling a stream's text", exc)
    return list(chunks)


# -- one stream's run ---------------------------------------------------------------------------


class Run:
    """The state of one guarded stream, shared by the sync and async generators."""

    __slots__ = (
        "args",
        "arm",
        "box",
        "chunks",
        "core",
        "deadline",
        "first_deadline",
        "hold",
        "kwargs",
        "n",
        "prior",
        "s",
        "server",
        "span",
        "t0",
        "t1",
        "tally",
        "tried_at",
        "ttfc",
        "verdict",
    )

    def __init__(
        self,
        core: Any,
        s: Any,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        t0: float,
        arm: str | None,
        span: Any,
        prior: tuple[Any, ...] = (),
        tried_at: float | None = None,
    ) -> None:
        self.core = core
        self.prior = prior  # the model's failed tries before this stream (retry=)
        # when this stream's own try started (after retries: not the call's start): its model
        # latency and time to first chunk run from there; deadlines from the call's start
        self.tried_at = t0 if tried_at is None else tried_at
        self.server: dict[str, Any] = {}  # server.address/port, from the stream's response
        self.s = s
        self.n = n
        self.args = args
        self.kwargs = kwargs
        self.t0 = t0
        self.arm = arm
        self.span = span
        self.tally = Tally()
        self.chunks: list[Any] = []
        self.ttfc: float | None = None
        self.t1: float | None = None
        self.box: list[Outcome[Any]] = []  # the final Outcome, once published
        self.verdict: tuple[Reason, float | None, str | None] | None = None  # buffered: judged
        # the budget's reservation for this call, taken off the context: a stream ends later,
        # maybe in another thread, after other guarded calls; it is given back to accounting
        # (``restore``) just before the call is recorded
        self.hold = None
        budget = core.acct.budget
        if budget is not None:
            hold = held.get()
            if hold is not None and hold.run is budget:
                held.set(hold.parent)
                self.hold = hold
        timeout = s.timeout
        first = core.spec.first_chunk_timeout
        self.deadline = None if timeout is None else t0 + timeout
        self.first_deadline = None if first is None else t0 + first

    def remaining(self) -> float | None:
        """Seconds left for the next chunk; None: no limit. Never below a microsecond."""
        deadline = self.deadline
        first = self.first_deadline
        if self.ttfc is None and first is not None and (deadline is None or first < deadline):
            deadline = first
        if deadline is None:
            return None
        left: float = max(deadline - perf_counter(), 1e-6)
        return left

    def timed_out_detail(self) -> str:
        if self.ttfc is None and self.first_deadline is not None:
            first = self.core.spec.first_chunk_timeout
            if self.deadline is None or self.first_deadline <= self.deadline:
                return f"the model sent no first chunk within {first:g} s"
        return f"the stream did not end within {self.s.timeout:g} s"

    def got(self, chunk: Any) -> None:
        """A chunk arrived. The first that carries content (text, a tool call: not a
        provider's opening events) sets the time to first chunk."""
        self.chunks.append(chunk)
        self.tally.see(chunk)
        if self.ttfc is None and has_content(chunk):
            self.ttfc = perf_counter() - self.tried_at

    # -- before the first chunk: like any call ---------------------------------------------------

    def failed_context(self, exc: BaseException | None) -> Any:
        """The fallback context of a stream that failed before releasing anything."""
        core = self.core
        if exc is None:
            ctx = core.context(
                self.s, self.n, self.args, self.kwargs, Reason.TIMEOUT,
                detail=self.timed_out_detail(), arm=self.arm, span=self.span,
            )  # fmt: skip
            return self.with_prior(ctx, None)
        if exc.__class__ is TypeError and decide.misuse(core.signature, self.args, self.kwargs):
            core.unhandled(self.s, self.n, self.args, self.kwargs, exc, self.t0, misuse=True)
            raise exc
        return self.with_prior(
            core.failed(self.s, self.n, self.args, self.kwargs, exc, self.arm, self.span), exc
        )

    def with_prior(self, ctx: Any, exc: BaseException | None) -> Any:
        """After retries, the stream's failed try joins the earlier ones in the context."""
        if not self.prior:
            return ctx
        failure = exc if exc is not None else TimeoutError(self.timed_out_detail())
        cost = self.core.acct.cost(None, True, 0, failure)
        tried = Attempt(
            "model", Source.MODEL, failure, perf_counter() - self.tried_at,
            None if cost is None else to_decimal(cost),
        )  # fmt: skip
        return dataclasses.replace(ctx, model_attempts=(*self.prior, tried))

    def judged_context(self) -> Any:
        """Buffered: the whole answer judged before release; the fallback context if rejected."""
        answer = assemble(self.chunks)
        reason, confidence, detail = decide.judge(self.core.validators, answer, self.s)
        if reason is SERVED:
            self.verdict = (reason, confidence, detail)
            return None
        ctx = self.core.context(
            self.s, self.n, self.args, self.kwargs, reason, result=answer,
            confidence=confidence, detail=detail, arm=self.arm, span=self.span,
        )  # fmt: skip
        usage = self.tally.usage  # the whole answer was generated: its tokens count
        return ctx if usage is None else dataclasses.replace(ctx, usage=usage)

    # -- the end -----------------------------------------------------------------------------------

    def finish(
        self, reason: Reason | None, exc: BaseException | None = None, detail: str | None = None
    ) -> Outcome[Any]:
        """Publish the Outcome of a stream that released chunks. ``reason`` None: it ended
        normally and is judged now (pass-through: the verdict is recorded, nothing un-sent)."""
        core = self.core
        t2 = perf_counter()
        answer = assemble(self.chunks)
        confidence = None
        if reason is None and self.verdict is not None:  # buffered: judged before release
            reason, confidence, detail = self.verdict
        elif reason is None:
            reason, confidence, detail = decide.judge(core.validators, answer, self.s)
            if reason is not SERVED:
                detail = f"{detail} (judged after the stream was sent)"
        tally = self.tally
        usage = tally.usage
        if (
            reason in (Reason.INTERRUPTED, Reason.ABANDONED)
            and (usage is None or not usage.output_tokens)
            and tally.start is not None
        ):  # Anthropic told the input: count what was released
            usage = Usage(
                input_tokens=tally.start.input_tokens,
                output_tokens=len(self.chunks),
                cache_read_tokens=tally.start.cache_read_tokens,
                cache_write_tokens=tally.start.cache_write_tokens,
                cache_write_1h_tokens=tally.start.cache_write_1h_tokens,
                model=tally.start.model,
                provider=tally.start.provider,
            )
            note = f"output tokens counted from the {len(self.chunks)} chunks released"
            detail = f"{detail}; {note}" if detail else note
        acct = core.acct
        if usage is None and reason is not Reason.ABANDONED:
            cost = acct.cost(None, True, 0, why=tally.why_unknown(), model=tally.model)
        else:
            cost = acct.cost(usage, True, 0)
        if self.prior:  # retried before the stream: the tries cost too
            extra = finish.sum_cost(self.prior)
            cost = None if cost is None or extra is None else cost + extra
        outcome: Outcome[Any] = Outcome(
            value=answer,
            call_id=ids.call_id(self.n),
            feature=core.feature,
            source=Source.MODEL,
            reason=reason,
            confidence=confidence,
            threshold=self.s.threshold,
            latency=t2 - self.t0,
            model_latency=t2 - self.tried_at,
            exception=exc,
            attempts=self.prior,
            model_result=answer,
            detail=detail,
            started_at=ids.wall_time(self.t0),
            arm=self.arm,
            rollout_percent=self.s.percent,
            usage=usage,
            cost=None if cost is None else to_decimal(cost),
            time_to_first_chunk=self.ttfc,
        )
        self.publish(outcome)
        return outcome

    def restore(self) -> None:
        """Put this call's reservation back on top of the current context, for the accounting
        of its end to settle it (once)."""
        hold, self.hold = self.hold, None
        if hold is not None:
            hold.parent = held.get()
            held.set(hold)

    def publish(self, outcome: Outcome[Any]) -> None:
        self.box.append(outcome)
        self.restore()
        span = self.span
        if span is not None:  # what the chunks said of the response
            try:
                facts_: dict[str, Any] = dict(self.server)
                if self.tally.rid:
                    facts_["gen_ai.response.id"] = self.tally.rid[:256]
                if self.tally.finish:
                    facts_["gen_ai.response.finish_reasons"] = tuple(self.tally.finish)
                if facts_:
                    span.set_attributes(facts_)
            except Exception as exc:
                errors.report("telemetry: stream attributes", exc)
        try:
            finish.publish(self.core, outcome, self.span, call=(self.args, self.kwargs))
        except Exception as exc:  # recording must never break the caller's stream
            errors.report(f"finishing the stream of {self.core.feature!r}", exc)
        self.end_span()

    def end_span(self) -> None:
        span, self.span = self.span, None
        if span is not None:
            telemetry.end(span)

    def interrupted(self, exc: BaseException | None) -> StreamInterrupted:
        if exc is None:
            detail = f"timed out after {len(self.chunks)} chunks: {self.timed_out_detail()}"
        else:
            detail = f"failed after {len(self.chunks)} chunks: {decide._shown(exc)}"
        outcome = self.finish(Reason.INTERRUPTED, exc, detail)
        error = StreamInterrupted(outcome)
        error.__cause__ = TimeoutError(self.timed_out_detail()) if exc is None else exc
        error.__suppress_context__ = True
        return error

    def abandoned(self) -> None:
        if not self.box:
            self.finish(
                Reason.ABANDONED, None, f"the caller stopped after {len(self.chunks)} chunks"
            )


def as_items(value: Any) -> Iterator[Any]:
    """A fallback's answer as stream items: an iterator's items, or the value as one chunk."""
    if kind(value) == 1:
        yield from value
    else:
        yield value


async def as_async_items(value: Any) -> AsyncIterator[Any]:
    k = kind(value)
    if k == 2:
        async for item in value:
            yield item
    elif k == 1:
        for item in value:
            yield item
    else:
        yield value


def _close(source: Any) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:
            errors.report("closing an abandoned stream", exc)


async def _aclose(source: Any) -> None:
    close = getattr(source, "aclose", None) or getattr(source, "close", None)
    if close is not None:
        try:
            result = close()
            if hasattr(result, "__await__"):
                await result
        except Exception as exc:
            errors.report("closing an abandoned stream", exc)


# -- sync -----------------------------------------------------------------------------------------


def run_sync(run: Run, source: Any, buffered: bool) -> Iterator[Any]:
    """Release the chunks of ``source`` (a sync iterator), and record the call when it ends."""
    core = run.core
    catch = core.catch
    it = iter(source)
    pull = it.__next__
    stuck = core.blocked
    ended = False
    ctx = None
    # the first chunk (buffered: every chunk) comes before anything is released
    try:
        while True:
            chunk = _pull_sync(pull, run.remaining(), stuck)
            run.got(chunk)
            if not buffered and run.ttfc is not None:
                break  # opening events are held back with the first chunk of the answer
    except StopIteration as stop:
        ended = True
        run.tally.returned(stop.value)
    except deadlines.Expired:
        ctx = run.failed_context(None)
    except catch as exc:
        ctx = run.failed_context(exc)
    except Exception as exc:
        unhandled(run, exc)
        raise
    except GeneratorExit:
        _close(source)
        run.abandoned()
        raise
    if ctx is None and buffered:
        ctx = run.judged_context()
    if ctx is not None:
        _close(source)
        yield from fallback_sync(run, ctx)
        return
    # pass-through: release as they come
    chunks = run.chunks
    released = 0
    try:
        while True:
            while released < len(chunks):
                released += 1
                yield chunks[released - 1]
            if buffered or ended:
                break
            chunk = _pull_sync(pull, run.remaining(), stuck)
            run.got(chunk)
    except StopIteration as stop:
        run.tally.returned(stop.value)
    except GeneratorExit:
        _close(source)
        run.abandoned()
        raise
    except deadlines.Expired:
        _close(source)
        raise run.interrupted(None)  # noqa: B904 (its cause is the timeout, set in it)
    except Exception as exc:
        _close(source)
        raise run.interrupted(exc) from exc
    if not run.box:
        run.finish(None)


def unhandled(run: Run, exc: BaseException) -> None:
    run.restore()
    run.core.unhandled(run.s, run.n, run.args, run.kwargs, exc, run.t0, span=run.span, arm=run.arm)
    run.end_span()


def _tried_at(run: Run, ctx: Any) -> float | None:
    """For the duration metric: the stream's own try, unless it is among the context's tries
    (after retries), which carry their own latency."""
    return None if ctx.model_attempts else run.tried_at


def fallback_sync(run: Run, ctx: Any) -> Iterator[Any]:
    run.restore()
    try:
        outcome = drive_sync(run.core, ctx, run.t0, run.t1, _tried_at(run, ctx))
    finally:
        run.end_span()
    run.box.append(outcome)
    yield from as_items(outcome.value)


def _pull_sync(pull: Any, timeout: float | None, stuck: list[bool]) -> Any:
    """The next chunk, within ``timeout`` (None: no limit): Expired when it ran out."""
    if timeout is None:
        return pull()
    return deadlines.call(pull, (), {}, timeout, stuck)


async def _pull_async(pull: Any, timeout: float | None) -> Any:
    """The next chunk, within ``timeout``: Expired when this limit (not another) ran out."""
    if timeout is None:
        return await pull()
    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            return await pull()
    except TimeoutError:
        if limit.expired():
            raise deadlines.Expired from None
        raise


async def fallback_async(run: Run, ctx: Any) -> AsyncIterator[Any]:
    run.restore()
    try:
        outcome = await drive_async(run.core, ctx, run.t0, run.t1, _tried_at(run, ctx))
    finally:
        run.end_span()
    run.box.append(outcome)
    async for item in as_async_items(outcome.value):
        yield item


# -- async ----------------------------------------------------------------------------------------


async def run_async(run: Run, source: Any, buffered: bool) -> AsyncIterator[Any]:
    """The same as ``run_sync``, for an async iterator."""
    core = run.core
    catch = core.catch
    it = source.__aiter__() if hasattr(source, "__aiter__") else source
    pull = it.__anext__
    ctx = None
    ended = False
    try:
        while True:
            chunk = await _pull_async(pull, run.remaining())
            run.got(chunk)
            if not buffered and run.ttfc is not None:
                break  # opening events are held back with the first chunk of the answer
    except StopAsyncIteration:
        ended = True
    except deadlines.Expired:
        ctx = run.failed_context(None)
    except catch as exc:
        ctx = run.failed_context(exc)
    except Exception as exc:
        unhandled(run, exc)
        raise
    except GeneratorExit:
        await _aclose(source)
        run.abandoned()
        raise
    except asyncio.CancelledError:
        await _aclose(source)
        run.abandoned()
        raise
    if ctx is None and buffered:
        ctx = run.judged_context()
    if ctx is not None:
        await _aclose(source)
        async for item in fallback_async(run, ctx):
            yield item
        return
    chunks = run.chunks
    released = 0
    try:
        while True:
            while released < len(chunks):
                released += 1
                yield chunks[released - 1]
            if buffered or ended:
                break
            try:
                chunk = await _pull_async(pull, run.remaining())
            except deadlines.Expired:
                await _aclose(source)
                raise run.interrupted(None)  # noqa: B904 (its cause is the timeout, set in it)
            run.got(chunk)
    except StopAsyncIteration:
        pass
    except (GeneratorExit, asyncio.CancelledError):
        await _aclose(source)
        run.abandoned()
        raise
    except StreamInterrupted:
        raise
    except Exception as exc:
        await _aclose(source)
        raise run.interrupted(exc) from exc
    if not run.box:
        run.finish(None)


class StreamRecord:
    """What a driver's body returns for a stream: ``value`` is what the caller gets."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Replay:
    """A fallback's answer served as a stream (``stream="pass"``/``"buffer"`` declared, and the
    function failed before returning one): its items, ``with`` and ``close()``, and the call's
    ``outcome``."""

    __slots__ = ("_items", "outcome")

    def __init__(self, value: Any, outcome: Outcome[Any]) -> None:
        self._items = as_items(value)
        self.outcome = outcome

    def __iter__(self) -> Replay:
        return self

    def __next__(self) -> Any:
        return next(self._items)

    def __enter__(self) -> Replay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._items.close()  # type: ignore[attr-defined]


class AsyncReplay:
    """:class:`Replay` for async callers."""

    __slots__ = ("_items", "outcome")

    def __init__(self, value: Any, outcome: Outcome[Any]) -> None:
        self._items = as_async_items(value)
        self.outcome = outcome

    def __aiter__(self) -> AsyncReplay:
        return self

    async def __anext__(self) -> Any:
        return await self._items.__anext__()

    async def __aenter__(self) -> AsyncReplay:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._items.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.close()


def consume(stream: Any) -> Outcome[Any]:
    """Read a guarded stream to its end; the call's Outcome (for ``fn.outcome(...)``)."""
    for _ in stream:
        pass
    return stream.outcome  # type: ignore[no-any-return]


async def consume_async(stream: Any) -> Outcome[Any]:
    async for _ in stream:
        pass
    return stream.outcome  # type: ignore[no-any-return]


# -- what the caller holds for a returned stream object -----------------------------------------


class _Proxy:
    """Stands for the stream object the guarded function returned: iterating it releases the
    guarded chunks, other attributes are the stream's own (``response``, ...), and
    ``isinstance(proxy, type(stream))`` holds."""

    __slots__ = ("_aiguard_first", "_aiguard_gen", "_aiguard_run", "_aiguard_source")

    def __init__(self, gen: Any, first: list[Any], run: Run, source: Any) -> None:
        object.__setattr__(self, "_aiguard_gen", gen)
        object.__setattr__(self, "_aiguard_first", first)
        object.__setattr__(self, "_aiguard_run", run)
        object.__setattr__(self, "_aiguard_source", source)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(proxy, openai.Stream) holds
        return type(self._aiguard_source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aiguard_source, name)

    @property
    def outcome(self) -> Outcome[Any] | None:
        """The call's Outcome once the stream has ended (None before)."""
        box = self._aiguard_run.box
        return box[-1] if box else None

    def __repr__(self) -> str:
        return f"<guarded {self._aiguard_source!r}>"


class SyncProxy(_Proxy):
    __slots__ = ()

    def __iter__(self) -> SyncProxy:
        return self

    def __next__(self) -> Any:
        first = self._aiguard_first
        if first:
            return first.pop()
        return next(self._aiguard_gen)

    def __enter__(self) -> SyncProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the stream: recorded as abandoned if it had not ended, and closed."""
        self._aiguard_first.clear()
        self._aiguard_gen.close()
        _close(self._aiguard_source)

    def __del__(self) -> None:
        try:
            if not self._aiguard_run.box:
                self._aiguard_gen.close()
        except Exception as exc:
            errors.report("finalizing a guarded stream", exc)


class AsyncProxy(_Proxy):
    __slots__ = ()

    def __aiter__(self) -> AsyncProxy:
        return self

    async def __anext__(self) -> Any:
        first = self._aiguard_first
        if first:
            return first.pop()
        return await self._aiguard_gen.__anext__()

    async def __aenter__(self) -> AsyncProxy:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the stream: recorded as abandoned if it had not ended, and closed."""
        self._aiguard_first.clear()
        await self._aiguard_gen.aclose()
        await _aclose(self._aiguard_source)

    async def aclose(self) -> None:
        await self.close()

    def __del__(self) -> None:
        try:
            run = self._aiguard_run
            if not run.box:
                run.abandoned()  # the generator itself is finalized by the event loop
        except Exception as exc:
            errors.report("finalizing a guarded stream", exc)


def start_sync(
    core: Any, s: Any, n: int, args: tuple[Any, ...], kwargs: dict[str, Any], source: Any,
    t0: float, arm: str | None, span: Any, prior: tuple[Any, ...] = (),
    tried_at: float | None = None,
) -> Any:  # fmt: skip
    """A returned sync stream: its first chunk is awaited now (a failure before it is a call's
    failure, served by the fallback chain like any); the caller gets a proxy of the stream."""
    run = Run(core, s, n, args, kwargs, t0, arm, span, prior, tried_at)
    if span is not None:
        facts.server(run.server, source)
    gen = run_sync(run, source, core.spec.stream == "buffer")
    first: list[Any] = []
    with contextlib.suppress(StopIteration):
        first.append(next(gen))
    return SyncProxy(gen, first, run, source)


async def start_async(
    core: Any, s: Any, n: int, args: tuple[Any, ...], kwargs: dict[str, Any], source: Any,
    t0: float, arm: str | None, span: Any, prior: tuple[Any, ...] = (),
    tried_at: float | None = None,
) -> Any:  # fmt: skip
    run = Run(core, s, n, args, kwargs, t0, arm, span, prior, tried_at)
    if span is not None:
        facts.server(run.server, source)
    gen = run_async(run, source, core.spec.stream == "buffer")
    first: list[Any] = []
    with contextlib.suppress(StopAsyncIteration):
        first.append(await gen.__anext__())
    return AsyncProxy(gen, first, run, source)
