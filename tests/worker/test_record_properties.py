"""Records from Salesforce and Zendesk as no well-behaved org sends them: fields missing, of the wrong type, huge,
or dates that are not dates. Each record becomes rows, or a quarantined record with its reason; nothing a record
holds may stop the stream it came in.

The property tests draw records field by field (a plausible value, or something hostile); the plain tests
after them pin each record that once escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from connectors.zendesk.records import (
    ZendeskRecordError,
    parse_comment,
    parse_organization,
    parse_ticket,
    parse_user,
)
from worker.store import Store, iso, parse_iso
from worker.sync.cursor import Cursor
from worker.sync.report import SyncReport
from worker.sync.salesforce import SALESFORCE_STREAMS, SalesforceStream, _store_salesforce_page

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
QUARANTINED = (KeyError, ValueError, TypeError, AttributeError)  # what `_store_salesforce_page` turns into one
STREAMS = {stream.sobject: stream for stream in SALESFORCE_STREAMS}
INT64 = 2**63 - 1
PROPERTY = hypothesis.settings(max_examples=300, deadline=None,
                               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# -- values: plausible ones, and what a tester would try -----------------------------------------------------

_JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70) | st.floats()
                 | st.text(max_size=12))
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
_HUGE = st.sampled_from(["x" * 200_000, "é" * 100_001, "\ud800", "a\ud800b", "\x00", "O'Brien", "\u202e"])
_ODD_TIMES = st.sampled_from([
    "", "now", "2026-02-30T00:00:00.000+0000", "2026-13-01T00:00:00.000+0000", "abcd-ef-ghTij:kl:mn.000+0000",
    "0001-01-01T00:00:00.000-0100", "9999-12-31T23:00:00.000-0500", "0005-01-01T00:00:00.000+0000",
    "0005-01-01T10:00:00+01:00", "2026-01-05 09:00:00.000+0000", "2026-W01-1T09:00:00.000+0000", "2026-01-05",
    "2026-01-05T09:00:00Z", "2026-01-05T09:00:00.000+0530", "1699-12-31T23:59:59.000+0000", "20260105T090000",
    "2026-01-05T09:00:00.000+0000\x00"])
_ODD_DATES = st.sampled_from(["", "2026-02-30", "soon", "0001-01-01", "9999-12-31", "2026-1-5", "2026-01-05T00:00"])


def _sf_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


_TIMES = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)).map(_sf_time)
_ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _ids(prefix: str) -> st.SearchStrategy[str]:
    return st.text(_ID_CHARS, min_size=15, max_size=15).map(lambda tail: prefix + tail)


def _field(name: str) -> st.SearchStrategy[Any]:
    """A value for one field: mostly one Salesforce could send, else anything JSON can hold."""
    if name == "Id" or name.endswith("Id"):
        plausible: st.SearchStrategy[Any] = _ids("001") | _ids("006") | _ids("00T") | _ids("500") | st.none()
    elif name.endswith(("Modstamp", "DateTime", "Date")) and name not in ("ActivityDate", "CloseDate"):
        plausible = _TIMES | _ODD_TIMES
    elif name in ("ActivityDate", "CloseDate", "Health_Override_Until__c"):
        plausible = st.dates(min_value=date(1990, 1, 1), max_value=date(2040, 1, 1)).map(str) | _ODD_DATES
    elif name in ("AnnualRevenue", "Amount", "Contracted_Seats__c", "Health_Override__c"):
        plausible = st.floats(allow_nan=True) | st.integers() | st.none()
    elif name in ("IsDeleted", "IsClosed", "IsWon", "IsActive", "Incoming"):
        plausible = st.booleans()
    elif name == "TaskSubtype":
        plausible = st.sampled_from(["Email", "Call", "Task", None])
    else:
        plausible = st.text(max_size=30) | st.none()
    return st.one_of(plausible, plausible, plausible, _JSON, _HUGE)


def _records(stream: SalesforceStream) -> st.SearchStrategy[dict[str, Any]]:
    fields = [*stream.required, *stream.optional, "IsDeleted"]
    return st.fixed_dictionaries({}, optional={name: _field(name) for name in dict.fromkeys(fields)})


_STREAM_NAMES = st.sampled_from(sorted(STREAMS))
_STORABLE = (type(None), int, float, str)


def _storable(value: Any) -> bool:
    if isinstance(value, bool) or type(value) not in _STORABLE:
        return False
    if isinstance(value, int):
        return -INT64 - 1 <= value <= INT64
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def _is_store_time(value: Any) -> bool:
    """The store's one timestamp form, which text order and `parse_iso` both rely on."""
    if not isinstance(value, str) or len(value) != 20 or value[10] != "T" or not value.endswith("Z"):
        return False
    try:
        return iso(parse_iso(value)) == value
    except ValueError:
        return False


def _is_day(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


TIME_COLUMNS = ("occurred_at", "closed_at", "modstamp")
NUMBER_COLUMNS = ("annual_revenue", "contracted_seats", "override_value", "amount")
DAY_COLUMNS = ("close_date",)


# -- Salesforce: the row builders ----------------------------------------------------------------------------

@PROPERTY
@given(data=st.data(), sobject=_STREAM_NAMES)
def test_a_salesforce_record_becomes_rows_the_store_and_the_scorer_can_use_or_a_quarantinable_error(
        data: st.DataObject, sobject: str) -> None:
    stream = STREAMS[sobject]
    record = data.draw(_records(stream))
    try:
        rows = stream.to_rows(record)
    except QUARANTINED:
        return
    for _table, row in rows:  # what the store cannot hold, it refuses (see the next test); here: what it would hold
        assert all(row.get(column) is None or _is_store_time(row[column]) for column in TIME_COLUMNS), row
        assert all(row.get(column) is None or _is_day(row[column]) for column in DAY_COLUMNS), row
        assert all(row.get(column) is None or isinstance(row[column], float | int) for column in NUMBER_COLUMNS)
        assert row.get("override_until") is None or _is_day(str(row["override_until"])[:10]), row
        key = row.get("source_id", row.get("id"))
        assert isinstance(key, str) and key, row


@pytest.fixture(scope="module")
def page_store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


@PROPERTY
@given(data=st.data(), sobject=_STREAM_NAMES)
def test_no_salesforce_page_fails_its_stream_every_record_is_stored_or_quarantined(
        page_store: Store, data: st.DataObject, sobject: str) -> None:
    stream = STREAMS[sobject]
    page = data.draw(st.lists(_records(stream), min_size=1, max_size=4))
    report = SyncReport()
    before = page_store.scalar("SELECT count(*) FROM quarantine")

    cursor = _store_salesforce_page(page_store, stream, page, None, NOW, report)

    stats = report.streams[f"salesforce.{sobject}"]
    assert stats.read == len(page)
    assert page_store.scalar("SELECT count(*) FROM quarantine") - before == stats.quarantined
    if cursor is not None:
        assert cursor.stamp <= NOW and "'" not in cursor.id
        assert Cursor.load(cursor.dump()) == cursor


# -- Zendesk: the record parsers -----------------------------------------------------------------------------

_ZD_TIMES = (st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC))
             .map(lambda moment: moment.isoformat().replace("+00:00", "Z"))
             | st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00", "0005-01-01T00:00:00Z",
                                "2026-02-30T00:00:00Z", "2026-01-05", "2026-01-05T09:00:00", "soon", ""]))


def _zendesk_field(name: str) -> st.SearchStrategy[Any]:
    if name == "id" or name.endswith("_id"):
        plausible: st.SearchStrategy[Any] = st.integers(1, 10**12) | st.sampled_from([2**63 - 1, 2**63, 2**64 + 5])
    elif name.endswith("_at"):
        plausible = _ZD_TIMES
    elif name == "public":
        plausible = st.booleans()
    elif name == "domain_names":
        plausible = st.lists(st.text(max_size=12) | _HUGE, max_size=3)
    else:
        plausible = st.text(max_size=30) | st.none()
    return st.one_of(plausible, plausible, plausible, _JSON, _HUGE)


def _zendesk(*fields: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={name: _zendesk_field(name) for name in fields})


ZENDESK_PARSERS = {
    "ticket": (parse_ticket, _zendesk("id", "subject", "status", "priority", "requester_id", "organization_id",
                                      "created_at", "updated_at")),
    "comment": (lambda raw: parse_comment(raw, 1), _zendesk("id", "author_id", "body", "public", "created_at")),
    "user": (parse_user, _zendesk("id", "name", "email", "role", "organization_id")),
    "organization": (parse_organization, _zendesk("id", "name", "external_id", "domain_names")),
}


def _usable(value: Any) -> bool:
    """What the store and the scorer get from a parsed Zendesk record: ids SQLite can hold, text it can encode,
    times in the store's form."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, datetime):
        return _is_store_time(iso(value))
    if isinstance(value, tuple):
        return all(_usable(item) for item in value)
    return _storable(value)


@PROPERTY
@given(data=st.data(), kind=st.sampled_from(sorted(ZENDESK_PARSERS)))
def test_a_zendesk_record_becomes_a_usable_record_or_a_record_error(data: st.DataObject, kind: str) -> None:
    parse, records = ZENDESK_PARSERS[kind]
    raw = data.draw(records)
    try:
        parsed = parse(raw)
    except ZendeskRecordError:
        return
    assert all(_usable(value) for value in vars(parsed).values()), parsed



# -- Salesforce: each record that once failed its stream -----------------------------------------------------

ACCOUNT = "001000000000001AAA"
STAMP = "2026-03-01T08:00:00.000+0000"


def _event(number: int, **fields: Any) -> dict[str, Any]:
    return {"Id": f"00U{number:012d}AAA", "SystemModstamp": STAMP, "AccountId": ACCOUNT,
            "IsDeleted": False, "ActivityDateTime": "2026-02-27T15:00:00.000+0000", "Subject": "QBR"} | fields


def _store_page(store: Store, sobject: str, page: list[dict[str, Any]],
                cursor: Cursor | None = None) -> tuple[SyncReport, Cursor | None, list[dict[str, Any]]]:
    """One page through the worker's page store; the report, the cursor after it, and what it quarantined."""
    report = SyncReport()
    moved = _store_salesforce_page(store, STREAMS[sobject], page, cursor, NOW, report)
    return report, moved, store.query("SELECT source_id, reason FROM quarantine ORDER BY id")


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


def _stored_events(store: Store) -> list[str]:
    return [r["source_id"] for r in store.query("SELECT source_id FROM activities ORDER BY source_id")]


def test_a_last_record_without_a_stamp_is_quarantined_and_the_cursor_stops_at_the_record_before(store: Store) -> None:
    good, stampless = _event(1), _event(2)
    del stampless["SystemModstamp"]

    report, cursor, quarantined = _store_page(store, "Event", [good, stampless])

    assert _stored_events(store) == [good["Id"]]
    assert quarantined == [{"source_id": stampless["Id"], "reason": "KeyError: 'SystemModstamp'"}]
    assert cursor is not None and (iso(cursor.stamp), cursor.id) == ("2026-03-01T08:00:00Z", good["Id"])
    assert report.quarantined == 1


@pytest.mark.parametrize("stamp", [True, ["2026-03-01T08:00:00.000+0000"], 20260301])
def test_a_last_record_whose_stamp_is_not_text_is_quarantined_not_a_crash(store: Store, stamp: object) -> None:
    _, cursor, quarantined = _store_page(store, "Event", [_event(1), _event(2, SystemModstamp=stamp)])

    assert [q["reason"] for q in quarantined] == [f"ValueError: not a date-time: {stamp!r}"]
    assert cursor is not None and cursor.id == _event(1)["Id"]


@pytest.mark.parametrize(("when", "reason"), [
    ("9999-12-31T23:00:00.000-0500", "not a date-time Salesforce can hold (years 1700 to 4000): "
                                     "'9999-12-31T23:00:00.000-0500'"),
    ("0001-01-01T00:00:00.000+0100", "not a date-time Salesforce can hold (years 1700 to 4000): "
                                     "'0001-01-01T00:00:00.000+0100'"),
    ("0005-01-01T10:00:00.000+0000", "not a date-time Salesforce can hold (years 1700 to 4000): "
                                     "'0005-01-01T10:00:00.000+0000'"),
    ("2026-02-30T15:00:00.000+0000", "not a date-time: '2026-02-30T15:00:00.000+0000'"),
    ("2026-13-01T15:00:00.000+0000", "not a date-time: '2026-13-01T15:00:00.000+0000'"),
], ids=["beyond year 9999 in UTC", "before year 1 in UTC", "year 5", "30 February", "month 13"])
def test_a_date_time_salesforce_cannot_hold_quarantines_the_record(store: Store, when: str, reason: str) -> None:
    _, _, quarantined = _store_page(store, "Event", [_event(1, ActivityDateTime=when), _event(2)])

    assert [q["reason"] for q in quarantined] == [f"ValueError: {reason}"]
    assert _stored_events(store) == [_event(2)["Id"]]


def test_a_user_without_an_id_is_quarantined_and_the_rest_of_the_page_is_stored(store: Store) -> None:
    user = {"Id": "005000000000001AAA", "SystemModstamp": STAMP, "Name": "Ada", "Email": "ada@example.com"}

    _, _, quarantined = _store_page(store, "User", [user, {**user, "Id": None}])

    assert [q["reason"] for q in quarantined] == ["ValueError: Id is not a Salesforce record id: None"]
    assert store.scalar("SELECT count(*) FROM users") == 1


def test_an_account_without_a_name_is_quarantined_and_the_rest_of_the_page_is_stored(store: Store) -> None:
    account = {"Id": ACCOUNT, "SystemModstamp": STAMP, "Name": "Acme", "OwnerId": "005000000000001AAA",
               "IsDeleted": False}

    _, _, quarantined = _store_page(store, "Account", [{**account, "Id": "001000000000002AAA", "Name": None},
                                                       account])

    assert quarantined == [{"source_id": "001000000000002AAA", "reason": "ValueError: Name is not text: None"}]
    assert store.scalar("SELECT name FROM accounts") == "Acme"


@pytest.mark.parametrize(("fields", "reason"), [
    ({"Subject": "caf\ud800"}, "activities.subject is not valid Unicode text: 'caf\\ud800'"),
    ({"Subject": {"text": "QBR"}}, "activities.subject cannot be stored: {'text': 'QBR'}"),
    ({"WhatId": 2**64}, "activities.related_id is too large a number: 18446744073709551616"),
], ids=["lone surrogate", "a mapping", "beyond 64 bits"])
def test_a_value_the_store_cannot_hold_quarantines_only_its_record(store: Store, fields: dict[str, Any],
                                                                   reason: str) -> None:
    report, cursor, quarantined = _store_page(store, "Event", [_event(1), _event(2, **fields), _event(3)])

    assert quarantined == [{"source_id": _event(2)["Id"], "reason": reason}]
    assert _stored_events(store) == [_event(1)["Id"], _event(3)["Id"]]
    assert cursor is not None and cursor.id == _event(3)["Id"] and report.quarantined == 1


@pytest.mark.parametrize(("fields", "reason"), [
    ({"Health_Override__c": "high"}, "Health_Override__c is not a number: 'high'"),
    ({"Health_Override_Until__c": "next week"}, "Health_Override_Until__c is not a date: 'next week'"),
    ({"Contracted_Seats__c": [40]}, "Contracted_Seats__c is not a number: [40]"),
], ids=["override", "override until", "seats"])
def test_an_account_field_the_scorer_reads_must_hold_what_it_reads(fields: dict[str, Any], reason: str) -> None:
    """Stored as it came, "high" as a pinned score stopped the scoring of every account at the next cycle."""
    account = {"Id": ACCOUNT, "SystemModstamp": STAMP, "Name": "Acme", "IsDeleted": False, **fields}

    with pytest.raises(ValueError, match="^" + re.escape(reason) + "$"):
        STREAMS["Account"].to_rows(account)


def test_a_number_sent_as_text_is_still_read_as_a_number() -> None:
    account = {"Id": ACCOUNT, "SystemModstamp": STAMP, "Name": "Acme", "Health_Override__c": "75"}

    [(_, row)] = STREAMS["Account"].to_rows(account)

    assert row["override_value"] == 75.0


def test_an_opportunity_close_date_that_is_not_a_date_is_quarantined() -> None:
    deal = {"Id": "006000000000001AAA", "SystemModstamp": STAMP, "AccountId": ACCOUNT, "StageName": "Won",
            "CloseDate": "2026-02-30", "IsDeleted": False}

    with pytest.raises(ValueError, match=r"^CloseDate is not a date: '2026-02-30'$"):
        STREAMS["Opportunity"].to_rows(deal)


def test_an_id_that_would_break_the_next_query_never_reaches_the_cursor(store: Store) -> None:
    forged = _event(2, Id="001' OR Name != '")

    _, cursor, quarantined = _store_page(store, "Event", [_event(1), forged])

    assert cursor is not None and cursor.id == _event(1)["Id"]
    assert "'" not in cursor.where(timedelta(minutes=5)).split("Id > ")[-1].strip("')")
    assert _stored_events(store) == sorted([_event(1)["Id"], forged["Id"]])  # stored: only the cursor needs the form
    assert quarantined == []


def test_a_page_of_nothing_usable_leaves_the_cursor_where_it_was(store: Store) -> None:
    before = Cursor(NOW - timedelta(days=1), "00U000000000000AAA", NOW - timedelta(days=1))

    _, cursor, quarantined = _store_page(store, "Event", [{}, {"Id": 7}], before)

    assert cursor == before and len(quarantined) == 2
    assert store.cursor("salesforce.Event") == before.dump()


def test_a_forged_id_with_a_newline_is_escaped_in_the_quarantine(store: Store) -> None:
    _, _, quarantined = _store_page(store, "Event", [_event(1, Id="00U\nforged", ActivityDateTime=None)])

    assert [q["source_id"] for q in quarantined] == ["00U\\nforged"]


# -- Zendesk: each record that once escaped as something other than a record error ---------------------------

def test_a_zendesk_id_beyond_64_bits_is_a_record_error() -> None:
    with pytest.raises(ZendeskRecordError, match="'id' must be a positive integer id"):
        parse_organization({"id": 2**63, "name": "Acme"})


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00", "0005-01-01T00:00:00Z"],
                         ids=["before year 1 in UTC", "after year 9999 in UTC", "year 5"])
def test_a_zendesk_time_whose_utc_year_has_not_four_digits_is_a_record_error(when: str) -> None:
    with pytest.raises(ZendeskRecordError, match=re.escape(f"field 'created_at' is outside the years 1000 to 9999: "
                                                           f"'{when}'")):
        parse_comment({"id": 1, "author_id": 2, "body": "hi", "public": True, "created_at": when}, 3)


def test_a_lone_surrogate_in_zendesk_text_becomes_a_replacement_character() -> None:
    ticket = parse_ticket({"id": 1, "subject": "caf\ud800", "status": "open", "created_at": "2026-01-05T09:00:00Z",
                           "updated_at": "2026-01-05T09:00:00Z"})
    organization = parse_organization({"id": 1, "name": "\ud83d", "external_id": "x\udc00",
                                       "domain_names": ["ACME\ud800.com"]})

    assert ticket.subject == "caf\ufffd"
    assert (organization.name, organization.external_id, organization.domain_names) == (
        "\ufffd", "x\ufffd", ("acme\ufffd.com",))
