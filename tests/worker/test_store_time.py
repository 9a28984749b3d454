"""The store's one timestamp form sorts as time sorts, whatever the year."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from worker.store import iso, parse_iso


def test_a_year_before_1000_is_zero_padded_so_text_order_stays_time_order() -> None:
    assert iso(datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00Z"
    assert iso(datetime(5, 1, 1, tzinfo=UTC)) < iso(datetime(2026, 1, 1, tzinfo=UTC))


def test_a_moment_is_stored_in_utc_to_the_second_and_read_back() -> None:
    moment = datetime(2026, 3, 2, 10, 30, 15, 999_999, tzinfo=timezone(timedelta(hours=1)))

    assert iso(moment) == "2026-03-02T09:30:15Z"
    assert parse_iso(iso(moment)) == moment.replace(microsecond=0)
