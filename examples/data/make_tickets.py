"""Generate ``tickets.csv``: a small synthetic dataset of customer support tickets.

Each row is ``text,label`` with a label from ``billing``, ``bug``, ``account`` or ``shipping``.
Tickets are built from per-class templates and vocabulary, with deliberate noise so that a
model trained on them is confident on most tickets but unsure on a good share of them:

* clean tickets use the vocabulary of their own class only;
* mixed tickets borrow a second class's vocabulary (the label is the main complaint);
* vague tickets ("it doesn't work, please help") carry almost no signal at all.

The output is deterministic (``SEED = 20261124``, stdlib ``random`` only), so running the
script twice produces a byte-identical file. To regenerate it::

    python examples/data/make_tickets.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SEED = 20261124
N_TICKETS = 600
SHARE_MIXED = 0.25
SHARE_VAGUE = 0.10
OUTPUT = Path(__file__).with_name("tickets.csv")

# Words and phrases that fill the {thing}/{problem} slots of each class's templates.
VOCAB: dict[str, dict[str, list[str]]] = {
    "billing": {
        "thing": [
            "invoice",
            "refund",
            "payment",
            "subscription",
            "credit card",
            "receipt",
            "monthly plan",
            "bill",
            "discount code",
            "VAT number",
        ],
        "problem": [
            "I was charged twice",
            "the amount is wrong",
            "the refund never arrived",
            "my card was declined",
            "I was billed after cancelling",
            "the price went up without notice",
            "the invoice shows the wrong company",
        ],
    },
    "bug": {
        "thing": [
            "app",
            "dashboard",
            "export button",
            "search page",
            "mobile app",
            "upload form",
            "report screen",
            "API",
            "sync",
            "notifications",
        ],
        "problem": [
            "it crashes on startup",
            "it shows a blank screen",
            "I get an error 500",
            "the page freezes",
            "it throws an exception",
            "the button does nothing",
            "it times out after the last update",
        ],
    },
    "account": {
        "thing": [
            "password",
            "login",
            "email address",
            "username",
            "two-factor code",
            "profile",
            "account",
            "team members",
            "sign-in link",
        ],
        "problem": [
            "I can't log in",
            "the reset link expired",
            "I am locked out",
            "I want to delete my account",
            "I need to change my email",
            "my two-factor code is rejected",
            "I can't add a new user",
        ],
    },
    "shipping": {
        "thing": [
            "parcel",
            "package",
            "order",
            "delivery",
            "tracking number",
            "courier",
            "shipment",
            "return label",
            "box",
        ],
        "problem": [
            "it never arrived",
            "it was delivered to the wrong address",
            "the tracking has not updated",
            "it arrived damaged",
            "the courier lost it",
            "it is stuck in customs",
            "it is a week late",
        ],
    },
}

TEMPLATES = [
    "{problem}. It's about my {thing}.",
    "{problem} - can you check my {thing}?",
    "Problem with my {thing}: {problem}.",
    "{problem}. Please look into the {thing} asap.",
    "My {thing} again... {problem}",
    "Urgent: {problem} ({thing})",
    "{problem}. This is the second time with the {thing}!",
    "Could someone help? {problem}, regarding the {thing}.",
]

MIXED_TEMPLATES = [
    "{problem}, and also my {other_thing} looks off.",
    "About the {thing} and the {other_thing}: {problem}.",
    "{problem}. Not sure if it's related to the {other_thing}, {other_problem}?",
    "{other_problem} but mostly {problem} with my {thing}.",
]

VAGUE = [
    "it doesn't work, please help",
    "nothing works since yesterday",
    "I have a problem, can someone call me?",
    "please fix this",
    "still waiting for an answer to my last email",
    "this is not what I expected",
    "can you help me with my issue?",
    "something is wrong, please check",
    "is anyone there?",
    "same problem as last week",
    "I need help with {thing}",
    "question about my {thing}",
]

OPENERS = ["", "", "", "Hi, ", "Hello, ", "Hi team, ", "Dear support, "]
CLOSERS = ["", "", "", " Thanks.", " Thanks in advance!", " Regards, Sam", " Please help."]


def make_ticket(rng: random.Random, label: str) -> str:
    """Return one ticket text for ``label``: clean, mixed with another class, or vague."""
    own = VOCAB[label]
    roll = rng.random()
    if roll < SHARE_VAGUE:
        body = rng.choice(VAGUE).format(thing=rng.choice(own["thing"]))
    elif roll < SHARE_VAGUE + SHARE_MIXED:
        other = VOCAB[rng.choice([name for name in VOCAB if name != label])]
        body = rng.choice(MIXED_TEMPLATES).format(
            thing=rng.choice(own["thing"]),
            problem=rng.choice(own["problem"]),
            other_thing=rng.choice(other["thing"]),
            other_problem=rng.choice(other["problem"]),
        )
    else:
        body = rng.choice(TEMPLATES).format(
            thing=rng.choice(own["thing"]), problem=rng.choice(own["problem"])
        )
    if body[-1] not in ".!?":
        body += "."
    opener = rng.choice(OPENERS)
    if not opener:
        body = body[0].upper() + body[1:]
    return opener + body + rng.choice(CLOSERS)


def main() -> None:
    """Write ``N_TICKETS`` tickets, balanced across labels and shuffled, to ``OUTPUT``."""
    rng = random.Random(SEED)
    labels = sorted(VOCAB)
    rows = [
        (make_ticket(rng, labels[i % len(labels)]), labels[i % len(labels)])
        for i in range(N_TICKETS)
    ]
    rng.shuffle(rows)
    with OUTPUT.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} tickets to {OUTPUT}")


if __name__ == "__main__":
    main()
