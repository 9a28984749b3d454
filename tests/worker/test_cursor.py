"""The incremental cursor, pure: where the next read starts, and how a page moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.sync.cursor import Cursor

RUN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def test_after_a_quiet_while_the_read_resumes_strictly_after_the_last_record() -> None:
    cursor = Cursor(RUN - timedelta(days=2), "001A", RUN)

    assert cursor.where(FIVE) == ("(SystemModstamp > 2026-02-27T12:00:00Z OR "
                                  "(SystemModstamp = 2026-02-27T12:00:00Z AND Id > '001A'))")


def test_records_stamped_just_before_the_last_run_are_read_again_in_case_one_committed_late() -> None:
    cursor = Cursor(RUN - timedelta(minutes=2), "001A", RUN)

    assert cursor.where(FIVE) == "SystemModstamp >= 2026-03-01T11:55:00Z"


def test_a_page_moves_the_cursor_to_its_last_record() -> None:
    moved = Cursor(RUN, "", RUN).after_page(RUN - timedelta(hours=1), "001B", RUN + timedelta(minutes=1))

    assert moved == Cursor(RUN - timedelta(hours=1), "001B", RUN + timedelta(minutes=1))


def test_the_cursor_never_passes_the_start_of_its_run() -> None:
    later = RUN + timedelta(hours=2)

    moved = Cursor(RUN, "", RUN).after_page(later, "001Z", RUN)

    assert moved == Cursor(RUN, "", RUN)
    assert moved.where(FIVE) == "SystemModstamp >= 2026-03-01T11:55:00Z"


def test_an_empty_read_moves_only_the_lookback() -> None:
    cursor = Cursor(RUN - timedelta(days=1), "001A", RUN - timedelta(hours=1))

    assert cursor.checked(RUN) == Cursor(RUN - timedelta(days=1), "001A", RUN)


def test_a_cursor_stored_as_a_bare_timestamp_is_still_understood() -> None:
    cursor = Cursor.load("2026-02-01T00:00:00Z")

    assert cursor == Cursor(datetime(2026, 2, 1, tzinfo=UTC), "", datetime(2026, 2, 1, tzinfo=UTC))
    assert Cursor.load(cursor.dump()) == cursor
