"""Sentiment of emails and ticket comments, computed on this machine: no text ever leaves it.

Each text is scored once: the cache is keyed by (content hash, model name), so a second cycle, a re-sync of
the same email or the same text in two places costs nothing. The model sits behind `SentimentModel` so
another one can replace VADER without touching the store or the scorecard.

A backfill brings hundreds of thousands of texts, and VADER is pure Python: one core takes a long while over
them. So a call with more than a page of new texts scores them in worker processes as well, while a
cycle's usual handful stays in this process, since starting workers costs more than it saves there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

if TYPE_CHECKING:  # worker processes import this module; they need no store
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
    # A copy in another process scores exactly as this one does, so worker processes may share the work.
    process_safe: ClassVar[bool] = True

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()
        self._emojis = self._analyzer.emojis.keys()
        self._without_emojis = _vader_without_emojis()

    def compound(self, text: str) -> float:
        if self._without_emojis is not None and self._emojis.isdisjoint(text):
            return float(self._without_emojis(self._analyzer, text.strip())["compound"])
        return float(self._analyzer.polarity_scores(text)["compound"])

    def __reduce__(self) -> tuple[type[VaderModel], tuple[()]]:
        """A worker process builds its own analyzer, which is quick, rather than receiving the lexicon pickled."""
        return (VaderModel, ())


def _vader_without_emojis() -> Callable[[Any, str], dict[str, float]] | None:
    """`polarity_scores` less its first step, for a text with no emoji: that step rebuilds the text a character
    at a time to spell out emojis (measured: BENCHMARKS.md, 'Figures behind the code'), and
    without an emoji the text it builds is the text. The rest is the library's own code, line for line, so the
    scores are the library's (tests/worker/test_sentiment_corpus.py compares them); for another version of the
    library, None: its own `polarity_scores` then does everything."""
    from importlib.metadata import version

    if version("vaderSentiment") != "3.3.2":
        return None
    from vaderSentiment.vaderSentiment import BOOSTER_DICT, SentiText

    def scores(analyzer: Any, text: str) -> dict[str, float]:
        sentitext = SentiText(text)
        sentiments: list[float] = []
        words_and_emoticons = sentitext.words_and_emoticons
        for i, item in enumerate(words_and_emoticons):
            valence = 0
            if item.lower() in BOOSTER_DICT:
                sentiments.append(valence)
                continue
            if (i < len(words_and_emoticons) - 1 and item.lower() == "kind"
                    and words_and_emoticons[i + 1].lower() == "of"):
                sentiments.append(valence)
                continue
            sentiments = analyzer.sentiment_valence(valence, sentitext, item, i, sentiments)
        sentiments = analyzer._but_check(words_and_emoticons, sentiments)
        return cast(dict[str, float], analyzer.score_valence(sentiments, text))

    return scores


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


def available_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Parallelism:
    """When texts are scored in worker processes, and how the work is cut.

    Workers start once a call has met `min_fresh` new texts and its last page was full (more are likely to
    follow), so a cycle's usual handful never pays for them. They start with 'spawn', since the worker runs
    threads (HTTP server, scheduler) that `fork` would copy mid-lock; a spawned process re-imports the main
    module, which makes its start cheap under a light main and several times dearer under the `healthbeat`
    script (measured: BENCHMARKS.md, 'Figures behind the code'; 'forkserver' costs the same on Python 3.11,
    whose fork server does not preload the main module, and keeps a server process for the worker's life).
    This process keeps scoring meanwhile (`help_in_main`): it scores every page alone until a worker is up,
    then every chunk no worker has taken while it waits for a page, so a slow start costs CPU, not waiting.
    `workers` counts processes besides this one: on 2 cores, one.
    """

    workers: int = field(default_factory=lambda: available_cores() - 1)
    min_fresh: int = 2000
    chunk: int = 250
    help_in_main: bool = True


@dataclass
class PoolCounters:
    """What the worker processes have done since this process started (for tests and operators)."""

    pools_started: int = 0
    chunks_in_workers: int = 0
    chunks_in_main: int = 0


POOL_COUNTERS = PoolCounters()

_PAGE_SQL = ("SELECT rowid, text FROM activities WHERE rowid > ? AND sentiment IS NULL AND text IS NOT NULL "
             "AND text != '' ORDER BY rowid LIMIT ?")


def score_pending_texts(store: Store, model: SentimentModel, *, batch: int = 2000,
                        parallel: Parallelism | None = None) -> int:
    """Give every activity with text a sentiment, scoring only texts never seen before by this model.

    Pages go by rowid, so each pending row is read once per call however many there are. Each page commits
    its cache rows and its activities' updates together: an interrupted call loses at most the pages in
    flight, and the next call takes them up. The next page is read and handed to the workers before a page
    is written, so the workers score while this process reads, hashes and writes.

    Returns the number of texts the model actually scored (the rest came from the cache).
    """
    scorer = _Scorer(model, parallel or Parallelism())
    scored = 0
    after = 0
    previous: _Page | None = None
    try:
        while True:
            rows: list[tuple[int, str]] = store.conn.execute(_PAGE_SQL, (after, batch)).fetchall()
            page = _read_page(store, model, rows, previous, scorer, full=len(rows) == batch) if rows else None
            if previous is not None:
                values = _write_page(store, model, previous)
                scored += len(previous.fresh)
                if page is not None:
                    page.known.update({digest: values[digest] for digest in page.borrowed})
            if page is None:
                return scored
            after = rows[-1][0]
            previous = page
    finally:
        scorer.close()


@dataclass
class _Page:
    updates: list[tuple[int, str]]  # (rowid, digest) of every row on the page
    known: dict[str, float]  # digest -> value, from the cache (and, once written, from the page before)
    fresh: list[str]  # digests never scored by this model, in the order of `scoring`
    borrowed: set[str]  # digests the page before is scoring
    scoring: _Scoring


def _read_page(store: Store, model: SentimentModel, rows: list[tuple[int, str]], previous: _Page | None,
               scorer: _Scorer, *, full: bool) -> _Page:
    updates: list[tuple[int, str]] = []
    texts: dict[str, str] = {}
    for rowid, text in rows:
        cleaned = clean_text(text)
        digest = text_hash(cleaned)
        updates.append((rowid, digest))
        texts.setdefault(digest, cleaned)
    known = {digest: float(value) for digest, value in store.conn.execute(
        "SELECT text_hash, compound FROM sentiment_cache WHERE model = ? "
        "AND text_hash IN (SELECT value FROM json_each(?))", (model.name, json.dumps(list(texts))))}
    in_flight = set(previous.fresh) if previous is not None else set()
    borrowed = {digest for digest in texts if digest not in known and digest in in_flight}
    fresh = [digest for digest in texts if digest not in known and digest not in in_flight]
    return _Page(updates, known, fresh, borrowed, scorer.submit([texts[d] for d in fresh], full_page=full))


def _write_page(store: Store, model: SentimentModel, page: _Page) -> dict[str, float]:
    """Commit one page; returns the values of its fresh texts, which the next page may share."""
    fresh = dict(zip(page.fresh, page.scoring.result(), strict=True))
    values = {**page.known, **fresh}
    with store.transaction() as conn:
        conn.executemany("INSERT OR IGNORE INTO sentiment_cache VALUES (?, ?, ?)",
                         [(digest, model.name, value) for digest, value in fresh.items()])
        conn.executemany("UPDATE activities SET text_hash = ?, sentiment = ? WHERE rowid = ?",
                         [(digest, values[digest], rowid) for rowid, digest in page.updates])
    return fresh


class _Scoring:
    """One page's new texts, cut into chunks that a worker process or this process scores."""

    def __init__(self, scorer: _Scorer, chunks: list[list[str]], futures: list[Future[list[float]]] | None) -> None:
        self._scorer = scorer
        self._chunks = chunks
        self._futures = futures
        self._values: list[list[float] | None] = [None] * len(chunks)

    def steal_one(self) -> bool:
        """Score here the last chunk no worker has taken yet (workers take from the front)."""
        if self._futures is None:
            return False
        for at in reversed(range(len(self._chunks))):
            if self._values[at] is None and self._futures[at].cancel():
                self._values[at] = self._scorer.score_here(self._chunks[at])
                POOL_COUNTERS.chunks_in_main += 1
                return True
        return False

    def result(self) -> list[float]:
        self._scorer.done(self)
        if self._futures is None:
            return [value for chunk in self._chunks for value in self._scorer.score_here(chunk)]
        futures = self._futures
        while any(self._values[at] is None and not futures[at].done() for at in range(len(futures))):
            if not self._scorer.score_untaken(self):
                wait([f for at, f in enumerate(futures) if self._values[at] is None])
                break
        out: list[float] = []
        for at, future in enumerate(futures):
            chunk = self._values[at]
            if chunk is None:
                chunk = self._scorer.collect(future, f"a chunk of {len(self._chunks[at])} texts")
                POOL_COUNTERS.chunks_in_workers += 1
            out.extend(chunk)
        return out


class _Scorer:
    """Scores each page's new texts here, or in worker processes started at most once per call.

    With workers, this process shares the work too: it scores every chunk no worker has taken while it waits
    for a page, and all of them until the first worker is up, so a slow start costs CPU but no waiting.
    """

    def __init__(self, model: SentimentModel, parallel: Parallelism) -> None:
        self._model = model
        self._parallel = parallel
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future[int] | None = None  # done once a worker process has started and taken its model
        self._up = False
        self._live: list[_Scoring] = []
        self._started = 0.0
        self._fresh = 0  # new texts met so far in this call
        # A daemonic process (a multiprocessing child) may not start processes of its own.
        self._can_pool = (parallel.workers >= 1 and getattr(model, "process_safe", False) is True
                          and not multiprocessing.current_process().daemon)

    def submit(self, texts: list[str], *, full_page: bool) -> _Scoring:
        size = max(1, self._parallel.chunk)
        chunks = [texts[at:at + size] for at in range(0, len(texts), size)]
        self._fresh += len(texts)
        if self._pool is None and self._can_pool and full_page and self._fresh >= self._parallel.min_fresh:
            self._start()
        futures = None
        if chunks and self._pool is not None and self._workers_ready():
            futures = [self._pool.submit(_score_chunk, chunk) for chunk in chunks]
        scoring = _Scoring(self, chunks, futures)
        self._live.append(scoring)
        return scoring

    def _workers_ready(self) -> bool:
        if self._ready is None:
            return False
        if not self._parallel.help_in_main:
            return True
        if not self._ready.done():
            return False
        if not self._up:
            self.collect(self._ready, "starting")  # a worker that could not start says why here
            self._up = True
            log.info("sentiment: first worker process up after %.2f s", time.perf_counter() - self._started)
        return True

    def score_here(self, texts: list[str]) -> list[float]:
        return [self._model.compound(text) for text in texts]

    def score_untaken(self, waiting: _Scoring) -> bool:
        """Score one chunk no worker has taken, the waiting page's first; False when there is none."""
        if not self._parallel.help_in_main:
            return False
        return any(scoring.steal_one() for scoring in (waiting, *reversed(self._live)))

    def collect(self, future: Future[Any], doing: str) -> Any:
        try:
            return future.result()
        except Exception as exc:
            exc.add_note(f"raised in a sentiment worker process ({self._model.name}, {doing})")
            raise

    def done(self, scoring: _Scoring) -> None:
        self._live.remove(scoring)

    def _start(self) -> None:
        self._pool = ProcessPoolExecutor(self._parallel.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker, initargs=(self._model,))
        self._ready = self._pool.submit(os.getpid)
        self._started = time.perf_counter()
        POOL_COUNTERS.pools_started += 1
        log.info("sentiment: starting %d worker process(es)", self._parallel.workers)

    def close(self) -> None:
        """Stop the workers and wait for them: nothing outlives the call."""
        if self._pool is None:
            return
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        log.info("sentiment: worker processes stopped after %.1f s", time.perf_counter() - self._started)


_worker_model: SentimentModel | None = None


def _init_worker(model: SentimentModel) -> None:
    """Runs first in each worker process: the calling process alone decides what Ctrl-C means."""
    global _worker_model  # one model per worker process, set once
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_model = model


def _score_chunk(texts: Sequence[str]) -> list[float]:
    model = _worker_model
    if model is None:
        raise RuntimeError("sentiment worker process started without a model")
    return [model.compound(text) for text in texts]
