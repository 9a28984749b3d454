"""The usage-file reader takes anything a folder can hold: every row comes out as a valid record or as a bad
row naming the file, the line and the field, and nothing a file holds makes it raise."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.usage.reader import (
    CLOCK_SKEW,
    EARLIEST_DAY,
    MAX_COUNT,
    MAX_LINE_BYTES,
    BadUsageRow,
    UsageFileReplaced,
    UsageRow,
    open_usage_file,
    read_usage,
    read_usage_file,
    scan_usage_folder,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACCOUNT = "001000000000001AAA"
HEADER = "account_id,date,active_users,events,features_used,seats\n"


def _csv(text: str | bytes) -> list[UsageRow | BadUsageRow]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_usage(io.BytesIO(data), "u.csv", "csv", now=NOW))


def _jsonl(text: str | bytes) -> list[UsageRow | BadUsageRow]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_usage(io.BytesIO(data), "u.jsonl", "jsonl", now=NOW))


def _row(**values: object) -> str:
    row = {"account_id": ACCOUNT, "date": "2026-03-01", "active_users": "5", "events": "50",
           "features_used": "api", "seats": "10", **values}
    return HEADER + ",".join(str(row[k]) for k in HEADER.strip().split(",")) + "\n"


def _reasons(items: list[UsageRow | BadUsageRow]) -> list[str]:
    return [i.reason for i in items if isinstance(i, BadUsageRow)]


def test_a_utf8_bom_is_not_part_of_the_first_column_name() -> None:
    [row] = _csv("\ufeff" + _row())

    assert isinstance(row, UsageRow) and row.account_id == ACCOUNT


def test_a_line_that_is_not_utf8_is_one_bad_row_and_the_next_lines_are_read() -> None:
    data = (HEADER + f"{ACCOUNT},2026-02-28,5,50,caf\xe9,10\n{ACCOUNT},2026-03-01,5,50,api,10\n").encode("latin-1")

    first, second = _csv(data)

    assert isinstance(first, BadUsageRow) and first.line == 2
    assert first.reason == "not UTF-8: byte 0xE9 at byte 39 of the line (save the file as UTF-8)"
    assert isinstance(second, UsageRow) and second.line == 3


def test_a_header_that_is_not_utf8_refuses_the_file_with_one_reason() -> None:
    data = "\ufeffaccount_id,date,active_users,events\n".encode("utf-16") + f"{ACCOUNT},2026-03-01,5,50\n".encode()

    [bad] = _csv(data)

    assert isinstance(bad, BadUsageRow) and bad.line == 1
    assert bad.reason.startswith("not UTF-8: byte 0xFF") and "nothing else in the file was read" in bad.reason


def test_a_field_over_the_csv_modules_limit_costs_its_line_alone() -> None:
    data = HEADER + f"{ACCOUNT},2026-02-28,5,50,{'x' * 200_000},10\n{ACCOUNT},2026-03-01,5,50,api,10\n"

    bad, good = _csv(data)

    assert isinstance(bad, BadUsageRow) and bad.line == 2 and bad.reason.startswith("not CSV: field larger")
    assert isinstance(good, UsageRow) and good.line == 3


def test_a_line_longer_than_the_limit_is_skipped_and_the_next_line_read() -> None:
    data = HEADER + f"{ACCOUNT},2026-02-28,5,50,{'x;' * MAX_LINE_BYTES},10\n{ACCOUNT},2026-03-01,5,50,api,10\n"

    bad, good = _csv(data)

    assert isinstance(bad, BadUsageRow) and bad.line == 2
    assert bad.reason == f"longer than {MAX_LINE_BYTES} bytes; skipped"
    assert isinstance(good, UsageRow) and good.line == 3


@pytest.mark.parametrize("field", ["active_users", "events", "seats"])
def test_a_count_past_sqlites_integers_is_refused_naming_the_field(field: str) -> None:
    [bad] = _csv(_row(**{field: "99999999999999999999999"}))

    assert isinstance(bad, BadUsageRow)
    assert bad.reason.startswith(f"{field}: '99999999999999999999999' is more than {MAX_COUNT}")


def test_an_events_count_sqlite_can_store_but_not_sum_is_refused() -> None:
    [bad] = _csv(_row(events=2**63 - 1))

    assert isinstance(bad, BadUsageRow) and bad.reason.startswith("events: '9223372036854775807' is more than")


def test_a_sum_of_the_largest_counts_over_every_possible_day_fits_sqlites_integers() -> None:
    days = (NOW.date() + timedelta(days=365 * 100) - EARLIEST_DAY).days

    assert days * MAX_COUNT < 2**63 - 1


def test_a_negative_count_is_refused_naming_the_field() -> None:
    [bad] = _csv(_row(events="-3"))

    assert isinstance(bad, BadUsageRow) and bad.reason == "events: must not be negative, got '-3'"


def test_active_users_beyond_the_seats_the_row_claims_are_refused() -> None:
    [bad] = _csv(_row(active_users="11", seats="10"))

    assert isinstance(bad, BadUsageRow) and bad.reason == "active_users: 11 is more than the row's seats (10)"


def test_a_date_past_a_day_of_clock_skew_is_refused_and_one_within_it_is_taken() -> None:
    tomorrow = (NOW + CLOCK_SKEW).date()
    taken, refused = _csv(_row(date=tomorrow) + _row(date=tomorrow + timedelta(days=1)).split("\n", 1)[1])

    assert isinstance(taken, UsageRow) and taken.day == tomorrow
    assert isinstance(refused, BadUsageRow) and refused.reason.startswith(
        f"date: {tomorrow + timedelta(days=1)} is in the future")


@pytest.mark.parametrize("day", ["1970-01-01", "0001-01-01"])
def test_an_absurdly_old_date_is_refused(day: str) -> None:
    [bad] = _csv(_row(date=day))

    assert isinstance(bad, BadUsageRow) and bad.reason == f"date: {day} is before 2000-01-01, older than any " \
                                                          "product usage"


@pytest.mark.parametrize("day", ["20260301", "2026-W09-7", "2026-03-01T00:00", "２０２６-03-01"])
def test_a_date_not_written_yyyy_mm_dd_is_refused(day: str) -> None:
    [bad] = _csv(_row(date=day))

    assert isinstance(bad, BadUsageRow) and bad.reason.startswith("date: expected YYYY-MM-DD")


@pytest.mark.parametrize("value", ["1_000", "５", "1e3", "5.0"])
def test_a_count_not_written_in_plain_digits_is_refused(value: str) -> None:
    [bad] = _csv(_row(active_users=value))

    assert isinstance(bad, BadUsageRow) and bad.reason == f"active_users: expected a whole number, got {value!r}"


def test_a_file_with_no_header_is_one_bad_file() -> None:
    [bad] = _csv(f"{ACCOUNT},2026-02-28,5,50,api,10\n{ACCOUNT},2026-03-01,5,50,api,10\n")

    assert isinstance(bad, BadUsageRow) and bad.line == 1
    assert bad.reason.startswith("no header: line 1 must name the columns account_id, date, active_users, events")


def test_a_header_missing_a_required_column_names_it() -> None:
    [bad] = _csv(f"account_id,day,active_users,events\n{ACCOUNT},2026-03-01,5,50\n")

    assert isinstance(bad, BadUsageRow) and "(missing date)" in bad.reason


def test_an_empty_csv_file_is_one_bad_file() -> None:
    [bad] = _csv(b"")

    assert isinstance(bad, BadUsageRow) and bad.line is None and bad.reason.startswith("no header: the file is empty")


def test_a_row_with_more_fields_than_the_header_is_refused() -> None:
    [bad] = _csv(f"account_id,date,active_users,events\n{ACCOUNT},2026-03-01,5,50,api,sso\n")

    assert isinstance(bad, BadUsageRow) and bad.reason.startswith("6 fields, but the header names 4")


def test_a_json_number_past_pythons_digit_limit_is_a_bad_row() -> None:
    [bad] = _jsonl(f'{{"account_id": "{ACCOUNT}", "date": "2026-03-01", "active_users": {"9" * 5000}, '
                   '"events": 1}\n')

    assert isinstance(bad, BadUsageRow) and bad.reason.startswith("not valid JSON: Exceeds the limit")


def test_json_nested_too_deep_is_a_bad_row() -> None:
    [bad] = _jsonl("[" * 200_000 + "\n")

    assert isinstance(bad, BadUsageRow) and bad.reason.startswith("not valid JSON")


def test_a_bad_rows_raw_copy_is_capped() -> None:
    [bad] = _csv(_row(features_used="x" * 100_000, active_users="many"))

    assert isinstance(bad, BadUsageRow) and len(json.dumps(bad.raw)) < 4000


# The folder: only regular files inside it are read.
@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    inside = tmp_path / "usage"
    inside.mkdir()
    yield inside


def test_a_symlink_out_of_the_folder_is_refused_with_its_name(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text(_row())
    (folder / "a.csv").symlink_to(tmp_path / "secret.csv")

    found = scan_usage_folder(folder)

    assert found.files == []
    assert [(r.name, r.reason) for r in found.refused] == [
        ("a.csv", f"leads out of USAGE_DIR (to {(tmp_path / 'secret.csv').resolve()}); never read")]


def test_reading_a_symlink_out_of_its_folder_yields_one_refusal_and_no_row(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text(_row())
    (folder / "a.csv").symlink_to(tmp_path / "secret.csv")

    [bad] = read_usage_file(folder / "a.csv", now=NOW)

    assert isinstance(bad, BadUsageRow) and bad.line is None and "leads out of USAGE_DIR" in bad.reason


def test_a_symlink_within_the_folder_is_read(folder: Path) -> None:
    (folder / "..data").mkdir()  # how Kubernetes mounts a ConfigMap: every file is a link into the folder
    (folder / "..data" / "usage.csv").write_text(_row())
    (folder / "usage.csv").symlink_to(folder / "..data" / "usage.csv")

    found = scan_usage_folder(folder)

    assert [f.name for f in found.files] == ["usage.csv"] and found.refused == []


def test_a_link_to_nothing_is_refused(folder: Path) -> None:
    (folder / "gone.csv").symlink_to(folder / "missing.csv")

    [refused] = scan_usage_folder(folder).refused

    assert refused.reason == "cannot be read: No such file or directory"


def test_a_file_replaced_after_it_was_listed_is_not_opened(folder: Path, tmp_path: Path) -> None:
    (folder / "a.csv").write_text(_row())
    [listed] = scan_usage_folder(folder).files
    (folder / "a.csv.tmp").write_text(_row())
    (folder / "a.csv.tmp").rename(folder / "a.csv")  # an exporter's atomic replace

    with pytest.raises(UsageFileReplaced):
        open_usage_file(listed)


def test_a_file_swapped_for_a_link_after_it_was_listed_is_not_followed(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text(_row())
    (folder / "a.csv").write_text(_row())
    [listed] = scan_usage_folder(folder).files
    (folder / "a.csv").unlink()
    (folder / "a.csv").symlink_to(tmp_path / "secret.csv")

    with pytest.raises(OSError, match="symbolic links"):  # ELOOP: O_NOFOLLOW met a link
        open_usage_file(listed)


# Properties: whatever the bytes, every item is a valid row or a bad one with a reason.
def _valid(row: UsageRow) -> bool:
    return (len(row.account_id) in (15, 18) and row.account_id.isascii() and row.account_id.isalnum()
            and EARLIEST_DAY <= row.day <= (NOW + CLOCK_SKEW).date()
            and 0 <= row.active_users <= MAX_COUNT and 0 <= row.events <= MAX_COUNT
            and (row.seats is None or row.active_users <= row.seats <= MAX_COUNT)
            and all(f and f == f.strip() for f in row.features_used) and row.line >= 1)


def _each_valid_or_bad(items: list[UsageRow | BadUsageRow], file: str) -> None:
    for item in items:
        assert item.file == file
        if isinstance(item, UsageRow):
            assert _valid(item), item
        else:
            assert isinstance(item, BadUsageRow) and item.reason and (item.line is None or item.line >= 1)
            json.dumps(item.raw, default=str)  # the quarantine stores it


_PIECES = st.sampled_from([HEADER, "\ufeff", f"{ACCOUNT},", "2026-03-01,", "9999-12-31,", "5,", "-1,", "50,",
                           "api;sso,", "10", "\n", "\r\n", "\r", ",", '"', '""', "\x00", "é", "\udcff",
                           "99999999999999999999999", ";", "\t", " "])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000) | st.lists(_PIECES, max_size=60).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogateescape")))
def test_any_bytes_as_a_csv_file_never_raise_and_give_valid_or_bad_rows(data: bytes) -> None:
    _each_valid_or_bad(_csv(data), "u.csv")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_as_a_jsonl_file_never_raise_and_give_valid_or_bad_rows(data: bytes) -> None:
    _each_valid_or_bad(_jsonl(data), "u.jsonl")


_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=10)
_FIELDS = st.fixed_dictionaries({}, optional={
    "account_id": st.sampled_from([ACCOUNT, ACCOUNT[:15], "001", ""]) | _JSON_VALUES,
    "date": st.dates().map(date.isoformat) | _JSON_VALUES,
    "active_users": st.integers(-10, 2**70) | st.integers(0, 20).map(str) | _JSON_VALUES,
    "events": st.integers(-10, 2**70) | _JSON_VALUES,
    "seats": st.integers(-10, 2**70) | st.none() | _JSON_VALUES,
    "features_used": st.lists(st.text(max_size=8), max_size=4) | st.text(max_size=10) | _JSON_VALUES,
})


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELDS, max_size=5))
def test_any_json_objects_as_rows_give_valid_or_bad_rows(rows: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)

    items = _jsonl(text.encode())

    assert len(items) == len(rows)
    _each_valid_or_bad(items, "u.jsonl")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.text(max_size=12) | st.integers().map(str) | st.dates().map(date.isoformat),
                         min_size=0, max_size=8), max_size=5))
def test_any_csv_fields_under_the_header_give_valid_or_bad_rows(rows: list[list[str]]) -> None:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    data = (HEADER + out.getvalue()).encode("utf-8", "surrogateescape")

    _each_valid_or_bad(_csv(data), "u.csv")


def test_a_file_name_that_is_not_utf8_is_shown_with_escapes(folder: Path) -> None:
    name = os.fsdecode(b"u-\xff.csv")
    (folder / name).write_text(_row())

    [row] = read_usage_file(folder / name, now=NOW)

    assert row.file == "u-\\xff.csv"
