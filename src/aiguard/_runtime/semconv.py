"""Which generation of the OpenTelemetry GenAI semantic conventions aiguard emits.

The conventions' transition rule: an instrumentation keeps emitting the names it emitted (the
v1.36-era names: ``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` with
``gen_ai.token.type``, ``gen_ai.usage.cache_creation.input_tokens``) until the application sets
``OTEL_SEMCONV_STABILITY_OPT_IN`` to a comma-separated list that includes
``gen_ai_latest_experimental``; then it emits the latest experimental names (the
``semantic-conventions-genai`` repository: ``gen_ai.client.inference.duration``,
``gen_ai.client.inference.usage.*``, ``gen_ai.usage.cache_write.input_tokens``, the proposed
``gen_ai.usage.cost.*``), and not the old ones.
"""

from __future__ import annotations

import os

OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
LATEST = "gen_ai_latest_experimental"


def latest() -> bool:
    """True when the environment opts in to the latest experimental GenAI conventions. Read
    when aiguard's tracer or meters are made for a provider (not per call)."""
    value = os.environ.get(OPT_IN, "")
    return any(part.strip() == LATEST for part in value.split(","))


# The generation in force, read again when aiguard's tracer or meters are made for a provider.
current = [latest()]
