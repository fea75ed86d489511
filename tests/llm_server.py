"""A scriptable local LLM server: the OpenAI and Anthropic HTTP APIs, on 127.0.0.1, for tests.

The real ``openai`` and ``anthropic`` clients talk HTTP/1.1 to it as they would to the
providers: ``POST /v1/chat/completions`` answers a ``ChatCompletion`` or, with ``"stream": true``,
server-sent ``chat.completion.chunk`` events; ``POST /v1/messages`` answers a ``Message`` or the
Anthropic stream events. Each test scripts what the next requests get with :class:`Reply`
(status, text, chunks, usage, delays, a disconnect, a hang, a malformed body) and reads what the
server received in :attr:`LLMServer.requests`.

Example::

    def test_stream_cut(llm_server: LLMServer) -> None:
        llm_server.script(Reply(chunks=5, chunk_interval=0.05, disconnect_after=3))
        with openai_client(llm_server) as client:
            ...

The ``llm_server`` fixture (``tests/conftest.py``) starts one per test and stops it at the end:
delays and hangs are cut short, open connections are closed, and the handler threads are joined.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import openai

__all__ = [
    "LLMServer",
    "Received",
    "Reply",
    "anthropic_client",
    "async_anthropic_client",
    "async_openai_client",
    "openai_client",
]

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the server answers to one request.

    ``status``: 200, or an error status answered with the provider's own error body (429 with a
    ``retry-after`` header, 500, 529 ``overloaded_error``, ...). ``text`` is the answer, sent in
    ``chunks`` pieces when the request streams (one piece otherwise). ``usage`` replaces the
    default usage figures, in the provider's own shape (``prompt_tokens``... for OpenAI,
    ``input_tokens``... for Anthropic); keys left out keep their defaults. ``model`` is the model
    the response names (default: the request's).

    Malformed answers: ``raw`` is sent as the body of a 200 as is (``b"{not json"``); ``omit``
    removes top-level keys from the JSON body (``("choices", "usage")``).

    Timing: ``delay`` before the response headers; ``first_chunk_delay`` after them, before
    the first chunk of text; ``chunk_interval`` between chunks. ``disconnect=True`` closes the
    connection without a response; ``disconnect_after=N`` closes it mid-stream after N chunks of
    text (the stream's opening events sent, its end never). ``hang=True`` never answers: the
    connection stays open until the server stops.

    ``retry_after`` sets the ``retry-after`` header of an error status, in seconds (a float is
    accepted by both clients); ``headers`` adds headers to any response.
    """

    text: str = "billing"
    chunks: int = 1
    status: int = 200
    usage: dict[str, Any] | None = None
    model: str | None = None
    raw: bytes | None = None
    omit: tuple[str, ...] = ()
    delay: float = 0.0
    first_chunk_delay: float = 0.0
    chunk_interval: float = 0.0
    disconnect: bool = False
    disconnect_after: int | None = None
    hang: bool = False
    retry_after: float | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def pieces(self) -> list[str]:
        """``text`` cut into ``chunks`` pieces of nearly equal length (the first ones longer)."""
        n = max(1, self.chunks)
        size, extra = divmod(len(self.text), n)
        out, start = [], 0
        for i in range(n):
            end = start + size + (1 if i < extra else 0)
            out.append(self.text[start:end])
            start = end
        return out


@dataclasses.dataclass(frozen=True)
class Received:
    """One request the server read: path, headers (names lowercased), JSON body (None if the
    body was not JSON)."""

    path: str
    headers: dict[str, str]
    body: Any

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True


# -- the providers' formats ----------------------------------------------------------------

OPENAI_USAGE: dict[str, Any] = {
    "prompt_tokens": 1200,
    "completion_tokens": 80,
    "total_tokens": 1280,
    "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
ANTHROPIC_USAGE: dict[str, Any] = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 50,
    "cache_read_input_tokens": 300,
    "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 20,
    "service_tier": "standard",
}

OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: test."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in 1s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def _merge(default: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """``default`` with ``override``'s keys replaced (nested mappings merged one level down)."""
    out = json.loads(json.dumps(default))
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def openai_usage(reply: Reply) -> dict[str, Any]:
    usage = _merge(OPENAI_USAGE, reply.usage)
    if reply.usage is None or "total_tokens" not in reply.usage:
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def anthropic_usage(reply: Reply) -> dict[str, Any]:
    return _merge(ANTHROPIC_USAGE, reply.usage)


class _Ids:
    def __init__(self) -> None:
        self._n = itertools.count(1)

    def __call__(self, prefix: str) -> str:
        return f"{prefix}{next(self._n):024d}"


_ids = _Ids()


def openai_completion(reply: Reply, model: str) -> dict[str, Any]:
    """A ``ChatCompletion`` as the API sends it."""
    return {
        "id": _ids("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": openai_usage(reply),
        "service_tier": "default",
        "system_fingerprint": "fp_0000000000",
    }


def openai_chunks(reply: Reply, model: str, include_usage: bool) -> Iterator[tuple[str, bytes]]:
    """The stream's events, each as ``(kind, bytes)``: kind ``open`` (the role chunk),
    ``text`` (one per piece of text), ``close`` (finish reason, usage, ``[DONE]``)."""
    base = {
        "id": _ids("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_0000000000",
    }
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse(None, {**base, "choices": [choice], **extra})

    yield "open", chunk({"role": "assistant", "content": "", "refusal": None}, None)
    for piece in reply.pieces():
        yield "text", chunk({"content": piece}, None)
    yield "close", chunk({}, "stop")
    if include_usage:
        yield "close", _sse(None, {**base, "choices": [], "usage": openai_usage(reply)})
    yield "close", b"data: [DONE]\n\n"


def anthropic_message(reply: Reply, model: str) -> dict[str, Any]:
    """A ``Message`` as the API sends it."""
    return {
        "id": _ids("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(reply),
    }


def anthropic_events(reply: Reply, model: str) -> Iterator[tuple[str, bytes]]:
    """The stream's events, as :func:`openai_chunks`: ``message_start`` (input usage, one
    output token), ``content_block_start`` and a ``ping`` open it; one ``content_block_delta``
    per piece of text; ``content_block_stop``, ``message_delta`` (the output tokens) and
    ``message_stop`` close it."""
    usage = anthropic_usage(reply)
    start_usage = {**usage, "output_tokens": 1}
    message = {
        "id": _ids("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    yield "open", _sse("message_start", {"type": "message_start", "message": message})
    block = {"type": "text", "text": ""}
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    yield "open", _sse("content_block_start", start)
    yield "open", _sse("ping", {"type": "ping"})
    for piece in reply.pieces():
        delta = {"type": "text_delta", "text": piece}
        event = {"type": "content_block_delta", "index": 0, "delta": delta}
        yield "text", _sse("content_block_delta", event)
    yield "close", _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield "close", _sse("message_delta", message_delta)
    yield "close", _sse("message_stop", {"type": "message_stop"})


def _sse(event: str | None, data: dict[str, Any]) -> bytes:
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def error_body(path: str, status: int) -> dict[str, Any]:
    """The provider's error body for ``status``."""
    if path == ANTHROPIC_PATH:
        kind, message = ANTHROPIC_ERRORS.get(status, ("api_error", f"HTTP {status}"))
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": _ids("req_"),
        }
    kind, code, message = OPENAI_ERRORS.get(status, ("server_error", None, f"HTTP {status}"))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# -- the server ----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read LLMServer.requests

    def do_GET(self) -> None:
        self._not_found()

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        owner._record(Received(path, {k.lower(): v for k, v in self.headers.items()}, body))
        if path not in (OPENAI_PATH, ANTHROPIC_PATH):
            self._not_found()
            return
        reply = owner._next_reply()
        self._answer(path, body if isinstance(body, dict) else {}, reply)

    def _not_found(self) -> None:
        self._json(404, error_body(self.path, 404), {})

    def _answer(self, path: str, request: dict[str, Any], reply: Reply) -> None:
        stop = self.server.owner._stopping
        if reply.hang:
            stop.wait()
            self._drop()
            return
        if reply.delay and stop.wait(reply.delay):
            self._drop()
            return
        if reply.disconnect:
            self._drop()
            return
        anthropic_api = path == ANTHROPIC_PATH
        request_id = {"request-id" if anthropic_api else "x-request-id": _ids("req_")}
        headers = {**request_id, **reply.headers}
        if reply.status != 200:
            if reply.retry_after is not None:
                headers["retry-after"] = f"{reply.retry_after:g}"
            self._json(reply.status, error_body(path, reply.status), headers)
            return
        if reply.raw is not None:
            self._send(200, reply.raw, "application/json", headers)
            return
        model = reply.model or str(request.get("model") or "unknown-model")
        if request.get("stream") is True:
            options = request.get("stream_options") or {}
            include = isinstance(options, dict) and options.get("include_usage") is True
            events = (
                anthropic_events(reply, model)
                if anthropic_api
                else openai_chunks(reply, model, include)
            )
            self._stream(events, reply, headers)
            return
        document = (
            anthropic_message(reply, model) if anthropic_api else openai_completion(reply, model)
        )
        for key in reply.omit:
            document.pop(key, None)
        self._json(200, document, headers)

    def _json(self, status: int, document: dict[str, Any], headers: dict[str, str]) -> None:
        self._send(status, json.dumps(document).encode(), "application/json", headers)

    def _send(self, status: int, payload: bytes, kind: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _stream(
        self, events: Iterator[tuple[str, bytes]], reply: Reply, headers: dict[str, str]
    ) -> None:
        stop = self.server.owner._stopping
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        sent = 0
        for kind, data in events:
            if kind == "text":
                if reply.disconnect_after is not None and sent >= reply.disconnect_after:
                    self._drop()
                    return
                pause = reply.first_chunk_delay if sent == 0 else reply.chunk_interval
                if pause and stop.wait(pause):
                    self._drop()
                    return
                sent += 1
            elif kind == "close" and reply.disconnect_after is not None:
                self._drop()  # fewer pieces than disconnect_after: cut before the end
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection now, whatever was sent: the client sees it end early."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LLMServer

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"llm-server-conn-{client_address[1]}",
            daemon=True,
        )
        self.owner._opened(request, thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        self.owner._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away is no error of the server's; anything else is kept in
        :attr:`LLMServer.errors` (the fixture fails the test on it)."""
        exc = sys.exception()
        if exc is not None and not isinstance(exc, OSError):
            self.owner._failed(exc)


class LLMServer:
    """The server: :meth:`start` it, :meth:`script` its replies, read :attr:`requests`,
    :meth:`stop` it. ``url`` is ``http://127.0.0.1:PORT`` (no trailing slash)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: list[Reply] = []
        self._default = Reply()
        self._requests: list[Received] = []
        self.errors: list[BaseException] = []  # the server's own failures while answering
        self._connections: dict[Any, threading.Thread] = {}
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- scripting ------------------------------------------------------------------------

    def script(self, *replies: Reply, then: Reply | None = None) -> None:
        """The next requests get ``replies``, in order; the ones after them get ``then``
        (default: the last of ``replies``)."""
        if not replies and then is None:
            raise ValueError("script() needs a reply")
        with self._lock:
            self._replies = list(replies)
            self._default = then if then is not None else replies[-1]

    def reply(self, **fields: Any) -> None:
        """Every request from now on gets ``Reply(**fields)``."""
        self.script(Reply(**fields))

    @property
    def requests(self) -> list[Received]:
        """The requests received so far, in order."""
        with self._lock:
            return list(self._requests)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._replies.pop(0) if self._replies else self._default

    def _record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(exc)

    def _opened(self, request: Any, thread: threading.Thread) -> None:
        with self._lock:
            self._connections[request] = thread

    def _closed(self, request: Any) -> None:
        with self._lock:
            self._connections.pop(request, None)

    # -- life -----------------------------------------------------------------------------

    def start(self) -> LLMServer:
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="llm-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving: hangs and delays end (their connections are closed), open connections
        are shut, the threads are joined (at most ``timeout`` seconds each)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        thread.join(timeout)
        with self._lock:
            connections = dict(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for handler in connections.values():
            handler.join(max(0.0, deadline - time.monotonic()))
        httpd.server_close()
        self._httpd = self._thread = None

    @property
    def threads(self) -> list[threading.Thread]:
        """The server's threads still alive (none after :meth:`stop`)."""
        with self._lock:
            handlers = list(self._connections.values())
        own = [self._thread] if self._thread is not None else []
        return [t for t in own + handlers if t.is_alive()]

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the clients, pointed at the server ----------------------------------------------------


def openai_client(server: LLMServer, **kwargs: Any) -> openai.OpenAI:
    """``openai.OpenAI`` on the server: no retries and a 5 s timeout unless ``kwargs`` say."""
    options: dict[str, Any] = {"api_key": "test", "max_retries": 0, "timeout": 5.0, **kwargs}
    return openai.OpenAI(base_url=server.url + "/v1", **options)


def async_openai_client(server: LLMServer, **kwargs: Any) -> openai.AsyncOpenAI:
    """``openai.AsyncOpenAI`` on the server, as :func:`openai_client`."""
    options: dict[str, Any] = {"api_key": "test", "max_retries": 0, "timeout": 5.0, **kwargs}
    return openai.AsyncOpenAI(base_url=server.url + "/v1", **options)


def anthropic_client(server: LLMServer, **kwargs: Any) -> anthropic.Anthropic:
    """``anthropic.Anthropic`` on the server, as :func:`openai_client`."""
    options: dict[str, Any] = {"api_key": "test", "max_retries": 0, "timeout": 5.0, **kwargs}
    return anthropic.Anthropic(base_url=server.url, **options)


def async_anthropic_client(server: LLMServer, **kwargs: Any) -> anthropic.AsyncAnthropic:
    """``anthropic.AsyncAnthropic`` on the server, as :func:`openai_client`."""
    options: dict[str, Any] = {"api_key": "test", "max_retries": 0, "timeout": 5.0, **kwargs}
    return anthropic.AsyncAnthropic(base_url=server.url, **options)
