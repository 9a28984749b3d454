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
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
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
    # `sql` is one expression over an account's `usage_daily` rows (alias `u`, grouped by account): every such
    # measure of a scorecard is computed in one pass over the table (`query_usage`), not one pass each.
    over_usage_days: bool = False
    # For a usage measure, the earliest day its aggregates read, from its bound parameters (`bind`): the usage
    # pass reads no row older than every measure's `since` (None: the measure reads every day). Whatever the
    # measure needs from before (the newest active day, the most seats, the first day) it asks the key
    # `(account_id, day)` by a lookup per account.
    since: Callable[[Mapping[str, Any]], str] | None = None
    # A measure over the live activities `a` of an account that meet `over_rows` may also be said as one
    # expression over them, `row_expression` (grouped by account, the rows from the earliest `since` on): a scorecard's
    # measures over the same rows are then computed in one pass (`query_rows`), which reads each row from the
    # table once for all of them. `sql` stays the measure's query on its own, and gives the same values.
    over_rows: str | None = None
    row_expression: str | None = None

    def describe(self, value: float, params: Params) -> str:
        """The raw value in words, with the measure's own defaults for what the scorecard left out."""
        return self.explain(value, {**self.defaults, **params})

    def query(self, store: Store, params: Params, as_of: datetime, *, scoped: bool = False) -> dict[str, float]:
        """Raw values per account: every live account, or with `scoped` only those in `temp.scope`."""
        if self.over_usage_days:
            return query_usage(store, [(self, params)], as_of, scoped=scoped)[0]
        rows = store.conn.execute(in_scope(self.sql, scoped=scoped), self.bind(params, as_of)).fetchall()
        return {str(account): float(value) for account, value in rows if value is not None}

    def bind(self, params: Params, as_of: datetime) -> dict[str, Any]:
        """The query's named parameters: durations in days and as the midnight they reach back to."""
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
                bound[f"{key}_json"] = json.dumps([str(v) for v in value])
            else:
                bound[key] = value
        window, baseline = bound.get("window"), bound.get("baseline")
        if isinstance(window, float) and isinstance(baseline, float):
            # Against the account's own usual: the last `window` whole days (today's included) and the
            # `baseline` days before them, which never overlap (see `_against_usual`).
            recent_from = as_of.date() - timedelta(days=round(window) - 1)
            bound["recent_from"] = recent_from.isoformat()
            bound["baseline_from"] = (recent_from - timedelta(days=round(baseline))).isoformat()
        return bound


_SHARED_PARAMETERS = {"as_of", "as_of_day"}


def query_usage(store: Store, measures: Sequence[tuple[Measure, Params]], as_of: datetime, *,
                scoped: bool = False) -> list[dict[str, float]]:
    """Several usage measures in one pass over `usage_daily`, each measure's parameters renamed apart; the
    values per measure, in order.

    The pass reads only the days from the earliest `since` of the measures on (an account keeps years of
    usage; the measures look back a few months at most): with 260 days of usage a day the unbounded pass was
    most of a whole re-score's SQL (measured: BENCHMARKS.md, 'Figures behind the code'). An account whose usage
    all lies before that day still gets its values, from its measures' aggregates over no rows in the range
    (each of them asks for days in the range, so the rows before it counted for nothing in them either).
    """
    select, bound, since = _together(measures, as_of)
    queries = [f"SELECT u.account_id, {select} FROM usage_daily u WHERE u.day <= :as_of_day "
               f"{'AND u.day >= :since' if since is not None else ''} AND SCOPE(u.account_id) GROUP BY u.account_id"]
    if since is not None:
        bound["since"] = since
        queries.append(f"""{_USAGE_ACCOUNTS_SCOPED if scoped else _USAGE_ACCOUNTS}
            SELECT u.account_id, {select} FROM (
                SELECT k.id AS account_id, NULL AS day, NULL AS active_users, NULL AS events,
                       NULL AS features_used, NULL AS seats, NULL AS source_file
                FROM k WHERE k.id IS NOT NULL AND (SELECT max(o.day) FROM usage_daily o
                                                   WHERE o.account_id = k.id AND o.day <= :as_of_day) < :since) u
            GROUP BY u.account_id""")
    values: list[dict[str, float]] = [{} for _ in measures]
    for sql in queries:
        for account, *row in store.conn.execute(in_scope(sql, scoped=scoped), bound):
            for n, value in enumerate(row):
                if value is not None:
                    values[n][str(account)] = float(value)
    return values


def _together(measures: Sequence[tuple[Measure, Params]], as_of: datetime) -> tuple[str, dict[str, Any], str | None]:
    """The measures' expressions as one select list, each one's parameters renamed apart, and the earliest day
    any of them reads (None: every day)."""
    columns: list[str] = []
    bound: dict[str, Any] = {}
    starts: list[str | None] = []
    for n, (measure, params) in enumerate(measures):
        mine = measure.bind(params, as_of)
        starts.append(measure.since(mine) if measure.since is not None else None)
        own = {k: v for k, v in mine.items() if k not in _SHARED_PARAMETERS}
        pattern = re.compile(r":(" + "|".join(sorted(map(re.escape, own), key=len, reverse=True)) + r")\b")
        columns.append(pattern.sub(rf":m{n}_\1", measure.sql) if own else measure.sql)
        bound |= {f"m{n}_{k}": v for k, v in own.items()}
    bound |= {"as_of": iso(as_of), "as_of_day": as_of.date().isoformat()}
    since = None if not starts or None in starts else min(s for s in starts if s is not None)
    return ", ".join(columns), bound, since


def query_rows(store: Store, measures: Sequence[tuple[Measure, Params]], as_of: datetime, *,
               scoped: bool = False) -> list[dict[str, float]]:
    """Several measures over the same activities (`Measure.over_rows`, all alike) in one pass; the values per
    measure, in order. An account has a value only where it has such a row from the earliest `since` on."""
    conditions = {measure.over_rows for measure, _ in measures}
    if len(conditions) != 1 or None in conditions or any(measure.row_expression is None for measure, _ in measures):
        raise ValueError(f"one pass reads one set of rows, not {sorted(map(str, conditions))}")
    select, bound, since = _together([(replace(m, sql=str(m.row_expression)), p) for m, p in measures], as_of)
    if since is not None:
        bound["since"] = since
    sql = (f"SELECT a.account_id, {select} FROM activities a WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) "
           f"AND {conditions.pop()} {'AND a.occurred_at >= :since' if since is not None else ''} "
           "GROUP BY a.account_id")
    values: list[dict[str, float]] = [{} for _ in measures]
    for account, *row in store.conn.execute(in_scope(sql, scoped=scoped), bound):
        for n, value in enumerate(row):
            if value is not None:
                values[n][str(account)] = float(value)
    return values


# The measures of inbound emails' first replies that `query_replies` computes from one read of them.
REPLY_MEASURES = ("median_reply_hours", "inbound_answered_share")


def query_replies(store: Store, measures: Sequence[tuple[Measure, Params]], as_of: datetime, *,
                  scoped: bool = False) -> list[dict[str, float]]:
    """`median_reply_hours` and `inbound_answered_share` (any parameters, any number of each) from one read of
    the inbound emails and their first replies; the values per measure, in order.

    Each alone looks every inbound email's first reply up, and the lookup and the reading of the emails are
    most of what they cost; SQLite gives no median by GROUP BY, and a median by window functions over a shared
    table of replies sorts them again, so the rows come here: SQLite computes each email's reply time and age
    (the same expressions as the measures' own queries, so the same doubles) and the aggregates are taken here
    as SQLite takes them (a median is the mean of the middle one or two: x / 1 or (x + y) / 2; a share is a
    count of integers over a count). An email answered within `within` is one whose first reply came within
    it: if any reply did, the first did.
    """
    if not measures or any(measure.name not in REPLY_MEASURES for measure, _ in measures):
        raise ValueError(f"one read of first replies answers only {', '.join(REPLY_MEASURES)}")
    bound = [measure.bind(params, as_of) for measure, params in measures]
    sql = f"""SELECT a.account_id, a.occurred_at,
                     julianday({_FIRST_REPLY}) - julianday(a.occurred_at) AS reply_days,
                     julianday(:as_of_day) - julianday(a.occurred_at, 'start of day') AS age
              FROM activities a WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.kind = 'email'
                AND a.direction = 'in' AND a.occurred_at > :since"""
    rows = store.conn.execute(in_scope(sql, scoped=scoped), {
        "as_of": iso(as_of), "as_of_day": as_of.date().isoformat(),
        "since": min(str(b["window_start"]) for b in bound)}).fetchall()
    values: list[dict[str, float]] = []
    for (measure, _), mine in zip(measures, bound, strict=True):
        start = str(mine["window_start"])
        if measure.name == "median_reply_hours":
            hours: dict[str, list[float]] = {}
            for account, at, reply_days, _age in rows:
                if at > start and reply_days is not None:
                    hours.setdefault(account, []).append(24 * reply_days)
            values.append({str(account): _median(found) for account, found in hours.items()})
        else:
            within = float(mine["within"])
            judged: dict[str, list[int]] = {}
            for account, at, reply_days, age in rows:
                if at > start and age is not None and age > within:
                    counts = judged.setdefault(account, [0, 0])
                    counts[0] += 1
                    counts[1] += reply_days is not None and reply_days <= within
            values.append({str(account): answered / emails for account, (emails, answered) in judged.items()})
    return values


def _median(values: list[float]) -> float:
    """The median as `_median_sql` takes it: the mean of the middle one or two of the sorted values."""
    values.sort()
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


# The accounts with usage (each found by a seek for the next one in the key, not by reading their rows), or
# those in scope: the usage pass gives those with no day in its range a row of nothing.
_USAGE_ACCOUNTS = """WITH RECURSIVE k(id) AS (
        SELECT min(account_id) FROM usage_daily
        UNION ALL SELECT (SELECT min(account_id) FROM usage_daily WHERE account_id > k.id) FROM k
        WHERE k.id IS NOT NULL)"""
_USAGE_ACCOUNTS_SCOPED = f"WITH k(id) AS (SELECT account_id FROM {SCOPE_TABLE})"


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


# The window's feature lists of an account (JSON arrays as `worker.sync` writes them: `json.dumps` of stripped
# names), joined into one text per account by the usage pass.
_FEATURE_LISTS = "coalesce(group_concat(CASE WHEN u.day > :window_start THEN u.features_used END), '[]')"

# How many of the scorecard's features appear in those lists. A listed feature is searched as a whole JSON
# string, `"name"`, in the joined text: where the text has no backslash every quote in it opens or closes a
# name, and a name without a quote, comma or backslash can only fall between the two quotes of one stored name
# (the separators `, ` and `],[` both hold a comma), so the search finds exactly the stored names equal to it.
# Otherwise (an odd listed name: decided once per query; an account's text with a backslash) each usage row's
# list is read through `json_each`, which costs several times as much as the search (measured: BENCHMARKS.md,
# 'Figures behind the code').
_PLAIN_FEATURES = """(SELECT count(*) FROM json_each(:features_json) WHERE value GLOB '*[",\\]*') = 0"""
_FEATURES_SEEN = f"""CASE WHEN {_PLAIN_FEATURES} AND instr({_FEATURE_LISTS}, '\\') = 0
    THEN (SELECT count(DISTINCT f.value) FROM json_each(:features_json) f
          WHERE instr({_FEATURE_LISTS}, '"' || f.value || '"') > 0)
    ELSE (SELECT count(DISTINCT f.value) FROM json_each(:features_json) f
          WHERE EXISTS (SELECT 1 FROM usage_daily u2, json_each(u2.features_used) j
                        WHERE u2.account_id = u.account_id AND u2.day > :window_start
                          AND u2.day <= :as_of_day AND j.value = f.value)) END"""


def _median_sql(values: str) -> str:
    """Median per account of a `(account_id, value)` query: SQLite has no median, window functions do."""
    return f"""SELECT account_id, avg(value) FROM (
                 SELECT account_id, value, row_number() OVER (PARTITION BY account_id ORDER BY value) AS n,
                        count(*) OVER (PARTITION BY account_id) AS c
                 FROM ({values}))
               WHERE n IN ((c + 1) / 2, (c + 2) / 2) GROUP BY account_id"""


# The first reply: the index walk stops at it (`min()` would read every later email of the account).
_FIRST_REPLY = """(
        SELECT r.occurred_at FROM activities r WHERE r.account_id = a.account_id
        AND r.kind = 'email' AND r.direction = 'out' AND r.is_deleted = 0
        AND r.occurred_at >= a.occurred_at AND r.occurred_at <= :as_of ORDER BY r.occurred_at LIMIT 1)"""
# `LIMIT -1` keeps SQLite from copying the lookup into the caller's `value IS NOT NULL` (it ran twice).
_REPLY_HOURS = f"""SELECT a.account_id, 24 * (julianday({_FIRST_REPLY})
        - julianday(a.occurred_at)) AS value
    FROM activities a WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.kind = 'email' AND a.direction = 'in'
      AND a.occurred_at > :window_start LIMIT -1"""

# A ticket's `closed_at` is when it was resolved: a Case's ClosedDate, a Zendesk ticket's metric `solved_at`. Not
# Zendesk's close, which an automation makes days after the solve (4 by default) and which moves `updated_at`.
_RESOLUTION_DAYS = f"""SELECT a.account_id, julianday(a.closed_at) - julianday(a.occurred_at) AS value
    FROM activities a WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND a.kind = 'ticket' AND a.closed_at IS NOT NULL
      AND a.closed_at > :window_start AND a.closed_at <= :as_of"""


# An email that answers, or is answered by, one of the other direction within `within`. An email of unknown
# direction (`worker.sync.salesforce.UNKNOWN`: logged as a Task alone) is neither side of an exchange: every
# email measure asks for 'in' or 'out', never for "not the other one".
_ANSWERED_EITHER_WAY = """AND a.direction IN ('in', 'out') AND EXISTS (
    SELECT 1 FROM activities p WHERE p.account_id = a.account_id AND p.kind = 'email'
    AND p.is_deleted = 0 AND p.direction IN ('in', 'out') AND p.direction != a.direction
    AND p.occurred_at <= a.occurred_at
    AND p.occurred_at >= strftime('%Y-%m-%dT%H:%M:%SZ', a.occurred_at,
                                  '-' || CAST(:within * 86400 AS INTEGER) || ' seconds'))"""


# Every kind `worker.sync` stores (newest_data_ages asks each for its newest row).
ACTIVITY_KINDS = ("meeting", "call", "email", "ticket", "ticket_comment")


def newest_of_kind(kind: str, condition: str = "") -> str:
    """An account's newest live activity of `kind` meeting `condition`: the index walk goes backwards from
    `as_of` and stops at the first hit, where `max()` over a filter would read every row of the kind."""
    return f"""(SELECT a.occurred_at FROM activities a WHERE a.account_id = acc.id AND a.kind = '{kind}'
                AND a.is_deleted = 0 AND a.occurred_at <= :as_of {condition}
                ORDER BY a.occurred_at DESC LIMIT 1)"""


# Usage measures are expressions over one account's `usage_daily` rows up to `as_of_day` (see `query_usage`).
# What a usage measure reads from before its window is looked up in the key `(account_id, day)`, once per account
# and only when needed (`coalesce` stops at its first value), so that the pass reads the window's rows alone.
_MOST_SEATS = ("(SELECT max(s.seats) FROM usage_daily s WHERE s.account_id = u.account_id "
               "AND s.day <= :as_of_day)")
_SEATS_IN_USE = f"coalesce(max(CASE WHEN u.day > :window_start THEN u.seats END), {_MOST_SEATS})"
_SEATS_CONTRACTED = ("coalesce((SELECT contracted_seats FROM accounts WHERE id = u.account_id), "
                     f"max(CASE WHEN u.day > :window_start THEN u.seats END), {_MOST_SEATS})")
# The newest day with an active user: the key walked backwards from `as_of_day` to the first such day.
_NEWEST_ACTIVE_DAY = ("(SELECT n.day FROM usage_daily n WHERE n.account_id = u.account_id "
                      "AND n.day <= :as_of_day AND n.active_users > 0 ORDER BY n.day DESC LIMIT 1)")


def _from_window_start(bound: Mapping[str, Any]) -> str:
    return str(bound["window_start"])


def _from_window_before(bound: Mapping[str, Any]) -> str:
    """The start of the `window` before the window (`_EVENTS_BEFORE`)."""
    return (date.fromisoformat(bound["window_start"]) - timedelta(days=int(bound["window"]))).isoformat()


def _from_baseline(bound: Mapping[str, Any]) -> str:
    return str(bound["baseline_from"])
_EVENTS_BEFORE = ("sum(CASE WHEN u.day > date(:window_start, '-' || CAST(:window AS INTEGER) || ' days') "
                  "AND u.day <= :window_start THEN u.events ELSE 0 END)")


def _hours(value: float) -> str:
    return _plural(value, "hour") if value < 48 else f"{round(value / 24, 1):g} days"


# -- against the account's own usual ---------------------------------------------------------------------------
#
# A level says little across kinds of account: a low-touch customer is always quiet, a grumpy one always terse.
# These measures read the last `window` days (today's included: from `recent_from`) against the `baseline` days
# before them (from `baseline_from`; the two never overlap), so a quiet account that was always quiet is as
# usual and one that went quiet is not. A count is compared as a ratio of daily rates, 1 being as usual, each
# side given one event more (a pseudo-count): an account that usually has a meeting every three months is not
# "down 100%" after one month without, while one that usually has four a month and had none is down 80%. A
# share or a tone is compared as a difference, 0 being as usual. An account has no value, not a decline,
# when it has too little baseline: no data from before the baseline began (new to us), or fewer than
# `min_baseline` of the things counted in it (nothing usual to fall from).

# The account has data of any kind from before its baseline began: it was a customer we knew all along. Asked
# in the WHERE clause, before the account's window and baseline are read: an account without a usual has no
# value, and reading its activity first was most of what these measures cost in a store of new accounts
# (measured: BENCHMARKS.md, 'Figures behind the code').
_KNOWN_BEFORE_BASELINE = " OR ".join(
    [f"""EXISTS (SELECT 1 FROM activities h WHERE h.account_id = acc.id AND h.kind = '{kind}'
                 AND h.is_deleted = 0 AND h.occurred_at < :baseline_from)""" for kind in
     ("meeting", "call", "email", "ticket", "ticket_comment")]
    + ["EXISTS (SELECT 1 FROM usage_daily hu WHERE hu.account_id = acc.id AND hu.day < :baseline_from)"])

_RECENT = "a.occurred_at >= :recent_from"
_IN_BASELINE = "a.occurred_at < :recent_from"


def _count_against_usual(condition: str) -> str:
    """Activities meeting `condition` per day in the window against the baseline's rate (1 = as usual)."""
    return f"""SELECT id, CASE WHEN baseline_count >= :min_baseline
                              THEN (recent_count + 1.0) / (baseline_count * :window / :baseline + 1.0) END
        FROM (SELECT acc.id, coalesce(sum({_RECENT}), 0) AS recent_count,
                     coalesce(sum({_IN_BASELINE}), 0) AS baseline_count
              FROM accounts acc
              LEFT JOIN activities a ON a.account_id = acc.id AND a.is_deleted = 0 AND {condition}
                   AND a.occurred_at >= :baseline_from AND a.occurred_at <= :as_of
              WHERE acc.is_deleted = 0 AND SCOPE(acc.id) AND ({_KNOWN_BEFORE_BASELINE}) GROUP BY acc.id)"""


def _mean_against_usual(condition: str, value: str) -> str:
    """The mean of `value` over the window's activities meeting `condition`, less its mean over the baseline
    (0 = as usual): no value without an activity in the window or with fewer than `min_baseline` before."""
    return f"""SELECT id, CASE WHEN baseline_count >= :min_baseline AND recent_count > 0
                              THEN recent_mean - baseline_mean END
        FROM (SELECT acc.id, count(CASE WHEN {_RECENT} THEN 1 END) AS recent_count,
                     count(CASE WHEN {_IN_BASELINE} THEN 1 END) AS baseline_count,
                     avg(CASE WHEN {_RECENT} THEN {value} END) AS recent_mean,
                     avg(CASE WHEN {_IN_BASELINE} THEN {value} END) AS baseline_mean
              FROM accounts acc
              JOIN activities a ON a.account_id = acc.id AND a.is_deleted = 0 AND {condition}
                   AND a.occurred_at >= :baseline_from AND a.occurred_at <= :as_of
              WHERE acc.is_deleted = 0 AND SCOPE(acc.id) AND ({_KNOWN_BEFORE_BASELINE}) GROUP BY acc.id)"""


def _mean_against_usual_in_pass(value: str) -> str:
    """`_mean_against_usual` as an expression over the rows of a pass (`query_rows`) that reads them from
    `baseline_from` or earlier: the same rows, in the same order, so the same means."""
    recent = "a.occurred_at >= :recent_from"
    baseline = "a.occurred_at >= :baseline_from AND a.occurred_at < :recent_from"
    return f"""CASE WHEN count(CASE WHEN {baseline} THEN 1 END) >= :min_baseline
                     AND count(CASE WHEN {recent} THEN 1 END) > 0
                     AND EXISTS (SELECT 1 FROM accounts acc WHERE acc.id = a.account_id AND acc.is_deleted = 0
                                 AND ({_KNOWN_BEFORE_BASELINE}))
                THEN avg(CASE WHEN {recent} THEN {value} END) - avg(CASE WHEN {baseline} THEN {value} END) END"""


def _answered_by(direction: str) -> str:
    """1 when an email of `direction` to the account answers the email `a` within `within`, else 0."""
    return f"""EXISTS (SELECT 1 FROM activities r WHERE r.account_id = a.account_id AND r.kind = 'email'
                   AND r.direction = '{direction}' AND r.is_deleted = 0 AND r.occurred_at >= a.occurred_at
                   AND julianday(r.occurred_at) - julianday(a.occurred_at) <= :within AND r.occurred_at <= :as_of)"""


# An email is judged once `within` whole days have passed since its day (as `inbound_answered_share` does).
_JUDGED = "julianday(:as_of_day) - julianday(a.occurred_at, 'start of day') > :within"

# Usage against its own usual: the window's days against the baseline's, in the usage pass (`query_usage`), for an
# account whose usage feed reaches back before its baseline.
_USAGE_KNOWN_BEFORE_BASELINE = ("EXISTS (SELECT 1 FROM usage_daily h WHERE h.account_id = u.account_id "
                                "AND h.day < :baseline_from)")


def _usage_against_usual(per_day: str) -> str:
    """`per_day` summed over the window's days against the baseline's rate (1 = as usual)."""
    recent = f"coalesce(sum(CASE WHEN u.day >= :recent_from THEN {per_day} END), 0)"
    baseline = f"coalesce(sum(CASE WHEN u.day >= :baseline_from AND u.day < :recent_from THEN {per_day} END), 0)"
    return f"""CASE WHEN {baseline} >= :min_baseline AND {_USAGE_KNOWN_BEFORE_BASELINE}
                    THEN ({recent} + 1.0) / ({baseline} * :window / :baseline + 1.0) END"""


def _against_usual(what: str) -> Callable[[float, Params], str]:
    """A ratio to the usual in words: "Meetings down 70% on their usual (30 days)"."""
    def say(value: float, params: Params) -> str:
        span = _window(params)
        if value <= 0.85:
            return f"{what} down {round((1 - value) * 100)}% on their usual ({span})"
        if value >= 1.15:
            return (f"{what} at {value:.1f}x their usual ({span})" if value >= 2
                    else f"{what} up {round((value - 1) * 100)}% on their usual ({span})")
        return f"{what} as usual ({span})"
    return say


def _share_against_usual(what: str) -> Callable[[float, Params], str]:
    """A change of share in words: "Inbound emails answered: 40 points fewer than usual (30 days)"."""
    def say(value: float, params: Params) -> str:
        points = round(abs(value) * 100)
        if points < 10:
            return f"{what} as usual ({_window(params)})"
        return f"{what}: {points} points {'fewer' if value < 0 else 'more'} than usual ({_window(params)})"
    return say


def _tone_against_usual(value: float, params: Params) -> str:
    if value <= -0.1:
        return f"Customer messages more negative than usual ({value:+.2f}, {_window(params)})"
    if value >= 0.1:
        return f"Customer messages warmer than usual ({value:+.2f}, {_window(params)})"
    return f"Customer messages sound as usual ({value:+.2f}, {_window(params)})"


_AGAINST_USUAL = {"window": timedelta(days=30), "baseline": timedelta(days=180)}
_INBOUND_TEXT = ("a.direction = 'in' AND a.sentiment IS NOT NULL "
                 "AND a.kind IN ('email', 'ticket_comment', 'ticket')")


LIBRARY: dict[str, Measure] = {m.name: m for m in (
    Measure(
        "days_since_two_way_touch",
        "Days since the last meeting, call or email exchange (a reply within `within`, either way)",
        {"within": timedelta(days=14)},
        f"""SELECT acc.id, julianday(:as_of_day) - julianday(date(nullif(max(
                coalesce({newest_of_kind('meeting')}, ''), coalesce({newest_of_kind('call')}, ''),
                coalesce({newest_of_kind('email', _ANSWERED_EITHER_WAY)}, '')), '')))
            FROM accounts acc WHERE acc.is_deleted = 0 AND SCOPE(acc.id)""",
        lambda v, p: (f"No two-way touch in {_days(v)}" if v >= 14
                      else f"Last two-way touch {_days(v)} ago" if v >= 1 else "Two-way touch today")),
    Measure(
        "meetings", "Meetings held in the window", {"window": timedelta(days=90)},
        f"""SELECT acc.id, count(a.occurred_at) FROM accounts acc
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
              AND julianday(:as_of_day) - julianday(a.occurred_at, 'start of day') > :within
            GROUP BY a.account_id""",
        lambda v, p: f"{round(v * 100)}% of inbound emails answered"),
    Measure(
        "inbound_sentiment", "Recency-weighted sentiment of inbound emails and ticket comments (-1..1)",
        {"window": timedelta(days=180), "half_life": timedelta(days=30)},
        f"""SELECT a.account_id,
                   sum(a.sentiment * pow(0.5, (julianday(:as_of_day) - julianday(a.occurred_at, 'start of day'))
                                         / :half_life))
                   / sum(pow(0.5, (julianday(:as_of_day) - julianday(a.occurred_at, 'start of day')) / :half_life))
            FROM activities a
            WHERE {_LIVE_ACTIVITY} AND SCOPE(a.account_id) AND {_INBOUND_TEXT} AND a.occurred_at > :window_start
            GROUP BY a.account_id""",
        lambda v, p: ("Customer messages sound negative" if v <= -0.2
                      else "Customer messages sound positive" if v >= 0.3
                      else "Customer messages sound neutral") + f" ({v:+.2f})",
        over_rows=_INBOUND_TEXT, since=_from_window_start, row_expression="""
            sum(CASE WHEN a.occurred_at > :window_start THEN a.sentiment * pow(0.5, (julianday(:as_of_day)
                - julianday(a.occurred_at, 'start of day')) / :half_life) END)
            / sum(CASE WHEN a.occurred_at > :window_start THEN pow(0.5, (julianday(:as_of_day)
                - julianday(a.occurred_at, 'start of day')) / :half_life) END)"""),
    Measure(
        "open_tickets", "Support tickets open now", {},
        f"""SELECT acc.id, count(a.occurred_at) FROM accounts acc
            LEFT JOIN activities a ON a.account_id = acc.id AND {_LIVE_ACTIVITY} AND {_OPEN_AS_OF}
            WHERE acc.is_deleted = 0 AND SCOPE(acc.id) GROUP BY acc.id""",
        lambda v, p: "No open tickets" if v == 0 else f"{_plural(v, 'open ticket')}"),
    Measure(
        "urgent_tickets", "High-priority or urgent tickets opened in the window",
        {"window": timedelta(days=30), "priorities": ("urgent", "high")},
        f"""SELECT acc.id, count(a.occurred_at) FROM accounts acc
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
        """SELECT acc.id, (
                SELECT count(*) FROM activities o WHERE o.account_id = acc.id AND o.kind = 'email'
                AND o.occurred_at <= :as_of AND o.occurred_at > max(:window_start, coalesce(acc.last_in, ''))
                AND o.direction = 'out' AND o.is_deleted = 0)
            FROM (SELECT acc.id, (
                      SELECT i.occurred_at FROM activities i WHERE i.account_id = acc.id
                      AND i.kind = 'email' AND i.direction = 'in' AND i.is_deleted = 0
                      AND i.occurred_at <= :as_of ORDER BY i.occurred_at DESC LIMIT 1) AS last_in
                  FROM accounts acc WHERE acc.is_deleted = 0 AND SCOPE(acc.id) LIMIT -1) acc""",
        lambda v, p: ("Customer answers our emails" if v == 0
                      else f"{_plural(v, 'email')} sent without an answer")),
    Measure(
        "ticket_surge", "Tickets opened per day in `window` against the rate over `baseline` (1 = usual)",
        {"window": timedelta(days=30), "baseline": timedelta(days=90)},
        """SELECT acc.id,
                   CASE WHEN count(b.occurred_at) = 0 THEN 1.0
                        ELSE (sum(b.occurred_at > :window_start) / :window) / (count(b.occurred_at) / :baseline)
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
        f"julianday(:as_of_day) - julianday({_NEWEST_ACTIVE_DAY})",
        lambda v, p: f"Product last used {_days(v)} ago" if v >= 1 else "Product used today", over_usage_days=True,
        since=lambda bound: str(bound["as_of_day"])),
    Measure(
        "usage_frequency", "Share of days in the window with any active user",
        {"window": timedelta(days=30)},
        # `day` is part of the key: counting rows counts distinct days.
        "count(CASE WHEN u.active_users > 0 AND u.day > :window_start THEN 1 END) / :window",
        lambda v, p: f"Product used on {round(v * 100)}% of days in the last {_window(p)}", over_usage_days=True,
        since=_from_window_start),
    Measure(
        "feature_adoption", "Share of the scorecard's features used in the window",
        {"window": timedelta(days=30)},
        f"({_FEATURES_SEEN}) * 1.0 / :features_count",
        lambda v, p: f"Uses {round(v * 100)}% of key features", needs=("features",), over_usage_days=True,
        since=_from_window_start),
    Measure(
        "active_user_share", "Average daily active users against the seats in the usage data (adoption)",
        {"window": timedelta(days=30)},
        f"""CASE WHEN {_SEATS_IN_USE} > 0 THEN
                 coalesce(sum(CASE WHEN u.day > :window_start THEN u.active_users END), 0) * 1.0 / :window
                 / {_SEATS_IN_USE} END""",
        lambda v, p: f"{round(v * 100)}% of seats active on an average day", over_usage_days=True,
        since=_from_window_start),
    Measure(
        "usage_trend", "Change in product events, the last `window` against the `window` before (-1..+)",
        {"window": timedelta(days=14)},
        f"""CASE WHEN {_EVENTS_BEFORE} > 0 THEN
                 sum(CASE WHEN u.day > :window_start THEN u.events ELSE 0 END) * 1.0 / {_EVENTS_BEFORE} - 1 END""",
        lambda v, p: (f"Product use up {round(v * 100)}% in {_window(p)}" if v >= 0.1
                      else f"Product use down {round(-v * 100)}% in {_window(p)}" if v <= -0.1
                      else f"Product use steady over {_window(p)}"), over_usage_days=True,
        since=_from_window_before),
    Measure(
        "seat_utilization", "Peak daily active users against contracted seats (value realization)",
        {"window": timedelta(days=30)},
        f"""CASE WHEN {_SEATS_CONTRACTED} > 0 THEN
                 coalesce(max(CASE WHEN u.day > :window_start THEN u.active_users END), 0) * 1.0
                 / {_SEATS_CONTRACTED} END""",
        lambda v, p: f"Peak use reaches {round(v * 100)}% of contracted seats", over_usage_days=True,
        since=_from_window_start),
    Measure(
        "meetings_vs_usual", "Meetings per day in `window` against the `baseline` before it (1 = as usual)",
        {**_AGAINST_USUAL, "min_baseline": 2},
        _count_against_usual("a.kind = 'meeting'"), _against_usual("Meetings")),
    Measure(
        "two_way_touches_vs_usual",
        "Meetings, calls and email replies (either way, within `within`) per day in `window` against the "
        "`baseline` before it (1 = as usual)",
        {**_AGAINST_USUAL, "min_baseline": 3, "within": timedelta(days=14)},
        _count_against_usual(f"(a.kind IN ('meeting', 'call') OR (a.kind = 'email' {_ANSWERED_EITHER_WAY}))"),
        _against_usual("Two-way touches")),
    Measure(
        "customer_reply_rate_vs_usual",
        "Share of our emails the customer answered within `within`, in `window` less in the `baseline` before "
        "it (0 = as usual)",
        {**_AGAINST_USUAL, "min_baseline": 3, "within": timedelta(days=7)},
        _mean_against_usual(f"a.kind = 'email' AND a.direction = 'out' AND {_JUDGED}", _answered_by("in")),
        _share_against_usual("Our emails answered by the customer")),
    Measure(
        "inbound_answered_vs_usual",
        "Share of inbound emails we answered within `within`, in `window` less in the `baseline` before it "
        "(0 = as usual)",
        {**_AGAINST_USUAL, "min_baseline": 3, "within": timedelta(days=2)},
        _mean_against_usual(f"a.kind = 'email' AND a.direction = 'in' AND {_JUDGED}", _answered_by("out")),
        _share_against_usual("Inbound emails answered")),
    Measure(
        "sentiment_vs_usual",
        "Mean sentiment of inbound emails and ticket comments in `window` less in the `baseline` before it "
        "(0 = as usual)",
        {**_AGAINST_USUAL, "min_baseline": 3},
        _mean_against_usual(_INBOUND_TEXT, "a.sentiment"), _tone_against_usual, over_rows=_INBOUND_TEXT,
        since=_from_baseline, row_expression=_mean_against_usual_in_pass("a.sentiment")),
    Measure(
        "tickets_vs_usual", "Tickets opened per day in `window` against the `baseline` before it (1 = as usual)",
        {**_AGAINST_USUAL, "min_baseline": 0},
        _count_against_usual("a.kind = 'ticket'"), _against_usual("Tickets")),
    Measure(
        "active_days_vs_usual",
        "Days with an active user in `window` against the `baseline` before it (1 = as usual)",
        {**_AGAINST_USUAL, "min_baseline": 5},
        _usage_against_usual("(u.active_users > 0)"), _against_usual("Days of product use"), over_usage_days=True,
        since=_from_baseline),
    Measure(
        "active_users_vs_usual",
        "Daily active users in `window` against the `baseline` before it (1 = as usual)",
        {**_AGAINST_USUAL, "min_baseline": 5},
        _usage_against_usual("u.active_users"), _against_usual("Active users"), over_usage_days=True,
        since=_from_baseline),
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

