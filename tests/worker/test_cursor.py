"""The incremental cursor, pure: where the next read starts, and how a page moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.sync.cursor import MIN_WINDOW, WIDEST, Cursor, narrower, wider

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


def test_a_window_salesforce_needed_is_kept_with_the_cursor() -> None:
    cursor = Cursor(RUN - timedelta(days=3), "001A", RUN, timedelta(hours=6))

    assert Cursor.load(cursor.dump()) == cursor
    assert cursor.after_page(RUN - timedelta(days=2), "001B", RUN).window == timedelta(hours=6)
    assert cursor.checked(RUN + FIVE).window == timedelta(hours=6)


def test_a_cursor_stored_before_windows_existed_has_none() -> None:
    stored = '{"id": "001A", "run": "2026-03-01T12:00:00Z", "stamp": "2026-02-28T12:00:00Z"}'

    assert Cursor.load(stored) == Cursor(RUN - timedelta(days=1), "001A", RUN, None)


def test_a_window_read_to_its_end_moves_the_cursor_there_though_it_held_nothing() -> None:
    cursor = Cursor(RUN - timedelta(days=10), "001A", RUN - timedelta(days=9))

    reached = cursor.reached(RUN - timedelta(days=8), RUN)

    assert reached == Cursor(RUN - timedelta(days=8), "", RUN)
    assert reached.where(FIVE) == "SystemModstamp >= 2026-02-21T12:00:00Z"


def test_reaching_a_window_s_end_never_moves_the_cursor_back_nor_past_the_run() -> None:
    cursor = Cursor(RUN - timedelta(days=1), "001A", RUN)

    assert cursor.reached(RUN - timedelta(days=2), RUN) == cursor
    assert cursor.reached(RUN + timedelta(days=2), RUN) == Cursor(RUN, "", RUN)


def test_the_next_read_starts_at_the_lookback_or_the_stamp_whichever_is_earlier() -> None:
    assert Cursor(RUN - timedelta(days=1), "001A", RUN).start(FIVE) == RUN - timedelta(days=1)
    assert Cursor(RUN - timedelta(minutes=1), "001A", RUN).start(FIVE) == RUN - FIVE


def test_a_window_salesforce_stopped_is_halved_down_to_an_hour_and_no_further() -> None:
    assert narrower(timedelta(days=2)) == timedelta(days=1)
    assert narrower(timedelta(minutes=90)) == MIN_WINDOW == timedelta(hours=1)
    assert narrower(MIN_WINDOW) is None


def test_a_window_salesforce_answered_doubles_short_of_the_narrowest_it_stopped() -> None:
    assert wider(timedelta(days=4)) == timedelta(days=8)
    assert wider(timedelta(days=4), failed=timedelta(days=8)) == timedelta(days=6)
    assert wider(timedelta(hours=1), failed=timedelta(hours=1)) == MIN_WINDOW


def test_a_window_that_grows_past_ten_years_is_no_limit_any_more() -> None:
    assert wider(WIDEST / 2) == WIDEST
    assert wider(WIDEST) is None
    assert wider(None) is None
