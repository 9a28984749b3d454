"""Sentiment of emails and ticket comments, computed on this machine: no text ever leaves it.

Each text is scored once: the cache is keyed by (content hash, model name), so a second cycle, a re-sync of
the same email or the same text in two places costs nothing. The model sits behind `SentimentModel` so
another one can replace VADER without touching the store or the scorecard.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from worker.store import Store

log = logging.getLogger(__name__)

# Quoted replies and signatures would make every answer carry the sentiment of the mail it answers.
_QUOTE_MARKERS = ("\n>", "\nOn ", "\n-----Original Message-----", "\nFrom: ")
_MAX_CHARS = 5000


class SentimentModel(Protocol):
    name: str

    def compound(self, text: str) -> float:
        """-1 (most negative) .. +1 (most positive)."""


class VaderModel:
    name = "vader-3.3.2"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def compound(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def clean_text(text: str) -> str:
    """The writer's own words: cut at the first quoted-reply marker, and bound the length."""
    cut = len(text)
    for marker in _QUOTE_MARKERS:
        at = text.find(marker)
        if at > 0:
            cut = min(cut, at)
    return text[:cut].strip()[:_MAX_CHARS]


def score_pending_texts(store: Store, model: SentimentModel, *, batch: int = 2000) -> int:
    """Give every activity with text a sentiment, scoring only texts never seen before by this model.

    Returns the number of texts the model actually scored (the rest came from the cache).
    """
    scored = 0
    while True:
        rows = store.query(
            "SELECT source, source_id, text FROM activities "
            "WHERE sentiment IS NULL AND text IS NOT NULL AND text != '' LIMIT ?", (batch,))
        if not rows:
            return scored
        hashes = {}
        for row in rows:
            hashes[(row["source"], row["source_id"])] = text_hash(clean_text(row["text"]))
        known = {
            r["text_hash"]: r["compound"]
            for r in store.query(
                f"SELECT text_hash, compound FROM sentiment_cache WHERE model = ? AND text_hash IN "
                f"({', '.join('?' for _ in set(hashes.values()))})",
                (model.name, *set(hashes.values())))
        }
        fresh: dict[str, float] = {}
        for row in rows:
            digest = hashes[(row["source"], row["source_id"])]
            if digest not in known and digest not in fresh:
                fresh[digest] = model.compound(clean_text(row["text"]))
        with store.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO sentiment_cache VALUES (?, ?, ?)",
                             [(digest, model.name, value) for digest, value in fresh.items()])
            values = {**known, **fresh}
            conn.executemany(
                "UPDATE activities SET text_hash = ?, sentiment = ? WHERE source = ? AND source_id = ?",
                [(digest, values[digest], source, source_id)
                 for (source, source_id), digest in hashes.items()])
        scored += len(fresh)
