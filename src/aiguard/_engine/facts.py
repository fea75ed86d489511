"""What a model's response or failure says about the call, for its span: the response id, the
finish reasons, the server's address. Read only when the call has a span; never raises (a
response of another shape gives nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MAX_REASONS = 16


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


_NAMES = ("id", "choices", "stop_reason", "output")
_bare: set[type] = set()  # classes whose instances carry none of these: skipped at once


def response(attrs: dict[str, Any], result: Any) -> None:
    """``gen_ai.response.id`` and ``gen_ai.response.finish_reasons`` from an OpenAI chat
    completion or response, an Anthropic message, or a dict of the same shape."""
    try:
        cls = result.__class__
        if cls in _bare or isinstance(result, str | bytes | int | float | list | tuple):
            return
        if isinstance(result, Mapping):
            # a dict of a provider's shape only: a domain dict's "id" (a customer's, an
            # email) is not a response id
            if "choices" not in result and "stop_reason" not in result:
                return
        elif not any(getattr(result, name, None) is not None for name in _NAMES):
            if len(_bare) < 256 and not hasattr(result, "__dict__"):
                _bare.add(cls)  # a class without instance attributes of its own: never any
            return
        rid = _get(result, "id")
        if isinstance(rid, str) and rid:
            attrs["gen_ai.response.id"] = rid[:256]
        reasons: list[str] = []
        choices = _get(result, "choices")
        if isinstance(choices, list | tuple):  # OpenAI chat
            for choice in choices[:_MAX_REASONS]:
                reason = _get(choice, "finish_reason")
                if isinstance(reason, str):
                    reasons.append(reason)
        else:
            stop = _get(result, "stop_reason")  # Anthropic
            if isinstance(stop, str):
                reasons.append(stop)
            elif isinstance(_get(result, "output"), list):  # OpenAI responses
                status = _get(result, "status")
                if isinstance(status, str):
                    reasons.append(status)
        if reasons:
            attrs["gen_ai.response.finish_reasons"] = tuple(r[:64] for r in reasons)
    except Exception:  # a hostile result: the span goes without these
        return


def server(attrs: dict[str, Any], source: Any) -> None:
    """``server.address`` and ``server.port`` from what the client gives: an HTTP response or
    request (a client's error, a stream's ``response``)."""
    try:
        for holder in (source, _get(source, "response"), _get(source, "request")):
            url = _get(holder, "url") if holder is not None else None
            host = getattr(url, "host", None)
            if isinstance(host, str) and host:
                attrs["server.address"] = host[:256]
                port = getattr(url, "port", None)
                if isinstance(port, int):
                    attrs["server.port"] = port
                else:
                    scheme = getattr(url, "scheme", None)
                    if scheme in ("https", "http"):
                        attrs["server.port"] = 443 if scheme == "https" else 80
                return
    except Exception:
        return
