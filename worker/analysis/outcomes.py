"""Churn and renewal outcomes from the CRM, which is where they are recorded: what the score should predict.

By default an outcome is a renewal Opportunity that is closed: lost means the account churned on its close
date, won means it was retained. "Renewal" is the Opportunity `Type` (`Renewal` by default) or a word in
its name, both configurable, because orgs record renewals differently. An account field holding a churn
date can be used instead of, or beside, the opportunities when the store keeps one.

An account's churn is its *first* lost renewal: after that it is no longer a customer, and a backtest
stops observing it. Outcomes are read as the CRM holds them today, which is right for outcomes (they are
what happened) and wrong for anything used as a signal; `worker.analysis.backtest` keeps the two apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from worker.errors import OutcomeConfigError
from worker.store import Store


@dataclass(frozen=True)
class OutcomeRules:
    """How to recognise a renewal and where a churn date lives."""

    renewal_types: tuple[str, ...] = ("Renewal",)
    renewal_name_contains: str | None = "renewal"  # case-insensitive; None to go by type alone
    churn_date_column: str | None = None  # an `accounts` column holding a churn date (YYYY-MM-DD...)

    def is_renewal(self, opportunity_type: str | None, name: str | None) -> bool:
        types = {t.lower() for t in self.renewal_types}
        if opportunity_type and opportunity_type.lower() in types:
            return True
        word = (self.renewal_name_contains or "").lower()
        return bool(word) and word in (name or "").lower()


@dataclass(frozen=True)
class Outcome:
    account_id: str
    day: date
    churned: bool
    source: str  # "opportunity 006..." or "accounts.<column>"


@dataclass(frozen=True)
class Outcomes:
    """Every outcome, and per account the day it churned (its first churn) and whether it is a customer."""

    events: tuple[Outcome, ...]
    customers: frozenset[str] = frozenset()  # accounts with any renewal (open or closed) or a churn date
    churned_on: Mapping[str, date] = field(default_factory=dict)  # account -> its first churn

    @classmethod
    def of(cls, events: Iterable[Outcome], customers: Iterable[str] = ()) -> Outcomes:
        ordered = tuple(sorted(events, key=lambda e: (e.day, e.account_id, e.source)))
        first: dict[str, date] = {}
        for event in ordered:
            if event.churned:
                first.setdefault(event.account_id, event.day)
        return cls(ordered, frozenset(customers) | {e.account_id for e in ordered}, first)

    def churn_day(self, account_id: str) -> date | None:
        return self.churned_on.get(account_id)

    def renewals_won(self) -> list[Outcome]:
        return [e for e in self.events if not e.churned]


def read_outcomes(store: Store, rules: OutcomeRules | None = None) -> Outcomes:
    """The outcomes the store records, oldest first."""
    rules = rules or OutcomeRules()
    events: list[Outcome] = []
    customers: set[str] = set()
    rows = store.query("SELECT id, account_id, name, type, close_date, is_closed, is_won FROM opportunities "
                       "WHERE is_deleted = 0 AND account_id IS NOT NULL ORDER BY close_date, id")
    for row in rows:
        if not rules.is_renewal(row["type"], row["name"]):
            continue
        customers.add(row["account_id"])
        if row["is_closed"] and row["close_date"]:
            events.append(Outcome(row["account_id"], date.fromisoformat(str(row["close_date"])[:10]),
                                  churned=not row["is_won"], source=f"opportunity {row['id']}"))
    if rules.churn_date_column:
        events += _account_churn_dates(store, rules.churn_date_column)
    return Outcomes.of(events, customers)


def _account_churn_dates(store: Store, column: str) -> Iterable[Outcome]:
    columns = {r["name"] for r in store.query("PRAGMA table_info(accounts)")}
    if column not in columns:
        raise OutcomeConfigError(f"the store's accounts table has no column {column!r} "
                                 f"(it has: {', '.join(sorted(columns))})")
    rows = store.query(f'SELECT id, "{column}" AS churned FROM accounts WHERE "{column}" IS NOT NULL')
    for row in rows:
        try:
            day = date.fromisoformat(str(row["churned"])[:10])
        except ValueError:
            continue  # not a date: a value the CRM holds for another reason, never a guessed churn
        yield Outcome(row["id"], day, churned=True, source=f"accounts.{column}")
