"""The measures that read an account against its own usual (`*_vs_usual` in `worker/scoring/measures.py`).

Each reads the last `window` days (today's included) against the `baseline` days before them. At `AS_OF`
(Friday 2024-05-10 09:00 UTC) with the defaults (30 and 180 days) the window is 2024-04-11 to 2024-05-10 and the
baseline 2023-10-14 to 2024-04-10: 180 days, six times the window. A count is a ratio of daily rates with one
event more on each side (1 = as usual); a share or a tone is a difference (0 = as usual). An account has no
value, not a decline, when nothing of it is known from before its baseline, or it had fewer than
`min_baseline` of the things counted there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from worker.scoring.measures import LIBRARY
from worker.store import Store, iso, parse_iso

AS_OF = datetime(2024, 5, 10, 9, 0, tzinfo=UTC)
ACME = "001000000000001AAA"
BETA = "001000000000002AAA"
OLD = "2023-09-01T10:00:00Z"  # before every baseline: the account is known from then on
DECLINES = sorted(name for name in LIBRARY if name.endswith("_vs_usual"))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "t.db")
    store.upsert("accounts", [{"id": ACME, "name": "Acme", "is_deleted": 0},
                              {"id": BETA, "name": "Beta", "is_deleted": 0}], ("id",))
    yield store
    store.close()


def activity(store: Store, kind: str, when: str, direction: str | None = "both", *, account: str = ACME,
             deleted: bool = False, sentiment: float | None = None) -> None:
    number = int(store.scalar("SELECT count(*) FROM activities")) + 1
    store.upsert("activities", [{
        "source": "test", "source_id": str(number), "kind": kind, "account_id": account,
        "occurred_at": iso(parse_iso(when)), "direction": direction, "sentiment": sentiment,
        "is_deleted": int(deleted)}], ("source", "source_id"))


def every(first: str, count: int, step_days: float) -> list[str]:
    """`count` moments `step_days` apart from `first`."""
    start = parse_iso(first)
    return [iso(start + timedelta(days=step_days * n)) for n in range(count)]


def meetings(store: Store, moments: list[str], **kw: Any) -> None:
    for when in moments:
        activity(store, "meeting", when, **kw)


def usage_days(store: Store, first: date, last: date, active: int = 1, *, account: str = ACME) -> None:
    day = first
    while day <= last:
        store.upsert("usage_daily", [{"account_id": account, "day": day.isoformat(), "active_users": active,
                                      "events": 10, "features_used": json.dumps([]), "seats": None}],
                     ("account_id", "day"))
        day += timedelta(days=1)


def measure(store: Store, name: str, **params: Any) -> dict[str, float]:
    return LIBRARY[name].query(store, params, AS_OF)


def known_since_long(store: Store, account: str = ACME) -> None:
    activity(store, "call", OLD, account=account)


# --- what "as usual" and "down" read ---------------------------------------------------------------------------

def test_an_account_meeting_at_its_usual_rate_reads_one(db: Store) -> None:
    known_since_long(db)
    meetings(db, every("2023-10-20T10:00:00Z", 12, 15))  # 12 in the baseline: 2 per 30 days
    meetings(db, ["2024-04-20T10:00:00Z", "2024-05-05T10:00:00Z"])  # 2 in the window
    # (2 + 1) / (12 x 30/180 + 1) = 3 / 3
    assert measure(db, "meetings_vs_usual") == {ACME: pytest.approx(1.0)}


def test_a_high_touch_account_gone_quiet_reads_a_decline(db: Store) -> None:
    known_since_long(db)
    meetings(db, every("2023-10-20T10:00:00Z", 24, 7.5))  # 24 in the baseline: 4 per 30 days, none since
    # (0 + 1) / (24 x 30/180 + 1) = 1 / 5
    assert measure(db, "meetings_vs_usual") == {ACME: pytest.approx(0.2)}
    assert LIBRARY["meetings_vs_usual"].describe(0.2, {}) == "Meetings down 80% on their usual (30 days)"


def test_a_quiet_account_that_was_always_quiet_is_not_declining(db: Store) -> None:
    known_since_long(db)
    meetings(db, ["2023-12-01T10:00:00Z"])  # one meeting in six months, none in the window
    # Too little to have a usual (min_baseline 2): no value, not a decline.
    assert measure(db, "meetings_vs_usual") == {}
    # Asked to judge it anyway, one meeting fewer than one-sixth of a meeting is nearly as usual.
    assert measure(db, "meetings_vs_usual", min_baseline=0) == {ACME: pytest.approx(1 / (1 / 6 + 1))}


def test_an_account_new_since_the_baseline_began_has_no_value(db: Store) -> None:
    meetings(db, every("2024-01-05T10:00:00Z", 12, 7))  # a customer since January, quiet this month
    assert measure(db, "meetings_vs_usual") == {}


def test_one_pseudo_meeting_keeps_a_single_quiet_month_of_a_light_account_from_reading_as_a_collapse(
        db: Store) -> None:
    known_since_long(db)
    meetings(db, every("2023-10-20T10:00:00Z", 6, 30))  # one a month, none in the window
    # Without the pseudo-count 0 / 1 would say "down 100%"; with it (0 + 1) / (6 x 30/180 + 1) = 0.5.
    assert measure(db, "meetings_vs_usual") == {ACME: pytest.approx(0.5)}


# --- the windows ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("when", "recent"), [
    ("2024-04-11T00:00:00Z", True),   # the window's first day (30 days: 04-11 to 05-10)
    ("2024-04-10T23:59:59Z", False),  # the baseline's last moment
])
def test_the_window_is_the_last_window_days_and_the_baseline_the_days_before(
        db: Store, when: str, recent: bool) -> None:
    known_since_long(db)
    meetings(db, every("2023-10-20T10:00:00Z", 12, 15))
    meetings(db, [when])
    # In the window: (1 + 1) / (12 x 1/6 + 1) = 2/3; in the baseline: (0 + 1) / (13 x 1/6 + 1) = 6/19.
    assert measure(db, "meetings_vs_usual") == {ACME: pytest.approx(2 / 3 if recent else 6 / 19)}


@pytest.mark.parametrize(("when", "counted"), [("2023-10-14T00:00:00Z", True), ("2023-10-13T23:59:59Z", False)])
def test_the_baseline_begins_baseline_days_before_the_window(db: Store, when: str, counted: bool) -> None:
    known_since_long(db)
    meetings(db, [when, "2023-12-01T10:00:00Z"])
    expected = 1 / (2 / 6 + 1) if counted else None  # two in the baseline (min_baseline 2) or only one
    assert measure(db, "meetings_vs_usual").get(ACME) == (pytest.approx(expected) if counted else None)


def test_window_and_baseline_come_from_the_scorecard(db: Store) -> None:
    known_since_long(db)
    meetings(db, every("2024-01-15T10:00:00Z", 8, 7))  # 8 from mid-January to early March
    meetings(db, ["2024-04-01T10:00:00Z"])
    # window 60 days: 03-12 to 05-10; baseline the 60 days before (01-12 to 03-11) holds the 8. (1 + 1) / (8 + 1)
    assert measure(db, "meetings_vs_usual", window=timedelta(days=60), baseline=timedelta(days=60)) == {
        ACME: pytest.approx(2 / 9)}


def test_activity_after_as_of_and_deleted_activity_do_not_count(db: Store) -> None:
    known_since_long(db)
    meetings(db, every("2023-10-20T10:00:00Z", 12, 15))
    meetings(db, ["2024-05-10T09:00:01Z"])  # a second after AS_OF
    meetings(db, ["2024-05-01T10:00:00Z"], deleted=True)
    assert measure(db, "meetings_vs_usual") == {ACME: pytest.approx(1 / 3)}


def test_an_account_known_only_after_as_of_has_no_value(db: Store) -> None:
    meetings(db, every("2023-10-20T10:00:00Z", 12, 15), account=BETA)
    activity(db, "call", "2024-06-01T10:00:00Z")  # ACME's first activity, after AS_OF
    assert ACME not in measure(db, "meetings_vs_usual")


@pytest.mark.parametrize("name", DECLINES)
def test_no_decline_measure_answers_for_an_account_without_data(db: Store, name: str) -> None:
    known_since_long(db, BETA)
    assert ACME not in measure(db, name)


# --- each channel ----------------------------------------------------------------------------------------------

def test_two_way_touches_count_meetings_calls_and_replies_but_not_unanswered_emails(db: Store) -> None:
    known_since_long(db)
    for n in range(6):  # baseline: a call and an exchange a month (their email, our reply a day later)
        sent = parse_iso("2023-10-20T10:00:00Z") + timedelta(days=30 * n)
        activity(db, "call", iso(sent - timedelta(days=3)))
        activity(db, "email", iso(sent), "in")
        activity(db, "email", iso(sent + timedelta(days=1)), "out")
    for when in every("2024-04-15T10:00:00Z", 4, 6):  # window: four emails of ours, never answered
        activity(db, "email", when, "out")
    activity(db, "meeting", "2024-05-02T10:00:00Z")
    # A reply is the touch (as for days_since_two_way_touch): baseline 6 calls + 6 replies, 2 per 30 days;
    # window: the meeting alone. (1 + 1) / (12 x 30/180 + 1)
    assert measure(db, "two_way_touches_vs_usual") == {ACME: pytest.approx(2 / 3)}


def test_the_customers_reply_rate_is_the_windows_share_less_the_baselines(db: Store) -> None:
    known_since_long(db)
    for n in range(4):  # baseline: four check-ins, each answered the next day
        sent = parse_iso("2023-11-01T10:00:00Z") + timedelta(days=30 * n)
        activity(db, "email", iso(sent), "out")
        activity(db, "email", iso(sent + timedelta(days=1)), "in")
    activity(db, "email", "2024-04-20T10:00:00Z", "out")  # window: two check-ins, one answered
    activity(db, "email", "2024-04-21T10:00:00Z", "in")
    activity(db, "email", "2024-04-25T10:00:00Z", "out")
    assert measure(db, "customer_reply_rate_vs_usual") == {ACME: pytest.approx(0.5 - 1.0)}
    assert LIBRARY["customer_reply_rate_vs_usual"].describe(-0.5, {}) == (
        "Our emails answered by the customer: 50 points fewer than usual (30 days)")


def test_inbound_answered_reads_our_answers_against_our_usual(db: Store) -> None:
    known_since_long(db)
    for n in range(4):  # baseline: four customer emails, three answered within two days
        sent = parse_iso("2023-11-01T10:00:00Z") + timedelta(days=30 * n)
        activity(db, "email", iso(sent), "in")
        if n:
            activity(db, "email", iso(sent + timedelta(hours=5)), "out")
    activity(db, "email", "2024-04-20T10:00:00Z", "in")  # window: two, neither answered
    activity(db, "email", "2024-05-01T10:00:00Z", "in")
    assert measure(db, "inbound_answered_vs_usual") == {ACME: pytest.approx(0 - 0.75)}


def test_sentiment_reads_the_customers_tone_against_their_usual_tone(db: Store) -> None:
    known_since_long(db)
    for when in every("2023-11-01T10:00:00Z", 4, 30):  # a grumpy customer: always -0.4
        activity(db, "email", when, "in", sentiment=-0.4)
    activity(db, "email", "2024-05-01T10:00:00Z", "in", sentiment=-0.4)
    activity(db, "email", "2024-05-02T10:00:00Z", "out", sentiment=-0.9)  # ours: not the customer's tone
    known_since_long(db, BETA)
    for when in every("2023-11-01T10:00:00Z", 4, 30):  # a warm one turned cold
        activity(db, "ticket_comment", when, "in", sentiment=0.6, account=BETA)
    activity(db, "ticket_comment", "2024-05-01T10:00:00Z", "in", sentiment=-0.2, account=BETA)
    assert measure(db, "sentiment_vs_usual") == {ACME: pytest.approx(0.0), BETA: pytest.approx(-0.8)}


def test_sentiment_without_a_message_in_the_window_has_no_value(db: Store) -> None:
    known_since_long(db)
    for when in every("2023-11-01T10:00:00Z", 4, 30):
        activity(db, "email", when, "in", sentiment=0.5)
    assert measure(db, "sentiment_vs_usual") == {}


def test_tickets_against_an_empty_baseline_are_a_surge_not_a_gap(db: Store) -> None:
    known_since_long(db)
    for when in every("2024-04-20T10:00:00Z", 3, 5):
        activity(db, "ticket", when, "in")
    known_since_long(db, BETA)
    # ACME: (3 + 1) / (0 + 1); BETA, no tickets ever: (0 + 1) / (0 + 1), as usual.
    assert measure(db, "tickets_vs_usual") == {ACME: pytest.approx(4.0), BETA: pytest.approx(1.0)}
    assert LIBRARY["tickets_vs_usual"].describe(4.0, {}) == "Tickets at 4.0x their usual (30 days)"


def test_active_days_read_product_use_against_its_usual(db: Store) -> None:
    usage_days(db, date(2023, 10, 1), date(2024, 4, 10))  # every day of the baseline
    usage_days(db, date(2024, 4, 11), date(2024, 5, 10), active=0)  # window: a row each day, nobody active
    usage_days(db, date(2024, 5, 1), date(2024, 5, 3))  # but three days
    # (3 + 1) / (180 x 30/180 + 1) = 4/31
    assert measure(db, "active_days_vs_usual") == {ACME: pytest.approx(4 / 31)}
    assert LIBRARY["active_days_vs_usual"].describe(4 / 31, {}) == (
        "Days of product use down 87% on their usual (30 days)")


def test_active_users_read_daily_users_against_their_usual(db: Store) -> None:
    usage_days(db, date(2023, 10, 1), date(2024, 4, 10), active=10)
    usage_days(db, date(2024, 4, 11), date(2024, 5, 10), active=5)
    # (150 + 1) / (1800 x 30/180 + 1)
    assert measure(db, "active_users_vs_usual") == {ACME: pytest.approx(151 / 301)}


def test_a_usage_feed_that_began_inside_the_baseline_has_no_usual_yet(db: Store) -> None:
    known_since_long(db)  # an old customer, but its usage feed started in February
    usage_days(db, date(2024, 2, 1), date(2024, 5, 10), active=10)
    assert measure(db, "active_users_vs_usual") == {}
    assert measure(db, "active_days_vs_usual") == {}


@pytest.mark.parametrize(("name", "value", "text"), [
    ("meetings_vs_usual", 1.05, "Meetings as usual (30 days)"),
    ("two_way_touches_vs_usual", 1.5, "Two-way touches up 50% on their usual (30 days)"),
    ("sentiment_vs_usual", -0.35, "Customer messages more negative than usual (-0.35, 30 days)"),
    ("sentiment_vs_usual", 0.02, "Customer messages sound as usual (+0.02, 30 days)"),
    ("inbound_answered_vs_usual", 0.04, "Inbound emails answered as usual (30 days)"),
    ("active_users_vs_usual", 0.3, "Active users down 70% on their usual (30 days)"),
])
def test_each_decline_says_what_it_means(name: str, value: float, text: str) -> None:
    assert LIBRARY[name].describe(value, {}) == text
