"""A deterministic world of customers, loaded into the sandboxes for the demo, the tests and the benchmarks.

Given a seed, a number of accounts and a "now", the same meetings, emails, tickets and usage rows come out
every time, with real-looking shapes: owners with and without a Slack user, emails logged both as
`EmailMessage` and as an email `Task`, Zendesk organizations mapped by external id, by domain, or not at
all. Accounts have a temperament (thriving, steady, drifting) so the first scores spread over the bands.

A real org also holds records that are no activity of their own, or the same activity logged twice, and so
does this world (`noise`, on by default; drawn from a random generator of its own, so the world's activity is
the same with or without it):

- each invitee who is a Salesforce user gets a copy of a meeting (`IsChild`), and some accounts have the
  master record of a recurring series (`IsRecurrence`) besides its occurrences;
- open tasks: calls and emails planned for the coming days, not made yet;
- a dialer logs a call with `TaskSubtype = 'Task'` and `Type = 'Call'` at the start of some meetings held
  by phone (one that never connected, too), and a sales-engagement tool logs some inbound emails again as a
  Task alone (`Type = 'Email'`), which does not say who wrote;
- some logged emails are filed nowhere but under their task (`ActivityId`, no `RelatedToId`).

None of these changes what a customer did, so none may change a score: scoring the same world with and
without them must give the same scores. Their ids are numbered apart, so the world's own records have the same
ids either way.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.salesforce.ids import make_id

if TYPE_CHECKING:
    from connectors.salesforce.sandbox import SalesforceSandbox
    from connectors.slack.sandbox import SlackSandbox
    from connectors.zendesk.sandbox import ZendeskSandbox

FEATURES = ("dashboards", "alerts", "api", "sso", "exports", "workflows", "mobile", "integrations")

_PREFIXES = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent",
             "Tyrell", "Cyberdyne", "Wonka", "Aperture", "Gringotts", "Oscorp", "Pied Piper", "Massive",
             "Duff", "Monarch", "Nakatomi", "Prestige", "Sterling", "Virtucon", "Zorg", "Ollivander",
             "Black Mesa", "Blue Sun", "Gekko", "Krusty", "Lunar")
_SUFFIXES = ("Labs", "Corp", "Industries", "Systems", "Logistics", "Health", "Foods", "Analytics",
             "Partners", "Robotics", "Media", "Energy", "Bank", "Retail", "Studios")
_OWNERS = (("Dana Whitfield", "America/New_York"), ("Ravi Natarajan", "Europe/London"),
           ("Sofia Marquez", "America/Los_Angeles"), ("Kenji Watanabe", "Asia/Tokyo"),
           ("Amara Okafor", "Europe/Paris"), ("Liam O'Connor", "Australia/Sydney"))

POSITIVE = ("Thanks so much, the rollout went really well and the team loves the new dashboards!",
            "Great call today, we are excited about the roadmap and happy with the support.",
            "Everything is working smoothly. Appreciate the quick help, you folks are fantastic.",
            "The new workflow feature saved us hours this week. Brilliant work, thank you.")
NEUTRAL = ("Can you send over the invoice for last month when you get a chance?",
           "Following up on the meeting notes, please find the agenda attached.",
           "We will review the proposal internally and get back to you next week.",
           "Could you confirm the date for the quarterly business review?")
NEGATIVE = ("This is unacceptable. The export has been broken for days and nobody has answered us.",
            "We are very frustrated and disappointed. The outage hurt our customers badly.",
            "Honestly this is terrible. We are considering cancelling our contract at renewal.",
            "Still waiting. Another failure today, this is a serious problem and we are angry.")
ANGRY = ("I am furious. The platform failed again during our launch and your support ignored us. "
         "This is completely unacceptable and we are evaluating other vendors.",
         "Terrible experience. Data is missing, the team is angry, and we are losing trust fast. "
         "Escalating this to our leadership.",
         "This is the worst week we have had. Broken exports, awful response times, and no answers. "
         "We will not renew if this continues.")


def sf_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class WorldAccount:
    id: str
    name: str
    domain: str
    owner_id: str
    temperament: str
    seats: int
    contact_email: str
    zendesk_org_id: int | None = None
    zendesk_requester_id: int | None = None


@dataclass
class World:
    """The handles the demo and the tests use to change the world after the first cycle."""

    salesforce: SalesforceSandbox
    zendesk: ZendeskSandbox | None
    slack: SlackSandbox | None
    usage_dir: Path | None
    seed: int
    accounts: list[WorldAccount] = field(default_factory=list)
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)  # user id -> (name, email)
    owners_without_slack: set[str] = field(default_factory=set)
    slack_user_ids: dict[str, str] = field(default_factory=dict)  # owner user id -> Slack user id
    fallback_channel_id: str | None = None
    zendesk_agent_id: int | None = None
    rng: random.Random = field(default_factory=random.Random)
    noise: random.Random | None = None  # draws the records that are no activity of their own; None: none
    noise_records: int = 0  # numbered apart (`_add_noise`), so the world's own records keep their ids

    def account(self, account_id: str) -> WorldAccount:
        return next(a for a in self.accounts if a.id == account_id)


def build_world(salesforce: SalesforceSandbox, zendesk: ZendeskSandbox | None, slack: SlackSandbox | None,
                usage_dir: Path | None, *, accounts: int = 40, seed: int = 7,
                now: datetime | None = None, history_days: int = 120,
                fallback_channel: str | None = "cs-alerts", noise: bool = True) -> World:
    """Create owners, accounts and `history_days` of activity up to `now` in every given sandbox; with `noise`,
    the records a real org holds besides (see the module's docstring)."""
    now = now or datetime.now(UTC)
    world = World(salesforce, zendesk, slack, usage_dir, seed, rng=random.Random(seed),
                  noise=random.Random(f"{seed}:noise") if noise else None)
    if slack is not None and fallback_channel:
        world.fallback_channel_id = slack.add_channel(fallback_channel)
    for index, (name, tz) in enumerate(_OWNERS):
        email = name.lower().replace(" ", ".").replace("'", "") + "@healthbeat.example"
        user_id = salesforce.insert("User", {"Name": name, "Email": email, "IsActive": True,
                                             "TimeZoneSidKey": tz})
        world.owners[user_id] = (name, email)
        if slack is not None and index != len(_OWNERS) - 1:  # the last owner never joined Slack
            world.slack_user_ids[user_id] = slack.add_user(email, name, tz=tz)
        else:
            world.owners_without_slack.add(user_id)
    if zendesk is not None:
        world.zendesk_agent_id = zendesk.add_user("Support Agent", "agent@support.example", role="agent")
    owner_ids = list(world.owners)
    for index in range(accounts):
        _add_account(world, index, owner_ids[index % len(owner_ids)], now, history_days)
    advance(world, now - timedelta(days=history_days), now)
    return world


def _add_account(world: World, index: int, owner_id: str, now: datetime, history_days: int) -> None:
    rng = world.rng
    name = f"{_PREFIXES[index % len(_PREFIXES)]} {_SUFFIXES[(index * 7) % len(_SUFFIXES)]}"
    if index >= len(_PREFIXES):
        name += f" {index // len(_PREFIXES) + 1}"
    domain = name.lower().replace(" ", "") + ".example"
    temperament = rng.choices(("thriving", "steady", "drifting"), weights=(5, 3, 2))[0]
    seats = rng.choice((10, 25, 50, 100, 250))
    created = now - timedelta(days=history_days + 200)
    account_id = world.salesforce.insert("Account", {
        "Name": name, "Type": rng.choice(("Customer - Direct", "Customer - Channel")),
        "Industry": rng.choice(("Technology", "Healthcare", "Retail", "Finance", "Manufacturing")),
        "Website": f"https://www.{domain}", "OwnerId": owner_id,
        "AnnualRevenue": float(rng.choice((2, 5, 12, 40, 150)) * 1_000_000),
        "NumberOfEmployees": rng.choice((40, 120, 600, 2500)), "Contracted_Seats__c": float(seats),
        "CreatedDate": sf_datetime(created), "SystemModstamp": sf_datetime(created),
        "LastModifiedDate": sf_datetime(created)})
    account = WorldAccount(account_id, name, domain, owner_id, temperament, seats,
                           contact_email=f"ops@{domain}")
    world.accounts.append(account)
    close = (now + timedelta(days=rng.randint(20, 330))).date()
    world.salesforce.insert("Opportunity", {
        "AccountId": account_id, "Name": f"{name} renewal", "Type": "Renewal", "StageName": "Negotiation",
        "Amount": float(seats * 600), "CloseDate": close.isoformat(), "IsClosed": False, "IsWon": False,
        **_stamps(now - timedelta(days=30))})
    if world.zendesk is not None:
        if index % 10 == 9:  # mapped by domain only
            org = world.zendesk.add_organization(name, domain_names=[domain])
        else:
            org = world.zendesk.add_organization(name, external_id=account_id, domain_names=[domain])
        account.zendesk_org_id = org
        account.zendesk_requester_id = world.zendesk.add_user(f"{name} Ops", account.contact_email,
                                                              role="end-user", organization_id=org)


def _stamps(moment: datetime) -> dict[str, str]:
    return {"CreatedDate": sf_datetime(moment), "SystemModstamp": sf_datetime(moment),
            "LastModifiedDate": sf_datetime(moment)}


_RATES = {  # temperament -> (meetings a month, inbound emails a month, answer rate, tickets a month,
            #                  mood weights (positive, neutral, negative), usage level 0..1)
    "thriving": (2.0, 6.0, 0.95, 0.6, (5, 4, 0), 0.85),
    "steady": (1.0, 4.0, 0.8, 1.0, (2, 5, 1), 0.6),
    "drifting": (0.3, 2.0, 0.5, 1.8, (1, 3, 3), 0.3),
}


def advance(world: World, start: datetime, end: datetime, *, quiet: Iterable[str] = ()) -> None:
    """Generate ordinary activity for every account between `start` and `end`, except the quiet ones."""
    quiet_ids = set(quiet)
    days = max(1, (end - start).days)
    for account in world.accounts:
        if account.id in quiet_ids:
            continue
        meetings, inbound, answer_rate, tickets, moods, usage = _RATES[account.temperament]
        rng = world.rng
        _series(world, account, start, end)
        for _ in range(_count(rng, meetings * days / 30)):
            _meeting(world, account, _moment(rng, start, end))
        for _ in range(_count(rng, inbound * days / 30)):
            at = _moment(rng, start, end)
            text = rng.choice(rng.choices((POSITIVE, NEUTRAL, NEGATIVE), weights=moods)[0])
            _email(world, account, at, text, incoming=True)
            if rng.random() < answer_rate:
                reply_at = min(at + timedelta(hours=rng.randint(1, 40)), end)
                _email(world, account, reply_at, rng.choice(NEUTRAL), incoming=False)
        if world.zendesk is not None:
            for _ in range(_count(rng, tickets * days / 30)):
                at = _moment(rng, start, end)
                mood = rng.choices((POSITIVE, NEUTRAL, NEGATIVE), weights=moods)[0]
                priority = rng.choices(("low", "normal", "high", "urgent"), weights=(3, 6, 2, 0.3))[0]
                solve_at = at + timedelta(hours=rng.randint(4, 24 * 6))
                solved = solve_at < end and rng.random() < 0.9
                _ticket(world, account, at, rng.choice(mood), priority, solve_at if solved else None)
        _usage(world, account, start.date(), end.date(), usage)


def stir_trouble(world: World, account_ids: Iterable[str], at: datetime) -> None:
    """A bad week: angry inbound emails nobody answers, and urgent tickets, for each given account."""
    for account_id in account_ids:
        account = world.account(account_id)
        for hours in (3, 20, 44, 70):
            _email(world, account, at - timedelta(hours=hours), world.rng.choice(ANGRY), incoming=True)
        if world.zendesk is not None:
            for hours in (6, 30, 54):
                _ticket(world, account, at - timedelta(hours=hours), world.rng.choice(ANGRY), "urgent", None)


def _count(rng: random.Random, mean: float) -> int:
    whole = int(mean)
    return whole + (1 if rng.random() < mean - whole else 0)


def _moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    span = max(1, int((end - start).total_seconds()) - 1)
    return (start + timedelta(seconds=rng.randint(0, span))).replace(microsecond=0)


def _meeting(world: World, account: WorldAccount, at: datetime) -> None:
    meeting = {
        "AccountId": account.id, "WhatId": account.id, "OwnerId": account.owner_id,
        "Subject": world.rng.choice(("QBR", "Check-in", "Roadmap review", "Onboarding session")),
        "StartDateTime": sf_datetime(at), "EndDateTime": sf_datetime(at + timedelta(minutes=45)),
        "ActivityDateTime": sf_datetime(at), "DurationInMinutes": 45, **_stamps(at)}
    world.salesforce.insert("Event", meeting)
    noise = world.noise
    if noise is None:
        return
    if noise.random() < 0.3:  # a colleague who uses Salesforce was invited: a copy of the event is theirs
        colleague = noise.choice([owner for owner in world.owners if owner != account.owner_id])
        _add_noise(world, "Event", {**meeting, "OwnerId": colleague, "IsChild": True})
    if noise.random() < 0.3:  # held by phone: the dialer logged the call as a plain task, as it started
        _task(world, account, at, "Call", noise=True, Type="Call", CallType="Outbound",
              CallDurationInSeconds=noise.randint(300, 2700))
    if noise.random() < 0.1:  # a dial that never connected
        _task(world, account, at, "Call", noise=True, Type="Call", CallType="Outbound", CallDurationInSeconds=0)
    if noise.random() < 0.2:  # a follow-up call planned for a day or two later, not made yet
        _task(world, account, at, "Call back", noise=True, TaskSubtype="Call", Status="Not Started",
              ActivityDate=(at + timedelta(days=noise.randint(1, 3))).date().isoformat(),
              CompletedDateTime=None)


def _series(world: World, account: WorldAccount, start: datetime, end: datetime) -> None:
    """Some accounts have a weekly call set up as a recurring series: its master record is no meeting."""
    noise = world.noise
    if noise is None or noise.random() >= 0.3:
        return
    at = start + (end - start) / 3
    _add_noise(world, "Event", {
        "AccountId": account.id, "WhatId": account.id, "OwnerId": account.owner_id, "Subject": "Weekly sync",
        "StartDateTime": sf_datetime(at), "EndDateTime": sf_datetime(at + timedelta(minutes=30)),
        "ActivityDateTime": sf_datetime(at), "DurationInMinutes": 30, "IsRecurrence": True, **_stamps(at)})


def _task(world: World, account: WorldAccount, at: datetime, subject: str, *, noise: bool = False,
          **fields: object) -> str:
    """A task logged on the account at `at`: a plain completed one unless `fields` say otherwise."""
    values = {"AccountId": account.id, "WhatId": account.id, "OwnerId": account.owner_id, "Subject": subject,
              "TaskSubtype": "Task", "Status": "Completed", "ActivityDate": at.date().isoformat(),
              "CompletedDateTime": sf_datetime(at), **_stamps(at), **fields}
    return _add_noise(world, "Task", values) if noise else world.salesforce.insert("Task", values)


def _add_noise(world: World, sobject: str, fields: dict[str, Any]) -> str:
    """A record that is no activity of its own, with an id of its own series (the reserved character 1)."""
    world.noise_records += 1
    spec = world.salesforce.schema.sobject(sobject)
    assert spec is not None, sobject
    return world.salesforce.insert(sobject, {**fields, "Id": make_id(spec.key_prefix, world.noise_records,
                                                                     reserved="1")})


def _email(world: World, account: WorldAccount, at: datetime, text: str, *, incoming: bool) -> None:
    """Outbound emails are also logged as an email Task, as Salesforce's email logging does."""
    owner_email = world.owners[account.owner_id][1]
    activity_id = None
    subject = "Re: your account" if not incoming else world.rng.choice(("Question", "Update", "Issue", "Hello"))
    if not incoming:
        activity_id = _task(world, account, at, f"Email: {subject}", TaskSubtype="Email")
    noise = world.noise
    filed_nowhere = noise is not None and not incoming and noise.random() < 0.2  # found only through its task
    world.salesforce.insert("EmailMessage", {
        "RelatedToId": None if filed_nowhere else account.id, "ActivityId": activity_id, "Subject": subject,
        "TextBody": text, "FromAddress": account.contact_email if incoming else owner_email,
        "ToAddress": owner_email if incoming else account.contact_email,
        "Incoming": incoming, "MessageDate": sf_datetime(at), "Status": "3" if not incoming else "0",
        **_stamps(at)})
    if noise is not None and incoming and noise.random() < 0.3:  # the engagement tool's copy, a Task alone
        _task(world, account, at, f"Reply: {subject}", noise=True, Type="Email")
    if noise is not None and incoming and noise.random() < 0.1:  # an answer planned, not sent yet
        _task(world, account, at, f"Email: Re: {subject}", noise=True, TaskSubtype="Email", Status="In Progress",
              CompletedDateTime=None)


def _ticket(world: World, account: WorldAccount, at: datetime, text: str, priority: str,
            solved_at: datetime | None) -> None:
    zendesk = world.zendesk
    if zendesk is None or account.zendesk_requester_id is None or world.zendesk_agent_id is None:
        return
    ticket = zendesk.add_ticket(subject=text[:60], requester_id=account.zendesk_requester_id,
                                organization_id=account.zendesk_org_id, priority=priority, status="open",
                                created_at=at, description=text)
    zendesk.add_comment(ticket, author_id=world.zendesk_agent_id, public=True,
                        body="Thanks for reaching out, we are looking into this now.",
                        created_at=at + timedelta(hours=2))
    if solved_at is not None:
        zendesk.update_ticket(ticket, status="solved", at=solved_at)


def _usage(world: World, account: WorldAccount, start: date, end: date, level: float) -> None:
    if world.usage_dir is None:
        return
    world.usage_dir.mkdir(parents=True, exist_ok=True)
    rng = world.rng
    lines = []
    day = start
    while day < end:
        if rng.random() < level + 0.1:
            users = max(1, int(account.seats * level * rng.uniform(0.6, 1.1)))
            features = rng.sample(FEATURES, k=max(1, int(len(FEATURES) * level * rng.uniform(0.6, 1.0))))
            lines.append(f"{account.id},{day.isoformat()},{users},{users * rng.randint(5, 40)},"
                         f"{';'.join(sorted(features))},{account.seats}\n")
        day += timedelta(days=1)
    if lines:
        path = world.usage_dir / f"usage-{start.isoformat()}-{end.isoformat()}.csv"
        new = not path.exists()
        with path.open("a", encoding="utf-8") as handle:
            if new:
                handle.write("account_id,date,active_users,events,features_used,seats\n")
            handle.writelines(lines)
