"""How a page of Salesforce records is stored: in one transaction with its cursor, and without a savepoint.

Inside a savepoint, SQLite keeps in its sub-journal every database page each row's statement touched until the
savepoint ends (the change-mark triggers make each row a statement that may need undoing): a large share of a
backfill's CPU (BENCHMARKS.md, 'Figures behind the code'). The page is stored without one; a row the store
refuses undoes the transaction, and the page is written again record by record. The tables it leaves must be
the ones the savepoint left.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from worker.store import Quarantined, Store
from worker.sync.cursor import Cursor
from worker.sync.report import SyncReport
from worker.sync.salesforce import (
    _REFUSED,
    _RELATED_PENDING,
    _RELATED_STREAMS,
    _UNUSABLE,
    SALESFORCE_STREAMS,
    SalesforceStream,
    _cursor_after,
    _record_id,
    _store_salesforce_page,
    _write_record_by_record,
    _write_rows,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STREAMS = {stream.sobject: stream for stream in SALESFORCE_STREAMS}
STAMP = "2026-03-01T08:{:02d}:{:02d}.000+0000"


def _stamp(n: int) -> str:
    return STAMP.format(n // 60 % 60, n % 60)


def _account(n: int) -> str:
    return f"001{n:012d}AAA"


def _world() -> list[tuple[str, list[dict[str, Any]]]]:
    """Pages as a backfill reads them, stream by stream: email tasks later replaced by their messages, messages
    filed nowhere, calls, meetings, cases, and records the mapping quarantines or the store refuses."""
    users = [{"Id": f"005{n:012d}AAA", "SystemModstamp": _stamp(n), "Name": f"Owner {n}",
              "Email": f"owner{n}@example.com", "IsActive": True} for n in range(3)]
    accounts = [{"Id": _account(n), "SystemModstamp": _stamp(n), "Name": f"Account {n}", "OwnerId": users[n % 3]["Id"],
                 "IsDeleted": False, "Contracted_Seats__c": 10 + n} for n in range(6)]
    accounts.append({**accounts[0], "Id": _account(99), "Name": None})  # quarantined: no name
    opportunities = [{"Id": f"006{n:012d}AAA", "SystemModstamp": _stamp(n), "AccountId": _account(n % 6),
                      "StageName": "Renewal", "CloseDate": "2026-06-30", "IsDeleted": False, "Amount": 1000.0 * n}
                     for n in range(4)]
    tasks = []
    for n in range(40):
        email = n % 4 != 3
        tasks.append({"Id": f"00T{n:012d}AAA", "SystemModstamp": _stamp(n), "AccountId": _account(n % 6),
                      "WhatId": f"006{n % 4:012d}AAA" if n % 5 == 0 else None, "IsDeleted": False,
                      "CreatedDate": _stamp(n), "TaskSubtype": "Email" if email else "Call", "IsClosed": True,
                      "Subject": f"Task {n}", "CompletedDateTime": _stamp(n), "CallDurationInSeconds": 60})
    tasks.append({**tasks[1], "Id": "00T000000000900AAA", "Subject": "caf\ud800"})  # refused by the store
    messages = []
    for n in range(30):
        related = None if n % 7 == 0 else (f"006{n % 4:012d}AAA" if n % 3 == 0 else _account(n % 6))
        messages.append({"Id": f"02s{n:012d}AAA", "SystemModstamp": _stamp(100 + n), "Incoming": n % 2 == 0,
                         "IsDeleted": False, "CreatedDate": _stamp(n), "MessageDate": _stamp(n),
                         "ActivityId": f"00T{n:012d}AAA" if n % 4 != 3 else None,
                         "RelatedToId": related, "Subject": f"Re: {n}", "TextBody": f"Thanks for the note {n}."})
    messages.append({**messages[2], "Id": "02s000000000901AAA", "ActivityId": None, "TextBody": {"html": "x"}})
    events = [{"Id": f"00U{n:012d}AAA", "SystemModstamp": _stamp(n), "AccountId": _account(n % 6),
               "IsDeleted": n == 5, "ActivityDateTime": _stamp(n), "Subject": "QBR", "IsChild": n == 7}
              for n in range(12)]
    cases = [{"Id": f"500{n:012d}AAA", "SystemModstamp": _stamp(n), "AccountId": _account(n % 6), "Status": "New",
              "IsDeleted": False, "CreatedDate": _stamp(n), "Subject": "Broken", "Description": f"It broke {n}",
              "Priority": "High", "ClosedDate": None} for n in range(10)]
    cases.append({**cases[0], "Id": "500000000000902AAA", "CreatedDate": "2026-02-30T00:00:00.000+0000"})
    return [("User", users), ("Account", accounts), ("Opportunity", opportunities), ("Task", tasks[:20]),
            ("Task", tasks[20:]), ("Event", events), ("EmailMessage", messages), ("Case", cases)]


def _with_a_savepoint(store: Store, stream: SalesforceStream, page: list[dict[str, Any]], cursor: Cursor | None,
                      now: datetime, report: SyncReport) -> Cursor | None:
    """The way before: the page's rows in a savepoint inside the page's transaction."""
    name = f"salesforce.{stream.sobject}"
    tables: dict[str, list[dict[str, Any]]] = {}
    bad: list[Quarantined] = []
    for record in page:
        try:
            for table, row in stream.to_rows(record):
                tables.setdefault(table, []).append(row)
        except _UNUSABLE as exc:
            bad.append(Quarantined("salesforce", stream.sobject, _record_id(record), f"{type(exc).__name__}: {exc}",
                                   record))
    moved = _cursor_after(page, cursor, now)
    with store.transaction():
        try:
            with store.transaction():
                _write_rows(store, tables)
        except _REFUSED:
            bad += _write_record_by_record(store, stream, page)
        store.quarantine(bad, now)
        store.save_cursor(name, moved.dump() if moved is not None else None, len(page), now)
        if stream.sobject in _RELATED_STREAMS:
            store.save_cursor(_RELATED_PENDING, "1", 0, now)
    return moved


def _tables(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in rowid order where there is one (the migrations' times apart)."""
    names = [r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name != 'schema_migrations' ORDER BY name")]
    tables = {}
    for name in names:
        without_rowid = "WITHOUT ROWID" in store.scalar("SELECT sql FROM sqlite_master WHERE name = ?", (name,))
        order = "1, 2, 3" if without_rowid else "rowid"
        rowid = "" if without_rowid else "rowid, "
        tables[name] = [tuple(r) for r in store.conn.execute(f"SELECT {rowid}* FROM {name} ORDER BY {order}")]
    return tables


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


def test_a_backfill_stored_without_the_savepoint_leaves_the_tables_the_savepoint_left() -> None:
    stored = []
    for store_page in (_with_a_savepoint, _store_salesforce_page):
        with Store(":memory:") as store:
            cursors: dict[str, Cursor | None] = {}
            for sobject, page in _world():
                cursors[sobject] = store_page(store, STREAMS[sobject], page, cursors.get(sobject), NOW, SyncReport())
            stored.append(_tables(store))
    before, now = stored
    assert before["quarantine"] and before["activities"] and before["account_changes"]  # the world is not empty
    assert now == before


def test_a_clean_page_is_stored_without_a_savepoint(store: Store) -> None:
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    _, tasks = _world()[3]

    _store_salesforce_page(store, STREAMS["Task"], tasks, None, NOW, SyncReport())

    assert store.scalar("SELECT count(*) FROM activities") == len(tasks)
    assert not [s for s in statements if s.lstrip().upper().startswith("SAVEPOINT")]


def test_a_refused_row_undoes_the_rows_written_before_it_and_the_page_is_written_record_by_record(
        store: Store) -> None:
    _, tasks = _world()[4]  # its last record has a lone surrogate in its subject
    report = SyncReport()

    _store_salesforce_page(store, STREAMS["Task"], tasks, None, NOW, report)

    assert store.scalar("SELECT count(*) FROM activities") == len(tasks) - 1
    assert [r["source_id"] for r in store.query("SELECT source_id FROM quarantine")] == ["00T000000000900AAA"]
    assert report.quarantined == 1 and store.scalar("SELECT records FROM sync_state WHERE stream = "
                                                    "'salesforce.Task'") == len(tasks)
