"""How the Salesforce sync turns the client's batches into stored pages: the page size, when the next batch is
asked for, and what happens to batches already fetched when the API budget runs out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.salesforce.client import SalesforceUnavailable
from worker.sync._paging import _chunks, _Prefetched
from worker.sync.report import BudgetSpent, Row


def _batches(sizes: list[int], asked: list[int]) -> Iterator[list[Row]]:
    """Salesforce's batches of `sizes` records, noting in `asked` each batch as it is asked for."""
    number = 0
    for batch, size in enumerate(sizes):
        asked.append(batch)
        yield [{"Id": number + i} for i in range(size)]
        number += size


def _ids(pages: list[list[Row]]) -> list[list[int]]:
    return [[r["Id"] for r in page] for page in pages]


def test_batches_are_regrouped_into_pages_of_the_page_size_and_the_last_page_is_short() -> None:
    pages = list(_chunks(_batches([3, 3, 3, 2], []), 4, after_each=lambda: None))
    assert _ids(pages) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_a_full_page_is_handed_on_before_the_next_batch_is_asked_for() -> None:
    asked: list[int] = []
    pages = _chunks(_batches([2, 2, 2], asked), 4, after_each=lambda: None)
    assert _ids([next(pages)]) == [[0, 1, 2, 3]]
    assert asked == [0, 1]


def test_the_check_runs_after_every_batch_before_the_next_is_asked_for() -> None:
    asked: list[int] = []
    checked: list[list[int]] = []
    list(_chunks(_batches([2, 2, 2], asked), 10, after_each=lambda: checked.append(list(asked))))
    assert checked == [[0], [0, 1], [0, 1, 2]]


def test_when_the_budget_runs_out_the_records_fetched_are_handed_on_then_the_error_and_no_batch_more() -> None:
    asked: list[int] = []

    def budget() -> None:
        if len(asked) == 2:
            raise BudgetSpent("spent")

    pages = _chunks(_batches([3, 3, 3, 3], asked), 4, after_each=budget)
    assert _ids([next(pages), next(pages)]) == [[0, 1, 2, 3], [4, 5]]
    with pytest.raises(BudgetSpent):
        next(pages)
    assert asked == [0, 1]


def test_prefetched_pages_arrive_in_order_and_the_thread_ends_with_them() -> None:
    prefetched = _Prefetched(iter([[1], [2], [3]]))
    with prefetched:
        assert list(prefetched) == [[1], [2], [3]]
    assert not prefetched._thread.is_alive()


def test_an_error_while_fetching_is_raised_after_the_pages_fetched_before_it() -> None:
    def pages() -> Iterator[list[int]]:
        yield [1]
        yield [2]
        raise SalesforceUnavailable("Salesforce query_more failed after 4 attempts")

    received: list[list[int]] = []
    with pytest.raises(SalesforceUnavailable), _Prefetched(pages()) as prefetched:
        for page in prefetched:
            received.append(page)
    assert received == [[1], [2]]


def test_a_consumer_that_stops_early_stops_the_fetching_before_it_reads_everything() -> None:
    asked: list[int] = []
    source = _batches([1] * 50, asked)
    prefetched = _Prefetched(source, depth=2)
    with pytest.raises(RuntimeError, match="store failed"), prefetched:
        for _ in prefetched:
            raise RuntimeError("store failed")
    assert not prefetched._thread.is_alive()  # the client is the caller's alone again
    assert len(asked) <= 4  # the page in hand, two queued and one waiting for room; never the rest
    assert next(source, None) is None  # closed: no batch more can be asked for


def test_a_mark_between_batches_comes_after_the_records_before_it_as_a_page_of_its_own() -> None:
    responses: list[list[Row] | str] = [[{"Id": 0}, {"Id": 1}], [{"Id": 2}], "window 1 done", [{"Id": 3}], "done"]

    items = list(_chunks(responses, 4, after_each=lambda: None))

    assert items == [[{"Id": 0}, {"Id": 1}, {"Id": 2}], "window 1 done", [{"Id": 3}], "done"]


def test_the_budget_is_checked_after_a_mark_too() -> None:
    checked: list[int] = []
    list(_chunks([[{"Id": 0}], "mark", [{"Id": 1}]], 10, after_each=lambda: checked.append(1)))
    assert len(checked) == 3
