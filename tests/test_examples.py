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
    page = (tmp_path / "aiguard-report.html").read_text()
    # no price table: the costs are unknown, so the page has no cost plots, and no rollout: no
    # plot by arm
    assert page.count('<svg class="plot"') == 3 and "Cost per" not in page and "by arm" not in page


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


def test_closing_the_loop_finds_what_it_is_built_to_find(tmp_path: Path) -> None:
    """closing_the_loop.py: the tuned threshold meets its precision target and is served at
    once from the control file; the short chat messages are flagged as a worse-served segment;
    the vaguer second week is a drift that fails the check (exit 1), while the launch week's
    calibration passes."""
    import re

    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "closing_the_loop.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr  # the drift target fails, as CI would see it
    tuned = re.search(r"precision >= 0.95: threshold (0\.\d+): precision ([\d.]+)%", out)
    assert tuned is not None, out
    assert float(tuned[2]) >= 95.0
    served = re.search(r"Threshold now (0\.\d+) \(from the control file\)", out)
    assert served is not None and float(served[1]) == float(tuned[1]), out
    assert "acceptance_rate channel=chat" in out and "(FLAGGED)" in out, out
    psi = re.search(r"confidence PSI ([\d.]+)", out)
    assert psi is not None and float(psi[1]) > 0.2, out
    assert re.search(r"check confidence_psi <= 0.2: [\d.]+ FAIL", out), out
    assert re.search(r"check ece <= 0.1: [\d.]+ pass", out), out
    assert "breaks confidence_psi <= 0.2" in proc.stderr  # the drift control event, logged
