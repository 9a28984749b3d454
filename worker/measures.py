"""The library of measures a scorecard may name: each a set-based SQL query over the store.

A measure turns the store into one raw number per account ("days since the last two-way touch"), as of a
given time: only data known before `as_of` counts, so history can be replayed and rules previewed. The
scorecard (YAML) chooses measures by name and gives parameters; it never carries SQL. Each measure also says,
in words a CSM reads in Salesforce and Slack, what its raw value means.

An account missing from a measure's result has no data for it; the scorecard's missing-data policy decides
what that means. Count measures answer 0 for every live account (no tickets is data, not a gap).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from worker.store import Store, iso

Params = Mapping[str, Any]

_SCOPE_MARK = re.compile(r"SCOPE\(([\w.]+)\)")
SCOPE_TABLE = "temp.scope"


@functools.lru_cache(maxsize=256)
def in_scope(sql: str, *, scoped: bool) -> str:
    """Each `SCOPE(column)` in a query becomes a filter on the accounts being re-scored, or nothing.

    Re-scoring a few changed accounts must cost in proportion to them: the filter sits on the column the
    account indexes serve (`activities_account`, `usage_daily`'s key, `accounts.id`), so the query seeks
    those accounts instead of scanning every row. A whole re-score drops the filter altogether.
    """
    return _SCOPE_MARK.sub(rf"\1 IN (SELECT account_id FROM {SCOPE_TABLE})" if scoped else "1", sql)


@contextmanager
def account_scope(store: Store, accounts: Iterable[str] | None) -> Iterator[bool]:
    """Fill `temp.scope` with `accounts` for the queries inside; yields whether a scope is in force."""
    if accounts is None:
        yield False
        return
    store.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {SCOPE_TABLE.split('.')[1]} "
                       "(account_id TEXT PRIMARY KEY) WITHOUT ROWID")
    store.conn.execute(f"DELETE FROM {SCOPE_TABLE}")
    store.conn.executemany(f"INSERT OR IGNORE INTO {SCOPE_TABLE} VALUES (?)", ((a,) for a in accounts))
    try:
        yield True
    finally:
        store.conn.execute(f"DELETE FROM {SCOPE_TABLE}")


_LIVE_ACTIVITY = "a.is_deleted = 0 AND a.account_id IS NOT NULL AND a.occurred_at <= :as_of"
# Open as of the scoring time: a ticket closed later was still open then (no leakage on replay).
_OPEN_AS_OF = ("a.kind = 'ticket' AND CASE WHEN a.closed_at IS NOT NULL THEN a.closed_at > :as_of "
               "ELSE lower(coalesce(a.status, '')) NOT IN ('solved', 'closed', 'deleted') END")


@dataclass(frozen=True)
class Measure:
    name: str
    description: str
    defaults: Mapping[str, Any]
    sql: str
    explain: Callable[[float, Params], str]
    needs: tuple[str, ...] = ()  # extra named parameters the scorecard supplies (e.g. the feature list)

    def describe(self, value: float, params: Params) -> str:
        """The raw value in words, with the measure's own defaults for what the scorecard left out."""
        return self.explain(value, {**self.defaults, **params})

    def query(self, store: Store, params: Params, as_of: datetime, *, scoped: bool = False) -> dict[str, float]:
        """Raw values per account: every live account, or with `scoped` only those in `temp.scope`."""
        # Ages are whole days and windows start at midnight, so a score moves when the data does, not
        # with every tick of the clock (which would rewrite every account in Salesforce each cycle).
        bound: dict[str, Any] = {"as_of": iso(as_of), "as_of_day": as_of.date().isoformat()}
        for key, value in {**self.defaults, **params}.items():
            if isinstance(value, timedelta):
                bound[key] = value.total_seconds() / 86400.0
                bound[f"{key}_start"] = (as_of - value).date().isoformat()
            elif isinstance(value, list | tuple):
                bound[key] = ",".join(str(v) for v in value)
                bound[f"{key}_count"] = len(value)
            else:
                bound[key] = value
        rows = store.conn.execute(in_scope(self.sql, scoped=scoped), bound).fetchall()
        return {str(account): float(value) for account, value in rows if value is not None}


def _days(value: float) -> str:
    whole = round(value)
    return "today" if whole <= 0 else "1 day" if whole == 1 else f"{whole} days"


def _window(params: Params) -> str:
    window = params.get("window")
    return f"{round(window.total_seconds() / 86400)} days" if isinstance(window, timedelta) else "window"


def _one_decimal_days(value: float) -> str:
    n = round(value, 1)
    return f"{n:g} day" if n == 1 else f"{n:g} days"


def _plural(count: float, word: str) -> str:
    n = round(count)
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _feature_list_sql(column: str) -> str:
    return (f"(SELECT count(DISTINCT j.value) FROM usage_daily u2, json_each(u2.features_used) j "
            f"WHERE u2.account_id = {column} AND u2.day > :window_start "
            f"AND u2.day <= :as_of_day "
            f"AND instr(',' || :features || ',', ',' || j.value || ',') > 0)")


def _median_sql(values: str) -> str:
    """Median per account of a `(account_id, value)` query: SQLite has no median, window functions do."""
    return f"""SELECT account_id, avg(value) FROM (
                 SELECT account_id, value, row_number() OVER (PARTITION BY account_id ORDER BY value) AS n,
                        count(*) OVER (PARTITION BY account_id) AS c
                 FROM ({values}))
               WHERE n IN ((c + 1) / 2, (c + 2) / 2) GROUP BY account_id"""


_REPLY_HOURS = f"""SELECT a.account_id, 24 * ((
        SELECT min(julianday(r.occurred_at)) FROM activities r WHERE r.account_id = a.account_id
        AND r.kind = 'email' AND r.direction = 'out' AND r.is_deleted = 0
        AND r.occurred_at >= a.occurred_at AND r.occurred_at <= :as_of) - julianday(a.occurred_at)) AS value
    FROM activities a WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.kind = 'email' AND a.direction = 'in'
      AND a.occurred_at > :window_start"""

_RESOLUTION_DAYS = f"""SELECT a.account_id, julianday(a.closed_at) - julianday(a.occurred_at) AS value
    FROM activities a WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.kind = 'ticket' AND a.closed_at IS NOT NULL
      AND a.closed_at > :window_start AND a.closed_at <= :as_of"""


def _hours(value: float) -> str:
    return _plural(value, "hour") if value < 48 else f"{round(value / 24, 1):g} days"


LIBRARY: dict[str, Measure] = {m.name: m for m in (
    Measure(
        "days_since_two_way_touch",
        "Days since the last meeting, call or email exchange (a reply within `within`, either way)",
        {"within": timedelta(days=14)},
        f"""SELECT t.account_id, julianday(:as_of_day) - julianday(date(max(t.touched))) FROM (
              SELECT a.account_id, a.occurred_at AS touched FROM activities a
              WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.kind IN ('meeting', 'call')
              UNION ALL
              SELECT a.account_id, a.occurred_at FROM activities a
              WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.kind = 'email' AND EXISTS (
                  SELECT 1 FROM activities p WHERE p.account_id = a.account_id AND p.kind = 'email'
                  AND p.is_deleted = 0 AND p.direction != a.direction AND p.occurred_at <= a.occurred_at
                  AND p.occurred_at >= strftime('%Y-%m-%dT%H:%M:%SZ', a.occurred_at,
                                                '-' || CAST(:within * 86400 AS INTEGER) || ' seconds'))
            ) t GROUP BY t.account_id""",
        lambda v, p: (f"No two-way touch in {_days(v)}" if v >= 14
                      else f"Last two-way touch {_days(v)} ago" if v >= 1 else "Two-way touch today")),
    Measure(
        "meetings", "Meetings held in the window", {"window": timedelta(days=90)},
        f"""SELECT acc.id, count(a.source_id) FROM accounts acc
            LEFT JOIN activities a ON a.account_id = acc.id AND a.kind = 'meeting' AND {_LIVE_ACTIVITY}
                 AND a.occurred_at > :window_start
            WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id""",
        lambda v, p: (f"No meetings in {_window(p)}" if v == 0
                      else f"{_plural(v, 'meeting')} in {_window(p)}")),
    Measure(
        "inbound_answered_share", "Share of inbound emails answered within `within`",
        {"window": timedelta(days=90), "within": timedelta(days=2)},
        f"""SELECT a.account_id, avg(EXISTS (
                  SELECT 1 FROM activities r WHERE r.account_id = a.account_id AND r.kind = 'email'
                  AND r.direction = 'out' AND r.is_deleted = 0 AND r.occurred_at >= a.occurred_at
                  AND julianday(r.occurred_at) - julianday(a.occurred_at) <= :within
                  AND r.occurred_at <= :as_of))
            FROM activities a
            WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.kind = 'email' AND a.direction = 'in'
              AND a.occurred_at > :window_start
              AND julianday(:as_of_day) - julianday(date(a.occurred_at)) > :within
            GROUP BY a.account_id""",
        lambda v, p: f"{round(v * 100)}% of inbound emails answered"),
    Measure(
        "inbound_sentiment", "Recency-weighted sentiment of inbound emails and ticket comments (-1..1)",
        {"window": timedelta(days=180), "half_life": timedelta(days=30)},
        f"""SELECT a.account_id,
                   sum(a.sentiment * pow(0.5, (julianday(:as_of_day) - julianday(date(a.occurred_at)))
                                         / :half_life))
                   / sum(pow(0.5, (julianday(:as_of_day) - julianday(date(a.occurred_at))) / :half_life))
            FROM activities a
            WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.direction = 'in' AND a.sentiment IS NOT NULL
              AND a.kind IN ('email', 'ticket_comment', 'ticket') AND a.occurred_at > :window_start
            GROUP BY a.account_id""",
        lambda v, p: ("Customer messages sound negative" if v <= -0.2
                      else "Customer messages sound positive" if v >= 0.3
                      else "Customer messages sound neutral") + f" ({v:+.2f})"),
    Measure(
        "open_tickets", "Support tickets open now", {},
        f"""SELECT acc.id, count(a.source_id) FROM accounts acc
            LEFT JOIN activities a ON a.account_id = acc.id AND {_LIVE_ACTIVITY} AND {_OPEN_AS_OF}
            WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id""",
        lambda v, p: "No open tickets" if v == 0 else f"{_plural(v, 'open ticket')}"),
    Measure(
        "urgent_tickets", "High-priority or urgent tickets opened in the window",
        {"window": timedelta(days=30), "priorities": ("urgent", "high")},
        f"""SELECT acc.id, count(a.source_id) FROM accounts acc
            LEFT JOIN activities a ON a.account_id = acc.id AND {_LIVE_ACTIVITY} AND a.kind = 'ticket'
                 AND a.occurred_at > :window_start
                 AND instr(',' || lower(:priorities) || ',', ',' || lower(a.priority) || ',') > 0
            WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id""",
        lambda v, p: (f"No urgent tickets in {_window(p)}" if v == 0
                      else f"{_plural(v, 'urgent ticket')} in {_window(p)}")),
    Measure(
        "median_reply_hours", "Median hours from an inbound email to our first reply (answered ones)",
        {"window": timedelta(days=90)},
        _median_sql(f"SELECT account_id, value FROM ({_REPLY_HOURS}) WHERE value IS NOT NULL"),
        lambda v, p: f"Replies take {_hours(v)} (median)"),
    Measure(
        "outbound_only_streak", "Emails we sent since the customer last wrote to us",
        {"window": timedelta(days=90)},
        """SELECT acc.id, count(o.source_id) FROM accounts acc
            LEFT JOIN activities o ON o.account_id = acc.id AND o.kind = 'email' AND o.direction = 'out'
                 AND o.is_deleted = 0 AND o.occurred_at <= :as_of AND o.occurred_at > :window_start
                 AND o.occurred_at > coalesce((
                     SELECT max(i.occurred_at) FROM activities i WHERE i.account_id = acc.id
                     AND i.kind = 'email' AND i.direction = 'in' AND i.is_deleted = 0
                     AND i.occurred_at <= :as_of), '')
            WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id""",
        lambda v, p: ("Customer answers our emails" if v == 0
                      else f"{_plural(v, 'email')} sent without an answer")),
    Measure(
        "ticket_surge", "Tickets opened per day in `window` against the rate over `baseline` (1 = usual)",
        {"window": timedelta(days=30), "baseline": timedelta(days=90)},
        """SELECT acc.id,
                   CASE WHEN count(b.source_id) = 0 THEN 1.0
                        ELSE (sum(b.occurred_at > :window_start) / :window) / (count(b.source_id) / :baseline)
                   END
            FROM accounts acc
            LEFT JOIN activities b ON b.account_id = acc.id AND b.kind = 'ticket' AND b.is_deleted = 0
                 AND b.occurred_at <= :as_of AND b.occurred_at > :baseline_start
            WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id""",
        lambda v, p: (f"Tickets at {v:.1f}x their usual rate" if v >= 1.5
                      else "Ticket volume as usual" if v > 0.5 else "Fewer tickets than usual")),
    Measure(
        "resolution_days", "Median days to resolve the tickets closed in the window",
        {"window": timedelta(days=90)},
        _median_sql(_RESOLUTION_DAYS),
        lambda v, p: f"Tickets take {_one_decimal_days(v)} to resolve (median)"),
    Measure(
        "days_since_last_active", "Days since the product was last used", {},
        """SELECT u.account_id, julianday(:as_of_day) - julianday(max(u.day))
           FROM usage_daily u WHERE u.active_users > 0 AND u.day <= :as_of_day AND SCOPE(u.account_id)
           GROUP BY u.account_id""",
        lambda v, p: f"Product last used {_days(v)} ago" if v >= 1 else "Product used today"),
    Measure(
        "usage_frequency", "Share of days in the window with any active user",
        {"window": timedelta(days=30)},
        """SELECT u.account_id, count(DISTINCT u.day) / :window FROM usage_daily u
           WHERE u.active_users > 0 AND u.day > :window_start
             AND u.day <= :as_of_day AND SCOPE(u.account_id)
           GROUP BY u.account_id
           UNION ALL
           SELECT DISTINCT u.account_id, 0.0 FROM usage_daily u
           WHERE u.day <= :as_of_day AND SCOPE(u.account_id) AND u.account_id NOT IN (
               SELECT account_id FROM usage_daily WHERE active_users > 0
               AND day > :window_start AND day <= :as_of_day)""",
        lambda v, p: f"Product used on {round(v * 100)}% of days in the last {_window(p)}"),
    Measure(
        "feature_adoption", "Share of the scorecard's features used in the window",
        {"window": timedelta(days=30)},
        f"""SELECT acc.account_id, {_feature_list_sql('acc.account_id')} * 1.0 / :features_count
            FROM (SELECT DISTINCT account_id FROM usage_daily WHERE day <= :as_of_day AND SCOPE(account_id)) acc""",
        lambda v, p: f"Uses {round(v * 100)}% of key features", needs=("features",)),
    Measure(
        "active_user_share", "Average daily active users against the seats in the usage data (adoption)",
        {"window": timedelta(days=30)},
        """SELECT account_id, active * 1.0 / :window / seats FROM (
             SELECT u.account_id, coalesce(sum(CASE WHEN u.day > :window_start THEN u.active_users END), 0) AS active,
                    coalesce(max(CASE WHEN u.day > :window_start THEN u.seats END), max(u.seats)) AS seats
             FROM usage_daily u WHERE u.day <= :as_of_day AND SCOPE(u.account_id) GROUP BY u.account_id)
           WHERE seats > 0""",
        lambda v, p: f"{round(v * 100)}% of seats active on an average day"),
    Measure(
        "usage_trend", "Change in product events, the last `window` against the `window` before (-1..+)",
        {"window": timedelta(days=14)},
        """SELECT u.account_id,
                  sum(CASE WHEN u.day > :window_start THEN u.events ELSE 0 END) * 1.0
                  / sum(CASE WHEN u.day <= :window_start THEN u.events ELSE 0 END) - 1
           FROM usage_daily u
           WHERE u.day > date(:window_start, '-' || CAST(:window AS INTEGER) || ' days')
             AND u.day <= :as_of_day AND SCOPE(u.account_id)
           GROUP BY u.account_id
           HAVING sum(CASE WHEN u.day <= :window_start THEN u.events ELSE 0 END) > 0""",
        lambda v, p: (f"Product use up {round(v * 100)}% in {_window(p)}" if v >= 0.1
                      else f"Product use down {round(-v * 100)}% in {_window(p)}" if v <= -0.1
                      else f"Product use steady over {_window(p)}")),
    Measure(
        "seat_utilization", "Peak daily active users against contracted seats (value realization)",
        {"window": timedelta(days=30)},
        """SELECT account_id, peak * 1.0 / seats FROM (
             SELECT u.account_id, coalesce(max(CASE WHEN u.day > :window_start THEN u.active_users END), 0) AS peak,
                    coalesce((SELECT contracted_seats FROM accounts WHERE id = u.account_id),
                             max(CASE WHEN u.day > :window_start THEN u.seats END), max(u.seats)) AS seats
             FROM usage_daily u WHERE u.day <= :as_of_day AND SCOPE(u.account_id) GROUP BY u.account_id)
           WHERE seats > 0""",
        lambda v, p: f"Peak use reaches {round(v * 100)}% of contracted seats"),
    Measure(
        "days_to_renewal", "Days until the next open renewal closes", {},
        """SELECT o.account_id, min(julianday(o.close_date) - julianday(:as_of_day))
           FROM opportunities o
           WHERE o.is_deleted = 0 AND o.is_closed = 0 AND o.close_date >= :as_of_day AND SCOPE(o.account_id)
           GROUP BY o.account_id""",
        lambda v, p: "Renewal today" if round(v) <= 0 else f"Renewal in {_days(v)}"),
)}

# `health` is the overall score itself, for derived scores such as churn risk.
DERIVED_ONLY = {"health"}

