"""Closing the loop: after launch, measure how good the served answers are, and act on it.

Run it from the repository root::

    python examples/closing_the_loop.py

The quickstart's ticket classifier is launched with a permissive threshold (0.5) so that answers
of every confidence are served and judged. Tickets arrive by e-mail and by chat (chat messages
are short, so the model knows less); agents give feedback on some answers, and an auditor checks
a random 5 % of the served ones. Then, from that evidence alone:

1. calibration: is a confidence of 0.9 right 90 % of the time?
2. threshold tuning: the lowest threshold whose precision is at least 95 % (its lower 95 %
   bound), written to the control file so that the running guard uses it at once;
3. audits: the error rate of served answers, measured on a random sample rather than on the
   answers users chose to rate;
4. segments: is one channel served worse than the other?
5. drift: a week later the tickets change (more vague ones); the confidence distribution
   against the launch week's saved baseline says so, and ``aiguard.check`` fails.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import aiguard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "data"))

from make_tickets import VAGUE, VOCAB, make_ticket  # noqa: E402
from ticket_model import (  # noqa: E402
    Prediction,
    TicketClassifier,
    keyword_triage,
    load_tickets,
)

FEATURE = "ticket-triage"
LABELS = sorted(VOCAB)


def chat(text: str) -> str:
    """A chat message: the ticket cut to its first four words (less for the model to go on)."""
    return " ".join(text.split()[:4])


def tickets(rng: random.Random, n: int, vague: float = 0.0) -> list[tuple[str, str, str]]:
    """``n`` (text, channel, true label) tickets; ``vague``: the share made vague on purpose."""
    out = []
    for _ in range(n):
        label = rng.choice(LABELS)
        if rng.random() < vague:
            text = rng.choice(VAGUE).format(thing=rng.choice(VOCAB[label]["thing"])) + "."
        else:
            text = make_ticket(rng, label)
        channel = "chat" if rng.random() < 0.4 else "email"
        out.append((chat(text) if channel == "chat" else text, channel, label))
    return out


def run(folder: Path) -> int:
    """The whole story; returns 1 when ``aiguard.check`` finds a failing target, as CI would."""
    rng = random.Random(7)
    texts, labels = load_tickets(HERE / "data" / "tickets.csv")
    classifier = TicketClassifier().fit(texts, labels)

    control = folder / "aiguard-control.toml"
    control.write_text("")  # the control file the team edits (and aiguard tune --apply writes)
    aiguard.configure(
        store=str(folder / "aiguard.db"),
        control=str(control),
        features={
            FEATURE: {
                "targets": ["acceptance_rate >= 85 %", "audited_error_rate <= 10 %",
                            "ece <= 0.1", "confidence_psi <= 0.2"],
            }
        },
    )  # fmt: skip

    def rules(text: str, channel: str) -> Prediction:
        return keyword_triage(text)

    # Launch: a permissive threshold, segments by channel, 5 % of served answers audited.
    @aiguard.guard(
        FEATURE,
        confidence="score",
        threshold=0.5,
        segments=("channel",),
        audit=0.05,
        fallback=[aiguard.Rules(rules), aiguard.HumanReview()],
    )
    def triage(text: str, channel: str) -> Prediction:
        return classifier.predict(text)

    def serve(batch: list[tuple[str, str, str]]) -> dict[str, str]:
        """Triage a batch; agents give feedback on 40 % of the answers. Returns each call's
        true label, by call id (what the auditor will find out)."""
        truth_of: dict[str, str] = {}
        for text, channel, truth in batch:
            try:
                outcome = triage.outcome(text, channel)
            except aiguard.ReviewPending as pending:
                truth_of[pending.outcome.call_id] = truth
                continue
            truth_of[outcome.call_id] = truth
            if rng.random() < 0.4:
                if outcome.value.label == truth:
                    outcome.accept(by="agent")
                else:
                    outcome.correct({"label": truth}, by="agent")
        return truth_of

    truth_of = serve(tickets(rng, 10_000))

    # The auditor works through the audit items: the verdict is whether the answer matches.
    queue = aiguard.ReviewQueue()
    audits = [i for i in queue.pending(FEATURE, limit=10_000) if i.reason == "audit"]
    for item in audits:
        queue.resolve(item.id, {"label": truth_of[item.call_id]}, reviewer="qa")
    print(f"Launch week: 10,000 tickets, {len(audits)} audited.\n")

    # 1. Calibration.
    print(aiguard.calibration(FEATURE).table(), "\n")

    # 2. Threshold tuning, applied through the control file.
    tuning = aiguard.tune(FEATURE, "precision >= 0.95", apply=True)
    print(tuning.table(), "\n")

    # 3. Audits: the error rate of served answers, by confidence band.
    print(aiguard.audit_figures(FEATURE, bins=4).table(), "\n")

    # 4. Segments: the report split by channel, and the segments flagged.
    report = aiguard.report(FEATURE, by="channel", margin=0.02)  # flag gaps over 2 points
    for gap in report.segment_flags[FEATURE]:
        if gap.difference == 0:
            continue
        verdict = "FLAGGED" if gap.flagged else "ok"
        print(f"{gap.figure} {gap.split}={gap.segment}: {gap.value:.1%} vs best "
              f"{gap.best_segment} {gap.best_value:.1%} ({verdict})")  # fmt: skip

    # 5. Drift: the launch week becomes the baseline; next week's tickets are vaguer.
    aiguard.save_baseline(FEATURE)
    time.sleep(0.1)  # a clean cut between the weeks (the demo's "week" lasts a second)
    next_week = time.time()
    time.sleep(0.1)
    after = triage.outcome("I was charged twice for my subscription", "email")
    print(f"\nThreshold now {after.threshold} (from the control file): tuned, no deploy.")
    serve(tickets(rng, 1500, vague=0.5))
    print(aiguard.drift(FEATURE, window=time.time() - next_week, reference="baseline")
          .describe())  # fmt: skip

    result = aiguard.check(FEATURE, since=next_week)
    print()
    for row in result.results:
        verdict = "no data" if row.ok is None else ("pass" if row.ok else "FAIL")
        value = "-" if row.value is None else f"{row.value:.3f}"
        print(f"check {row.target}: {value} {verdict}")
    return 0 if result.ok else 1


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="aiguard-loop-") as tmp:
        try:
            return run(Path(tmp))
        finally:
            aiguard.configure(store=None, control=None)


if __name__ == "__main__":
    sys.exit(main())
