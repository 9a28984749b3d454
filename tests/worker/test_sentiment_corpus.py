"""Healthbeat's VADER scores exactly as the library does, on a corpus of distinct texts (issue 22).

`VaderModel.compound` skips the library's emoji pass for a text without an emoji (the pass then rebuilds the
text unchanged, a character at a time) and runs the rest of `polarity_scores` as the library writes it; the
scores must be the library's to the last bit, emojis, boosters, negations, "but", "kind of", capitals and
exclamation marks included.
"""

from __future__ import annotations

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from bench.sentiment_corpus import corpus
from worker.scoring.sentiment import VaderModel, _vader_without_emojis, clean_text

EDGES = ["", "   ", "🙂", "great 🙂", "  padded text!!  ", "It is kind of bad", "not bad but not great",
         "NO WAY this is AWESOME!!!", "The export is broken :( and I am sad", "no good", "never ever good",
         "Terrible service?? Really?", "I don't hate it", "😡😡 the outage 😡", "ok\n\n> quoted", "\tgood\t",
         "Extremely happy, but the invoice is wrong.", "kind of", "KIND OF great", "x" * 300]


@pytest.fixture(scope="module")
def analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def test_the_corpus_holds_distinct_texts_only() -> None:
    texts = corpus(3000)
    assert len(set(texts)) == 3000
    assert len({clean_text(t) for t in texts}) > 2900  # cleaning cuts quotes; what is left still differs


def test_the_model_scores_a_corpus_exactly_as_the_library(analyzer: SentimentIntensityAnalyzer) -> None:
    model = VaderModel()
    for text in [clean_text(t) for t in corpus(3000, seed=5)] + corpus(300, seed=6) + EDGES:
        assert model.compound(text) == analyzer.polarity_scores(text)["compound"], text


def test_the_pinned_library_version_takes_the_short_path() -> None:
    assert _vader_without_emojis() is not None
