"""The measure library (`worker/measures.py`), measure by measure, on a few rows built by hand.

Each test fills a fresh store with the handful of rows that matter and reads one measure at a fixed
`AS_OF` (Friday 2024-05-10 09:00 UTC); the expected number is worked out in a comment. The rules these
tests pin down: ages are whole days; an activity window starts at midnight of the day `as_of - window`
falls on (that whole day counts); a usage window is the last `window` days up to and including the day of
`as_of`; nothing stamped after `as_of` (or dated after its day) is visible, so history can be replayed;
deleted records never count; count measures answer 0 for every live account, the others answer nothing
for an account without data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from worker.scoring.engine import score_account
from worker.scoring.measures import LIBRARY, query_usage
from worker.scoring.scorecard import Scorecard
from worker.store import Store, iso, parse_iso

AS_OF = datetime(2024, 5, 10, 9, 0, tzinfo=UTC)
# Window starts for AS_OF (midnight of the day `AS_OF - window` falls on):
# 7d → 2024-05-03, 14d → 2024-04-26, 30d → 2024-04-10, 90d → 2024-02-10.
ACME = "001000000000001AAA"
BETA = "001000000000002AAA"
GONE = "001000000000003AAA"  # a deleted account
FEATURES = ("dashboards", "alerts", "api", "sso")


# --- building the store --------------------------------------------------------------------------------------

@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    """Two live accounts and a deleted one, nothing else."""
    store = Store(tmp_path / "t.db")
    store.upsert("accounts", [{"id": ACME, "name": "Acme", "is_deleted": 0},
                              {"id": BETA, "name": "Beta", "is_deleted": 0},
                              {"id": GONE, "name": "Gone", "is_deleted": 1}], ("id",))
    yield store
    store.close()


def activity(store: Store, kind: str, when: str, direction: str | None = None, *, account: str | None = ACME,
             deleted: bool = False, sentiment: float | None = None, status: str | None = None,
             priority: str | None = None, closed: str | None = None) -> None:
    number = int(store.scalar("SELECT count(*) FROM activities")) + 1
    store.upsert("activities", [{
        "source": "test", "source_id": str(number), "kind": kind, "account_id": account,
        "occurred_at": iso(parse_iso(when)), "direction": direction, "sentiment": sentiment, "status": status,
        "priority": priority, "closed_at": iso(parse_iso(closed)) if closed else None,
        "is_deleted": int(deleted)}], ("source", "source_id"))


def meeting(store: Store, when: str, **kw: Any) -> None:
    activity(store, "meeting", when, "both", **kw)


def email_in(store: Store, when: str, **kw: Any) -> None:
    activity(store, "email", when, "in", **kw)


def email_out(store: Store, when: str, **kw: Any) -> None:
    activity(store, "email", when, "out", **kw)


def ticket(store: Store, when: str, *, status: str = "open", **kw: Any) -> None:
    activity(store, "ticket", when, "in", status=status, **kw)


def usage(store: Store, day: str, active: int = 1, *, account: str = ACME, events: int = 10,
          features: Sequence[str] = (), seats: int | None = None) -> None:
    store.upsert("usage_daily", [{"account_id": account, "day": day, "active_users": active, "events": events,
                                  "features_used": json.dumps(list(features)), "seats": seats}],
                 ("account_id", "day"))


def contract(store: Store, seats: float, account: str = ACME) -> None:
    store.conn.execute("UPDATE accounts SET contracted_seats = ? WHERE id = ?", (seats, account))


def renewal(store: Store, close: str, *, account: str = ACME, closed: bool = False, deleted: bool = False) -> None:
    number = int(store.scalar("SELECT count(*) FROM opportunities")) + 1
    store.upsert("opportunities", [{"id": f"006{number:015d}", "account_id": account, "name": "renewal",
                                    "type": "Renewal", "close_date": close, "is_closed": int(closed),
                                    "is_won": 0, "is_deleted": int(deleted)}], ("id",))


def measure(store: Store, name: str, **params: Any) -> dict[str, float]:
    return LIBRARY[name].query(store, params, AS_OF)


def days(n: float) -> timedelta:
    return timedelta(days=n)


# --- every measure on an empty store ----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "empty"), [("meetings", 0.0), ("open_tickets", 0.0), ("urgent_tickets", 0.0),
                                             ("outbound_only_streak", 0.0), ("ticket_surge", 1.0)])
def test_count_measures_answer_for_every_live_account_and_never_for_a_deleted_one(
        db: Store, name: str, empty: float) -> None:
    meeting(db, "2024-05-01T10:00:00Z", account=GONE)
    ticket(db, "2024-05-01T10:00:00Z", account=GONE, priority="urgent")
    email_out(db, "2024-05-01T10:00:00Z", account=GONE)
    # No activity is data: 0 (ticket_surge: 1 = the usual rate); the deleted account is not scored at all.
    assert measure(db, name) == {ACME: empty, BETA: empty}


@pytest.mark.parametrize("name", sorted(set(LIBRARY) - {"meetings", "open_tickets", "urgent_tickets",
                                                         "outbound_only_streak", "ticket_surge"}))
def test_other_measures_give_no_value_without_data(db: Store, name: str) -> None:
    assert measure(db, name, features=FEATURES) == {}


# --- days_since_two_way_touch --------------------------------------------------------------------------------

def test_two_way_touch_is_whole_days_since_the_latest_meeting_or_call(db: Store) -> None:
    meeting(db, "2024-04-20T15:00:00Z")
    activity(db, "call", "2024-05-07T22:00:00Z", "both")
    # latest touch 2024-05-07 → 05-10 − 05-07 = 3 days
    assert measure(db, "days_since_two_way_touch") == {ACME: 3.0}


def test_two_way_touch_late_yesterday_is_one_day_not_a_fraction(db: Store) -> None:
    meeting(db, "2024-05-09T23:59:59Z")
    # 9 hours ago, but yesterday: 1 whole day
    assert measure(db, "days_since_two_way_touch") == {ACME: 1.0}


def test_two_way_touch_earlier_today_is_zero(db: Store) -> None:
    meeting(db, "2024-05-10T00:00:00Z")
    assert measure(db, "days_since_two_way_touch") == {ACME: 0.0}


def test_two_way_touch_after_as_of_is_invisible(db: Store) -> None:
    meeting(db, "2024-05-01T10:00:00Z")
    meeting(db, "2024-05-10T09:00:01Z")  # one second after AS_OF
    # only 05-01 counts → 9 days
    assert measure(db, "days_since_two_way_touch") == {ACME: 9.0}


def test_deleted_meeting_is_not_a_touch(db: Store) -> None:
    meeting(db, "2024-05-01T10:00:00Z")
    meeting(db, "2024-05-09T10:00:00Z", deleted=True)
    assert measure(db, "days_since_two_way_touch") == {ACME: 9.0}


def test_never_touched_account_has_no_value_rather_than_zero(db: Store) -> None:
    meeting(db, "2024-05-01T10:00:00Z")
    assert BETA not in measure(db, "days_since_two_way_touch")


def test_unanswered_inbound_emails_are_not_a_two_way_touch(db: Store) -> None:
    email_in(db, "2024-05-02T10:00:00Z")
    email_in(db, "2024-05-09T10:00:00Z")
    assert measure(db, "days_since_two_way_touch") == {}


def test_our_emails_without_an_answer_are_not_a_two_way_touch(db: Store) -> None:
    email_out(db, "2024-05-02T10:00:00Z")
    email_out(db, "2024-05-09T10:00:00Z")
    assert measure(db, "days_since_two_way_touch") == {}


def test_our_reply_to_an_inbound_email_is_a_touch_on_the_day_of_the_reply(db: Store) -> None:
    email_in(db, "2024-04-25T09:00:00Z")
    email_out(db, "2024-05-06T16:00:00Z")  # 11 days later, within 14
    # touch on 05-06 → 4 days
    assert measure(db, "days_since_two_way_touch") == {ACME: 4.0}


def test_the_customers_answer_to_our_email_is_a_touch_on_the_day_of_the_answer(db: Store) -> None:
    email_out(db, "2024-05-01T09:00:00Z")
    email_in(db, "2024-05-03T12:00:00Z")
    # touch on 05-03 → 7 days
    assert measure(db, "days_since_two_way_touch") == {ACME: 7.0}


@pytest.mark.parametrize(("reply", "expected"), [
    ("2024-04-15T08:59:59Z", {ACME: 25.0}),  # 14 days less a second after the inbound: touch on 04-15 → 25 days
    ("2024-04-15T09:00:01Z", {}),            # 14 days and a second: not an exchange
])
def test_a_reply_counts_as_an_exchange_only_within_14_days(db: Store, reply: str, expected: dict[str, float]
                                                           ) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, reply)
    assert measure(db, "days_since_two_way_touch") == expected


def test_within_parameter_sets_how_late_a_reply_may_come(db: Store) -> None:
    email_in(db, "2024-05-01T09:00:00Z")
    email_out(db, "2024-05-03T09:00:00Z")  # two days later
    assert measure(db, "days_since_two_way_touch", within=days(1)) == {}
    assert measure(db, "days_since_two_way_touch", within=days(3)) == {ACME: 7.0}


def test_a_reply_after_as_of_is_not_yet_an_exchange(db: Store) -> None:
    email_in(db, "2024-05-09T10:00:00Z")
    email_out(db, "2024-05-10T09:30:00Z")
    assert measure(db, "days_since_two_way_touch") == {}


def test_a_deleted_reply_is_not_an_exchange(db: Store) -> None:
    email_in(db, "2024-05-06T10:00:00Z")
    email_out(db, "2024-05-07T10:00:00Z", deleted=True)
    assert measure(db, "days_since_two_way_touch") == {}


def test_emails_of_two_accounts_do_not_make_an_exchange(db: Store) -> None:
    email_in(db, "2024-05-06T10:00:00Z", account=ACME)
    email_out(db, "2024-05-07T10:00:00Z", account=BETA)
    assert measure(db, "days_since_two_way_touch") == {}


# --- meetings ------------------------------------------------------------------------------------------------

def test_meetings_counts_the_meetings_in_the_window_and_nothing_else(db: Store) -> None:
    for when in ("2024-03-01T10:00:00Z", "2024-04-20T10:00:00Z", "2024-05-09T10:00:00Z"):
        meeting(db, when)
    activity(db, "call", "2024-05-08T10:00:00Z", "both")
    email_out(db, "2024-05-07T10:00:00Z")
    assert measure(db, "meetings") == {ACME: 3.0, BETA: 0.0}


@pytest.mark.parametrize(("when", "expected"), [
    ("2024-02-10T00:00:00Z", 1.0),  # 90-day window starts at midnight of 02-10
    ("2024-02-09T23:59:59Z", 0.0),
])
def test_meetings_window_starts_at_midnight(db: Store, when: str, expected: float) -> None:
    meeting(db, when)
    assert measure(db, "meetings")[ACME] == expected


def test_meetings_window_parameter(db: Store) -> None:
    meeting(db, "2024-04-09T23:59:59Z")  # before the 30-day window (starts 04-10)
    meeting(db, "2024-04-10T00:00:00Z")
    meeting(db, "2024-05-01T10:00:00Z")
    assert measure(db, "meetings", window=days(30))[ACME] == 2.0


@pytest.mark.parametrize(("when", "expected"), [("2024-05-10T09:00:00Z", 1.0), ("2024-05-10T09:00:01Z", 0.0)])
def test_meetings_up_to_as_of_count_and_later_ones_are_invisible(db: Store, when: str, expected: float) -> None:
    meeting(db, when)
    assert measure(db, "meetings")[ACME] == expected


def test_deleted_meetings_do_not_count(db: Store) -> None:
    meeting(db, "2024-05-01T10:00:00Z")
    meeting(db, "2024-05-02T10:00:00Z", deleted=True)
    assert measure(db, "meetings")[ACME] == 1.0


# --- inbound_answered_share ----------------------------------------------------------------------------------

def test_answered_share_is_the_share_of_inbound_emails_answered_within_two_days(db: Store) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, "2024-04-01T12:00:00Z")   # answered after 3 h
    email_in(db, "2024-04-10T09:00:00Z")
    email_out(db, "2024-04-11T09:00:00Z")   # answered after 1 day
    email_in(db, "2024-04-20T09:00:00Z")
    email_out(db, "2024-04-21T18:00:00Z")   # answered after 33 h
    email_in(db, "2024-05-01T09:00:00Z")    # never answered
    # 3 of 4 → 0.75
    assert measure(db, "inbound_answered_share") == {ACME: 0.75}


@pytest.mark.parametrize(("reply", "expected"), [
    ("2024-04-03T08:59:59Z", 1.0),  # two days less a second: answered
    ("2024-04-03T09:00:01Z", 0.0),  # two days and a second: too late
])
def test_a_reply_answers_only_within_two_days(db: Store, reply: str, expected: float) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, reply)
    assert measure(db, "inbound_answered_share") == {ACME: expected}


def test_answered_share_within_parameter(db: Store) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, "2024-04-02T12:00:00Z")  # 27 h later
    assert measure(db, "inbound_answered_share", within=days(1)) == {ACME: 0.0}


@pytest.mark.parametrize(("young", "expected"), [
    # Judged in whole days, so the share moves with the data and the date, not with every tick of the clock:
    ("2024-05-08T23:59:59Z", 1.0),  # sent two calendar days before as_of: not judged yet → 1 of 1
    ("2024-05-07T23:59:59Z", 0.5),  # three calendar days before, unanswered → 1 of 2
])
def test_emails_younger_than_within_are_not_yet_judged(db: Store, young: str, expected: float) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, "2024-04-01T10:00:00Z")
    email_in(db, young)
    assert measure(db, "inbound_answered_share") == {ACME: expected}


def test_account_with_no_judged_inbound_email_has_no_value(db: Store) -> None:
    email_in(db, "2024-05-09T10:00:00Z")  # too young to judge
    email_out(db, "2024-05-01T10:00:00Z", account=BETA)  # nothing inbound at all
    assert measure(db, "inbound_answered_share") == {}


def test_an_email_sent_before_the_inbound_does_not_answer_it(db: Store) -> None:
    email_out(db, "2024-04-01T08:00:00Z")
    email_in(db, "2024-04-01T09:00:00Z")
    assert measure(db, "inbound_answered_share") == {ACME: 0.0}


def test_a_deleted_inbound_email_is_not_judged(db: Store) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, "2024-04-01T10:00:00Z")
    email_in(db, "2024-04-05T09:00:00Z", deleted=True)  # unanswered, but deleted
    assert measure(db, "inbound_answered_share") == {ACME: 1.0}


def test_a_deleted_reply_does_not_answer(db: Store) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, "2024-04-01T10:00:00Z", deleted=True)
    assert measure(db, "inbound_answered_share") == {ACME: 0.0}


def test_an_email_to_another_account_does_not_answer(db: Store) -> None:
    email_in(db, "2024-04-01T09:00:00Z", account=ACME)
    email_out(db, "2024-04-01T10:00:00Z", account=BETA)
    assert measure(db, "inbound_answered_share") == {ACME: 0.0}


def test_answered_share_window_starts_at_midnight(db: Store) -> None:
    email_in(db, "2024-02-09T23:59:59Z")  # before the 90-day window (starts 02-10)
    email_in(db, "2024-02-10T00:00:00Z")  # in it, unanswered
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, "2024-04-01T10:00:00Z")
    # 1 answered of 2 in the window → 0.5
    assert measure(db, "inbound_answered_share") == {ACME: 0.5}


# --- inbound_sentiment ---------------------------------------------------------------------------------------

def test_sentiment_weighs_messages_by_half_life(db: Store) -> None:
    email_in(db, "2024-05-10T08:00:00Z", sentiment=0.8)   # age 0: weight 1
    email_in(db, "2024-04-30T08:00:00Z", sentiment=-0.4)  # age 10: weight 0.5
    email_in(db, "2024-04-20T08:00:00Z", sentiment=0.2)   # age 20: weight 0.25
    # (0.8 − 0.2 + 0.05) / 1.75 = 0.3714…
    assert measure(db, "inbound_sentiment", half_life=days(10)) == {ACME: pytest.approx(0.65 / 1.75)}


def test_sentiment_default_half_life_is_30_days_in_whole_days(db: Store) -> None:
    email_in(db, "2024-05-10T08:00:00Z", sentiment=0.6)   # age 0: weight 1
    email_in(db, "2024-04-10T23:00:00Z", sentiment=-0.6)  # age 30 whole days: weight 0.5
    # (0.6 − 0.3) / 1.5 = 0.2
    assert measure(db, "inbound_sentiment") == {ACME: pytest.approx(0.2)}


def test_sentiment_reads_inbound_emails_tickets_and_ticket_comments_only(db: Store) -> None:
    email_in(db, "2024-05-10T01:00:00Z", sentiment=0.5)
    activity(db, "ticket_comment", "2024-05-10T02:00:00Z", "in", sentiment=-0.5)
    ticket(db, "2024-05-10T03:00:00Z", sentiment=0.3)
    email_out(db, "2024-05-10T04:00:00Z", sentiment=-1.0)
    activity(db, "ticket_comment", "2024-05-10T05:00:00Z", "out", sentiment=-1.0)
    meeting(db, "2024-05-10T06:00:00Z", sentiment=-1.0)
    # all today, weight 1: (0.5 − 0.5 + 0.3) / 3 = 0.1
    assert measure(db, "inbound_sentiment") == {ACME: pytest.approx(0.1)}


def test_sentiment_ignores_messages_without_a_score(db: Store) -> None:
    email_in(db, "2024-05-09T10:00:00Z", sentiment=0.4)
    email_in(db, "2024-05-08T10:00:00Z")
    email_in(db, "2024-05-08T10:00:00Z", account=BETA)
    assert measure(db, "inbound_sentiment") == {ACME: pytest.approx(0.4)}


def test_sentiment_window_starts_at_midnight(db: Store) -> None:
    email_in(db, "2024-05-10T08:00:00Z", sentiment=0.6)   # weight 1
    email_in(db, "2024-04-10T00:00:00Z", sentiment=-0.6)  # age 30, first day of a 30-day window: weight 0.5
    email_in(db, "2024-04-09T23:59:59Z", sentiment=1.0)   # outside
    # (0.6 − 0.3) / 1.5 = 0.2
    assert measure(db, "inbound_sentiment", window=days(30)) == {ACME: pytest.approx(0.2)}


def test_sentiment_skips_deleted_and_future_messages(db: Store) -> None:
    email_in(db, "2024-05-09T10:00:00Z", sentiment=0.4)
    email_in(db, "2024-05-09T11:00:00Z", sentiment=-1.0, deleted=True)
    email_in(db, "2024-05-10T09:00:01Z", sentiment=-1.0)
    assert measure(db, "inbound_sentiment") == {ACME: pytest.approx(0.4)}


# --- open_tickets --------------------------------------------------------------------------------------------

def test_open_tickets_counts_tickets_not_closed_however_old(db: Store) -> None:
    ticket(db, "2024-05-01T10:00:00Z", status="open")
    ticket(db, "2023-01-15T10:00:00Z", status="pending")  # old, but still open: no window
    ticket(db, "2024-04-01T10:00:00Z", status="Closed", closed="2024-04-02T10:00:00Z")
    ticket(db, "2024-04-01T10:00:00Z", status="solved", closed="2024-04-03T10:00:00Z")
    assert measure(db, "open_tickets") == {ACME: 2.0, BETA: 0.0}


@pytest.mark.parametrize("status", ["solved", "Closed", "deleted"])
def test_a_ticket_in_a_closed_status_is_not_open_even_without_a_closing_time(db: Store, status: str) -> None:
    ticket(db, "2024-05-01T10:00:00Z", status=status)
    assert measure(db, "open_tickets")[ACME] == 0.0


def test_deleted_and_future_tickets_are_not_open(db: Store) -> None:
    ticket(db, "2024-05-01T10:00:00Z", deleted=True)
    ticket(db, "2024-05-10T09:00:01Z")
    assert measure(db, "open_tickets")[ACME] == 0.0


def test_a_ticket_closed_after_as_of_was_still_open_at_as_of(db: Store) -> None:
    ticket(db, "2024-04-01T10:00:00Z", status="solved", closed="2024-05-12T10:00:00Z")
    assert measure(db, "open_tickets")[ACME] == 1.0


# --- urgent_tickets ------------------------------------------------------------------------------------------

def test_urgent_tickets_counts_high_and_urgent_priorities(db: Store) -> None:
    ticket(db, "2024-05-01T10:00:00Z", priority="urgent")
    ticket(db, "2024-05-02T10:00:00Z", priority="High")
    ticket(db, "2024-05-03T10:00:00Z", priority="normal")
    ticket(db, "2024-05-04T10:00:00Z", priority="low")
    ticket(db, "2024-05-05T10:00:00Z")
    assert measure(db, "urgent_tickets") == {ACME: 2.0, BETA: 0.0}


def test_urgent_tickets_counts_those_opened_in_the_window_even_if_closed(db: Store) -> None:
    ticket(db, "2024-04-20T10:00:00Z", priority="urgent", status="solved", closed="2024-04-21T10:00:00Z")
    assert measure(db, "urgent_tickets")[ACME] == 1.0


def test_urgent_tickets_window_starts_at_midnight(db: Store) -> None:
    ticket(db, "2024-04-09T23:59:59Z", priority="urgent")  # before the 30-day window (starts 04-10)
    ticket(db, "2024-04-10T00:00:00Z", priority="urgent")
    assert measure(db, "urgent_tickets")[ACME] == 1.0


def test_urgent_tickets_priorities_parameter(db: Store) -> None:
    ticket(db, "2024-05-01T10:00:00Z", priority="urgent")
    ticket(db, "2024-05-02T10:00:00Z", priority="high")
    assert measure(db, "urgent_tickets", priorities=("urgent",))[ACME] == 1.0


def test_urgent_tickets_ignores_deleted_and_future_tickets(db: Store) -> None:
    ticket(db, "2024-05-01T10:00:00Z", priority="urgent", deleted=True)
    ticket(db, "2024-05-10T09:00:01Z", priority="urgent")
    assert measure(db, "urgent_tickets")[ACME] == 0.0


# --- median_reply_hours --------------------------------------------------------------------------------------

def _answered(store: Store, inbound: str, reply: str, **kw: Any) -> None:
    email_in(store, inbound, **kw)
    email_out(store, reply, **kw)


def test_median_reply_hours_of_an_odd_count_is_the_middle_one(db: Store) -> None:
    _answered(db, "2024-04-01T09:00:00Z", "2024-04-01T10:00:00Z")  # 1 h
    _answered(db, "2024-04-02T09:00:00Z", "2024-04-02T12:00:00Z")  # 3 h
    _answered(db, "2024-04-03T09:00:00Z", "2024-04-03T19:00:00Z")  # 10 h
    # 1, 3, 10 → 3
    assert measure(db, "median_reply_hours") == {ACME: pytest.approx(3.0)}


def test_median_reply_hours_of_an_even_count_is_the_mean_of_the_middle_two(db: Store) -> None:
    _answered(db, "2024-04-01T09:00:00Z", "2024-04-01T10:00:00Z")  # 1 h
    _answered(db, "2024-04-02T09:00:00Z", "2024-04-02T12:00:00Z")  # 3 h
    _answered(db, "2024-04-03T09:00:00Z", "2024-04-03T19:00:00Z")  # 10 h
    _answered(db, "2024-04-04T09:00:00Z", "2024-04-05T05:00:00Z")  # 20 h
    # 1, 3, 10, 20 → (3 + 10) / 2 = 6.5
    assert measure(db, "median_reply_hours") == {ACME: pytest.approx(6.5)}


def test_reply_time_runs_to_the_first_reply(db: Store) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, "2024-04-01T11:00:00Z")
    email_out(db, "2024-04-01T15:00:00Z")
    assert measure(db, "median_reply_hours") == {ACME: pytest.approx(2.0)}


def test_unanswered_emails_are_left_out_of_the_median(db: Store) -> None:
    _answered(db, "2024-04-01T09:00:00Z", "2024-04-01T13:00:00Z")  # 4 h
    email_in(db, "2024-04-20T09:00:00Z")
    email_in(db, "2024-04-20T09:00:00Z", account=BETA)  # BETA never answered: no value
    assert measure(db, "median_reply_hours") == {ACME: pytest.approx(4.0)}


def test_a_reply_after_as_of_is_not_yet_a_reply(db: Store) -> None:
    _answered(db, "2024-05-09T09:00:00Z", "2024-05-10T12:00:00Z")
    assert measure(db, "median_reply_hours") == {}


def test_a_deleted_reply_is_skipped_for_the_next_one(db: Store) -> None:
    email_in(db, "2024-04-01T09:00:00Z")
    email_out(db, "2024-04-01T10:00:00Z", deleted=True)
    email_out(db, "2024-04-01T14:00:00Z")
    assert measure(db, "median_reply_hours") == {ACME: pytest.approx(5.0)}


def test_a_deleted_inbound_email_is_left_out_of_the_median(db: Store) -> None:
    _answered(db, "2024-04-01T09:00:00Z", "2024-04-01T11:00:00Z")  # 2 h
    email_in(db, "2024-04-02T09:00:00Z", deleted=True)
    email_out(db, "2024-04-03T09:00:00Z")  # would make 24 h
    assert measure(db, "median_reply_hours") == {ACME: pytest.approx(2.0)}


def test_median_reply_window_starts_at_midnight(db: Store) -> None:
    _answered(db, "2024-02-10T00:00:00Z", "2024-02-10T02:00:00Z", account=ACME)  # first moment of the window
    _answered(db, "2024-02-09T23:59:59Z", "2024-02-10T01:59:59Z", account=BETA)  # a second before it
    assert measure(db, "median_reply_hours") == {ACME: pytest.approx(2.0)}


# --- outbound_only_streak ------------------------------------------------------------------------------------

def test_streak_counts_our_emails_since_the_customer_last_wrote(db: Store) -> None:
    email_out(db, "2024-04-01T10:00:00Z")
    email_out(db, "2024-04-02T10:00:00Z")
    email_in(db, "2024-04-05T10:00:00Z")
    for when in ("2024-04-10T10:00:00Z", "2024-04-20T10:00:00Z", "2024-05-01T10:00:00Z"):
        email_out(db, when)
    # three sent since 04-05
    assert measure(db, "outbound_only_streak") == {ACME: 3.0, BETA: 0.0}


def test_streak_without_any_inbound_email_counts_every_email_in_the_window(db: Store) -> None:
    email_out(db, "2024-03-01T10:00:00Z")
    email_out(db, "2024-04-01T10:00:00Z")
    assert measure(db, "outbound_only_streak")[ACME] == 2.0


def test_streak_window_starts_at_midnight(db: Store) -> None:
    email_out(db, "2024-02-09T23:59:59Z")  # before the 90-day window (starts 02-10)
    email_out(db, "2024-02-10T00:00:00Z")
    assert measure(db, "outbound_only_streak")[ACME] == 1.0


def test_an_inbound_email_after_as_of_does_not_end_the_streak(db: Store) -> None:
    email_out(db, "2024-04-01T10:00:00Z")
    email_out(db, "2024-05-01T10:00:00Z")
    email_in(db, "2024-05-10T10:00:00Z")
    email_out(db, "2024-05-10T11:00:00Z")  # after as_of: not counted either
    assert measure(db, "outbound_only_streak")[ACME] == 2.0


def test_a_deleted_inbound_email_does_not_end_the_streak(db: Store) -> None:
    email_out(db, "2024-04-01T10:00:00Z")
    email_in(db, "2024-04-05T10:00:00Z", deleted=True)
    email_out(db, "2024-04-10T10:00:00Z")
    assert measure(db, "outbound_only_streak")[ACME] == 2.0


def test_deleted_emails_we_sent_are_not_counted(db: Store) -> None:
    email_in(db, "2024-04-01T10:00:00Z")
    email_out(db, "2024-04-02T10:00:00Z", deleted=True)
    email_out(db, "2024-04-03T10:00:00Z")
    assert measure(db, "outbound_only_streak")[ACME] == 1.0


# --- ticket_surge --------------------------------------------------------------------------------------------

def test_surge_is_one_for_tickets_older_than_the_baseline_only(db: Store) -> None:
    ticket(db, "2024-01-01T10:00:00Z")
    assert measure(db, "ticket_surge") == {ACME: 1.0, BETA: 1.0}


def test_surge_compares_the_window_rate_with_the_baseline_rate(db: Store) -> None:
    for when in ("2024-04-15T10:00:00Z", "2024-04-25T10:00:00Z", "2024-05-05T10:00:00Z",   # last 30 days
                 "2024-02-20T10:00:00Z", "2024-03-05T10:00:00Z", "2024-03-20T10:00:00Z"):  # rest of 90
        ticket(db, when)
    # (3 / 30) / (6 / 90) = 0.1 / 0.0667 = 1.5
    assert measure(db, "ticket_surge")[ACME] == pytest.approx(1.5)


def test_surge_when_every_ticket_is_recent_is_the_baseline_over_the_window(db: Store) -> None:
    ticket(db, "2024-05-01T10:00:00Z")
    ticket(db, "2024-05-02T10:00:00Z")
    # (2 / 30) / (2 / 90) = 3
    assert measure(db, "ticket_surge")[ACME] == pytest.approx(3.0)


def test_surge_is_zero_when_no_ticket_is_recent(db: Store) -> None:
    ticket(db, "2024-03-01T10:00:00Z")
    ticket(db, "2024-03-02T10:00:00Z")
    assert measure(db, "ticket_surge")[ACME] == 0.0


def test_surge_windows_start_at_midnight(db: Store) -> None:
    ticket(db, "2024-04-10T00:00:00Z")  # first moment of the 30-day window
    ticket(db, "2024-04-09T23:59:59Z")  # baseline only
    ticket(db, "2024-02-10T00:00:00Z")  # first moment of the 90-day baseline
    ticket(db, "2024-02-09T23:59:59Z")  # not at all
    # (1 / 30) / (3 / 90) = 1; a wrong window would give 2.0, a wrong baseline 0.75
    assert measure(db, "ticket_surge")[ACME] == pytest.approx(1.0)


def test_surge_ignores_deleted_and_future_tickets(db: Store) -> None:
    ticket(db, "2024-05-01T10:00:00Z")
    ticket(db, "2024-03-01T10:00:00Z")
    ticket(db, "2024-03-02T10:00:00Z")
    ticket(db, "2024-05-02T10:00:00Z", deleted=True)
    ticket(db, "2024-05-10T09:00:01Z")
    # (1 / 30) / (3 / 90) = 1
    assert measure(db, "ticket_surge")[ACME] == pytest.approx(1.0)


# --- resolution_days -----------------------------------------------------------------------------------------

def test_resolution_days_of_an_odd_count_is_the_middle_one(db: Store) -> None:
    ticket(db, "2024-04-01T09:00:00Z", status="solved", closed="2024-04-02T09:00:00Z")  # 1 day
    ticket(db, "2024-04-03T09:00:00Z", status="solved", closed="2024-04-05T21:00:00Z")  # 2.5 days
    ticket(db, "2024-04-10T09:00:00Z", status="solved", closed="2024-04-14T09:00:00Z")  # 4 days
    assert measure(db, "resolution_days") == {ACME: pytest.approx(2.5)}


def test_resolution_days_of_an_even_count_is_the_mean_of_the_middle_two(db: Store) -> None:
    for opened, closed in (("2024-04-01", "2024-04-02"), ("2024-04-01", "2024-04-03"),    # 1, 2 days
                           ("2024-04-01", "2024-04-04"), ("2024-04-01", "2024-04-11")):   # 3, 10 days
        ticket(db, f"{opened}T09:00:00Z", status="solved", closed=f"{closed}T09:00:00Z")
    # (2 + 3) / 2 = 2.5
    assert measure(db, "resolution_days") == {ACME: pytest.approx(2.5)}


def test_open_tickets_are_not_resolved(db: Store) -> None:
    ticket(db, "2024-01-01T09:00:00Z")
    ticket(db, "2024-04-01T09:00:00Z", status="solved", closed="2024-04-02T09:00:00Z")
    ticket(db, "2024-04-01T09:00:00Z", account=BETA)  # only open tickets: no value
    assert measure(db, "resolution_days") == {ACME: pytest.approx(1.0)}


def test_resolution_window_is_on_the_closing_time(db: Store) -> None:
    # opened long before the 90-day window (starts 02-10); ACME's closed at its first moment: 40 days
    ticket(db, "2024-01-01T00:00:00Z", status="solved", closed="2024-02-10T00:00:00Z", account=ACME)
    ticket(db, "2024-01-01T00:00:00Z", status="solved", closed="2024-02-09T23:59:59Z", account=BETA)
    assert measure(db, "resolution_days") == {ACME: pytest.approx(40.0)}


def test_a_ticket_closed_after_as_of_is_not_yet_resolved(db: Store) -> None:
    ticket(db, "2024-04-01T09:00:00Z", status="solved", closed="2024-04-03T09:00:00Z")  # 2 days
    ticket(db, "2024-04-01T09:00:00Z", status="solved", closed="2024-05-10T09:00:01Z")
    assert measure(db, "resolution_days") == {ACME: pytest.approx(2.0)}


def test_deleted_tickets_are_not_resolved(db: Store) -> None:
    ticket(db, "2024-04-01T09:00:00Z", status="solved", closed="2024-04-03T09:00:00Z")  # 2 days
    ticket(db, "2024-04-01T09:00:00Z", status="solved", closed="2024-04-11T09:00:00Z", deleted=True)
    assert measure(db, "resolution_days") == {ACME: pytest.approx(2.0)}


# --- days_since_last_active ----------------------------------------------------------------------------------

def test_days_since_last_active_counts_from_the_last_day_with_active_users(db: Store) -> None:
    usage(db, "2024-05-01", 3)
    usage(db, "2024-05-05", 2)
    usage(db, "2024-05-07", 0)  # a row, but nobody active
    # 05-10 − 05-05 = 5
    assert measure(db, "days_since_last_active") == {ACME: 5.0}


def test_product_used_today_is_zero_days(db: Store) -> None:
    usage(db, "2024-05-10", 1)
    assert measure(db, "days_since_last_active") == {ACME: 0.0}


def test_usage_dated_after_as_of_is_invisible(db: Store) -> None:
    usage(db, "2024-05-05", 2)
    usage(db, "2024-05-11", 9)
    assert measure(db, "days_since_last_active") == {ACME: 5.0}


def test_account_never_active_has_no_last_active_day(db: Store) -> None:
    usage(db, "2024-05-05", 0)
    assert measure(db, "days_since_last_active") == {}


# --- usage_frequency -----------------------------------------------------------------------------------------

def test_usage_frequency_is_the_share_of_days_with_active_users(db: Store) -> None:
    for day in range(1, 7):
        usage(db, f"2024-05-0{day}", 4)  # 6 active days
    usage(db, "2024-05-07", 0)
    usage(db, "2024-05-08", 0)
    # 6 / 30 = 0.2
    assert measure(db, "usage_frequency") == {ACME: pytest.approx(0.2)}


def test_usage_window_is_the_last_30_days_including_today(db: Store) -> None:
    usage(db, "2024-04-10", 1)  # 31 days back: outside
    usage(db, "2024-04-11", 1)  # first day of the window
    usage(db, "2024-05-10", 1)  # today
    usage(db, "2024-05-11", 1)  # after as_of's day
    # 2 / 30
    assert measure(db, "usage_frequency") == {ACME: pytest.approx(2 / 30)}


def test_usage_frequency_window_parameter_never_exceeds_one(db: Store) -> None:
    for day in range(1, 11):
        usage(db, f"2024-05-{day:02d}", 1)
    usage(db, "2024-04-30", 1)
    # 05-01..05-10 are the 10 days: 10 / 10
    assert measure(db, "usage_frequency", window=days(10)) == {ACME: pytest.approx(1.0)}


def test_usage_frequency_is_zero_for_a_quiet_account_with_usage_history(db: Store) -> None:
    usage(db, "2024-03-01", 5, account=ACME)
    assert measure(db, "usage_frequency") == {ACME: 0.0}


def test_usage_frequency_has_no_value_for_an_account_whose_usage_is_all_after_as_of(db: Store) -> None:
    usage(db, "2024-05-11", 5)
    assert measure(db, "usage_frequency") == {}


# --- feature_adoption ----------------------------------------------------------------------------------------

def test_feature_adoption_counts_only_the_listed_features_once_each(db: Store) -> None:
    usage(db, "2024-05-01", features=("dashboards", "mobile"))
    usage(db, "2024-05-02", features=("dashboards", "api", "exports"))
    # listed and used: dashboards, api → 2 / 4
    assert measure(db, "feature_adoption", features=FEATURES) == {ACME: 0.5}


def test_feature_adoption_matches_whole_feature_names(db: Store) -> None:
    usage(db, "2024-05-01", features=("dashboard", "apis", "sso-beta"))
    assert measure(db, "feature_adoption", features=FEATURES) == {ACME: 0.0}


def test_feature_adoption_window_is_the_last_30_days_including_today(db: Store) -> None:
    usage(db, "2024-04-10", features=("alerts",))  # outside
    usage(db, "2024-04-11", features=("sso",))
    usage(db, "2024-05-11", features=("api",))     # after as_of's day
    # sso → 1 / 4
    assert measure(db, "feature_adoption", features=FEATURES) == {ACME: 0.25}


def test_feature_adoption_is_zero_for_an_account_with_usage_but_no_listed_feature_lately(db: Store) -> None:
    usage(db, "2024-03-01", features=("dashboards",))
    usage(db, "2024-05-01", features=("mobile",))
    assert measure(db, "feature_adoption", features=FEATURES) == {ACME: 0.0}



def test_feature_adoption_does_not_find_a_listed_name_inside_a_stored_name_with_quotes(db: Store) -> None:
    usage(db, "2024-05-01", features=('x"api', 'sso"', "beta"))
    assert measure(db, "feature_adoption", features=FEATURES) == {ACME: 0.0}


def test_feature_adoption_does_not_join_two_stored_names_into_a_listed_one(db: Store) -> None:
    usage(db, "2024-05-01", features=("a", "b"))
    usage(db, "2024-05-02", features=("c",))
    assert measure(db, "feature_adoption", features=('a", "b', 'b"],["c', "a")) == {ACME: pytest.approx(1 / 3)}


@pytest.mark.parametrize("name", ['say "hi"', "a,b", "naïve", "back\\slash", "tab\tbed"])
def test_feature_adoption_counts_a_listed_name_of_any_characters_when_stored_exactly(db: Store, name: str) -> None:
    usage(db, "2024-05-01", features=(name, "dashboards"))
    assert measure(db, "feature_adoption", features=(name, "api")) == {ACME: 0.5}


def test_feature_adoption_counts_a_feature_listed_twice_once(db: Store) -> None:
    usage(db, "2024-05-01", features=("api",))
    assert measure(db, "feature_adoption", features=("api", "api", "sso")) == {ACME: pytest.approx(1 / 3)}

# --- active_user_share ---------------------------------------------------------------------------------------

def test_active_user_share_is_average_daily_active_users_over_seats(db: Store) -> None:
    for day in range(1, 11):
        usage(db, f"2024-05-{day:02d}", 6, seats=20)  # 10 days of 6; the other 20 days nobody
    # 60 / 30 / 20 = 0.1
    assert measure(db, "active_user_share") == {ACME: pytest.approx(0.1)}


def test_active_user_share_takes_the_largest_seat_count_in_the_window(db: Store) -> None:
    usage(db, "2024-05-01", 30, seats=20)
    usage(db, "2024-05-02", 30, seats=40)
    # 60 / 30 / 40 = 0.05
    assert measure(db, "active_user_share") == {ACME: pytest.approx(0.05)}


def test_active_user_share_window_is_the_last_30_days_including_today(db: Store) -> None:
    usage(db, "2024-04-10", 100, seats=10)  # outside
    usage(db, "2024-04-11", 10, seats=10)
    usage(db, "2024-05-11", 100, seats=10)  # after as_of's day
    # 10 / 30 / 10 = 1/30
    assert measure(db, "active_user_share") == {ACME: pytest.approx(1 / 30)}


def test_active_user_share_has_no_value_without_seats(db: Store) -> None:
    usage(db, "2024-05-01", 6)
    assert measure(db, "active_user_share") == {}


def test_active_user_share_is_zero_for_an_account_whose_usage_stopped(db: Store) -> None:
    usage(db, "2024-03-01", 5, seats=10)  # known seats, nobody active in the last 30 days
    assert measure(db, "active_user_share") == {ACME: 0.0}


# --- usage_trend ---------------------------------------------------------------------------------------------

def test_usage_trend_compares_the_last_14_days_with_the_14_before(db: Store) -> None:
    usage(db, "2024-04-15", events=100)  # earlier: 04-13..04-26
    usage(db, "2024-05-01", events=100)  # current: 04-27..05-10
    usage(db, "2024-05-08", events=50)
    # 150 / 100 − 1 = 0.5
    assert measure(db, "usage_trend") == {ACME: pytest.approx(0.5)}


def test_usage_trend_falls_below_zero_when_use_drops(db: Store) -> None:
    usage(db, "2024-04-15", events=100)
    usage(db, "2024-05-01", events=30)
    # 30 / 100 − 1 = −0.7
    assert measure(db, "usage_trend") == {ACME: pytest.approx(-0.7)}


def test_usage_trend_is_minus_one_when_use_stopped(db: Store) -> None:
    usage(db, "2024-04-15", events=80)
    assert measure(db, "usage_trend") == {ACME: pytest.approx(-1.0)}


def test_usage_trend_has_no_value_without_earlier_events(db: Store) -> None:
    usage(db, "2024-05-01", events=100)
    usage(db, "2024-04-15", events=0, account=BETA)
    usage(db, "2024-05-01", events=100, account=BETA)
    assert measure(db, "usage_trend") == {}


def test_usage_trend_window_boundaries(db: Store) -> None:
    usage(db, "2024-04-12", events=1000)  # 29 days back: before both windows
    usage(db, "2024-04-13", events=20)    # first day of the earlier window
    usage(db, "2024-04-26", events=20)    # last day of the earlier window
    usage(db, "2024-04-27", events=30)    # first day of the current window
    usage(db, "2024-05-10", events=30)    # today
    usage(db, "2024-05-11", events=1000)  # after as_of's day
    # 60 / 40 − 1 = 0.5
    assert measure(db, "usage_trend") == {ACME: pytest.approx(0.5)}


def test_usage_trend_window_parameter(db: Store) -> None:
    usage(db, "2024-05-03", events=100)  # earlier 7 days: 04-27..05-03
    usage(db, "2024-05-04", events=50)   # current 7 days: 05-04..05-10
    usage(db, "2024-04-26", events=999)  # before both
    # 50 / 100 − 1 = −0.5
    assert measure(db, "usage_trend", window=days(7)) == {ACME: pytest.approx(-0.5)}


# --- seat_utilization ----------------------------------------------------------------------------------------

def test_seat_utilization_prefers_the_contracted_seats_in_the_crm(db: Store) -> None:
    contract(db, 10)
    usage(db, "2024-05-01", 5, seats=40)
    usage(db, "2024-05-02", 8, seats=40)
    # peak 8 / contracted 10 = 0.8 (not 8 / 40)
    assert measure(db, "seat_utilization") == {ACME: pytest.approx(0.8)}


def test_seat_utilization_falls_back_to_the_seats_in_the_usage_data(db: Store) -> None:
    usage(db, "2024-05-01", 8, seats=20)
    # 8 / 20 = 0.4
    assert measure(db, "seat_utilization") == {ACME: pytest.approx(0.4)}


def test_seat_utilization_has_no_value_without_any_seat_count(db: Store) -> None:
    usage(db, "2024-05-01", 8)
    assert measure(db, "seat_utilization") == {}


def test_seat_utilization_window_is_the_last_30_days_including_today(db: Store) -> None:
    contract(db, 10)
    usage(db, "2024-04-10", 10)  # outside
    usage(db, "2024-04-11", 4)
    usage(db, "2024-05-11", 10)  # after as_of's day
    assert measure(db, "seat_utilization") == {ACME: pytest.approx(0.4)}


def test_seat_utilization_is_zero_for_an_account_whose_usage_stopped(db: Store) -> None:
    contract(db, 10)
    usage(db, "2024-03-01", 5)  # used before, nobody in the last 30 days
    assert measure(db, "seat_utilization") == {ACME: 0.0}


# --- days_to_renewal -----------------------------------------------------------------------------------------

def test_days_to_renewal_is_the_nearest_open_renewal(db: Store) -> None:
    renewal(db, "2024-06-24")  # 45 days
    renewal(db, "2024-05-30")  # 20 days
    assert measure(db, "days_to_renewal") == {ACME: 20.0}


def test_renewal_closing_today_is_zero_days_and_an_overdue_one_is_ignored(db: Store) -> None:
    renewal(db, "2024-05-10", account=ACME)
    renewal(db, "2024-05-09", account=BETA)
    assert measure(db, "days_to_renewal") == {ACME: 0.0}


def test_closed_and_deleted_opportunities_are_not_upcoming_renewals(db: Store) -> None:
    renewal(db, "2024-05-20", closed=True)
    renewal(db, "2024-05-21", deleted=True)
    renewal(db, "2024-06-09")  # 30 days
    assert measure(db, "days_to_renewal") == {ACME: 30.0}


# --- explanations --------------------------------------------------------------------------------------------

EXPLAINED: list[Any] = [
    ("days_since_two_way_touch", 0, "Two-way touch today"),
    ("days_since_two_way_touch", 1, "Last two-way touch 1 day ago"),
    ("days_since_two_way_touch", 5, "Last two-way touch 5 days ago"),
    ("days_since_two_way_touch", 21, "No two-way touch in 21 days"),
    ("meetings", 0, "No meetings in 90 days"),
    ("meetings", 1, "1 meeting in 90 days"),
    ("meetings", 3, "3 meetings in 90 days"),
    ("inbound_answered_share", 0.75, "75% of inbound emails answered"),
    ("inbound_sentiment", -0.4, "Customer messages sound negative (-0.40)"),
    ("inbound_sentiment", 0.1, "Customer messages sound neutral (+0.10)"),
    ("inbound_sentiment", 0.5, "Customer messages sound positive (+0.50)"),
    ("open_tickets", 1, "1 open ticket"),
    ("open_tickets", 4, "4 open tickets"),
    ("urgent_tickets", 0, "No urgent tickets in 30 days"),
    ("urgent_tickets", 1, "1 urgent ticket in 30 days"),
    ("urgent_tickets", 2, "2 urgent tickets in 30 days"),
    ("median_reply_hours", 1, "Replies take 1 hour (median)"),
    ("median_reply_hours", 5, "Replies take 5 hours (median)"),
    ("median_reply_hours", 60, "Replies take 2.5 days (median)"),
    ("outbound_only_streak", 0, "Customer answers our emails"),
    ("outbound_only_streak", 1, "1 email sent without an answer"),
    ("outbound_only_streak", 3, "3 emails sent without an answer"),
    ("ticket_surge", 2.0, "Tickets at 2.0x their usual rate"),
    ("ticket_surge", 1.0, "Ticket volume as usual"),
    ("ticket_surge", 0.3, "Fewer tickets than usual"),
    ("resolution_days", 1, "Tickets take 1 day to resolve (median)"),
    ("resolution_days", 2.5, "Tickets take 2.5 days to resolve (median)"),
    ("days_since_last_active", 0, "Product used today"),
    ("days_since_last_active", 1, "Product last used 1 day ago"),
    ("days_since_last_active", 9, "Product last used 9 days ago"),
    ("usage_frequency", 0.5, "Product used on 50% of days in the last 30 days"),
    ("feature_adoption", 0.5, "Uses 50% of key features"),
    ("active_user_share", 0.4, "40% of seats active on an average day"),
    ("usage_trend", 0.5, "Product use up 50% in 14 days"),
    ("usage_trend", -0.3, "Product use down 30% in 14 days"),
    ("usage_trend", 0.05, "Product use steady over 14 days"),
    ("seat_utilization", 0.8, "Peak use reaches 80% of contracted seats"),
    ("days_to_renewal", 0, "Renewal today"),
    ("days_to_renewal", 1, "Renewal in 1 day"),
    ("days_to_renewal", 45, "Renewal in 45 days"),
]


@pytest.mark.parametrize(("name", "value", "text"), EXPLAINED)
def test_explanation_reads_well(name: str, value: float, text: str) -> None:
    m = LIBRARY[name]
    assert m.explain(float(value), dict(m.defaults)) == text


_ONE_PLURAL = re.compile(r"(?<![\d.])1 (?:\w+ )?\w+s\b")  # "1 meetings", "1 open tickets"


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_no_explanation_says_1_of_a_plural_or_in_today(name: str) -> None:
    m = LIBRARY[name]
    for value in (0.0, 1.0, 2.0, 30.0):
        text = m.explain(value, dict(m.defaults))
        assert not _ONE_PLURAL.search(text), text
        assert "in today" not in text, text


def test_an_explanation_names_the_default_window_when_the_scorecard_gives_none() -> None:
    card = Scorecard.model_validate({"bands": {"red": 50, "yellow": 75}, "groups": {"engagement": {
        "weight": 1, "measures": {"meetings": {"weight": 1, "points": [[0, 0], [3, 100]]}}}}})
    _, _, results, _ = score_account(ACME, {"engagement.meetings": {ACME: 3.0}}, card)
    assert results[0].reason == "3 meetings in 90 days"


# --- the usage measures share one pass over usage_daily --------------------------------------------------------

def test_the_usage_measures_read_together_give_what_each_gives_alone(db: Store) -> None:
    for day, active, events, seats in (("2024-04-01", 3, 40, 10), ("2024-04-20", 0, 0, 10), ("2024-05-01", 5, 90, 12),
                                       ("2024-05-09", 2, 30, None), ("2024-05-11", 9, 99, 20)):
        usage(db, day, active, events=events, seats=seats, features=("api", "sso", "beta"))
    usage(db, "2024-05-02", 1, account=BETA, features=("dashboards",))
    together = [(LIBRARY[name], {"window": timedelta(days=days)} | ({"features": FEATURES} if name == "feature_adoption"
                                                                    else {}))
                for name, days in (("usage_frequency", 30), ("usage_trend", 14), ("seat_utilization", 7),
                                   ("feature_adoption", 30), ("active_user_share", 30), ("usage_frequency", 7))]
    together.append((LIBRARY["days_since_last_active"], {}))

    values = query_usage(db, together, AS_OF)

    assert values == [m.query(db, params, AS_OF) for m, params in together]
