"""A small support-ticket classifier for the quickstart example, in plain numpy.

``TicketClassifier`` is a multinomial logistic regression (softmax) over unigram and bigram
counts, trained by full-batch gradient descent with L2 regularisation. It trains on the ~600
tickets in ``data/tickets.csv`` in a fraction of a second and is fully deterministic.

``keyword_triage`` is a rule-based baseline: it raises ``LookupError`` when no keyword matches,
so that a fallback chain can hand the ticket on to the next handler (e.g. the model).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Prediction:
    """A predicted label and its score (a probability-like confidence in [0, 1])."""

    label: str
    score: float


def load_tickets(path: str | Path) -> tuple[list[str], list[str]]:
    """Read a ``text,label`` CSV file and return the texts and labels as two lists."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], [row["label"] for row in rows]


def tokenize(text: str) -> list[str]:
    """Return the lower-cased unigrams and bigrams (``"word1 word2"``) of ``text``."""
    words = TOKEN_RE.findall(text.lower())
    return words + [f"{a} {b}" for a, b in pairwise(words)]


class TicketClassifier:
    """Softmax regression over a unigram + bigram vocabulary, trained with gradient descent."""

    def __init__(self, epochs: int = 300, learning_rate: float = 5.0, l2: float = 1e-4) -> None:
        """Configure training: number of full-batch steps, step size and L2 penalty."""
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.l2 = l2
        self.labels: list[str] = []
        self.vocabulary: dict[str, int] = {}
        self.weights: NDArray[np.float64] = np.zeros((0, 0))
        self.bias: NDArray[np.float64] = np.zeros(0)

    def _features(self, texts: list[str]) -> NDArray[np.float64]:
        """Turn texts into a (n_texts, n_features) matrix of L2-normalised n-gram counts."""
        matrix = np.zeros((len(texts), len(self.vocabulary)))
        for row, text in enumerate(texts):
            for token in tokenize(text):
                column = self.vocabulary.get(token)
                if column is not None:
                    matrix[row, column] += 1.0
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix /= np.maximum(norms, 1e-12)
        return matrix

    def _softmax(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return the class probabilities for each row of ``features``."""
        logits = features @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities: NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
        return probabilities

    def fit(self, texts: list[str], labels: list[str]) -> TicketClassifier:
        """Learn the vocabulary and the weights from ``texts`` and their ``labels``."""
        self.labels = sorted(set(labels))
        tokens = sorted({token for text in texts for token in tokenize(text)})
        self.vocabulary = {token: index for index, token in enumerate(tokens)}
        features = self._features(texts)
        targets = np.eye(len(self.labels))[[self.labels.index(label) for label in labels]]
        self.weights = np.zeros((len(self.vocabulary), len(self.labels)))
        self.bias = np.zeros(len(self.labels))
        for _ in range(self.epochs):
            error = (self._softmax(features) - targets) / len(texts)
            self.weights -= self.learning_rate * (features.T @ error + self.l2 * self.weights)
            self.bias -= self.learning_rate * error.sum(axis=0)
        return self

    def predict_proba(self, text: str) -> dict[str, float]:
        """Return the probability of each label for ``text``."""
        probabilities = self._softmax(self._features([text]))[0]
        return {label: float(p) for label, p in zip(self.labels, probabilities, strict=True)}

    def predict(self, text: str) -> Prediction:
        """Return the most likely label for ``text``, scored by its probability."""
        probabilities = self.predict_proba(text)
        label = max(probabilities, key=probabilities.__getitem__)
        return Prediction(label=label, score=probabilities[label])


KEYWORDS: dict[str, list[str]] = {
    "billing": ["invoice", "refund", "charged", "billed", "payment", "card", "price"],
    "bug": ["crash", "error", "bug", "freezes", "blank screen", "exception", "times out"],
    "account": ["password", "log in", "login", "locked out", "two-factor", "username"],
    "shipping": ["parcel", "package", "delivery", "delivered", "tracking", "courier"],
}


def keyword_triage(text: str) -> Prediction:
    """Pick the label whose keywords occur most often in ``text`` (ties: first in KEYWORDS).

    Rules are either applied or not, so the score is always 1.0. Raises
    ``LookupError("no keyword matched")`` when no keyword occurs at all.
    """
    lowered = text.lower()
    hits = {label: sum(lowered.count(word) for word in words) for label, words in KEYWORDS.items()}
    label = max(hits, key=hits.__getitem__)
    if hits[label] == 0:
        raise LookupError("no keyword matched")
    return Prediction(label=label, score=1.0)
