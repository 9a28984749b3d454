"""The pandas baseline for P4: the scorecard's measures as group-bys over DataFrames.

Each function mirrors one SQL measure of `worker.scoring.measures` (same windows, same as-of cut, same missing-data
meaning), so that "set-based SQL is at least as fast as pandas" compares equal work. pandas is installed
into the venv for the benchmark only (`pip install pandas`); the worker never imports it. Ties between
emails with the same second are the one place the two may differ (a running max over sorted rows versus
SQL's peers); `agreement` reports how many values match.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd  # type: ignore[import-untyped,import-not-found,unused-ignore]  # the benchmark's own extra

Frames = dict[str, pd.DataFrame]
_NEVER = -(2**62)  # sentinels for running max / min over nanosecond stamps
_LATER = 2**62
Result = dict[str, float]


def load(conn: sqlite3.Connection) -> Frames:
    """The columns the measures read, with timestamps parsed once."""
    acts = pd.read_sql_query(
        "SELECT account_id, kind, occurred_at, direction, sentiment, status, priority, closed_at, is_deleted "
        "FROM activities", conn)
    for column, text in (("occurred", "occurred_at"), ("closed", "closed_at")):  # nanoseconds, as the sentinels
        acts[column] = pd.to_datetime(acts[text], format="%Y-%m-%dT%H:%M:%SZ").astype("datetime64[ns]")
    usage = pd.read_sql_query("SELECT account_id, day, active_users, events, features_used, seats FROM usage_daily",
                              conn)
    accounts = pd.read_sql_query("SELECT id, contracted_seats FROM accounts WHERE is_deleted = 0", conn)
    opportunities = pd.read_sql_query(
        "SELECT account_id, close_date, is_closed, is_deleted FROM opportunities", conn)
    return {"activities": acts, "usage": usage, "accounts": accounts, "opportunities": opportunities}


def _day(moment: datetime) -> pd.Timestamp:
    return pd.Timestamp(moment.date())


def _start(as_of: datetime, days: float) -> pd.Timestamp:
    """SQL's `occurred_at > 'YYYY-MM-DD'`: from midnight of the window's first day."""
    return pd.Timestamp((as_of - timedelta(days=days)).date())


def _start_text(as_of: datetime, days: float) -> str:
    return (as_of - timedelta(days=days)).date().isoformat()


def _as_dict(series: pd.Series) -> Result:
    return {str(k): float(v) for k, v in series.items() if v is not None and not math.isnan(v)}


def _live(f: Frames, as_of: datetime) -> pd.DataFrame:
    a = f["activities"]
    until = pd.Timestamp(as_of.replace(tzinfo=None))
    return a[(a["is_deleted"] == 0) & a["account_id"].notna() & (a["occurred"] <= until)]


def _all_accounts(f: Frames, values: pd.Series, fill: float) -> pd.Series:
    return values.reindex(f["accounts"]["id"], fill_value=fill)


def _emails(f: Frames, as_of: datetime) -> pd.DataFrame:
    e = _live(f, as_of)
    return e[(e["kind"] == "email") & e["direction"].isin(("in", "out"))].sort_values(["account_id", "occurred"])


def days_since_two_way_touch(f: Frames, as_of: datetime, within: float = 14) -> Result:
    live = _live(f, as_of)
    direct = live[live["kind"].isin(("meeting", "call"))].groupby("account_id")["occurred"].max()
    e = _emails(f, as_of).copy()
    ns = e["occurred"].astype("int64")
    e["in_at"] = ns.where(e["direction"] == "in", _NEVER)  # running max over a sentinel, not NaT (skipped)
    e["out_at"] = ns.where(e["direction"] == "out", _NEVER)
    grouped = e.groupby("account_id")
    other = grouped["out_at"].cummax().where(e["direction"] == "in", grouped["in_at"].cummax())
    close = (other != _NEVER) & (ns - other <= within * 86400 * 10**9)
    replied = e[close].groupby("account_id")["occurred"].max()
    touched = pd.concat([direct, replied]).groupby(level=0).max()
    return _as_dict((_day(as_of) - touched.dt.normalize()).dt.days.astype(float))


def meetings(f: Frames, as_of: datetime, window: float = 90) -> Result:
    live = _live(f, as_of)
    m = live[(live["kind"] == "meeting") & (live["occurred"] >= _start(as_of, window))]
    return _as_dict(_all_accounts(f, m.groupby("account_id").size().astype(float), 0.0))


def _next_reply(f: Frames, as_of: datetime, window: float) -> pd.DataFrame:
    e = _emails(f, as_of)
    e = e[e["occurred"] >= _start(as_of, window)].copy()
    e["out_at"] = e["occurred"].astype("int64").where(e["direction"] == "out", _LATER)
    reverse = e.iloc[::-1]
    following = reverse.groupby("account_id")["out_at"].cummin()
    e["next_out"] = pd.to_datetime(following.where(following != _LATER))
    return e[e["direction"] == "in"]


def inbound_answered_share(f: Frames, as_of: datetime, window: float = 90, within: float = 2) -> Result:
    e = _next_reply(f, as_of, window)
    # old enough to judge: more than `within` whole days before the day of `as_of`, as the worker counts
    e = e[(pd.Timestamp(as_of.date()) - e["occurred"].dt.normalize()) > pd.Timedelta(days=within)]
    answered = ((e["next_out"] - e["occurred"]) <= pd.Timedelta(days=within)).astype(float)
    return _as_dict(answered.groupby(e["account_id"]).mean())


def median_reply_hours(f: Frames, as_of: datetime, window: float = 90) -> Result:
    e = _next_reply(f, as_of, window)
    hours = (e["next_out"] - e["occurred"]).dt.total_seconds() / 3600
    return _as_dict(hours.groupby(e["account_id"]).median())


def outbound_only_streak(f: Frames, as_of: datetime, window: float = 90) -> Result:
    e = _emails(f, as_of)
    last_in = e[e["direction"] == "in"].groupby("account_id")["occurred"].max()
    out = e[(e["direction"] == "out") & (e["occurred"] >= _start(as_of, window))]
    after = out["occurred"] > out["account_id"].map(last_in).fillna(pd.Timestamp.min)
    return _as_dict(_all_accounts(f, out[after].groupby("account_id").size().astype(float), 0.0))


def inbound_sentiment(f: Frames, as_of: datetime, window: float = 180, half_life: float = 14) -> Result:
    live = _live(f, as_of)
    s = live[(live["direction"] == "in") & live["sentiment"].notna()
             & live["kind"].isin(("email", "ticket_comment", "ticket")) & (live["occurred"] >= _start(as_of, window))]
    weight = 0.5 ** ((_day(as_of) - s["occurred"].dt.normalize()).dt.days / half_life)
    sums = (s["sentiment"] * weight).groupby(s["account_id"]).sum()
    return _as_dict(sums / weight.groupby(s["account_id"]).sum())


def _tickets(f: Frames, as_of: datetime) -> pd.DataFrame:
    live = _live(f, as_of)
    return live[live["kind"] == "ticket"]


def open_tickets(f: Frames, as_of: datetime) -> Result:
    t = _tickets(f, as_of)
    now = pd.Timestamp(as_of.replace(tzinfo=None))
    still_open = t["closed"].notna() & (t["closed"] > now)
    unclosed = t["closed"].isna() & ~t["status"].fillna("").str.lower().isin(("solved", "closed", "deleted"))
    return _as_dict(_all_accounts(f, t[still_open | unclosed].groupby("account_id").size().astype(float), 0.0))


def urgent_tickets(f: Frames, as_of: datetime, window: float = 30) -> Result:
    t = _tickets(f, as_of)
    urgent = t[(t["occurred"] >= _start(as_of, window)) & t["priority"].str.lower().isin(("urgent", "high"))]
    return _as_dict(_all_accounts(f, urgent.groupby("account_id").size().astype(float), 0.0))


def ticket_surge(f: Frames, as_of: datetime, window: float = 30, baseline: float = 90) -> Result:
    t = _tickets(f, as_of)
    t = t[t["occurred"] >= _start(as_of, baseline)]
    total = t.groupby("account_id").size()
    recent = t[t["occurred"] >= _start(as_of, window)].groupby("account_id").size().reindex(total.index, fill_value=0)
    return _as_dict(_all_accounts(f, (recent / window) / (total / baseline), 1.0))


def resolution_days(f: Frames, as_of: datetime, window: float = 90) -> Result:
    t = _tickets(f, as_of)
    t = t[t["closed"].notna() & (t["closed"] >= _start(as_of, window))
          & (t["closed"] <= pd.Timestamp(as_of.replace(tzinfo=None)))]
    days = (t["closed"] - t["occurred"]).dt.total_seconds() / 86400
    return _as_dict(days.groupby(t["account_id"]).median())


def _usage(f: Frames, as_of: datetime) -> pd.DataFrame:
    u = f["usage"]
    return u[u["day"] <= as_of.date().isoformat()]


def days_since_last_active(f: Frames, as_of: datetime) -> Result:
    u = _usage(f, as_of)
    last = pd.to_datetime(u[u["active_users"] > 0].groupby("account_id")["day"].max())
    return _as_dict((_day(as_of) - last).dt.days.astype(float))


def usage_frequency(f: Frames, as_of: datetime, window: float = 30) -> Result:
    u = _usage(f, as_of)
    active = u[(u["active_users"] > 0) & (u["day"] > _start_text(as_of, window))]
    share = active.groupby("account_id")["day"].nunique() / window
    return _as_dict(share.reindex(u["account_id"].unique(), fill_value=0.0))


def active_user_share(f: Frames, as_of: datetime, window: float = 30) -> Result:
    u = _usage(f, as_of).copy()
    inside = u["day"] > _start_text(as_of, window)
    u["active_in"] = u["active_users"].where(inside, 0)
    u["seats_in"] = u["seats"].where(inside)
    g = u.groupby("account_id")
    seats = g["seats_in"].max().fillna(g["seats"].max())
    share = g["active_in"].sum() / window / seats
    return _as_dict(share[seats > 0])


def feature_adoption(f: Frames, as_of: datetime, features: tuple[str, ...], window: float = 30) -> Result:
    u = _usage(f, as_of)
    inside = u[u["day"] > _start_text(as_of, window)]
    used = inside.assign(feature=inside["features_used"].map(json.loads)).explode("feature")
    used = used[used["feature"].isin(features)]
    count = used.groupby("account_id")["feature"].nunique().astype(float)
    return _as_dict((count.reindex(u["account_id"].unique(), fill_value=0.0)) / len(features))


def usage_trend(f: Frames, as_of: datetime, window: float = 14) -> Result:
    u = _usage(f, as_of)
    start = _start_text(as_of, window)
    earliest = (datetime.fromisoformat(start) - timedelta(days=int(window))).date().isoformat()
    u = u[u["day"] > earliest]
    recent = u["events"].where(u["day"] > start, 0).groupby(u["account_id"]).sum()
    before = u["events"].where(u["day"] <= start, 0).groupby(u["account_id"]).sum()
    return _as_dict((recent / before - 1)[before > 0])


def seat_utilization(f: Frames, as_of: datetime, window: float = 30) -> Result:
    u = _usage(f, as_of).copy()
    inside = u["day"] > _start_text(as_of, window)
    u["active_in"] = u["active_users"].where(inside)
    u["seats_in"] = u["seats"].where(inside)
    g = u.groupby("account_id")
    peak = g["active_in"].max().fillna(0)
    contracted = f["accounts"].set_index("id")["contracted_seats"]
    seats = contracted.reindex(peak.index).fillna(g["seats_in"].max()).fillna(g["seats"].max())
    return _as_dict((peak / seats)[seats > 0])


def days_to_renewal(f: Frames, as_of: datetime) -> Result:
    o = f["opportunities"]
    day = as_of.date().isoformat()
    o = o[(o["is_deleted"] == 0) & (o["is_closed"] == 0) & (o["close_date"] >= day)]
    days = (pd.to_datetime(o["close_date"]) - _day(as_of)).dt.days.astype(float)
    return _as_dict(days.groupby(o["account_id"]).min())


def _days(value: Any) -> float:
    return float(value.total_seconds() / 86400) if isinstance(value, timedelta) else float(value)


PANDAS: dict[str, Callable[..., Result]] = {fn.__name__: fn for fn in (
    days_since_two_way_touch, meetings, inbound_answered_share, median_reply_hours, outbound_only_streak,
    inbound_sentiment, open_tickets, urgent_tickets, ticket_surge, resolution_days, days_since_last_active,
    usage_frequency, active_user_share, feature_adoption, usage_trend, seat_utilization, days_to_renewal)}


def run_measure(frames: Frames, name: str, params: dict[str, Any], as_of: datetime) -> Result:
    """One measure with the scorecard's parameters (durations in days, as the SQL binds them)."""
    kwargs = {k: (tuple(v) if k == "features" else _days(v)) for k, v in params.items()}
    return PANDAS[name](frames, as_of, **kwargs)


def agreement(sql: Result, pandas: Result) -> float:
    """Share of accounts where both give the same value (to 1e-6), over the union of accounts."""
    keys = set(sql) | set(pandas)
    if not keys:
        return 1.0
    same = sum(1 for k in keys if k in sql and k in pandas and math.isclose(sql[k], pandas[k], rel_tol=1e-6,
                                                                            abs_tol=1e-6))
    return same / len(keys)
