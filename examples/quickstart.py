"""Quickstart: guard a ticket classifier with a confidence threshold and a fallback chain.

Run it from the repository root::

    python examples/quickstart.py [STORE]

It trains ``TicketClassifier`` on four fifths of ``data/tickets.csv`` and triages the other fifth
as incoming tickets. Answers the model is sure of (score >= 0.8) are served; the others go to
keyword rules, and tickets no keyword matches are queued for human review. One queued ticket is
then resolved, which turns it into a labelled example.

``STORE`` is the SQLite file of the review queue. Without it, ``$AIGUARD_STORE`` is used if set,
else a file in a temporary directory, so that every run starts with an empty queue.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import aiguard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ticket_model import (  # noqa: E402  (needs the sys.path entry above)
    Prediction,
    TicketClassifier,
    keyword_triage,
    load_tickets,
)

FEATURE = "ticket-triage"
THRESHOLD = 0.8


def short(text: str, width: int = 46) -> str:
    """``text`` cut to ``width`` characters, quoted."""
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def run(store: str) -> None:
    """Train the model, triage the held-out tickets through the guard, resolve one review."""
    # 1. Train on every row but each 5th; the 5th rows are the "incoming tickets".
    texts, labels = load_tickets(HERE / "data" / "tickets.csv")
    train = [i for i in range(len(texts)) if i % 5 != 4]
    incoming = [(texts[i], labels[i]) for i in range(len(texts)) if i % 5 == 4]
    classifier = TicketClassifier().fit([texts[i] for i in train], [labels[i] for i in train])
    print(f"Trained on {len(train)} tickets; triaging {len(incoming)} incoming tickets.\n")

    # 2. The review queue, call records and feedback need a durable store; targets say what
    #    "good" means for this feature (the report checks them).
    aiguard.configure(
        store=store,
        features={FEATURE: {"targets": ["acceptance_rate >= 0.85", "p95_latency <= 50 ms"]}},
    )

    # 3. Guard the function that calls the model.
    @aiguard.guard(
        FEATURE,
        confidence="score",
        threshold=THRESHOLD,
        fallback=[aiguard.Rules(keyword_triage), aiguard.HumanReview()],
    )
    def triage(text: str) -> Prediction:
        return classifier.predict(text)

    # 4. Triage every incoming ticket and keep its Outcome.
    results: list[tuple[aiguard.Outcome[Prediction], str, str]] = []
    queued: list[tuple[str, str]] = []  # (review id, true label)
    for ticket, truth in incoming:
        try:
            outcome: aiguard.Outcome[Prediction] = triage.outcome(ticket)
        except aiguard.ReviewPending as pending:  # queued: nothing is served yet
            outcome = pending.outcome
            queued.append((pending.review_id, truth))
        results.append((outcome, ticket, truth))

    # 5. Summary: how many tickets each source answered, and how well.
    print(f"{'source/reason':<22}{'tickets':>8}  accuracy of what was served")
    for source in aiguard.Source:
        for reason in aiguard.Reason:
            group = [
                (o.value, t) for o, _, t in results if (o.source, o.reason) == (source, reason)
            ]
            if not group:
                continue
            right = [value.label == truth for value, truth in group if value is not None]
            score = (
                f"{sum(right)}/{len(right)} = {sum(right) / len(right):.0%}" if right else "queued"
            )
            print(f"{f'{source}/{reason}':<22}{len(group):>8}  {score}")

    # 6. One example per source: what the model said, which fallbacks failed, what was served.
    print("\nExamples:")
    for source in aiguard.Source:
        example = next(((o, t, truth) for o, t, truth in results if o.source is source), None)
        if example is None:
            continue
        o, ticket, truth = example
        sign = "<" if o.reason is aiguard.Reason.LOW_CONFIDENCE else ">="
        steps = [f"model {o.model_result.label} {o.confidence:.2f} {sign} {o.threshold}"]
        steps += [f"{a.handler} raised {type(a.error).__name__}" for a in o.attempts if a.failed]
        if o.source is aiguard.Source.HUMAN:
            steps.append("queued for review")
        else:
            steps.append("served" if o.served else f"{o.source} answered {o.value.label}")
        print(f"  {o.source:<6} {short(ticket)}  truth: {truth}")
        print(f"         {' -> '.join(steps)}")

    # 7. A reviewer answers the first queued ticket (here, with its true label): the answer is
    #    stored with the call's arguments as a labelled example.
    queue = aiguard.ReviewQueue()  # the configured store
    print(f"\nReview queue: {queue.count(FEATURE)} pending")
    if queued:
        review_id, truth = queued[0]
        queue.resolve(review_id, truth, reviewer="dana", note="checked by hand")
        print(f"Resolved 1 item as {truth!r}: {queue.count(FEATURE)} pending now.")
        print("Labelled examples (arguments -> answer):")
        for item in queue.resolved(FEATURE)[-3:]:
            print(f"  {item.arguments} -> {item.answer!r}")

    # 8. The agents who handle the tickets say whether the label was right: feedback on each
    #    answered ticket (accepted, or corrected with the right label), then the report.
    for outcome, _ticket, truth in results:
        if outcome.source is aiguard.Source.HUMAN:
            continue
        if outcome.value.label == truth:
            outcome.accept(by="agent")
        else:
            outcome.correct(truth, by="agent")
    report = aiguard.report(FEATURE, by="source")
    print("\nReport (from call records and feedback):")
    for line in report.to_text().splitlines():
        print(f"  {line}")
    path = "aiguard-report.html"  # in the current directory: open it in a browser
    with open(path, "w", encoding="utf-8") as out:
        out.write(report.to_html())
    print(f"HTML report with plots: {os.path.abspath(path)}")


def main(argv: list[str]) -> int:
    """Run with the store given on the command line, in ``$AIGUARD_STORE``, or in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="aiguard-quickstart-") as tmp:
        store = argv[1] if len(argv) > 1 else os.environ.get("AIGUARD_STORE") or ""
        try:
            run(store or os.path.join(tmp, "aiguard.db"))
        finally:
            aiguard.configure(store=None)  # close the store before the directory goes
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
