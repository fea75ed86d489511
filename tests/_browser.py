"""Headless Chromium for the tests: open an HTML page the way a person would and read back what
it laid out (Debian's ``chromium``; under AIGUARD_REQUIRE_SERVICES=1 a missing browser fails the
test instead of skipping it)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

# What the probe reads of each plot, once the page is laid out: the figure's caption, the SVG's
# box, the box and text of each of its labels, its marks, its target lines, the colours its
# marks are painted in, and its legend (name, colour), colours as computed by the browser.
PROBE = """<script>
document.body.dataset.plots = JSON.stringify([...document.querySelectorAll('svg.plot')].map(s => {
  const box = r => [r.left, r.top, r.right, r.bottom];
  const figure = s.closest('figure');
  return {
    title: figure.querySelector('figcaption').textContent,
    box: box(s.getBoundingClientRect()),
    view_box: s.getAttribute('viewBox'),
    texts: [...s.querySelectorAll('text')].map(t => ({
      text: t.textContent, cls: t.getAttribute('class'), box: box(t.getBoundingClientRect()),
      fill: getComputedStyle(t).fill})),
    marks: s.querySelectorAll('rect.bar, polyline.series, circle').length,
    targets: s.querySelectorAll('line.target').length,
    fills: [...new Set([...s.querySelectorAll('rect.bar, circle')]
      .map(e => getComputedStyle(e).fill))],
    legend: [...figure.querySelectorAll('.legend .key')].map(k =>
      [k.textContent, getComputedStyle(k.querySelector('i')).backgroundColor]),
  };
}));
</script>"""


def chromium() -> str:
    """The browser's path; skips (fails under AIGUARD_REQUIRE_SERVICES=1) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    found = found or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("AIGUARD_REQUIRE_SERVICES") == "1":
            pytest.fail("Chromium is required here (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium on this machine (install Debian's chromium package)")
    return found


def plots(page: str, tmp_path: Path, name: str = "page") -> list[dict[str, Any]]:
    """Open ``page`` in headless Chromium; what the probe read of each ``svg.plot``."""
    browser = chromium()
    probed = tmp_path / f"{name}.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / ('profile-' + name)}",
            "--window-size=1400,2000", "--dump-dom", probed.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    m = re.search(r'data-plots="([^"]*)"', result.stdout)
    assert m, result.stdout[:500]
    found: list[dict[str, Any]] = json.loads(html.unescape(m.group(1)))
    return found


def probe(page: str, tmp_path: Path, script: str, name: str = "page") -> Any:
    """Open ``page`` in headless Chromium, run ``script`` (JavaScript that sets
    ``document.body.dataset.probe`` to a JSON text) once it is laid out, and return that JSON."""
    browser = chromium()
    probed = tmp_path / f"{name}.html"
    probed.write_text(
        page.replace("</body>", f"<script>{script}</script></body>"), encoding="utf-8"
    )
    result = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / ('profile-' + name)}",
            "--window-size=1000,2000", "--dump-dom", probed.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    m = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert m, result.stdout[:500]
    return json.loads(html.unescape(m.group(1)))
