"""A deterministic past for the backtest: 12-24 months of customers who renew, and customers who leave.

`connectors.sandboxes.world` makes a present-day world whose accounts have a fixed temperament. A backtest needs
outcomes (renewals closed won or lost) and, to find anything, signals that precede them. Here every
account has a yearly renewal; some are lost. Before a lost renewal the account usually declines for a
few months (fewer meetings, unanswered and angrier emails, urgent tickets, less product use), so a
good health score should see churn coming. Not always, on purpose: some churn is silent (no decline at
all), and some retained accounts go through a rough patch and recover, so the score cannot be perfect
and an AUC of 1.0 would mean a bug.

The world has a structure for tuning to find: meetings and replies follow mostly the owner's habit, and a
rough patch sours the mood and brings tickets but not a drop in product use, so usage tells a leaving
customer from a bad spell better than engagement, sentiment or support do (seed 3, 60 accounts: tuning
moves weight to usage and does better on the later holdout).

The history goes through the sandboxes (and usage files) with the world's own record helpers, so the
worker reads it over HTTP exactly as it reads the demo world, the records that are no activity of their own
included (`noise`: invitees' copies of meetings, series masters, open tasks, calls and emails a tool logged
again; see `connectors.sandboxes.world`), which must not move the backtest. `History.fates` is the ground
truth the tests check the backtest against.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.sandboxes.world import (
    _PREFIXES,
    _SUFFIXES,
    ANGRY,
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    World,
    WorldAccount,
    _count,
    _email,
    _meeting,
    _moment,
    _series,
    _stamps,
    _ticket,
    _usage,
    build_world,
    sf_datetime,
)

if TYPE_CHECKING:
    from connectors.salesforce.sandbox import SalesforceSandbox
    from connectors.slack.sandbox import SlackSandbox
    from connectors.zendesk.sandbox import ZendeskSandbox

CHUNK = timedelta(days=14)  # activity is drawn in fortnights, each at the account's health of that time
BASE_HEALTH = {"thriving": 0.85, "steady": 0.65, "drifting": 0.45}
CHURN_CHANCE = {"thriving": 0.12, "steady": 0.3, "drifting": 0.55}  # of losing a renewal in the history
SILENT_SHARE = 0.2  # churned accounts that showed no decline at all
ROUGH_PATCH_SHARE = 0.35  # retained accounts that had a bad spell and recovered
MIN_WARMUP = timedelta(days=150)  # a lost renewal comes late enough for its decline to be in the history


@dataclass(frozen=True)
class Fate:
    """What happened to one account, and when: the ground truth a backtest should recover."""

    account_id: str
    temperament: str
    renewals: tuple[date, ...]  # renewal close dates inside the history, in order
    churned_on: date | None = None  # the renewal that closed lost
    decline_days: int = 0  # how long before churn the decline began (0: silent churn)
    rough_patch: tuple[date, date] | None = None  # a retained account's bad spell

    def health(self, day: date) -> float:
        """0..1: how the relationship stands on `day` (meetings, emails, their mood, tickets)."""
        if self.rough_patch is not None and self.rough_patch[0] <= day <= self.rough_patch[1]:
            return min(self.usage_health(day), 0.25)
        return self.usage_health(day)

    def usage_health(self, day: date) -> float:
        """0..1: how much the product is used on `day`. A rough patch is a quarrel, not a way out: the
        product stays in use, so in this world usage tells churn from a bad spell better than the mood."""
        base = BASE_HEALTH[self.temperament]
        if self.churned_on is not None and self.decline_days:
            begins = self.churned_on - timedelta(days=self.decline_days)
            if day >= begins:  # the slide is over well before the renewal is lost
                progress = min(1.0, (day - begins).days / (0.6 * self.decline_days))
                return base - (base - 0.02) * progress
        return base


@dataclass
class History:
    world: World
    start: datetime
    end: datetime
    fates: dict[str, Fate] = field(default_factory=dict)
    habits: dict[str, float] = field(default_factory=dict)  # owner -> how much they meet and reply (0..1)

    @property
    def churned(self) -> list[Fate]:
        return [f for f in self.fates.values() if f.churned_on is not None]


def build_history(salesforce: SalesforceSandbox, zendesk: ZendeskSandbox | None, slack: SlackSandbox | None,
                  usage_dir: Path | None, *, accounts: int = 60, months: int = 15, seed: int = 3,
                  now: datetime | None = None, noise: bool = True) -> History:
    """Owners and `accounts` customers with `months` of history up to `now`, renewals and churn included; with
    `noise`, the records a real org holds besides."""
    if not 12 <= months <= 24:
        raise ValueError(f"months must be between 12 and 24 (got {months})")
    end = now or datetime.now(UTC)
    start = end - timedelta(days=round(months * 30.44))
    world = build_world(salesforce, zendesk, slack, usage_dir, accounts=0, seed=seed, now=end, history_days=0,
                        noise=noise)
    history = History(world, start, end)
    owner_ids = list(world.owners)
    history.habits = {owner: round(world.rng.uniform(0.3, 1.0), 2) for owner in owner_ids}
    for index in range(accounts):
        account = _add_customer(world, index, owner_ids[index % len(owner_ids)], start)
        fate = _draw_fate(world.rng, account, start.date(), end.date())
        history.fates[account.id] = fate
        _add_renewals(world, account, fate, end)
        _add_activity(world, account, fate, start, end, history.habits[account.owner_id])
    return history


def _add_customer(world: World, index: int, owner_id: str, start: datetime) -> WorldAccount:
    rng = world.rng
    name = f"{_PREFIXES[index % len(_PREFIXES)]} {_SUFFIXES[(index * 7) % len(_SUFFIXES)]}"
    if index >= len(_PREFIXES):
        name += f" {index // len(_PREFIXES) + 1}"
    domain = name.lower().replace(" ", "") + ".example"
    temperament = rng.choices(tuple(BASE_HEALTH), weights=(5, 3, 2))[0]
    seats = rng.choice((10, 25, 50, 100, 250))
    created = start - timedelta(days=400)
    account_id = world.salesforce.insert("Account", {
        "Name": name, "Type": rng.choice(("Customer - Direct", "Customer - Channel")),
        "Industry": rng.choice(("Technology", "Healthcare", "Retail", "Finance", "Manufacturing")),
        "Website": f"https://www.{domain}", "OwnerId": owner_id, "Contracted_Seats__c": float(seats),
        "AnnualRevenue": float(rng.choice((2, 5, 12, 40, 150)) * 1_000_000), **_stamps(created)})
    account = WorldAccount(account_id, name, domain, owner_id, temperament, seats, contact_email=f"ops@{domain}")
    world.accounts.append(account)
    if world.zendesk is not None:
        account.zendesk_org_id = world.zendesk.add_organization(name, external_id=account_id,
                                                                domain_names=[domain])
        account.zendesk_requester_id = world.zendesk.add_user(f"{name} Ops", account.contact_email,
                                                              role="end-user",
                                                              organization_id=account.zendesk_org_id)
    return account


def _draw_fate(rng: random.Random, account: WorldAccount, start: date, end: date) -> Fate:
    anniversary = start + timedelta(days=rng.randint(1, 364))
    renewals = []
    while anniversary <= end:
        renewals.append(anniversary)
        anniversary += timedelta(days=365)
    losable = [r for r in renewals if r >= start + MIN_WARMUP]
    if losable and rng.random() < CHURN_CHANCE[account.temperament]:
        lost = rng.choice(losable)
        decline = 0 if rng.random() < SILENT_SHARE else rng.randint(60, 140)
        return Fate(account.id, account.temperament, tuple(r for r in renewals if r <= lost), lost, decline)
    patch = None
    if rng.random() < ROUGH_PATCH_SHARE:
        begins = start + timedelta(days=rng.randint(60, max(61, (end - start).days - 60)))
        patch = (begins, begins + timedelta(days=rng.randint(30, 75)))
    return Fate(account.id, account.temperament, tuple(renewals), rough_patch=patch)


def _add_renewals(world: World, account: WorldAccount, fate: Fate, end: datetime) -> None:
    """Last year's renewal (won), each renewal in the history (won, or lost once), and the next one open."""
    first = fate.renewals[0] if fate.renewals else end.date() + timedelta(days=1)
    amount = float(account.seats * 600)
    _opportunity(world, account, first - timedelta(days=365), "Closed Won", amount)
    for renewal in fate.renewals:
        _opportunity(world, account, renewal, "Closed Lost" if renewal == fate.churned_on else "Closed Won", amount)
    if fate.churned_on is None:
        upcoming = (fate.renewals[-1] if fate.renewals else first - timedelta(days=365)) + timedelta(days=365)
        _opportunity(world, account, upcoming, "Negotiation", amount, stamped=end - timedelta(days=30))


def _opportunity(world: World, account: WorldAccount, close: date, stage: str, amount: float, *,
                 stamped: datetime | None = None) -> None:
    closed = stage.startswith("Closed")
    moment = stamped or datetime.combine(close, time(17, 0), UTC)
    world.salesforce.insert("Opportunity", {
        "AccountId": account.id, "Name": f"{account.name} renewal {close.year}", "Type": "Renewal",
        "StageName": stage, "Amount": amount, "CloseDate": close.isoformat(), "IsClosed": closed,
        "IsWon": stage == "Closed Won", "CreatedDate": sf_datetime(moment - timedelta(days=120)),
        "SystemModstamp": sf_datetime(moment), "LastModifiedDate": sf_datetime(moment)})


def _add_activity(world: World, account: WorldAccount, fate: Fate, start: datetime, end: datetime,
                  habit: float) -> None:
    """Fortnight by fortnight, activity at the rates the account's health of that fortnight gives."""
    stop = end if fate.churned_on is None else min(end, datetime.combine(fate.churned_on, time(0), UTC))
    _series(world, account, start, stop)
    chunk_start = start
    while chunk_start < stop:
        chunk_end = min(chunk_start + CHUNK, stop)
        middle = (chunk_start + (chunk_end - chunk_start) / 2).date()
        _fortnight(world, account, chunk_start, chunk_end, fate.health(middle), fate.usage_health(middle), habit)
        chunk_start = chunk_end


def _fortnight(world: World, account: WorldAccount, start: datetime, end: datetime, health: float,
               usage: float, habit: float) -> None:
    """Meetings and replies are mostly the owner's habit; mood and tickets follow the relationship; product
    use follows `usage`."""
    rng = world.rng
    months = (end - start).total_seconds() / (30 * 86400)
    trouble = 1.0 - health
    for _ in range(_count(rng, 2.5 * habit * (0.2 + 0.8 * health) * months)):
        _meeting(world, account, _moment(rng, start, end))
    moods = (POSITIVE, NEUTRAL, NEGATIVE, ANGRY)
    mood_weights = (6 * health ** 2, 3.0, 5 * trouble ** 2, 2 * trouble ** 3)
    for _ in range(_count(rng, (3 + 3 * trouble) * months)):
        at = _moment(rng, start, end)
        _email(world, account, at, rng.choice(rng.choices(moods, weights=mood_weights)[0]), incoming=True)
        if rng.random() < 0.25 + 0.7 * habit * (0.4 + 0.6 * health):
            reply_at = min(at + timedelta(hours=rng.randint(1, int(6 + 70 * (1 - habit)))), end)
            _email(world, account, reply_at, rng.choice(NEUTRAL), incoming=False)
    if world.zendesk is not None:
        for _ in range(_count(rng, (0.4 + 2.5 * trouble) * months)):
            at = _moment(rng, start, end)
            priority = rng.choices(("low", "normal", "high", "urgent"),
                                   weights=(3, 5, 1 + 2 * trouble, 0.2 + 3 * trouble ** 2))[0]
            solve_at = at + timedelta(hours=rng.randint(4, int(24 * (2 + 10 * trouble))))
            solved = solve_at < end and rng.random() < 0.95 - 0.4 * trouble
            text = rng.choice(rng.choices(moods, weights=mood_weights)[0])
            _ticket(world, account, at, text, priority, solve_at if solved else None)
    _usage(world, account, start.date(), end.date(), 0.1 + 0.85 * usage)

