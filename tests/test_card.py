"""The system card: from configuration and the report's figures, in Python and from the
command line, and as a page Chromium lays out without overflow."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import _browser
import pytest

import aiguard
from aiguard.card import SECTIONS
from aiguard.cli import main

PRICES = {"currency": "USD", "models": {"small": {"input": "1", "output": "2"}}}
LONG_LIMIT = "Never for legal advice: " + "contracts-and-disputes-" * 12 + "end"
FEATURE = {
    "owner": "support-ai@acme.example",
    "value_per_accepted": "4.50",
    "baseline_cost": "6.00",
    "intended_use": "Route incoming support tickets to a queue",
    "limits": ["English only", LONG_LIMIT],
    "targets": ["acceptance_rate >= 40 %", "p95_latency <= 2 s"],
    "segments": ["plan"],
}


def _record(tmp_path: Path) -> tuple[Any, list[Any]]:
    """A guarded feature with a rollout, a fallback, segments and feedback, its calls in a
    SQLite file."""
    aiguard.configure(store=tmp_path / "card.db", prices=PRICES, features={"triage": FEATURE})

    @aiguard.guard("triage", confidence="score", threshold=0.5,
                   rollout=aiguard.Rollout(percent=60, key="user"),
                   fallback=aiguard.Default({"label": "other", "score": 1.0}))  # fmt: skip
    def triage(user: str, plan: str, score: float) -> dict[str, Any]:
        return {"label": "billing", "score": score, "model": "small",
                "usage": {"prompt_tokens": 800, "completion_tokens": 100}}  # fmt: skip

    rng = random.Random(3)
    outcomes = []
    for i in range(80):
        o = triage.outcome(f"user-{i % 25}", rng.choice(["free", "pro"]), rng.random())
        if o.source == "model":
            o.accept() if rng.random() < 0.7 else o.reject()
        outcomes.append(o)
    aiguard.flush()
    return triage, outcomes


def test_the_card_has_every_section_with_the_reports_figures(tmp_path: Path) -> None:
    """Owner, use, limits, models, fallbacks, rollout, targets, quality, segments, drift, cost
    and ROI, and the period: each figure is the report's over the same window."""
    _, outcomes = _record(tmp_path)
    c = aiguard.card("triage")
    assert [key for key, _ in SECTIONS] == list(c.sections)
    f = c.report.features[0]
    assert f.calls == len(outcomes)
    rows = {key: dict(c.sections[key]) for key in c.sections}
    assert rows["purpose"] == {
        "owner": FEATURE["owner"],
        "intended use": FEATURE["intended_use"],
        "limits": f"English only; {LONG_LIMIT}",
    }
    called = sum(o.usage is not None and o.usage.model == "small" for o in outcomes)
    assert rows["models"] == {"small": f"{called:,} calls"}
    assert rows["fallbacks"] == {"1.": "default (source default)"}
    assert rows["rollout"]["stage"] == "60% of units"
    assert rows["rollout"]["arm=ai"] == f"{sum(o.arm == 'ai' for o in outcomes):,} calls"
    assert rows["period"]["calls"] == f"{len(outcomes):,}"
    accepted = f.accepted + f.edited
    assert rows["quality"]["acceptance"].startswith(
        f"{100 * accepted / f.decided:.1f}% of {f.decided:,} decided"
    )
    assert set(rows["targets"]) == {"acceptance_rate >= 40 %", "p95_latency <= 2 s"}
    for (target, _, ok), shown in zip(c.report.targets["triage"], rows["targets"].values(),
                                      strict=True):  # fmt: skip
        assert shown.endswith("PASS" if ok else "FAIL" if ok is False else "n/a"), target
    canvas = c.report.canvas["triage"]
    assert rows["cost"]["accepted AI answers"] == f"{canvas.accepted_ai:,}"
    assert rows["cost"]["adoption"].startswith(f"{100 * canvas.adoption:.1f}%")
    assert "plan=" in " ".join(rows["segments"])  # the configured segment is compared
    text = c.to_text()
    for _, title in SECTIONS:
        assert f"\n{title}\n" in text
    data = json.loads(c.to_json())
    assert data["sections"]["purpose"][0] == ["owner", FEATURE["owner"]]


def test_a_card_without_a_guard_or_calls_says_so() -> None:
    """Nothing recorded and no guard in the process: every section is there and says what is
    not known."""
    aiguard.configure(store=":memory:")
    c = aiguard.card("nothing")
    assert dict(c.sections["fallbacks"])["chain"].startswith("declared in code")
    assert dict(c.sections["purpose"])["owner"] == "not given"
    assert dict(c.sections["targets"]) == {"targets": "none configured"}
    with pytest.raises(aiguard.ConfigError, match="feature"):
        aiguard.card("")


PROBE = """
const sections = [...document.querySelectorAll('section')].map(s => ({
  id: s.id, title: s.querySelector('h2').textContent,
  rows: [...s.querySelectorAll('tr')].map(r => [r.querySelector('th').textContent,
                                                r.querySelector('td').textContent]),
}));
const width = document.documentElement.clientWidth;
const over = [...document.querySelectorAll('body *')].filter(e =>
  e.getBoundingClientRect().right > width + 0.5 || e.scrollWidth > e.clientWidth + 1 &&
  getComputedStyle(e).overflow === 'visible' && e.tagName !== 'HTML' && e.tagName !== 'BODY'
).map(e => e.tagName + ':' + e.textContent.slice(0, 40));
const fail = [...document.querySelectorAll('td.fail')].map(e => getComputedStyle(e).color);
document.body.dataset.probe = JSON.stringify({sections, over, width,
  scroll: document.documentElement.scrollWidth, fail});
"""


def test_the_html_card_shows_every_section_without_overflow_in_chromium(tmp_path: Path) -> None:
    """Chromium lays the card out: every section with its rows as the card holds them, the
    figures the report's, and no text wider than the page (a long limit wraps)."""
    _record(tmp_path)
    c = aiguard.card("triage")
    found = _browser.probe(c.to_html(), tmp_path, PROBE, "card")
    assert [(s["id"], s["title"]) for s in found["sections"]] == list(SECTIONS)
    for s in found["sections"]:
        assert [tuple(r) for r in s["rows"]] == c.sections[s["id"]]
    assert found["over"] == [] and found["scroll"] <= found["width"]
    cost = dict(c.sections["cost"])
    f = c.report.features[0]
    assert cost["cost"] == f"{f.cost.normalize():f} USD"
    assert dict(found["sections"][-1]["rows"])["cost"] == cost["cost"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_card_command_reads_the_store_and_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aiguard card FEATURE` prints the card; --html a page, --json JSON, --output a file;
    options go before or after the command."""
    _record(tmp_path)
    config = tmp_path / "aiguard.toml"
    config.write_text(
        '[features.triage]\nowner = "ana@acme.example"\nvalue_per_accepted = "4.50"\n'
        'intended_use = "Route tickets"\nlimits = ["English only"]\n'
    )
    store = str(tmp_path / "card.db")
    control = str(tmp_path / "control.toml")
    code, out, err = run(capsys, "card", "triage", "--store", store, "--config", str(config),
                         "--control", control)  # fmt: skip
    assert code == 0, err
    assert "System card: triage" in out and "owner         ana@acme.example" in out
    assert "Cost and ROI" in out and "value per accepted answer    4.5 USD" in out
    code, out, err = run(capsys, "--store", store, "card", "triage", "--html")
    assert code == 0 and out.startswith("<!doctype html>") and 'id="drift"' in out
    code, out, _ = run(capsys, "--store", store, "card", "triage", "--json", "--since", "7d")
    assert json.loads(out)["feature"] == "triage"
    page = tmp_path / "card.html"
    code, _, err = run(capsys, "--store", store, "card", "triage", "--html", "--output", str(page))
    assert code == 0 and page.read_text().startswith("<!doctype html>")


def test_the_card_command_never_creates_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store that does not exist is an error (exit 2), and is not created; no store at all
    is an error naming the option."""
    missing = tmp_path / "missing.db"
    code, _, err = run(capsys, "--store", str(missing), "card", "triage")
    assert code == 2 and not missing.exists()
    code, _, err = run(capsys, "card", "triage")
    assert code == 2 and "--store" in err
    code, _, err = run(capsys, "--store", str(missing), "card", "triage", "--html", "--json")
    assert code == 2


def test_the_card_console_script_runs(tmp_path: Path) -> None:
    """The installed `aiguard` command writes a card in a subprocess."""
    _record(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "aiguard.cli", "--store", str(tmp_path / "card.db"), "card",
         "triage"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "System card: triage" in proc.stdout
