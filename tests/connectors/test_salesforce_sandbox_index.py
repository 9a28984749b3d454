"""The sandbox answers SystemModstamp range queries from an index, with exactly the rows a full scan gives.

Each test brings the org into a state through the sandbox's mutation paths (data API inserts, updates and
deletes, sObject Collections updates over HTTPS), asks a battery of queries over HTTPS and compares every
answer, rows and their order, with the evaluator run over every record: what the sandbox answered before it
had an index.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.salesforce.sandbox import SalesforceSandbox, _StampIndex
from connectors.salesforce.schema import format_datetime
from connectors.salesforce.soql import BoundQuery, compile_query
from tests.connectors.conftest import SfClock

V = "/services/data/v59.0"
MakeHttp = Callable[[SalesforceSandbox], tuple[httpx.Client, dict[str, str]]]
FIELDS = "Id, Subject, Incoming, IsDeleted, SystemModstamp"
ENDPOINTS = ("query", "queryAll")


def literal(stamp: str) -> str:
    """A stored stamp (``...T12:00:00.000+0000``) as a SOQL literal that survives a URL: ``...T12:00:00.000Z``."""
    return stamp[:23] + "Z"


def back_dated(rng: random.Random, days: int = 30) -> str:
    """A stamp in the month before the test clock's start, on a whole minute so that stamps often tie."""
    return format_datetime(datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(days * 24 * 60)))


def load_emails(sandbox: SalesforceSandbox, rng: random.Random, count: int) -> list[str]:
    """Records inserted out of stamp order, one in five sharing a single stamp (a bulk update's tie)."""
    tie = back_dated(rng)
    return [
        sandbox.insert(
            "EmailMessage",
            {
                "Subject": f"S{rng.randrange(8)}",  # few values: ORDER BY Subject leaves ties to insertion order
                "Incoming": rng.random() < 0.5,
                "SystemModstamp": tie if n % 5 == 0 else back_dated(rng),
            },
        )
        for n in range(count)
    ]


def battery(sandbox: SalesforceSandbox) -> list[str]:
    """Queries around the stamps the records hold now: a shared stamp, the middle, the newest, none."""
    records = sorted(
        sandbox.records("EmailMessage", include_deleted=True), key=lambda r: (r["SystemModstamp"], r["Id"])
    )
    counts = Counter(r["SystemModstamp"] for r in records)
    tie = max(counts, key=lambda stamp: (counts[stamp], stamp))
    tied = [r for r in records if r["SystemModstamp"] == tie]
    cursors = [(tie, tied[len(tied) // 2]["Id"])] + [
        (records[i]["SystemModstamp"], records[i]["Id"]) for i in (len(records) // 2, len(records) * 9 // 10, -5, -1)
    ]
    middle, late = (literal(records[i]["SystemModstamp"]) for i in (len(records) // 2, len(records) * 9 // 10))
    newest = literal(records[-1]["SystemModstamp"])
    select = f"SELECT {FIELDS} FROM EmailMessage"
    queries = [
        f"{select} WHERE (SystemModstamp > {literal(stamp)} OR (SystemModstamp = {literal(stamp)} AND Id > '{rid}'))"
        " ORDER BY SystemModstamp ASC, Id ASC"
        for stamp, rid in cursors
    ]
    queries += [
        f"{select} WHERE SystemModstamp >= {newest} ORDER BY SystemModstamp ASC, Id ASC",
        f"{select} WHERE SystemModstamp >= {literal(tie)}",
        f"{select} WHERE SystemModstamp > {literal(tie)} ORDER BY Subject",
        f"{select} WHERE SystemModstamp >= {late}",
        f"{select} WHERE SystemModstamp >= {late} ORDER BY Incoming DESC, Subject NULLS LAST",
        f"{select} WHERE SystemModstamp = {literal(tie)}",
        f"{select} WHERE SystemModstamp > {middle} AND Incoming = true ORDER BY Subject DESC LIMIT 7 OFFSET 3",
        f"{select} WHERE SystemModstamp >= {middle} AND SystemModstamp < {late} ORDER BY Subject, Id",
        f"{select} WHERE SystemModstamp >= {middle} AND SystemModstamp < {late} ORDER BY SystemModstamp, Id",
        f"{select} WHERE SystemModstamp <= {literal(tie)} ORDER BY SystemModstamp ASC, Id ASC",
        f"{select} WHERE (SystemModstamp > {literal(tie)} OR (SystemModstamp = {literal(tie)} AND Id > "
        f"'{tied[0]['Id']}')) AND SystemModstamp < {late} ORDER BY SystemModstamp ASC, Id ASC",
        f"{select} WHERE SystemModstamp > {middle} OR Incoming = true",
        f"{select} WHERE NOT SystemModstamp < {middle}",
        f"{select} WHERE SystemModstamp >= 2000-01-01T00:00:00Z",
        f"{select} WHERE SystemModstamp > 2030-01-01T00:00:00Z",
        f"SELECT COUNT() FROM EmailMessage WHERE SystemModstamp >= {late}",
    ]
    return queries


def answer(http: httpx.Client, auth: dict[str, str], soql: str, endpoint: str) -> tuple[int, list[dict[str, Any]]]:
    """totalSize and every record of every page, without the attributes."""
    response = http.get(f"{V}/{endpoint}", params={"q": soql}, headers=auth)
    assert response.status_code == 200, response.text
    page = response.json()
    total, rows = page["totalSize"], []
    while True:
        rows += [{k: v for k, v in r.items() if k != "attributes"} for r in page["records"]]
        if page["done"]:
            return total, rows
        page = http.get(page["nextRecordsUrl"], headers=auth).json()


def full_scan(sandbox: SalesforceSandbox, soql: str, endpoint: str) -> tuple[int, list[dict[str, Any]]]:
    bound = compile_query(soql, sandbox.schema)
    rows = bound.run(sandbox.records(bound.sobject.name, include_deleted=endpoint == "queryAll"))
    return len(rows), [] if bound.is_count else rows


def mismatches(sandbox: SalesforceSandbox, http: httpx.Client, auth: dict[str, str]) -> list[str]:
    """The battery's queries whose answer differs from a full scan's, each with its endpoint."""
    return [
        f"{endpoint}: {soql}"
        for soql in battery(sandbox)
        for endpoint in ENDPOINTS
        if answer(http, auth, soql, endpoint) != full_scan(sandbox, soql, endpoint)
    ]


def indexed(sandbox: SalesforceSandbox, make_sf_http: MakeHttp, rng: random.Random, count: int
            ) -> tuple[list[str], httpx.Client, dict[str, str]]:
    """`count` emails loaded out of stamp order and the battery answered once over HTTP, each query as a full
    scan answers it: the stamp index is built and has been read."""
    ids = load_emails(sandbox, rng, count)
    http, auth = make_sf_http(sandbox)
    assert mismatches(sandbox, http, auth) == []
    return ids, http, auth


def patch(http: httpx.Client, auth: dict[str, str], ids: Iterable[str], subject: str) -> None:
    body = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "EmailMessage"}, "Id": i, "Subject": subject} for i in ids],
    }
    response = http.patch(f"{V}/composite/sobjects", json=body, headers=auth)
    assert all(result["success"] for result in response.json()), response.text


@pytest.fixture
def sandbox(make_sf_sandbox: Callable[..., SalesforceSandbox]) -> SalesforceSandbox:
    return make_sf_sandbox(batch_size=200, daily_api_limit=10**6)


def test_range_queries_on_records_loaded_out_of_stamp_order_match_a_full_scan(
    sandbox: SalesforceSandbox, make_sf_http: MakeHttp
) -> None:
    indexed(sandbox, make_sf_http, random.Random(1), 600)


def test_range_queries_match_a_full_scan_after_a_few_changes_since_the_index_was_read(
    sandbox: SalesforceSandbox, make_sf_http: MakeHttp, sf_clock: SfClock
) -> None:
    rng = random.Random(5)
    ids, http, auth = indexed(sandbox, make_sf_http, rng, 600)
    sf_clock.advance(minutes=15)
    newest = sorted(sandbox.records("EmailMessage"), key=lambda r: r["SystemModstamp"])[-40:]
    for record in newest[::4]:
        sandbox.update("EmailMessage", record["Id"], {"SystemModstamp": back_dated(rng)})  # out of the recent range
    sandbox.update("EmailMessage", rng.choice(ids), {"Subject": "updated"})
    sandbox.delete("EmailMessage", newest[-3]["Id"])
    patch(http, auth, [newest[-2]["Id"]], "patched")
    sandbox.insert("EmailMessage", {"Subject": "late", "SystemModstamp": newest[-20]["SystemModstamp"]})
    assert mismatches(sandbox, http, auth) == []


def test_range_queries_match_a_full_scan_after_every_kind_of_change_since_the_index_was_read(
    sandbox: SalesforceSandbox, make_sf_http: MakeHttp, sf_clock: SfClock
) -> None:
    rng = random.Random(2)
    ids, http, auth = indexed(sandbox, make_sf_http, rng, 600)
    sf_clock.advance(minutes=15)
    for record_id in rng.sample(ids, 20):
        sandbox.update("EmailMessage", record_id, {"Subject": "updated"})  # stamped now: ties among them
    for record_id in rng.sample(ids, 10):
        sandbox.update("EmailMessage", record_id, {"SystemModstamp": back_dated(rng)})
    patch(http, auth, rng.sample(ids, 30), "patched")
    for record_id in rng.sample(ids, 10):
        sandbox.delete("EmailMessage", record_id)
    sandbox.insert("EmailMessage", {"Subject": "new"})
    sandbox.insert("EmailMessage", {"Subject": "late", "SystemModstamp": back_dated(rng)})
    assert mismatches(sandbox, http, auth) == []


def test_a_record_stamped_back_to_its_earlier_stamp_is_answered_once(
    sandbox: SalesforceSandbox, make_sf_http: MakeHttp, sf_clock: SfClock
) -> None:
    record_id = sandbox.insert("EmailMessage", {"Subject": "bounced"})
    first = sandbox.get("EmailMessage", record_id)["SystemModstamp"]
    http, auth = make_sf_http(sandbox)
    soql = f"SELECT Id FROM EmailMessage WHERE SystemModstamp >= {literal(first)}"
    assert answer(http, auth, soql, "query") == (1, [{"Id": record_id}])
    sf_clock.advance(minutes=1)
    sandbox.update("EmailMessage", record_id, {"Subject": "moved"})
    sandbox.update("EmailMessage", record_id, {"SystemModstamp": first})
    assert answer(http, auth, soql, "query") == (1, [{"Id": record_id}])


def test_range_queries_match_a_full_scan_after_thousands_of_back_dated_changes(
    sandbox: SalesforceSandbox, make_sf_http: MakeHttp
) -> None:
    """Enough changes to merge pending entries by sorting and to sweep out stale ones."""
    rng = random.Random(3)
    ids, http, auth = indexed(sandbox, make_sf_http, rng, 300)
    for _ in range(5000):
        sandbox.update("EmailMessage", rng.choice(ids), {"SystemModstamp": back_dated(rng)})
    load_emails(sandbox, rng, 100)
    assert mismatches(sandbox, http, auth) == []


def test_a_cursor_query_evaluates_only_the_records_stamped_since_the_cursor(
    sandbox: SalesforceSandbox, make_sf_http: MakeHttp, sf_clock: SfClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_emails(sandbox, random.Random(4), 600)
    sf_clock.advance(minutes=15)
    changed = [sandbox.insert("EmailMessage", {"Subject": f"new {n}"}) for n in range(3)]
    evaluated: list[int] = []
    run = BoundQuery.run

    def counting_run(self: BoundQuery, records: Iterable[Any]) -> list[dict[str, Any]]:
        records = list(records)
        evaluated.append(len(records))
        return run(self, records)

    monkeypatch.setattr(BoundQuery, "run", counting_run)
    http, auth = make_sf_http(sandbox)
    cursor = literal(format_datetime(sf_clock.now - timedelta(minutes=15)))
    soql = (
        f"SELECT Id FROM EmailMessage WHERE (SystemModstamp > {cursor} OR (SystemModstamp = {cursor} "
        f"AND Id > '{changed[0]}')) ORDER BY SystemModstamp ASC, Id ASC"
    )
    assert answer(http, auth, soql, "query") == (3, [{"Id": i} for i in changed])
    assert evaluated == [3]


def test_a_window_query_evaluates_only_the_records_stamped_inside_the_window(
    sandbox: SalesforceSandbox, make_sf_http: MakeHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_emails(sandbox, random.Random(6), 600)
    records = sorted(sandbox.records("EmailMessage"), key=lambda r: (r["SystemModstamp"], r["Id"]))
    low, high = records[200]["SystemModstamp"], records[260]["SystemModstamp"]
    inside = [r for r in records if low <= r["SystemModstamp"] < high]
    evaluated: list[int] = []
    run = BoundQuery.run

    def counting_run(self: BoundQuery, rows: Iterable[Any]) -> list[dict[str, Any]]:
        rows = list(rows)
        evaluated.append(len(rows))
        return run(self, rows)

    monkeypatch.setattr(BoundQuery, "run", counting_run)
    http, auth = make_sf_http(sandbox)
    soql = (f"SELECT Id FROM EmailMessage WHERE SystemModstamp >= {literal(low)} AND SystemModstamp < {literal(high)} "
            "ORDER BY SystemModstamp ASC, Id ASC")
    assert answer(http, auth, soql, "query") == (len(inside), [{"Id": r["Id"]} for r in inside])
    assert evaluated[0] <= len(inside) + sum(1 for r in records if r["SystemModstamp"] == high)


@pytest.mark.parametrize("burst", [3, 60, 200, 5000])
def test_the_stamp_index_gives_exactly_the_records_stamped_since_a_floor_through_bursts_of_changes(burst: int) -> None:
    """Bursts of that many inserts and restamps between reads: merged one by one, by sorting, and while loading."""
    rng = random.Random(burst)
    stamps = [back_dated(rng, days=1) for _ in range(200)]  # few distinct stamps: many ties
    index, records = _StampIndex(), list[dict[str, Any]]()
    for round_ in range(max(4, min(300, 12_000 // burst))):
        for _ in range(burst):
            if not records or rng.random() < 0.3:
                records.append({"Id": f"r{len(records)}", "SystemModstamp": rng.choice(stamps)})
                index.add(records[-1])
            else:
                record = rng.choice(records)
                old, record["SystemModstamp"] = record["SystemModstamp"], rng.choice(stamps)
                index.restamped(record, old)
        floor = rng.choice(stamps)
        expected = [r for r in records if r["SystemModstamp"] >= floor]
        in_stamp_order = sorted(expected, key=lambda r: r["SystemModstamp"])  # stable: insertion order within a stamp
        assert index.since(floor, insertion_order=True) == expected, f"round {round_}"
        assert index.since(floor, insertion_order=False) == in_stamp_order, f"round {round_}"
        low, high = sorted(rng.sample(stamps, 2))
        between = [r for r in records if low <= r["SystemModstamp"] <= high]
        assert index.since(low, ceiling=high, insertion_order=True) == between, f"round {round_}"
