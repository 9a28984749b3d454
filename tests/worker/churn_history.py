"""A store with a churn history big enough to fit a churn model on, written directly (no sync), for speed.

150 customers over two years and a quarter, each with a yearly renewal Opportunity created four months before
it closes. 60 of them lose a renewal, spread evenly from July 2023 to February 2025; most of those stop using
the product over the three months before (their active days thin out to none), a few leave with no warning.
A quarter of the others go through a two-month dip and recover. Meetings come at random for everyone (a
measure that says nothing). Usage rows exist only on days with an active user, which keeps the store small and
the replay of two years fast.

`SMALL_SCORECARD` reads three measures, so a replay costs a few seconds: `usage.usage_frequency` (what predicts
churn here), `usage.days_since_last_active`, and `engagement.meetings` (noise).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from worker.analysis.backtest import Observation, label
from worker.analysis.outcomes import Outcome, Outcomes
from worker.store import Store, iso

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules"
DATA_FROM = date(2023, 1, 2)
UNTIL = datetime(2025, 3, 31, 12, tzinfo=UTC)
CUSTOMERS = 150
CHURNERS = 60
FIRST_CHURN, LAST_CHURN = date(2023, 7, 3), date(2025, 2, 24)
CREATED_BEFORE_CLOSE = timedelta(days=120)

SMALL_SCORECARD = """\
version: 1
bands: {red: 40, yellow: 70}
groups:
  usage:
    weight: 70
    measures:
      usage_frequency: {window: 30d, weight: 60, points: [[0, 0], [0.5, 100]]}
      days_since_last_active: {weight: 40, points: [[0, 100], [30, 0]]}
  engagement:
    weight: 30
    measures:
      meetings: {window: 90d, weight: 100, points: [[0, 0], [3, 100]]}
derived:
  churn_risk:
    measures:
      health: {weight: 70, points: [[0, 100], [100, 0]]}
      days_to_renewal: {weight: 30, points: [[0, 100], [180, 0]]}
"""


def account_id(n: int) -> str:
    return f"001{n:015d}"


@dataclass(frozen=True)
class Fate:
    account_id: str
    churned_on: date | None
    warned: bool  # its usage declined before it churned


def small_rules(folder: Path) -> Path:
    """A rules folder with `SMALL_SCORECARD` and the shipped alert rules."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scorecard.yaml").write_text(SMALL_SCORECARD, encoding="utf-8")
    shutil.copy(SHIPPED_RULES / "alerts.yaml", folder / "alerts.yaml")
    return folder


def _renewal(n: int, k: int, account: str, close: date, *, closed: bool, won: bool) -> dict[str, Any]:
    created = datetime.combine(close - CREATED_BEFORE_CLOSE, datetime.min.time(), UTC) + timedelta(hours=9)
    return {"id": f"006{n:012d}{k:03d}", "account_id": account, "name": f"Account {n} renewal {close.year}",
            "type": "Renewal", "stage": ("Closed Won" if won else "Closed Lost") if closed else "Negotiation",
            "amount": 12_000.0, "close_date": close.isoformat(), "is_closed": int(closed), "is_won": int(won),
            "is_deleted": 0, "created_at": iso(created), "modstamp": iso(created)}


def build_history(store: Store, seed: int = 7) -> list[Fate]:
    """Write the history into `store` (accounts, renewals, usage, meetings); the fate of each account."""
    rng = random.Random(seed)
    end = UNTIL.date()
    span = (LAST_CHURN - FIRST_CHURN).days
    fates: list[Fate] = []
    accounts: list[dict[str, Any]] = []
    opportunities: list[dict[str, Any]] = []
    usage: list[dict[str, Any]] = []
    meetings: list[dict[str, Any]] = []
    for n in range(CUSTOMERS):
        account = account_id(n)
        churn = FIRST_CHURN + timedelta(days=span * n // (CHURNERS - 1)) if n < CHURNERS else None
        warned = churn is not None and n % 6 != 5  # one churner in six leaves without warning
        anniversary = churn if churn is not None else DATA_FROM + timedelta(days=rng.randrange(365))
        while anniversary - timedelta(days=365) >= DATA_FROM - timedelta(days=200):
            anniversary -= timedelta(days=365)
        k = 0
        while True:
            if churn is not None and anniversary == churn:
                opportunities.append(_renewal(n, k, account, anniversary, closed=True, won=False))
                break
            closed = anniversary <= end
            opportunities.append(_renewal(n, k, account, anniversary, closed=closed, won=closed))
            if not closed:
                break
            anniversary += timedelta(days=365)
            k += 1
        accounts.append({"id": account, "name": f"Account {n}", "type": "Customer", "owner_id": None,
                         "is_deleted": 0})
        fates.append(Fate(account, churn, warned))
        base = rng.uniform(0.35, 0.7)
        dip = None if churn is not None or rng.random() > 0.25 else DATA_FROM + timedelta(days=rng.randrange(700))
        last = min(churn, end) if churn is not None else end
        day = DATA_FROM
        while day <= last:
            p = base
            if churn is not None and warned and day >= churn - timedelta(days=105):
                p *= max(0.0, min(1.0, (churn - timedelta(days=15) - day).days / 90))
            if dip is not None and dip <= day < dip + timedelta(days=60):
                p *= 0.3
            if rng.random() < p:
                users = rng.randint(1, 8)
                usage.append({"account_id": account, "day": day.isoformat(), "active_users": users,
                              "events": 5 * users, "features_used": "[]", "seats": 10, "source_file": "history"})
            if rng.random() < 1 / 25:
                at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=15)
                meetings.append({"source": "history", "source_id": f"m{len(meetings)}", "kind": "meeting",
                                 "account_id": account, "related_id": None, "parent_id": None,
                                 "occurred_at": iso(at), "direction": "both", "subject": "Check-in", "text": None,
                                 "text_hash": None, "sentiment": None, "status": None, "priority": None,
                                 "closed_at": None, "is_deleted": 0, "modstamp": iso(at)})
            day += timedelta(days=1)
    with store.transaction():
        store.upsert("accounts", accounts, ("id",))
        store.upsert("opportunities", opportunities, ("id",))
        store.upsert("usage_daily", usage, ("account_id", "day"))
        store.upsert("activities", meetings, ("source", "source_id"))
    return fates


def copy_store(store: Store, path: Path) -> Store:
    """A file copy of `store` a test may change (the module's history stays as built)."""
    target = Store(path)
    store.conn.backup(target.conn)
    return target


# -- labelled pairs drawn by hand: one measure predicts churn, the others are noise -------------------------

PAIRS_FROM = date(2024, 1, 1)
PAIRS_HORIZON = 28


def drawn_pairs(seed: int, *, accounts: int = 120, weeks: int = 100, churners: int = 72
                ) -> tuple[list[tuple[Observation, bool]], Outcomes]:
    """Weekly snapshots of `accounts` customers labelled by churn within `PAIRS_HORIZON` days, in the measure order
    of `SMALL_SCORECARD`: usage frequency falls in the four weeks before a churn (and is otherwise noise around
    0.6), days since last active and meetings never say anything. Renewals are unknown (no signal); the
    retained accounts renew every 26 weeks, won."""
    rng = random.Random(seed)
    until = PAIRS_FROM + timedelta(weeks=weeks)
    events: list[Outcome] = []
    pairs: list[tuple[Observation, bool]] = []
    for n in range(accounts):
        account = account_id(n)
        churn = PAIRS_FROM + timedelta(days=70 + (weeks * 7 - 100) * n // churners) if n < churners else None
        if churn is not None:
            events.append(Outcome(account, churn, True, f"opportunity {n}"))
        else:
            first = PAIRS_FROM + timedelta(days=rng.randrange(182))
            events += [Outcome(account, first + timedelta(weeks=26 * k), False, f"opportunity {n}-{k}")
                       for k in range(weeks // 26 + 1)]
        for week in range(weeks + 1):
            day = PAIRS_FROM + timedelta(weeks=week)
            if churn is not None and day >= churn:
                break
            known = label(day, churn, PAIRS_HORIZON, until)
            if known is None:
                continue
            frequency = rng.gauss(0.25 if known else 0.6, 0.12)
            raw = (max(0.0, min(1.0, frequency)), float(rng.randrange(0, 6)), float(rng.randrange(0, 7)))
            pairs.append((Observation(account, None, day, 50.0, "yellow", 1.0, None, None, (), (None, None, None),
                                      raw), known))
    return pairs, Outcomes.of(events)


# -- a small store with every kind of data, some of it after the day a replay looks at --------------------------

VARIED_DAY = date(2024, 6, 14)  # the snapshot day: data before it and after it


def build_varied(store: Store, seed: int = 5) -> None:
    """Six accounts over a year (Jan 2024 to Dec 2024): emails both ways with replies (some answered only after
    `VARIED_DAY`), meetings, calls, tickets (some opened before the day and solved after), ticket comments with
    sentiment, usage with features and seats, and renewals, one created after the day."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 2, 9, tzinfo=UTC)
    rows: list[dict[str, Any]] = []

    def activity(account: str, kind: str, at: datetime, direction: str | None, **extra: Any) -> None:
        rows.append({"source": "varied", "source_id": f"v{len(rows)}", "kind": kind, "account_id": account,
                     "related_id": None, "parent_id": None, "occurred_at": iso(at), "direction": direction,
                     "subject": kind, "text": None, "text_hash": None, "sentiment": extra.get("sentiment"),
                     "status": extra.get("status"), "priority": extra.get("priority"),
                     "closed_at": extra.get("closed_at"), "is_deleted": 0, "modstamp": iso(at)})

    accounts = [account_id(900 + n) for n in range(6)]
    usage = []
    for index, account in enumerate(accounts):
        for day in range(0, 350):
            at = start + timedelta(days=day, hours=rng.randrange(8))
            if rng.random() < 0.15:
                activity(account, "email", at, "in", sentiment=rng.uniform(-0.8, 0.8))
                if rng.random() < 0.7:
                    activity(account, "email", at + timedelta(hours=rng.choice([3, 30, 60])), "out")
            if rng.random() < 0.08:
                activity(account, "email", at, "out")
                if rng.random() < 0.5:
                    activity(account, "email", at + timedelta(hours=rng.choice([5, 40, 100])), "in",
                             sentiment=rng.uniform(-0.5, 0.9))
            if rng.random() < 0.04:
                activity(account, "meeting", at, "both")
            if rng.random() < 0.03:
                activity(account, "call", at, "out")
            if rng.random() < 0.05:
                solved = at + timedelta(days=rng.choice([1, 4, 12]))
                activity(account, "ticket", at, "in", status="solved", closed_at=iso(solved),
                         priority=rng.choice(["urgent", "high", "normal"]), sentiment=rng.uniform(-0.9, 0.2))
                activity(account, "ticket_comment", at + timedelta(hours=2), "in", sentiment=rng.uniform(-0.9, 0.5))
            if rng.random() < 0.6 - 0.05 * index:
                usage.append({"account_id": account, "day": (start + timedelta(days=day)).date().isoformat(),
                              "active_users": rng.randint(1, 9), "events": rng.randint(5, 300),
                              "features_used": json.dumps(rng.sample(["dashboards", "alerts", "api", "sso"], 2)),
                              "seats": 10, "source_file": "varied"})
    renewals = [{"id": f"006V{n:014d}", "account_id": account, "name": f"Account {n} renewal", "type": "Renewal",
                 "stage": "Negotiation", "amount": 10_000.0,
                 "close_date": (VARIED_DAY + timedelta(days=40 + 30 * n)).isoformat(), "is_closed": 0,
                 "is_won": 0, "is_deleted": 0, "modstamp": None,
                 "created_at": iso(datetime.combine(VARIED_DAY, datetime.min.time(), UTC)
                                   + timedelta(days=-60 if n else 10))}
                for n, account in enumerate(accounts)]
    with store.transaction():
        store.upsert("accounts", [{"id": a, "name": f"Varied {n}", "type": "Customer", "is_deleted": 0,
                                   "contracted_seats": 10} for n, a in enumerate(accounts)], ("id",))
        store.upsert("activities", rows, ("source", "source_id"))
        store.upsert("usage_daily", usage, ("account_id", "day"))
        store.upsert("opportunities", renewals, ("id",))
