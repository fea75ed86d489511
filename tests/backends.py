"""Real telemetry backends for the tests: a Phoenix server in a subprocess, a Prometheus scrape.

Phoenix runs from its own virtualenv (``arize-phoenix`` pulls in a web server, a database layer
and dozens of packages that the library's dev extras do not need): ``.ci/run`` creates it and
sets ``AIGUARD_PHOENIX`` to its ``phoenix`` command. A test that needs Phoenix skips with the
reason when it is missing, except under ``AIGUARD_REQUIRE_SERVICES=1`` (set by ``.ci/run``),
where it fails instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services import _unavailable

PHOENIX_ENV = "AIGUARD_PHOENIX"
PHOENIX_START_TIMEOUT = 45.0

# The Accept header Prometheus sends when it scrapes a target (2.x): OpenMetrics first, the
# classic text format as a fall-back.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def global_providers(tracer_provider: Any = None, meter_provider: Any = None) -> Iterator[None]:
    """Make these SDK providers the API's global ones for the block, then put the previous
    ones back (through the API's private globals, as ``capture_telemetry()`` does)."""
    from opentelemetry import trace as otel_trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    saved = (
        otel_trace._TRACER_PROVIDER,
        otel_trace._TRACER_PROVIDER_SET_ONCE,
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE,
    )
    try:
        if tracer_provider is not None:
            otel_trace._TRACER_PROVIDER_SET_ONCE = Once()
            otel_trace._TRACER_PROVIDER = None
            otel_trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None:
            metrics_internal._METER_PROVIDER_SET_ONCE = Once()
            metrics_internal._METER_PROVIDER = None
            metrics_internal.set_meter_provider(meter_provider)
        yield
    finally:
        (
            otel_trace._TRACER_PROVIDER,
            otel_trace._TRACER_PROVIDER_SET_ONCE,
            metrics_internal._METER_PROVIDER,
            metrics_internal._METER_PROVIDER_SET_ONCE,
        ) = saved


def scrape(url: str) -> tuple[str, str]:
    """GET a Prometheus target the way Prometheus does: ``(content type, body)``."""
    request = urllib.request.Request(url, headers={"Accept": PROMETHEUS_ACCEPT})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def phoenix_command() -> str:
    """The ``phoenix`` command to run: ``$AIGUARD_PHOENIX``, else one on the PATH."""
    command = os.environ.get(PHOENIX_ENV) or shutil.which("phoenix")
    if not command or not os.access(command, os.X_OK):
        _unavailable(
            "Arize Phoenix",
            f"no phoenix command (set {PHOENIX_ENV} to it; .ci/run installs it into .venv-phoenix)",
        )
    assert command is not None
    return command


class Phoenix:
    """A Phoenix server on free ports of 127.0.0.1, with its data in a temporary folder."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.traces_endpoint = f"{self.url}/v1/traces"
        self.workdir = tempfile.mkdtemp(prefix="aiguard-phoenix-")
        self.log_path = Path(self.workdir) / "phoenix.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))},
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": self.workdir,
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self.command, "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends all it started
            )
        deadline = time.monotonic() + PHOENIX_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"phoenix exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        waited = f"phoenix did not answer within {PHOENIX_START_TIMEOUT} s"
        raise RuntimeError(f"{waited}:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def spans(self, project: str = "default", expected: int = 1, timeout: float = 15) -> list[Any]:
        """The project's spans from Phoenix's REST API (``GET /v1/projects/{p}/spans``), waiting
        until at least ``expected`` have arrived (Phoenix writes what it receives in batches)."""
        deadline = time.monotonic() + timeout
        spans: list[Any] = []
        while True:
            try:
                spans = self.get(f"/v1/projects/{project}/spans?limit=1000")["data"]
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # the project appears with its first span
                    raise
            if len(spans) >= expected or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


@contextlib.contextmanager
def phoenix_server() -> Iterator[Phoenix]:
    """A running Phoenix server for the block, stopped (with all its processes) at the end."""
    server = Phoenix(phoenix_command())
    try:
        server.start()
        yield server
    finally:
        server.stop()


class Prometheus:
    """A Prometheus server (Debian's ``prometheus``) on a free port of 127.0.0.1, with this
    ``prometheus.yml`` and its data in a temporary folder."""

    def __init__(self, command: str, config: str) -> None:
        self.command = command
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = tempfile.mkdtemp(prefix="aiguard-prometheus-")
        self.config_path = Path(self.workdir) / "prometheus.yml"
        self.config_path.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = open(Path(self.workdir) / "prometheus.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.command,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (Path(self.workdir) / "prometheus.log").read_text(errors="replace")
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{log}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not answer within 20 s")

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if process is not None:
            self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def prometheus_server(config: str) -> Iterator[Prometheus]:
    """A running Prometheus server with this configuration, stopped at the end of the block."""
    command = shutil.which("prometheus")
    if command is None:
        _unavailable(
            "Prometheus", "no prometheus command (Debian's package: apt-get install prometheus)"
        )
    assert command is not None
    server = Prometheus(command, config)
    try:
        server.start()
        yield server
    finally:
        server.stop()
