"""Deterministic worlds at benchmark scale: the same seed gives the same accounts, activity and usage.

`connectors.sandboxes.world` makes the small demo world with a record-by-record story; at 20,000 or 100,000 accounts
the benchmarks need the same shapes made fast and streamed account by account, so that memory stays flat.
One plan (`plan_account`) feeds two sinks:

- `load_sandboxes` puts it into the Salesforce, Zendesk and Slack sandboxes and a usage folder, through the
  sandboxes' own data API (`insert`, `add_ticket`...), so the sync benchmarks read it over real HTTP exactly
  as the worker reads an org (about 17,000 Salesforce inserts a second: measured, fast enough, so no
  bulk-load shortcut into the sandbox's internals);
- `fill_store` writes the rows `worker.sync` would have written straight into a `Store`, for the scoring
  benchmarks, which must not wait for a million HTTP round trips to test set-based SQL.

Texts are composed from sentence pools with a serial number, so (nearly) every text is distinct: the
sentiment benchmark then scores real, different texts, not a cache hit after the first dozen.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.salesforce.ids import make_id
from connectors.sandboxes.world import FEATURES, sf_datetime
from worker.store import Store, iso

if TYPE_CHECKING:
    from connectors.salesforce.sandbox import SalesforceSandbox
    from connectors.slack.sandbox import SlackSandbox
    from connectors.zendesk.sandbox import ZendeskSandbox

HISTORY_DAYS = 180  # the longest window the scorecard looks at (inbound sentiment)
USAGE_DAYS = 35  # usage measures look back 30 days (usage trend: twice 14)
FIXED_NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)  # scoring worlds are cached on disk: a fixed "now"

OWNERS = (("Dana Whitfield", "America/New_York"), ("Ravi Natarajan", "Europe/London"),
          ("Sofia Marquez", "America/Los_Angeles"), ("Kenji Watanabe", "Asia/Tokyo"),
          ("Amara Okafor", "Europe/Paris"), ("Liam O'Connor", "Australia/Sydney"))

_SENTENCES = {
    1: ("Thanks so much, the rollout went really well and the team loves the new dashboards.",
        "Great call today, we are excited about the roadmap.",
        "Everything is working smoothly and the support has been fantastic.",
        "The new workflow feature saved us hours this week, brilliant work.",
        "Our leadership is happy with the results so far.",
        "Appreciate the quick help with the integration, you folks are great.",
        "We would love to add more seats next quarter.",
        "The training session was excellent and very clear."),
    0: ("Can you send over the invoice for last month when you get a chance?",
        "Following up on the meeting notes, the agenda is attached.",
        "We will review the proposal internally and get back to you next week.",
        "Could you confirm the date for the quarterly business review?",
        "Please add our new admin to the account.",
        "What is the process for changing the billing contact?",
        "We are moving offices next month, the address will change.",
        "Is the export format documented somewhere?"),
    -1: ("This is unacceptable, the export has been broken for days and nobody answered us.",
         "We are very frustrated and disappointed, the outage hurt our customers badly.",
         "Honestly this is terrible, we are considering cancelling at renewal.",
         "Still waiting, another failure today, this is a serious problem.",
         "The dashboards are slow and the team is angry about it.",
         "Data is missing again and we are losing trust fast.",
         "Support ignored our ticket for a week, awful response times.",
         "We will escalate this to our leadership if it is not fixed."),
}
_QUOTE = "\n\nOn Monday, the account team wrote:\n> Just checking in on how things are going."


@dataclass(frozen=True)
class Profile:
    """Expected counts over `HISTORY_DAYS` for one temperament, before scaling to the wanted size."""

    meetings: float
    inbound: float
    answer_rate: float
    calls: float
    tickets: float
    moods: tuple[float, float, float]  # weights of positive, neutral, negative texts
    usage: float  # 0..1: how much of the product is used, how often


PROFILES: dict[str, Profile] = {
    "thriving": Profile(10, 14, 0.95, 4, 3, (5, 4, 0.3), 0.85),
    "steady": Profile(5, 10, 0.8, 3, 5, (2, 5, 1), 0.6),
    "drifting": Profile(1.5, 6, 0.5, 1, 8, (1, 3, 3), 0.3),
}
TEMPERAMENT_WEIGHTS = {"thriving": 6, "steady": 3, "drifting": 1}


@dataclass(frozen=True, slots=True)
class Touch:
    """One piece of activity in an account's history; times are seconds before "now"."""

    kind: str  # meeting | call | email_in | email_out | ticket
    ago: int
    text: str | None = None
    mood: int = 0
    priority: str | None = None
    solved_after: int | None = None  # seconds after the ticket opened; None while open
    zendesk: bool = False


@dataclass(frozen=True, slots=True)
class UsageDay:
    days_ago: int
    active_users: int
    events: int
    features: tuple[str, ...]


@dataclass
class PlannedAccount:
    index: int
    account_id: str
    name: str
    domain: str
    owner: int
    temperament: str
    seats: int
    renewal_in_days: int
    touches: list[Touch] = field(default_factory=list)
    usage: list[UsageDay] = field(default_factory=list)


@dataclass(frozen=True)
class WorldSpec:
    """What to generate: the same spec and seed give the same world."""

    accounts: int
    activities_per_account: float = 50.0
    seed: int = 8
    zendesk_share: float = 0.5  # share of tickets kept in Zendesk (the rest are Salesforce Cases)
    usage_days: int = USAGE_DAYS
    # Days the activity is spread over (the same count per account, whatever the span). The default gives no
    # account data from before the `*_vs_usual` measures' baselines (240 days back), so they answer nothing;
    # a longer span gives most accounts a usual to compare with, and so those measures' real cost.
    history_days: int = HISTORY_DAYS

    @property
    def scale(self) -> float:
        """Multiplier on the profiles' counts so that the mean account has `activities_per_account`."""
        total = sum(TEMPERAMENT_WEIGHTS.values())
        mean = sum(w / total * _expected(PROFILES[t], self.zendesk_share) for t, w in TEMPERAMENT_WEIGHTS.items())
        return self.activities_per_account / mean


def _expected(p: Profile, zendesk_share: float) -> float:
    """Activities one account of this profile makes (a Zendesk ticket adds two comments)."""
    return p.meetings + p.inbound * (1 + p.answer_rate) + p.calls + p.tickets * (1 + 2 * zendesk_share)


def account_id(index: int) -> str:
    return make_id("001", index + 1, pod="5b")


def owner_id(index: int) -> str:
    return make_id("005", index + 1, pod="5b")


def _count(rng: random.Random, mean: float) -> int:
    whole = int(mean)
    return whole + (1 if rng.random() < mean - whole else 0)


def compose_text(rng: random.Random, mood: int, serial: int) -> str:
    """Two sentences of one mood and a reference number; some carry a quoted reply, as real mail does."""
    first, second = rng.sample(_SENTENCES[mood], 2)
    text = f"{first} {second} Reference {serial}."
    return text + _QUOTE if serial % 4 == 0 else text


def plan_account(spec: WorldSpec, index: int) -> PlannedAccount:
    """One account's whole history, from its own seeded generator (so any account can be made alone)."""
    rng = random.Random(spec.seed * 1_000_003 + index)
    temperament = rng.choices(tuple(TEMPERAMENT_WEIGHTS), weights=tuple(TEMPERAMENT_WEIGHTS.values()))[0]
    p = PROFILES[temperament]
    name = f"Bench Account {index:06d}"
    plan = PlannedAccount(index, account_id(index), name, f"bench{index:06d}.example", index % len(OWNERS),
                          temperament, rng.choice((10, 25, 50, 100, 250)), rng.randint(20, 330))
    scale = spec.scale
    span = spec.history_days * 86400
    serial = index * 1000
    touches = plan.touches
    moods = (1, 0, -1)
    for _ in range(_count(rng, p.meetings * scale)):
        touches.append(Touch("meeting", rng.randrange(600, span)))
    for _ in range(_count(rng, p.calls * scale)):
        touches.append(Touch("call", rng.randrange(600, span)))
    for _ in range(_count(rng, p.inbound * scale)):
        ago = rng.randrange(3600, span)
        mood = rng.choices(moods, weights=p.moods)[0]
        serial += 1
        touches.append(Touch("email_in", ago, compose_text(rng, mood, serial), mood))
        reply = ago - rng.randint(1, 40) * 3600
        if rng.random() < p.answer_rate and reply >= 600:  # a reply still to come is not in the data yet
            serial += 1
            touches.append(Touch("email_out", reply, compose_text(rng, 0, serial), 0))
    for _ in range(_count(rng, p.tickets * scale)):
        ago = rng.randrange(3600, span)
        mood = rng.choices(moods, weights=p.moods)[0]
        priority = rng.choices(("low", "normal", "high", "urgent"), weights=(3, 6, 2, 0.3))[0]
        solve = rng.randint(4, 24 * 6) * 3600
        solved = solve < ago and rng.random() < 0.9
        serial += 1
        touches.append(Touch("ticket", ago, compose_text(rng, mood, serial), mood, priority,
                             solve if solved else None, rng.random() < spec.zendesk_share))
    touches.sort(key=lambda t: -t.ago)
    for days_ago in range(spec.usage_days, 0, -1):
        if rng.random() < p.usage + 0.1:
            users = max(1, int(plan.seats * p.usage * rng.uniform(0.6, 1.1)))
            k = max(1, int(len(FEATURES) * p.usage * rng.uniform(0.6, 1.0)))
            plan.usage.append(UsageDay(days_ago, users, users * rng.randint(5, 40),
                                       tuple(sorted(rng.sample(FEATURES, k=k)))))
    return plan


def plan_world(spec: WorldSpec) -> Iterator[PlannedAccount]:
    for index in range(spec.accounts):
        yield plan_account(spec, index)


def _sentiment(rng: random.Random, mood: int) -> float:
    """What VADER would roughly say of a text of this mood: the scoring store skips the model."""
    centre = {1: 0.6, 0: 0.05, -1: -0.6}[mood]
    return max(-1.0, min(1.0, round(centre + rng.uniform(-0.3, 0.3), 4)))


# -- sink 1: straight into a store (scoring benchmarks) ----------------------------------------------------

class _Stamps:
    """ISO stamps for seconds-before-now, fast: the date part is looked up, the time part formatted."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._epoch = int(now.timestamp())
        self._days: dict[int, str] = {}

    def __call__(self, ago: int) -> str:
        moment = self._epoch - ago
        day, second = divmod(moment, 86400)
        text = self._days.get(day)
        if text is None:
            text = self._days[day] = date.fromordinal(719163 + day).isoformat()
        hours, rest = divmod(second, 3600)
        return f"{text}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


_ACTIVITY_COLUMNS = ("source", "source_id", "kind", "account_id", "related_id", "parent_id", "occurred_at",
                     "direction", "subject", "text", "text_hash", "sentiment", "status", "priority",
                     "closed_at", "is_deleted", "modstamp")
_INSERT_ACTIVITY = (f"INSERT INTO activities ({', '.join(_ACTIVITY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in _ACTIVITY_COLUMNS)})")


@dataclass
class FillReport:
    accounts: int = 0
    activities: int = 0
    texts: int = 0
    usage_rows: int = 0


def fill_store(store: Store, spec: WorldSpec, now: datetime = FIXED_NOW, *, with_sentiment: bool = True,
               chunk: int = 200_000) -> FillReport:
    """Write the world as `worker.sync` would have stored it, `chunk` rows a transaction.

    With `with_sentiment` the texts come already scored (as after a sync cycle); without, they wait for
    `worker.sentiment.score_pending_texts`, as after a backfill.
    """
    stamp = _Stamps(now)
    report = FillReport()
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO users (source, source_id, name, email, role, timezone, is_active, modstamp) "
            "VALUES ('salesforce', ?, ?, ?, 'owner', ?, 1, ?)",
            [(owner_id(i), name, _owner_email(name), tz, iso(now)) for i, (name, tz) in enumerate(OWNERS)])
    activities: list[tuple[Any, ...]] = []
    accounts: list[tuple[Any, ...]] = []
    opportunities: list[tuple[Any, ...]] = []
    usage: list[tuple[Any, ...]] = []
    sequence = 0
    for plan in plan_world(spec):
        rng = random.Random(spec.seed + plan.index)
        acc = plan.account_id
        accounts.append((acc, plan.name, "Customer - Direct", "Technology", f"https://www.{plan.domain}",
                         owner_id(plan.owner), 1_000_000.0, float(plan.seats), 0, iso(now - timedelta(days=400))))
        close = (now + timedelta(days=plan.renewal_in_days)).date().isoformat()
        opportunities.append((make_id("006", plan.index + 1, pod="5b"), acc, f"{plan.name} renewal", "Renewal",
                              "Negotiation", float(plan.seats * 600), close, 0, 0, 0, iso(now - timedelta(days=30))))
        for t in plan.touches:
            sequence += 1
            at = stamp(t.ago)
            activities.extend(_store_rows(t, acc, sequence, at, stamp, rng, with_sentiment))
        for u in plan.usage:
            day = (now - timedelta(days=u.days_ago)).date().isoformat()
            usage.append((acc, day, u.active_users, u.events, json.dumps(list(u.features)), plan.seats,
                          f"usage-{day}.csv"))
        report.accounts += 1
        if len(activities) >= chunk:
            report.activities += _flush(store, accounts, opportunities, activities, usage, report)
    report.activities += _flush(store, accounts, opportunities, activities, usage, report)
    report.texts = int(store.scalar("SELECT count(*) FROM activities WHERE text IS NOT NULL"))
    with store.transaction():
        store.conn.execute("ANALYZE")
    return report


def _owner_email(name: str) -> str:
    return name.lower().replace(" ", ".").replace("'", "") + "@healthbeat.example"


def _store_rows(t: Touch, acc: str, n: int, at: str, stamp: _Stamps, rng: random.Random,
                with_sentiment: bool) -> list[tuple[Any, ...]]:
    def sentiment(mood: int) -> float | None:
        return _sentiment(rng, mood) if with_sentiment else None

    if t.kind in ("meeting", "call"):
        prefix = "00U" if t.kind == "meeting" else "00T"
        return [("salesforce", f"{prefix}5b0{n:09d}AAA", t.kind, acc, acc, None, at, "both", "Check-in", None,
                 None, None, None, None, None, 0, at)]
    if t.kind in ("email_in", "email_out"):
        incoming = t.kind == "email_in"
        prefix = "02s" if incoming else "00T"  # an outbound email is keyed by its email Task, as sync does
        return [("salesforce", f"{prefix}5b0{n:09d}AAA", "email", acc, acc, None, at, "in" if incoming else "out",
                 "Question" if incoming else "Re: your account", t.text, None,
                 sentiment(t.mood if incoming else 0),
                 None, None, None, 0, at)]
    closed = stamp(t.ago - t.solved_after) if t.solved_after is not None else None
    if not t.zendesk:
        return [("salesforce", f"5005b0{n:09d}AAA", "ticket", acc, acc, None, at, "in", (t.text or "")[:60],
                 t.text, None, sentiment(t.mood), "Closed" if closed else "New", t.priority, closed, 0,
                 closed or at)]
    org = f"org:{n}"
    ticket = ("zendesk", f"ticket:{n}", "ticket", acc, org, None, at, "in", (t.text or "")[:60], None, None, None,
              "solved" if closed else "open", t.priority, closed, 0, closed or at)
    reply_at = stamp(max(0, t.ago - 7200))
    customer = ("zendesk", f"comment:{n}1", "ticket_comment", acc, org, str(n), at, "in", None, t.text, None,
                sentiment(t.mood), None, None, None, 0, closed or at)
    agent = ("zendesk", f"comment:{n}2", "ticket_comment", acc, org, str(n), reply_at, "out", None,
             "Thanks for reaching out, we are looking into this now.", None,
             _sentiment(rng, 0) if with_sentiment else None, None, None, None, 0, closed or at)
    return [ticket, customer, agent]


def _flush(store: Store, accounts: list[tuple[Any, ...]], opportunities: list[tuple[Any, ...]],
           activities: list[tuple[Any, ...]], usage: list[tuple[Any, ...]], report: FillReport) -> int:
    written = len(activities)
    with store.transaction() as conn:
        conn.executemany("INSERT INTO accounts (id, name, type, industry, website, owner_id, annual_revenue, "
                         "contracted_seats, is_deleted, modstamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", accounts)
        conn.executemany("INSERT INTO opportunities (id, account_id, name, type, stage, amount, close_date, "
                         "is_closed, is_won, is_deleted, modstamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         opportunities)
        conn.executemany(_INSERT_ACTIVITY, activities)
        conn.executemany("INSERT INTO usage_daily (account_id, day, active_users, events, features_used, seats, "
                         "source_file) VALUES (?, ?, ?, ?, ?, ?, ?)", usage)
    report.usage_rows += len(usage)
    for rows in (accounts, opportunities, activities, usage):
        rows.clear()
    return written


# -- sink 2: into the sandboxes (sync benchmarks) ------------------------------------------------------------

@dataclass
class LoadedWorld:
    """What the sync benchmarks need to know about a world loaded into the sandboxes."""

    accounts: list[str] = field(default_factory=list)
    owner_emails: dict[str, str] = field(default_factory=dict)  # Salesforce user id -> email
    slack_users: dict[str, str] = field(default_factory=dict)  # Salesforce user id -> Slack user id
    salesforce_records: int = 0
    activities: int = 0
    zendesk_tickets: int = 0
    usage_rows: int = 0
    texts: int = 0


def load_sandboxes(salesforce: SalesforceSandbox, zendesk: ZendeskSandbox | None, slack: SlackSandbox | None,
                   usage_dir: Path | None, spec: WorldSpec, now: datetime) -> LoadedWorld:
    """Load the world through the sandboxes' data API; the last owner has no Slack user (fallback path)."""
    world = LoadedWorld()
    if slack is not None:
        slack.add_channel("cs-alerts")
    for index, (name, tz) in enumerate(OWNERS):
        email = _owner_email(name)
        user = salesforce.insert("User", {"Id": owner_id(index), "Name": name, "Email": email, "IsActive": True,
                                          "TimeZoneSidKey": tz})
        world.owner_emails[user] = email
        world.salesforce_records += 1
        if slack is not None and index != len(OWNERS) - 1:
            world.slack_users[user] = slack.add_user(email, name, tz=tz)
    agent = zendesk.add_user("Support Agent", "agent@support.example", role="agent") if zendesk else None
    usage_lines: dict[int, list[str]] = {}
    for plan in plan_world(spec):
        created = sf_datetime(now - timedelta(days=400, minutes=plan.index))  # imported over days, not at once
        acc = salesforce.insert("Account", {
            "Id": plan.account_id, "Name": plan.name, "Type": "Customer - Direct", "Industry": "Technology",
            "Website": f"https://www.{plan.domain}", "OwnerId": owner_id(plan.owner), "AnnualRevenue": 1_000_000.0,
            "Contracted_Seats__c": float(plan.seats), "CreatedDate": created, "SystemModstamp": created})
        world.accounts.append(acc)
        stamp = sf_datetime(now - timedelta(days=30, minutes=plan.index))
        salesforce.insert("Opportunity", {
            "AccountId": acc, "Name": f"{plan.name} renewal", "Type": "Renewal", "StageName": "Negotiation",
            "Amount": float(plan.seats * 600), "IsClosed": False, "IsWon": False,
            "CloseDate": (now + timedelta(days=plan.renewal_in_days)).date().isoformat(),
            "CreatedDate": stamp, "SystemModstamp": stamp})
        world.salesforce_records += 2
        org = requester = None
        if zendesk is not None:
            org = zendesk.add_organization(plan.name, external_id=acc, domain_names=[plan.domain])
            requester = zendesk.add_user(f"{plan.name} Ops", f"ops@{plan.domain}", role="end-user",
                                         organization_id=org)
        for touch in plan.touches:
            at = now - timedelta(seconds=touch.ago)
            if touch.zendesk and zendesk is not None and org is not None and requester is not None and agent:
                _zendesk_ticket(zendesk, touch, at, org, requester, agent)
                world.zendesk_tickets += 1
                world.activities += 3
                world.texts += 1
                continue
            world.salesforce_records += _salesforce_touch(salesforce, touch, at, acc, owner_id(plan.owner))
            world.activities += 1
            world.texts += 1 if touch.text else 0
        for day in plan.usage:
            usage_lines.setdefault(day.days_ago, []).append(
                f"{acc},{(now - timedelta(days=day.days_ago)).date().isoformat()},{day.active_users},{day.events},"
                f"{';'.join(day.features)},{plan.seats}\n")
            world.usage_rows += 1
    if usage_dir is not None:
        write_usage_files(usage_dir, usage_lines, now)
    return world


def write_usage_files(usage_dir: Path, lines_by_day: dict[int, list[str]], now: datetime) -> None:
    """One CSV per day, as daily drops arrive."""
    usage_dir.mkdir(parents=True, exist_ok=True)
    for days_ago, lines in sorted(lines_by_day.items()):
        day = (now - timedelta(days=days_ago)).date().isoformat()
        with (usage_dir / f"usage-{day}.csv").open("w", encoding="utf-8") as handle:
            handle.write("account_id,date,active_users,events,features_used,seats\n")
            handle.writelines(lines)


def _salesforce_touch(sf: SalesforceSandbox, t: Touch, at: datetime, acc: str, owner: str,
                      logged: datetime | None = None) -> int:
    """Insert one touch as Salesforce stores it; returns the records made (an outbound email makes two).

    `logged` is when the record reached Salesforce (its SystemModstamp): history is logged as it happens,
    but a bad week found today is stamped today, even if its emails are dated days ago.
    """

    def _stamps(moment: datetime) -> dict[str, str]:
        return {"CreatedDate": sf_datetime(moment), "SystemModstamp": sf_datetime(logged or moment)}

    if t.kind == "meeting":
        sf.insert("Event", {"AccountId": acc, "WhatId": acc, "OwnerId": owner, "Subject": "Check-in",
                            "StartDateTime": sf_datetime(at), "ActivityDateTime": sf_datetime(at),
                            "EndDateTime": sf_datetime(at + timedelta(minutes=45)), "DurationInMinutes": 45,
                            **_stamps(at)})
        return 1
    if t.kind == "call":
        sf.insert("Task", {"AccountId": acc, "WhatId": acc, "OwnerId": owner, "Subject": "Call",
                           "TaskSubtype": "Call", "Status": "Completed", "ActivityDate": at.date().isoformat(),
                           "CompletedDateTime": sf_datetime(at), **_stamps(at)})
        return 1
    if t.kind == "ticket":
        closed = at + timedelta(seconds=t.solved_after) if t.solved_after is not None else None
        sf.insert("Case", {"AccountId": acc, "Subject": (t.text or "")[:60], "Description": t.text,
                           "Priority": (t.priority or "normal").capitalize(),
                           "Status": "Closed" if closed else "New", "IsClosed": closed is not None,
                           "ClosedDate": sf_datetime(closed) if closed else None,
                           "CreatedDate": sf_datetime(at), "SystemModstamp": sf_datetime(logged or closed or at)})
        return 1
    incoming = t.kind == "email_in"
    task = None
    if not incoming:
        task = sf.insert("Task", {"AccountId": acc, "WhatId": acc, "OwnerId": owner, "Subject": "Email: Re",
                                  "TaskSubtype": "Email", "Status": "Completed",
                                  "ActivityDate": at.date().isoformat(), "CompletedDateTime": sf_datetime(at),
                                  **_stamps(at)})
    sf.insert("EmailMessage", {"RelatedToId": acc, "ActivityId": task, "Subject": "Question" if incoming else "Re",
                               "TextBody": t.text, "FromAddress": "ops@customer.example", "ToAddress": "csm@vendor",
                               "Incoming": incoming, "MessageDate": sf_datetime(at),
                               "Status": "0" if incoming else "3", **_stamps(at)})
    return 1 if incoming else 2


def _zendesk_ticket(zd: ZendeskSandbox, t: Touch, at: datetime, org: int, requester: int, agent: int) -> None:
    ticket = zd.add_ticket(subject=(t.text or "")[:60], requester_id=requester, organization_id=org,
                           priority=t.priority, status="open", created_at=at, description=t.text or "")
    zd.add_comment(ticket, author_id=agent, public=True, created_at=at + timedelta(hours=2),
                   body="Thanks for reaching out, we are looking into this now.")
    if t.solved_after is not None:
        zd.update_ticket(ticket, status="solved", at=at + timedelta(seconds=t.solved_after))


def stir_trouble(salesforce: SalesforceSandbox, account: str, owner: str, now: datetime) -> int:
    """A bad week for one account: angry emails nobody answers and urgent open cases. Returns records made."""
    rng = random.Random(account)
    made = 0
    for hours in (3, 20, 44, 70, 90):
        at = now - timedelta(hours=hours)
        _salesforce_touch(salesforce, Touch("email_in", 0, compose_text(rng, -1, 900_000_000 + hours), -1),
                          at, account, owner, logged=now)
        made += 1
    for hours in (6, 30, 54, 80):
        at = now - timedelta(hours=hours)
        _salesforce_touch(salesforce, Touch("ticket", 0, compose_text(rng, -1, 910_000_000 + hours), -1,
                                            "urgent"), at, account, owner, logged=now)
        made += 1
    return made


def distinct_texts(count: int, seed: int = 5) -> list[str]:
    """`count` different texts of mixed mood, for the bare-VADER baseline and the sentiment benchmark."""
    rng = random.Random(seed)
    moods = (1, 0, -1)
    return [compose_text(rng, moods[n % 3], n) for n in range(count)]


def expected_pages(records: int, page: int = 2000) -> int:
    return max(1, math.ceil(records / page))
