"""A tiny WSGI app for tests/test_runtime.py, served by gunicorn with ``--preload``.

At import (in the gunicorn master, before the workers are forked) it configures aiguard from the
environment: ``AIGUARD_TEST_STORE`` (a SQLite file) and ``AIGUARD_TEST_CONTROL`` (a control file,
polled every 0.1 s), and guards one function (feature ``AIGUARD_TEST_FEATURE``). Each request
makes one guarded call and answers JSON: the worker's pid, the outcome's reason and call id.
``?hold=SECONDS`` keeps the worker busy that long before the call, so that two concurrent
requests are served by two different sync workers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import aiguard

FEATURE = os.environ.get("AIGUARD_TEST_FEATURE", "gunicorn-app")
CONTROL_INTERVAL = 0.1

aiguard.configure(
    store=os.environ["AIGUARD_TEST_STORE"],
    control=os.environ["AIGUARD_TEST_CONTROL"],
    control_interval=CONTROL_INTERVAL,
    missing_ok=True,  # the test writes it when it kills the feature
)


@aiguard.guard(FEATURE, fallback=aiguard.Default("fallback"))
def answer(question: str) -> str:
    return "model"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    hold = min(float(query.get("hold", ["0"])[0]), 2.0)
    if hold > 0:
        time.sleep(hold)
    outcome = answer.outcome("q")
    body = json.dumps(
        {"pid": os.getpid(), "reason": outcome.reason.value, "call_id": outcome.call_id}
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
