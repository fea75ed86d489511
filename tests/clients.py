"""Real OpenAI and Anthropic clients answering from canned JSON (no network)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4.1-mini-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "billing"},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "total_tokens": 1280,
        "prompt_tokens_details": {"cached_tokens": 1000},
        "completion_tokens_details": {"reasoning_tokens": 30},
    },
}
RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "model": "gpt-4.1-mini",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "status": "completed",
    "usage": {
        "input_tokens": 500,
        "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 540,
    },
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-test-1",
    "content": [{"type": "text", "text": "billing"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_input_tokens": 300,
        "cache_creation_input_tokens": 50,
    },
}


def _http(body: dict[str, Any]) -> httpx2.Client:
    return httpx2.Client(
        transport=httpx2.MockTransport(lambda request: httpx2.Response(200, json=body))
    )


def openai_client(body: dict[str, Any] = CHAT) -> openai.OpenAI:
    return openai.OpenAI(api_key="test", http_client=_http(body), max_retries=0)


def anthropic_client(body: dict[str, Any] = MESSAGE, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", http_client=_http(body), max_retries=0, **kwargs)
