"""`score_pending_texts`: every activity with text gets a sentiment, each distinct text is scored once, a
crash loses no committed page, and worker processes score exactly as this process does, only when a call
brings enough new texts to pay for starting them."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from worker.scoring.sentiment import (
    POOL_COUNTERS,
    Parallelism,
    VaderModel,
    clean_text,
    score_pending_texts,
    text_hash,
)
from worker.store import Store

IN_PROCESS = Parallelism(workers=0)
# Workers for any full page, and every chunk left to them, so the test exercises the workers themselves.
WORKERS_ONLY = Parallelism(workers=2, min_fresh=1, chunk=7, help_in_main=False)

MOODS = ("Thanks, the rollout went really well and the team loves it.", "Please send the invoice for May.",
         "This is broken again and nobody answers. Terrible.", "Great call today, excited about the roadmap!",
         "We are disappointed with the outage last night.")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "sentiment.db") as store:
        yield store


@pytest.fixture(autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    yield
    assert multiprocessing.active_children() == [], "a sentiment worker process outlived its call"


def add(store: Store, source_id: str, text: str | None, sentiment: float | None = None) -> None:
    with store.transaction() as conn:
        conn.execute("INSERT INTO activities (source, source_id, kind, account_id, occurred_at, direction, text, "
                     "sentiment) VALUES ('salesforce', ?, 'email', 'acc', '2025-06-01T00:00:00Z', 'in', ?, ?)",
                     (source_id, text, sentiment))


def texts(count: int) -> list[str]:
    return [f"{MOODS[n % len(MOODS)]} Ticket {n}." for n in range(count)]


def sentiments(store: Store) -> dict[str, float | None]:
    return {row["source_id"]: row["sentiment"]
            for row in store.query("SELECT source_id, sentiment FROM activities WHERE text IS NOT NULL")}


class CountingModel:
    """VADER that remembers what it was asked (in this process only: it does not claim to be process-safe)."""

    name = "vader-3.3.2"

    def __init__(self, vader: VaderModel) -> None:
        self.vader = vader
        self.asked: list[str] = []

    def compound(self, text: str) -> float:
        self.asked.append(text)
        return self.vader.compound(text)


class FailingModel:
    """Fails on one text; picklable and process-safe, so the failure happens inside a worker process."""

    name = "failing-1"
    process_safe: ClassVar[bool] = True

    def compound(self, text: str) -> float:
        if "poison" in text:
            raise ValueError(f"cannot score {text!r}")
        return 0.5


# --- paging and caching -------------------------------------------------------------------------------------

def test_rows_added_with_interleaved_ids_are_all_scored(db: Store, vader: VaderModel) -> None:
    corpus = texts(23)
    for n in range(0, 23, 2):  # key order differs from insertion order, and pages cross both
        add(db, f"z{n:03d}", corpus[n])
    add(db, "m-done", "Already scored long ago.", sentiment=0.25)
    add(db, "m-empty", "")
    for n in range(1, 23, 2):
        add(db, f"a{n:03d}", corpus[n])

    score_pending_texts(db, vader, batch=4, parallel=IN_PROCESS)

    got = sentiments(db)
    expected = {(f"z{n:03d}" if n % 2 == 0 else f"a{n:03d}"): vader.compound(clean_text(corpus[n]))
                for n in range(23)}
    assert {k: v for k, v in got.items() if k.startswith(("a", "z"))} == expected
    assert got["m-done"] == 0.25


def test_each_distinct_text_is_scored_once_even_across_pages(db: Store, vader: VaderModel) -> None:
    model = CountingModel(vader)
    for n in range(12):  # the same three texts on every page, and on neighbouring pages
        add(db, f"e{n:03d}", MOODS[n % 3])

    scored = score_pending_texts(db, model, batch=2, parallel=IN_PROCESS)

    assert scored == 3
    assert sorted(model.asked) == sorted(MOODS[:3])
    assert None not in sentiments(db).values()


def test_a_second_call_scores_nothing(db: Store, vader: VaderModel) -> None:
    for n, text in enumerate(texts(9)):
        add(db, f"e{n:03d}", text)
    score_pending_texts(db, vader, batch=4, parallel=IN_PROCESS)

    assert score_pending_texts(db, vader, batch=4, parallel=IN_PROCESS) == 0


def test_a_text_known_to_the_cache_is_not_scored_again(db: Store, vader: VaderModel) -> None:
    add(db, "first", MOODS[0])
    score_pending_texts(db, vader, parallel=IN_PROCESS)
    add(db, "again", f"{MOODS[0]}\nOn Monday, Dana wrote:\n> the quoted mail")  # same words once cleaned
    model = CountingModel(vader)

    assert score_pending_texts(db, model, parallel=IN_PROCESS) == 0
    assert model.asked == []
    assert sentiments(db)["again"] == sentiments(db)["first"]
    assert db.scalar("SELECT text_hash FROM activities WHERE source_id = 'again'") == text_hash(MOODS[0])


def test_an_interrupted_call_keeps_its_committed_pages_and_the_next_call_finishes(db: Store) -> None:
    for n in range(10):
        add(db, f"e{n:03d}", "poison" if n == 7 else f"fine {n}")
    model = FailingModel()

    with pytest.raises(ValueError, match="poison"):
        score_pending_texts(db, model, batch=3, parallel=IN_PROCESS)

    committed = ["e000", "e001", "e002", "e003", "e004", "e005"]  # the two pages before the failing one
    assert [k for k, v in sentiments(db).items() if v is not None] == committed
    assert db.scalar("SELECT count(*) FROM sentiment_cache") == len(committed)
    with db.transaction() as conn:
        conn.execute("UPDATE activities SET text = 'cured' WHERE source_id = 'e007'")
    assert score_pending_texts(db, model, batch=3, parallel=IN_PROCESS) == 4
    assert None not in sentiments(db).values()


# --- worker processes ---------------------------------------------------------------------------------------

def test_worker_processes_score_exactly_as_this_process_does(tmp_path: Path, vader: VaderModel) -> None:
    corpus = texts(60)
    results = []
    for name, parallel in (("here", IN_PROCESS), ("workers", WORKERS_ONLY)):
        with Store(tmp_path / f"{name}.db") as store:
            for n, text in enumerate(corpus):
                add(store, f"e{n:03d}", text)
            before = POOL_COUNTERS.chunks_in_workers
            scored = score_pending_texts(store, vader, batch=20, parallel=parallel)
            results.append((scored, sentiments(store), POOL_COUNTERS.chunks_in_workers - before))

    (here, here_values, _), (there, there_values, chunks) = results
    assert chunks > 0, "no chunk was scored in a worker process"
    assert there == here == 60
    assert there_values == here_values


def test_the_pool_is_started_once_per_call_and_scores_each_text_once(db: Store, vader: VaderModel) -> None:
    for n in range(45):
        add(db, f"e{n:03d}", MOODS[n % 5] if n < 30 else f"new text {n}")
    started = POOL_COUNTERS.pools_started

    scored = score_pending_texts(db, vader, batch=10, parallel=WORKERS_ONLY)

    assert POOL_COUNTERS.pools_started == started + 1
    assert scored == 5 + 15
    assert score_pending_texts(db, vader, batch=10, parallel=WORKERS_ONLY) == 0


def test_a_cycle_with_few_new_texts_starts_no_worker_process(db: Store, vader: VaderModel) -> None:
    for n, text in enumerate(texts(10)):
        add(db, f"e{n:03d}", text)
    started = POOL_COUNTERS.pools_started

    score_pending_texts(db, vader, parallel=Parallelism(workers=4))

    assert POOL_COUNTERS.pools_started == started


def test_new_texts_that_fit_in_one_page_start_no_worker_process(db: Store, vader: VaderModel) -> None:
    for n, text in enumerate(texts(30)):
        add(db, f"e{n:03d}", text)
    started = POOL_COUNTERS.pools_started

    score_pending_texts(db, vader, batch=40, parallel=Parallelism(workers=1, min_fresh=10))

    assert POOL_COUNTERS.pools_started == started


def test_a_model_that_does_not_declare_itself_process_safe_stays_in_this_process(
        db: Store, vader: VaderModel) -> None:
    for n, text in enumerate(texts(40)):
        add(db, f"e{n:03d}", text)
    started = POOL_COUNTERS.pools_started

    score_pending_texts(db, CountingModel(vader), batch=10, parallel=WORKERS_ONLY)

    assert POOL_COUNTERS.pools_started == started


def test_a_failure_in_a_worker_process_surfaces_with_its_cause(db: Store) -> None:
    for n in range(30):
        add(db, f"e{n:03d}", "poison" if n == 25 else f"fine {n}")

    with pytest.raises(ValueError, match="cannot score 'poison'") as raised:
        score_pending_texts(db, FailingModel(), batch=10, parallel=WORKERS_ONLY)

    assert any("sentiment worker process" in note for note in raised.value.__notes__)
    assert "compound" in str(raised.value.__cause__), "the worker's traceback is not chained"
    assert db.scalar("SELECT count(*) FROM activities WHERE sentiment IS NOT NULL") == 20  # pages 1 and 2


def test_this_process_sharing_the_work_with_a_worker_changes_no_value(tmp_path: Path, vader: VaderModel) -> None:
    corpus = texts(400)
    results = []
    for name, parallel in (("here", IN_PROCESS), ("shared", Parallelism(workers=1, min_fresh=1, chunk=5))):
        with Store(tmp_path / f"{name}.db") as store:
            for n, text in enumerate(corpus):
                add(store, f"e{n:03d}", text)
            results.append((score_pending_texts(store, vader, batch=40, parallel=parallel), sentiments(store)))

    assert results[1] == results[0]
