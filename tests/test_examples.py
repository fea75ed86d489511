"""The quickstart example runs end to end, as README.md tells users to run it."""

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
