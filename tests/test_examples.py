"""The examples run end to end, as README.md and their docstrings tell users to run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_and_shows_every_route(tmp_path: Path) -> None:
    """quickstart.py exits 0 and shows model, rules and human review at work."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.lower()
    for word in ("model", "rules", "human", "resolved", "report", "target"):
        assert word in out, f"{word!r} missing from quickstart output:\n{out}"
    assert (tmp_path / "aiguard-report.html").read_text().count('<svg class="plot"') == 5


def test_streaming_example_shows_each_way_a_stream_ends(tmp_path: Path) -> None:
    """streaming.py exits 0 and prints the Outcome of a served, a judged, a buffered, an
    interrupted and an abandoned stream."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "streaming.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in (
        "reason=served source=model",
        "reason=invalid_output source=model",
        "reason=invalid_output source=default",
        "reason=interrupted source=model chunks=4",
        "reason=abandoned source=model chunks=3",
        "(judged after the stream was sent)",
        "the user saw: 'A colleague will answer you shortly.'",
        "cause: ConnectionError('connection reset by peer')",
        "'assistant': 4 calls",
    ):
        assert line in out, f"{line!r} missing from streaming.py output:\n{out}"
