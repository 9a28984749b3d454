"""Worlds the score was not tuned on: three generated orgs, designed apart from the scorecard, to measure it by.

`connectors.sandboxes.history` was written with the scorecard in mind, so the score agrees with it. These
worlds were designed from how customers leave, not from what the scorecard measures; their seeds are fixed
and this docstring is their ground truth (`OtherWorld.fates` holds it per account).

What every world shares
-----------------------
- **Accounts with their own baselines.** Each account is high-touch (a named CSM, several meetings and a dozen
  emails a month), mid-touch, or low-touch (owned by a pooled "Digital Success" user: a meeting a year or
  none, a few emails a quarter, check-ins that mostly go unanswered, and the product as the only steady
  signal). Within a tier every rate is drawn per account (meetings, calls, customer emails, our check-ins and
  the share the customer answers, tickets and their urgency, product use, seats, features), and every
  channel drifts month to month around that baseline (a log-normal AR(1), the world's `noise`). A quiet month
  of a high-touch account is a signal; a low-touch account is always quiet.
- **Owners with habits.** A CSM logs only part of the meetings held (55-100 %) and answers inbound email at
  their own rate and speed, whatever the account's health.
- **Mood.** Each customer has a baseline tone (some are grumpy and loyal); emails and tickets are composed
  from sentence pools from warm to hostile, the tone drawn around the baseline plus the mechanisms' shifts.
- **Renewals.** Contracts of 12, 24 or 36 months from a start drawn anywhere in the year; a renewal
  opportunity is created a lead time before its close (`CreatedDate` < `CloseDate`), and a won renewal may
  close a few weeks late. The contract's last signing before the history is a won renewal; the next renewal
  after the history exists (open) only when its creation date has passed. An account churns at a renewal,
  never between: the renewal closes lost on the churn day, and its activity and usage stop that day.
  Before each renewal, high- and mid-touch accounts meet and write more (a renewal push), churners included.
- **Churn mechanisms** (how a churner's channels move towards its lost renewal; each ramps from the
  baseline to a floor drawn per account, starting `decline_days` before the churn and reaching the floor
  at 40-100 % of that time; `x` multiplies the account's own rate):
  - `fade` (the champion left): meetings x0.1-0.35, customer emails x0.2-0.5, answers to our check-ins
    x0.05-0.3, tickets x0.5-0.9, product use x0.75-1, tone a little cooler;
  - `abandon` (the product was not adopted, or replaced): product use x0.08-0.4 (days active, users,
    features), tickets x0.3-0.7 (nobody uses it, nobody files tickets), meetings and emails x0.6-1;
  - `frustration` (service failures): tickets x2-4 with more urgent ones and slower fixes, customer emails
    x1.1-1.6, meetings x0.9-1.3 (escalation calls), product use x0.6-0.95, tone much worse;
  - `neglect` (nobody home on our side): our answers to inbound email x0.15-0.45 and three times slower,
    meetings x0.15-0.4, answers to our check-ins x0.5-0.8, tone worse;
  - `evaluation` (shopping for a replacement): in its last 75 days meetings x1.3-1.9 and emails x1-1.3
    (negotiation), answers to check-ins x0.5-0.8, product use x0.7-0.9, tone cooler but polite;
  - `silent` (budget cut, acquisition): nothing changes before the renewal is lost.
- **Dips that recover** (retained and churned accounts alike): an `incident` (tickets x3-5, more urgent,
  angry tone, 10-35 days), a `quiet` spell (champion on leave: meetings x0.1-0.3, emails x0.2-0.4, 30-70
  days), a `usage` dip (migration, re-organisation: product use x0.3-0.6, 21-60 days) or a `reorg`
  (meetings x0.3, product use x0.6, tone cooler, 45-90 days); each ends with a recovery of 2-4 weeks.

The three worlds
----------------
- **alder** (seed 101, 500 accounts, 22 months): a mid-market SaaS vendor. 20 % high-touch, 45 % mid, 35 %
  low. A renewal is lost with chance 7 % (high), 11 % (mid), 16 % (low), x1.3 for the accounts in the lowest
  third of product use. Churners: fade 30 %, abandon 25 %, frustration 15 %, neglect 10 %, silent 20 %;
  declines begin 60-180 days before the renewal. 35 % of accounts have a dip (incident 40 %, quiet 35 %,
  usage 25 %). Contracts 85 % yearly, 15 % two-year; renewals opened 60-120 days before close. Moderate noise
  (0.3), 10 % grumpy-but-loyal customers, 3 % of accounts without a usage feed, support in Zendesk (5 % of
  organisations mapped by domain only), CSV usage files.
- **birch** (seed 202, 600 accounts, 20 months): product-led, mostly low-touch. 8 % high, 27 % mid, 65 % low.
  A renewal is lost with chance 6 % / 10 % / 14 %, x2 for the lowest third of product use (an absolute usage
  level says something here). Churners: abandon 45 %, fade 10 %, frustration 10 %, silent 35 %; slow
  declines, 90-240 days. 40 % of accounts have a dip (usage 50 %, incident 30 %, quiet 20 %), and every
  account uses the product less over the year-end holidays and in August (seasonal dip of 50 %). Contracts
  70 % yearly, 20 % two-year, 10 % three-year; renewals opened 45-90 days before close. Noisy (0.45), 15 %
  grumpy, 10 % of accounts without a usage feed, support in Salesforce Cases (no Zendesk), JSON-lines usage
  files, and 15 % of accounts with an upsell opportunity (some lost: not churn).
- **cedar** (seed 303, 350 accounts, 23 months): enterprise, high-touch. 50 % high, 35 % mid, 15 % low. A
  renewal is lost with chance 15 % in every tier, whatever the level of use. Churners: fade 25 %,
  frustration 20 %, evaluation 20 %, neglect 15 %, abandon 10 %, silent 10 %; slow, multi-channel declines
  (120-270 days; in this world a fade also costs 10-40 % of product use). 50 % of accounts have a dip
  (incident 45 %, quiet 30 %, reorg 25 %). Contracts 60 % yearly, 25 % two-year, 15 % three-year; renewals
  opened 150-240 days before close and named "<Account> - Renewal FYyy" with Type "Existing Business"
  (recognised by the word in the name). Noise 0.25, 25 % grumpy-but-loyal customers (they churn no more than
  others), support in Zendesk, CSV usage, 20 % of accounts with an upsell.

Records are written the way the worker's sources hold them, through the sandboxes' data API and the usage
folder: plain (non-child) Events for meetings, completed Tasks with `TaskSubtype` 'Call' for calls, and for
each email an `EmailMessage` (direction from `Incoming`) plus, for ours, the completed 'Email' Task it is
logged as. Each account draws from its own random stream (`<seed>/<index>`), so a world is the same record for
record for a given seed, size and end, and an account's story does not depend on how many come before it.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.sandboxes.world import FEATURES, sf_datetime

if TYPE_CHECKING:
    from connectors.salesforce.sandbox import SalesforceSandbox
    from connectors.zendesk.sandbox import ZendeskSandbox

TOUCHES = ("high", "mid", "low")
# the channels a mechanism or a dip moves, each a multiplier of the account's own rate
CHANNELS = ("meetings", "customer_email", "check_in_answers", "our_answers", "tickets", "usage")


# -- the design of a world -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Mechanism:
    """How a churner's channels move towards its lost renewal (module docstring, "Churn mechanisms")."""

    floors: Mapping[str, tuple[float, float]]  # channel -> range of the multiplier it ends at
    mood: float = 0.0  # tone shift at the bottom of the decline (the tone ladder runs about -2..1)
    urgent: float = 0.0  # extra share of tickets that are high or urgent
    slower_fixes: float = 1.0  # tickets take this many times longer to solve at the bottom
    last_days: int | None = None  # the decline happens only in the last days before the renewal


MECHANISMS: dict[str, Mechanism] = {
    "fade": Mechanism({"meetings": (0.1, 0.35), "customer_email": (0.2, 0.5), "check_in_answers": (0.05, 0.3),
                       "tickets": (0.5, 0.9), "usage": (0.75, 1.0)}, mood=-0.4),
    "abandon": Mechanism({"usage": (0.08, 0.4), "tickets": (0.3, 0.7), "meetings": (0.6, 1.0),
                          "customer_email": (0.6, 1.0)}, mood=-0.1),
    "frustration": Mechanism({"tickets": (2.0, 4.0), "customer_email": (1.1, 1.6), "meetings": (0.9, 1.3),
                              "usage": (0.6, 0.95)}, mood=-1.5, urgent=0.35, slower_fixes=3.0),
    "neglect": Mechanism({"our_answers": (0.15, 0.45), "meetings": (0.15, 0.4), "check_in_answers": (0.5, 0.8)},
                         mood=-0.7),
    "evaluation": Mechanism({"meetings": (1.3, 1.9), "customer_email": (1.0, 1.3), "check_in_answers": (0.5, 0.8),
                             "usage": (0.7, 0.9)}, mood=-0.5, last_days=75),
    "silent": Mechanism({}),
}


@dataclass(frozen=True)
class DipKind:
    floors: Mapping[str, tuple[float, float]]
    days: tuple[int, int]
    mood: float = 0.0
    urgent: float = 0.0


DIPS: dict[str, DipKind] = {
    "incident": DipKind({"tickets": (3.0, 5.0)}, (10, 35), mood=-1.3, urgent=0.4),
    "quiet": DipKind({"meetings": (0.1, 0.3), "customer_email": (0.2, 0.4), "check_in_answers": (0.2, 0.4)},
                     (30, 70)),
    "usage": DipKind({"usage": (0.3, 0.6)}, (21, 60)),
    "reorg": DipKind({"meetings": (0.3, 0.3), "usage": (0.6, 0.6)}, (45, 90), mood=-0.4),
}


@dataclass(frozen=True)
class Mix:
    """One world's configuration: who the customers are, how they leave, how noisy the record is."""

    name: str
    seed: int
    accounts: int
    months: int
    touch_shares: Mapping[str, float]
    churn_chance: Mapping[str, float]  # of losing a renewal, by touch
    low_use_risk: float  # churn chance multiplier for the lowest third of product use
    mechanisms: Mapping[str, float]  # share of churners by mechanism
    decline_days: tuple[int, int]
    dip_share: float
    dips: Mapping[str, float]
    terms: Mapping[int, float]  # contract months -> share
    renewal_lead: tuple[int, int]  # days before its close a renewal opportunity is created
    noise: float  # sigma of the monthly log-normal drift of each channel
    grumpy_share: float
    usage_missing: float  # accounts without a usage feed
    support: str  # "zendesk" or "cases"
    usage_format: str = "csv"  # or "jsonl"
    seasonal_dip: float = 0.0  # product use lost over the year-end holidays (half of it in August)
    domain_only_share: float = 0.0  # Zendesk organisations mapped by domain, not external id
    upsell_share: float = 0.0
    renewal_type: str = "Renewal"
    renewal_name: str = "{name} renewal {year}"
    fade_costs_usage: tuple[float, float] | None = None  # in this world a fade also lowers product use


WORLDS: dict[str, Mix] = {m.name: m for m in (
    Mix("alder", 101, 500, 22, {"high": 0.2, "mid": 0.45, "low": 0.35}, {"high": 0.07, "mid": 0.11, "low": 0.16},
        1.3, {"fade": 0.3, "abandon": 0.25, "frustration": 0.15, "neglect": 0.1, "silent": 0.2}, (60, 180),
        0.35, {"incident": 0.4, "quiet": 0.35, "usage": 0.25}, {12: 0.85, 24: 0.15}, (60, 120), 0.3, 0.1, 0.03,
        "zendesk", domain_only_share=0.05),
    Mix("birch", 202, 600, 20, {"high": 0.08, "mid": 0.27, "low": 0.65}, {"high": 0.06, "mid": 0.1, "low": 0.14},
        2.0, {"abandon": 0.45, "fade": 0.1, "frustration": 0.1, "silent": 0.35}, (90, 240),
        0.4, {"usage": 0.5, "incident": 0.3, "quiet": 0.2}, {12: 0.7, 24: 0.2, 36: 0.1}, (45, 90), 0.45, 0.15, 0.1,
        "cases", usage_format="jsonl", seasonal_dip=0.5, upsell_share=0.15, renewal_name="FY{yy} Renewal - {name}"),
    Mix("cedar", 303, 350, 23, {"high": 0.5, "mid": 0.35, "low": 0.15}, {"high": 0.15, "mid": 0.15, "low": 0.15},
        1.0, {"fade": 0.25, "frustration": 0.2, "evaluation": 0.2, "neglect": 0.15, "abandon": 0.1, "silent": 0.1},
        (120, 270), 0.5, {"incident": 0.45, "quiet": 0.3, "reorg": 0.25}, {12: 0.6, 24: 0.25, 36: 0.15},
        (150, 240), 0.25, 0.25, 0.0, "zendesk", upsell_share=0.2, renewal_type="Existing Business",
        renewal_name="{name} - Renewal FY{yy}", fade_costs_usage=(0.6, 0.9)),
)}


# -- the ground truth --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dip:
    kind: str
    start: date
    end: date  # the bottom ends here; the recovery takes `recovery` days more
    recovery: int
    floors: tuple[tuple[str, float], ...]
    mood: float
    urgent: float


@dataclass(frozen=True)
class Fate:
    """What happens to one account, and when: what a backtest should recover."""

    account_id: str
    name: str
    touch: str
    owner_id: str
    term_months: int
    renewals: tuple[date, ...]  # renewal close dates inside the history, in order (the last is lost on churn)
    churned_on: date | None = None
    mechanism: str | None = None  # how it declined before churning ("silent": it did not)
    decline_from: date | None = None
    bottom_at: date | None = None  # the decline reaches its floors here
    floors: tuple[tuple[str, float], ...] = ()
    mood_drop: float = 0.0
    urgent: float = 0.0
    slower_fixes: float = 1.0
    dips: tuple[Dip, ...] = ()
    open_renewal: date | None = None  # the open renewal the CRM holds at the end of the history
    has_usage: bool = True

    def level(self, channel: str, day: date) -> float:
        """The multiplier the fate puts on a channel's own rate on `day` (1: the account's baseline)."""
        value = 1.0
        floor = dict(self.floors).get(channel)
        if floor is not None and self.decline_from is not None and day >= self.decline_from:
            value *= 1 + (floor - 1) * self._progress(day)
        for dip in self.dips:
            low = dict(dip.floors).get(channel)
            if low is not None:
                value *= 1 + (low - 1) * _dip_depth(dip, day)
        return value

    def trouble(self, day: date) -> float:
        """0..1: how far the account is from its own baseline on `day` (1: at the bottom of its decline or of a
        dip), whatever the channel. What a perfect reader of each account's channels could know; it cannot
        tell a dip from the start of a decline, and a silent churn shows nothing."""
        return max([self._progress(day), *(_dip_depth(d, day) for d in self.dips)])

    def mood(self, day: date) -> float:
        shift = self.mood_drop * self._progress(day) if self.decline_from and day >= self.decline_from else 0.0
        return shift + sum(d.mood * _dip_depth(d, day) for d in self.dips)

    def urgency(self, day: date) -> float:
        extra = self.urgent * self._progress(day) if self.decline_from and day >= self.decline_from else 0.0
        return extra + sum(d.urgent * _dip_depth(d, day) for d in self.dips)

    def fix_factor(self, day: date) -> float:
        if self.decline_from is None or day < self.decline_from:
            return 1.0
        return 1 + (self.slower_fixes - 1) * self._progress(day)

    def _progress(self, day: date) -> float:
        if self.decline_from is None or self.bottom_at is None or day < self.decline_from:
            return 0.0
        span = max(1, (self.bottom_at - self.decline_from).days)
        return min(1.0, (day - self.decline_from).days / span)


def _dip_depth(dip: Dip, day: date) -> float:
    """1 at the bottom of a dip, falling linearly to 0 over its recovery; a dip starts within a week."""
    if day < dip.start:
        return 0.0
    if day <= dip.end:
        return min(1.0, ((day - dip.start).days + 1) / 7)
    return max(0.0, 1 - (day - dip.end).days / dip.recovery)


@dataclass
class OtherWorld:
    mix: Mix
    start: datetime
    end: datetime
    fates: dict[str, Fate] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # user id -> name
    usage_files: list[Path] = field(default_factory=list)

    @property
    def churned(self) -> list[Fate]:
        return [f for f in self.fates.values() if f.churned_on is not None]


# -- the per-account plan ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    """An account's own baseline: rates a month, shares, and the product's footprint."""

    touch: str
    meetings: float
    calls: float
    inbound: float  # customer emails a month
    check_ins: float  # our emails a month that ask for an answer
    answer: float  # chance the customer answers a check-in
    tickets: float
    urgent: float  # share of tickets high or urgent
    warmth: float  # baseline tone
    usage: float  # chance a business day has an active user
    adoption: float  # share of seats active on an active day
    breadth: int  # features used
    seats: int


_RANGES: dict[str, dict[str, tuple[float, float]]] = {  # touch -> rates (a month) and shares
    "high": {"meetings": (2.5, 6.0), "calls": (0.5, 2.5), "inbound": (6.0, 16.0), "check_ins": (2.0, 5.0),
             "answer": (0.6, 0.9), "tickets": (0.6, 3.5), "usage": (0.6, 0.95), "adoption": (0.3, 0.8)},
    "mid": {"meetings": (0.6, 2.0), "calls": (0.3, 1.2), "inbound": (2.0, 7.0), "check_ins": (1.0, 3.0),
            "answer": (0.45, 0.8), "tickets": (0.3, 2.0), "usage": (0.45, 0.9), "adoption": (0.25, 0.7)},
    "low": {"meetings": (0.0, 0.25), "calls": (0.0, 0.2), "inbound": (0.2, 1.5), "check_ins": (0.3, 0.8),
            "answer": (0.15, 0.45), "tickets": (0.1, 1.0), "usage": (0.25, 0.85), "adoption": (0.2, 0.8)},
}
_SIZES: dict[str, dict[str, tuple[int, int]]] = {  # touch -> features used, seats
    "high": {"breadth": (4, 8), "seats": (100, 1000)},
    "mid": {"breadth": (3, 7), "seats": (25, 250)},
    "low": {"breadth": (1, 5), "seats": (5, 50)},
}


@dataclass(frozen=True)
class Owner:
    id: str
    name: str
    email: str
    logs: float  # share of meetings and calls logged in the CRM
    answers: float  # chance an inbound email gets an answer from us
    delay_hours: float  # median hours to that answer


_FIRST = ("Avery", "Jordan", "Priya", "Mateo", "Hannah", "Tomasz", "Yuki", "Chidi", "Elena", "Marcus", "Ines",
          "Oskar", "Leila", "Noah", "Grace", "Farid")
_LAST = ("Lindqvist", "Okoye", "Brennan", "Castillo", "Haddad", "Novak", "Sato", "Fischer", "Moreau", "Reyes")
_ZONES = ("America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Paris", "GMT")
_NAME_A = ("Northwind", "Bluepeak", "Copperleaf", "Dunmore", "Evergreen", "Fairhaven", "Granite", "Harbor",
           "Ironwood", "Juniper", "Kestrel", "Lakeside", "Meridian", "Nimbus", "Oakridge", "Pinecrest", "Quarry",
           "Redwood", "Silverline", "Tidewater", "Upland", "Vantage", "Willow", "Yellowstone", "Zenith")
_NAME_B = ("Freight", "Clinics", "Capital", "Software", "Foods", "Logistics", "Media", "Insurance", "Labs",
           "Energy", "Outfitters", "Robotics", "Pharma", "Realty", "Telecom", "Apparel", "Brewing")
_INDUSTRIES = ("Technology", "Healthcare", "Retail", "Finance", "Manufacturing", "Media", "Energy")

# The tone ladder, warmest first: an email or ticket of tone k draws its sentences from _TONES[k].
_TONES: tuple[tuple[str, ...], ...] = (
    ("Thanks for the quick turnaround, the team is really happy with how this is going.",
     "Loved the session yesterday, it was genuinely useful for our analysts.",
     "Great news on the release, we already rolled it out to two more teams.",
     "Appreciate your help as always, this made our week.",
     "The new reports are fantastic and our leadership noticed."),
    ("Quick question about the API limits for next quarter.",
     "Could we move Thursday's call to the afternoon? Thanks!",
     "Attached is the list of new users to add, thank you.",
     "Sounds good, let's plan the review for next month.",
     "Happy to join the beta if there is room."),
    ("Please send the updated quote.", "Noted, we will get back to you.",
     "Forwarding this to our procurement team.", "Can you resend the invoice for March?",
     "We need the security questionnaire by Friday."),
    ("We are a bit worried about the sync delays we saw this week.",
     "Some of the team find the new layout confusing.",
     "The import failed again, can someone take a look?",
     "Not sure we are getting the value we expected yet."),
    ("This is the third time the export has failed and it is really frustrating.",
     "We are disappointed with the response time on our tickets.",
     "Honestly the last month has been a mess for our team.",
     "Our users keep complaining and I am running out of answers."),
    ("This is unacceptable, we had outages all week and nobody called us back.",
     "We are seriously reconsidering the contract, the service has been terrible.",
     "I want an escalation today, the data loss hurt us badly.",
     "Worst quarter we have had with any vendor, we are evaluating alternatives."),
)
_TICKET_SUBJECTS = ("Dashboard loads slowly", "SSO login fails for new group", "Export missing rows",
                    "API returns 500 on bulk endpoint", "How to configure alerts", "Sync delayed since morning",
                    "Permissions question", "Data mismatch in monthly report")
_OUR_REPLY = "Thanks for your note, we will follow up shortly with the details."
_CHECK_IN = "Checking in: anything we can help with ahead of next month?"


# -- building ----------------------------------------------------------------------------------------

def build_other_world(mix: Mix | str, salesforce: SalesforceSandbox, zendesk: ZendeskSandbox | None,
                      usage_dir: Path | None, *, now: datetime, accounts: int | None = None) -> OtherWorld:
    """Owners, accounts and their months of history up to `now`, renewals and churn included.

    `accounts` overrides the world's size (tests use a small one; the first accounts are the same). Tickets go
    to Zendesk for a Zendesk world (none when `zendesk` is None) and to Salesforce Cases for a Cases world."""
    mix = WORLDS[mix] if isinstance(mix, str) else mix
    if accounts is not None:
        mix = replace(mix, accounts=accounts)
    if not 18 <= mix.months <= 24:
        raise ValueError(f"months must be between 18 and 24 (got {mix.months})")
    end = now.astimezone(UTC)
    start = end - timedelta(days=round(mix.months * 30.44))
    world = OtherWorld(mix, start, end)
    owners, pool = _add_owners(salesforce, mix)
    world.owners = {o.id: o.name for o in [*owners, pool]}
    agent = zendesk.add_user("Support Team", "support@vendor.example", role="agent") \
        if zendesk is not None and mix.support == "zendesk" else None
    usage_rows: dict[str, list[str]] = defaultdict(list)
    for index in range(mix.accounts):
        rng = random.Random(f"{mix.seed}/{index}")
        touch = _pick(rng, mix.touch_shares)
        owner = pool if touch == "low" else owners[index % len(owners)]
        account = _Account(mix, rng, index, touch, owner, start, end)
        account.write(salesforce, zendesk if mix.support == "zendesk" else None, agent)
        world.fates[account.fate.account_id] = account.fate
        if usage_dir is not None:
            account.usage(usage_rows)
    if usage_dir is not None:
        world.usage_files = _write_usage(usage_dir, mix, usage_rows)
    return world


def _add_owners(salesforce: SalesforceSandbox, mix: Mix) -> tuple[list[Owner], Owner]:
    rng = random.Random(f"{mix.seed}/owners")
    touched = mix.accounts * (mix.touch_shares.get("high", 0) + mix.touch_shares.get("mid", 0))
    owners = []
    for index in range(max(3, round(touched / 40))):
        name = f"{_FIRST[index % len(_FIRST)]} {_LAST[(index * 3 + mix.seed) % len(_LAST)]}"
        owners.append(_owner(salesforce, name, rng.choice(_ZONES), rng.uniform(0.55, 1.0), rng.uniform(0.7, 0.98),
                             rng.uniform(2, 30)))
    pool = _owner(salesforce, "Digital Success", "GMT", 1.0, 0.9, 20.0)
    return owners, pool


def _owner(salesforce: SalesforceSandbox, name: str, zone: str, logs: float, answers: float,
           delay: float) -> Owner:
    email = name.lower().replace(" ", ".") + "@vendor.example"
    user_id = salesforce.insert("User", {"Name": name, "Email": email, "IsActive": True, "TimeZoneSidKey": zone})
    return Owner(user_id, name, email, logs, answers, delay)


def _pick(rng: random.Random, shares: Mapping[str, float]) -> str:
    keys = list(shares)
    return rng.choices(keys, weights=[shares[k] for k in keys])[0]


class _Account:
    """One account's plan (profile, contract, fate) and the records it writes, from its own random stream."""

    def __init__(self, mix: Mix, rng: random.Random, index: int, touch: str, owner: Owner, start: datetime,
                 end: datetime) -> None:
        self.mix, self.rng, self.owner, self.start, self.end = mix, rng, owner, start, end
        self.name = f"{_NAME_A[index % len(_NAME_A)]} {_NAME_B[(index // len(_NAME_A)) % len(_NAME_B)]}"
        if index >= len(_NAME_A) * len(_NAME_B):
            self.name += f" {index // (len(_NAME_A) * len(_NAME_B)) + 1}"
        self.domain = self.name.lower().replace(" ", "") + ".example"
        self.contact = f"ops@{self.domain}"
        rates, sizes = _RANGES[touch], _SIZES[touch]
        grumpy = rng.random() < mix.grumpy_share
        meetings, calls, inbound, check_ins, answer, tickets = (
            rng.uniform(*rates[k]) for k in ("meetings", "calls", "inbound", "check_ins", "answer", "tickets"))
        self.profile = Profile(
            touch, meetings, calls, inbound, check_ins, answer, tickets, urgent=rng.uniform(0.05, 0.2),
            warmth=rng.gauss(-0.9, 0.25) if grumpy else rng.gauss(0.45, 0.3),
            usage=rng.uniform(*rates["usage"]), adoption=rng.uniform(*rates["adoption"]),
            breadth=rng.randint(*sizes["breadth"]), seats=rng.randint(*sizes["seats"]))
        self.has_usage = rng.random() >= mix.usage_missing
        self.term = int(_pick(rng, {str(k): v for k, v in mix.terms.items()}))
        self.industry = rng.choice(_INDUSTRIES)
        self.domain_only = rng.random() < mix.domain_only_share
        self.upsell = rng.random() < mix.upsell_share
        self.fate = Fate("", self.name, touch, owner.id, self.term, ())
        self.contract_start = start.date() - timedelta(days=rng.randint(0, self.term * 30))
        self.noise = {c: _drift(rng, mix.noise, mix.months + 2) for c in CHANNELS}
        self.zendesk_org: int | None = None
        self.requester: int | None = None

    # -- the fate --

    def _anniversaries(self) -> list[date]:
        days, k = [], 0
        while True:
            anniversary = _add_months(self.contract_start, self.term * k)
            days.append(anniversary)
            if anniversary > self.end.date():
                return days
            k += 1

    def _draw_fate(self, account_id: str) -> Fate:
        rng, mix, end = self.rng, self.mix, self.end.date()
        anniversaries = self._anniversaries()
        inside = [a for a in anniversaries if self.start.date() < a <= end]
        chance = mix.churn_chance[self.profile.touch]
        tercile = _RANGES[self.profile.touch]["usage"]
        if self.profile.usage < tercile[0] + (tercile[1] - tercile[0]) / 3:
            chance *= mix.low_use_risk
        closes: list[date] = []
        churned = None
        for anniversary in inside:
            lost = anniversary >= self.start.date() + timedelta(days=60) and rng.random() < chance
            slip = rng.randint(-20, 5) if lost else max(0, round(rng.gauss(0, 12)))
            close = min(anniversary + timedelta(days=slip), end)
            closes.append(close)
            if lost:
                churned = close
                break
        fate = Fate(account_id, self.name, self.profile.touch, self.owner.id, self.term, tuple(closes),
                    churned_on=churned, has_usage=self.has_usage, dips=self._draw_dips(churned or end))
        if churned is not None:
            fate = self._decline(fate, churned)
        else:
            upcoming = next(a for a in anniversaries if a > end)
            created = upcoming - timedelta(days=rng.randint(*mix.renewal_lead))
            fate = replace(fate, open_renewal=upcoming if created <= end else None)
        return fate

    def _decline(self, fate: Fate, churned: date) -> Fate:
        rng, mix = self.rng, self.mix
        name = _pick(rng, mix.mechanisms)
        mechanism = MECHANISMS[name]
        if name == "silent":
            return replace(fate, mechanism=name)
        days = mechanism.last_days or rng.randint(*mix.decline_days)
        begins = churned - timedelta(days=days)
        bottom = begins + timedelta(days=max(1, round(days * rng.uniform(0.4, 1.0))))
        floors = {c: rng.uniform(*r) for c, r in mechanism.floors.items()}
        if name == "fade" and mix.fade_costs_usage is not None:
            floors["usage"] = rng.uniform(*mix.fade_costs_usage)
        return replace(fate, mechanism=name, decline_from=begins, bottom_at=bottom,
                       floors=tuple(sorted(floors.items())), mood_drop=mechanism.mood, urgent=mechanism.urgent,
                       slower_fixes=mechanism.slower_fixes)

    def _draw_dips(self, until: date) -> tuple[Dip, ...]:
        rng, mix = self.rng, self.mix
        count = 0
        if rng.random() < mix.dip_share:
            count = 2 if rng.random() < 1 / 3 else 1
        dips = []
        span = (until - self.start.date()).days
        for _ in range(count):
            kind = DIPS[name := _pick(rng, mix.dips)]
            length = rng.randint(*kind.days)
            if span < length + 30:
                break
            begins = self.start.date() + timedelta(days=rng.randint(0, span - length))
            dips.append(Dip(name, begins, begins + timedelta(days=length), rng.randint(14, 28),
                            tuple(sorted((c, rng.uniform(*r)) for c, r in kind.floors.items())), kind.mood,
                            kind.urgent))
        return tuple(dips)

    # -- the records --

    def write(self, salesforce: SalesforceSandbox, zendesk: ZendeskSandbox | None, agent: int | None) -> None:
        rng, p = self.rng, self.profile
        created = self.start - timedelta(days=rng.randint(400, 1500))
        account_id = salesforce.insert("Account", {
            "Name": self.name, "Type": rng.choice(("Customer - Direct", "Customer - Channel")),
            "Industry": self.industry, "Website": f"https://www.{self.domain}", "OwnerId": self.owner.id,
            "AnnualRevenue": float(p.seats * rng.choice((20_000, 50_000, 120_000))),
            "NumberOfEmployees": p.seats * rng.choice((2, 4, 10)), "Contracted_Seats__c": float(p.seats),
            **_stamps(created)})
        self.fate = self._draw_fate(account_id)
        if zendesk is not None:
            org = zendesk.add_organization(self.name, external_id=None if self.domain_only else account_id,
                                           domain_names=[self.domain])
            self.zendesk_org = org
            self.requester = zendesk.add_user(f"{self.name} Admin", self.contact, role="end-user",
                                              organization_id=org)
        self._opportunities(salesforce)
        self._activity(salesforce, zendesk, agent)

    def _opportunities(self, salesforce: SalesforceSandbox) -> None:
        rng, fate = self.rng, self.fate
        amount = float(self.profile.seats * rng.choice((300, 450, 600)))
        before = [a for a in self._anniversaries() if a <= self.start.date()]
        previous = before[-1] if before else self.contract_start
        self._opportunity(salesforce, previous, "Closed Won", amount)
        for close in fate.renewals:
            self._opportunity(salesforce, close, "Closed Lost" if close == fate.churned_on else "Closed Won", amount)
        if fate.open_renewal is not None:
            lead = rng.randint(*self.mix.renewal_lead)
            opened = min(self.end - timedelta(hours=1),
                         datetime.combine(fate.open_renewal - timedelta(days=lead), time(10), UTC))
            self._opportunity(salesforce, fate.open_renewal, rng.choice(("Proposal", "Negotiation")), amount,
                              created=opened)
        if self.upsell:
            close = self.start.date() + timedelta(days=rng.randint(30, max(31, (self.end - self.start).days - 30)))
            if fate.churned_on is None or close < fate.churned_on - timedelta(days=30):
                stage = "Closed Won" if rng.random() < 0.6 else "Closed Lost"
                salesforce.insert("Opportunity", self._opportunity_fields(
                    f"{self.name} seat expansion", "Existing Business", close, stage, amount / 4,
                    datetime.combine(close - timedelta(days=45), time(10), UTC)))

    def _opportunity(self, salesforce: SalesforceSandbox, close: date, stage: str, amount: float, *,
                     created: datetime | None = None) -> None:
        lead = self.rng.randint(*self.mix.renewal_lead)
        opened = created or datetime.combine(close - timedelta(days=lead), time(10), UTC)
        name = self.mix.renewal_name.format(name=self.name, year=close.year, yy=f"{close.year % 100:02d}")
        salesforce.insert("Opportunity", self._opportunity_fields(name, self.mix.renewal_type, close, stage, amount,
                                                                  opened))

    def _opportunity_fields(self, name: str, kind: str, close: date, stage: str, amount: float,
                            opened: datetime) -> dict[str, object]:
        closed = stage.startswith("Closed")
        moment = datetime.combine(close, time(17), UTC) if closed else opened
        return {"AccountId": self.fate.account_id, "Name": name, "Type": kind, "StageName": stage, "Amount": amount,
                "CloseDate": close.isoformat(), "IsClosed": closed, "IsWon": stage == "Closed Won",
                "CreatedDate": sf_datetime(opened), "SystemModstamp": sf_datetime(moment),
                "LastModifiedDate": sf_datetime(moment)}

    def _stop(self) -> datetime:
        churned = self.fate.churned_on
        return self.end if churned is None else min(self.end, datetime.combine(churned, time(0), UTC))

    def _multiplier(self, channel: str, day: date) -> float:
        month = (day.year - self.start.year) * 12 + day.month - self.start.month
        value = self.noise[channel][max(0, min(month, len(self.noise[channel]) - 1))]
        value *= self.fate.level(channel, day)
        if channel in ("meetings", "customer_email") and self.profile.touch != "low" and self._renewal_near(day):
            value *= 1.6
        return value

    def _renewal_near(self, day: date) -> bool:
        upcoming = [*self.fate.renewals, *(d for d in (self.fate.open_renewal,) if d)]
        return any(0 <= (r - day).days <= 45 for r in upcoming)

    def _activity(self, salesforce: SalesforceSandbox, zendesk: ZendeskSandbox | None, agent: int | None) -> None:
        """Week by week: meetings, calls, emails both ways and tickets at the rates of that week."""
        rng, p, stop = self.rng, self.profile, self._stop()
        week = self.start
        while week < stop:
            week_end = min(week + timedelta(days=7), stop)
            day = (week + (week_end - week) / 2).date()
            share = (week_end - week).total_seconds() / (30.44 * 86400)
            meet = self._multiplier("meetings", day)
            for _ in range(_poisson(rng, p.meetings * meet * share)):
                at = _business_moment(rng, week, week_end)
                if rng.random() < self.owner.logs:
                    self._meeting(salesforce, at)
            for _ in range(_poisson(rng, p.calls * meet * share)):
                at = _business_moment(rng, week, week_end)
                if rng.random() < self.owner.logs:
                    self._call(salesforce, at)
            self._emails(salesforce, week, week_end, day, share, stop)
            tickets = _poisson(rng, p.tickets * self._multiplier("tickets", day) * share)
            for _ in range(tickets):
                self._ticket(salesforce, zendesk, agent, _business_moment(rng, week, week_end), day)
            week = week_end

    def _emails(self, salesforce: SalesforceSandbox, start: datetime, end: datetime, day: date, share: float,
                stop: datetime) -> None:
        rng, p, owner = self.rng, self.profile, self.owner
        ours = self._multiplier("our_answers", day)
        for _ in range(_poisson(rng, p.inbound * self._multiplier("customer_email", day) * share)):
            at = _business_moment(rng, start, end)
            self._email(salesforce, at, self._text(day), incoming=True)
            if rng.random() < min(1.0, owner.answers * ours):
                delay = owner.delay_hours * math.exp(rng.gauss(0, 0.8)) * (3 if ours < 0.6 else 1)
                reply = at + timedelta(hours=delay)
                if reply < stop:
                    self._email(salesforce, reply, _OUR_REPLY, incoming=False)
        answer = min(1.0, p.answer * self._multiplier("check_in_answers", day))
        for _ in range(_poisson(rng, p.check_ins * share * (1.4 if self._renewal_near(day) else 1.0))):
            at = _business_moment(rng, start, end)
            self._email(salesforce, at, _CHECK_IN, incoming=False)
            if rng.random() < answer:
                reply = at + timedelta(hours=rng.uniform(1, 60))
                if reply < stop:
                    self._email(salesforce, reply, self._text(day), incoming=True)

    def _text(self, day: date) -> str:
        tone = self.profile.warmth + self.fate.mood(day) + self.rng.gauss(0, 0.55)
        rung = 0 if tone > 0.6 else 1 if tone > 0.1 else 2 if tone > -0.4 else 3 if tone > -0.9 else \
            4 if tone > -1.5 else 5
        first = self.rng.choice(_TONES[rung])
        if self.rng.random() < 0.5:
            return first
        near = _TONES[max(0, min(len(_TONES) - 1, rung + self.rng.choice((-1, 0, 1))))]
        return f"{first} {self.rng.choice(near)}"

    def _meeting(self, salesforce: SalesforceSandbox, at: datetime) -> None:
        minutes = self.rng.choice((30, 45, 60))
        salesforce.insert("Event", {
            "AccountId": self.fate.account_id, "WhatId": self.fate.account_id, "OwnerId": self.owner.id,
            "Subject": self.rng.choice(("Weekly sync", "QBR", "Roadmap review", "Training", "Check-in")),
            "StartDateTime": sf_datetime(at), "EndDateTime": sf_datetime(at + timedelta(minutes=minutes)),
            "ActivityDateTime": sf_datetime(at), "DurationInMinutes": minutes, **_stamps(at)})

    def _call(self, salesforce: SalesforceSandbox, at: datetime) -> None:
        salesforce.insert("Task", {
            "AccountId": self.fate.account_id, "WhatId": self.fate.account_id, "OwnerId": self.owner.id,
            "Subject": "Call", "TaskSubtype": "Call", "Status": "Completed", "ActivityDate": at.date().isoformat(),
            "CompletedDateTime": sf_datetime(at), **_stamps(at)})

    def _email(self, salesforce: SalesforceSandbox, at: datetime, text: str, *, incoming: bool) -> None:
        """Our emails are logged as a completed email Task too, as Salesforce's email logging does."""
        activity = None
        subject = "Re: your account" if not incoming else self.rng.choice(("Question", "Update", "Follow-up"))
        if not incoming:
            activity = salesforce.insert("Task", {
                "AccountId": self.fate.account_id, "WhatId": self.fate.account_id, "OwnerId": self.owner.id,
                "Subject": f"Email: {subject}", "TaskSubtype": "Email", "Status": "Completed",
                "ActivityDate": at.date().isoformat(), "CompletedDateTime": sf_datetime(at), **_stamps(at)})
        salesforce.insert("EmailMessage", {
            "RelatedToId": self.fate.account_id, "ActivityId": activity, "Subject": subject, "TextBody": text,
            "FromAddress": self.contact if incoming else self.owner.email,
            "ToAddress": self.owner.email if incoming else self.contact, "Incoming": incoming,
            "MessageDate": sf_datetime(at), "Status": "0" if incoming else "3", **_stamps(at)})

    def _ticket(self, salesforce: SalesforceSandbox, zendesk: ZendeskSandbox | None, agent: int | None,
                at: datetime, day: date) -> None:
        rng, fate = self.rng, self.fate
        urgent = min(0.9, self.profile.urgent + fate.urgency(day))
        severe = rng.random() < urgent
        priority = rng.choice(("high", "urgent")) if severe else rng.choice(("low", "normal", "normal"))
        solve = at + timedelta(hours=18 * math.exp(rng.gauss(0, 0.9)) * fate.fix_factor(day))
        solved = solve < self.end
        text = f"{rng.choice(_TICKET_SUBJECTS)}. {self._text(day)}"
        if self.mix.support == "cases":
            stamp = solve if solved else at
            salesforce.insert("Case", {
                "AccountId": fate.account_id, "Subject": text[:80], "Description": text,
                "Status": "Closed" if solved else rng.choice(("New", "Working", "Escalated")),
                "Priority": priority.capitalize() if priority != "normal" else "Medium", "Origin": "Email",
                "IsClosed": solved, "ClosedDate": sf_datetime(solve) if solved else None,
                "CreatedDate": sf_datetime(at), "SystemModstamp": sf_datetime(stamp),
                "LastModifiedDate": sf_datetime(stamp)})
            return
        if zendesk is None or agent is None or self.requester is None:
            return
        ticket = zendesk.add_ticket(subject=text[:60], requester_id=self.requester, organization_id=self.zendesk_org,
                                    priority=priority, status="open", created_at=at, description=text)
        answered = at + timedelta(hours=rng.uniform(0.5, 6))
        if answered < self.end:
            zendesk.add_comment(ticket, author_id=agent, body=_OUR_REPLY, created_at=answered)
        follow_up = answered + timedelta(hours=rng.uniform(1, 30))
        if rng.random() < 0.3 and follow_up < min(solve, self.end):
            zendesk.add_comment(ticket, author_id=self.requester, body=self._text(day), created_at=follow_up)
        if solved:
            zendesk.update_ticket(ticket, status="solved", at=solve)

    # -- usage --

    def usage(self, rows: dict[str, list[str]]) -> None:
        """One row per active day (file per month), at the rates of the day."""
        if not self.has_usage:
            return
        rng, p, mix = self.rng, self.profile, self.mix
        day, stop = self.start.date(), self._stop().date()
        while day < stop:
            level = self._multiplier("usage", day)
            if day.weekday() >= 5:
                level *= 0.15
            if mix.seasonal_dip and ((day.month == 12 and day.day >= 20) or (day.month == 1 and day.day <= 3)):
                level *= 1 - mix.seasonal_dip
            elif mix.seasonal_dip and day.month == 8:
                level *= 1 - mix.seasonal_dip / 2
            if rng.random() < min(1.0, p.usage * level):
                users = max(1, min(p.seats, round(p.seats * p.adoption * math.sqrt(min(level, 1.5))
                                                  * rng.uniform(0.6, 1.1))))
                breadth = max(1, min(len(FEATURES), round(p.breadth * min(1.0, level ** 0.5) * rng.uniform(0.7, 1.1))))
                features = sorted(rng.sample(FEATURES[: max(breadth, p.breadth)], k=breadth))
                rows[day.strftime("%Y-%m")].append(self._usage_row(day, users, users * rng.randint(3, 25), features))
            day += timedelta(days=1)

    def _usage_row(self, day: date, users: int, events: int, features: list[str]) -> str:
        if self.mix.usage_format == "jsonl":
            return json.dumps({"account_id": self.fate.account_id, "date": day.isoformat(), "active_users": users,
                               "events": events, "features_used": features, "seats": self.profile.seats}) + "\n"
        return f"{self.fate.account_id},{day.isoformat()},{users},{events},{';'.join(features)},{self.profile.seats}\n"


def _write_usage(folder: Path, mix: Mix, rows: Mapping[str, list[str]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for month in sorted(rows):
        path = folder / f"usage-{mix.name}-{month}.{mix.usage_format}"
        header = "account_id,date,active_users,events,features_used,seats\n" if mix.usage_format == "csv" else ""
        path.write_text(header + "".join(rows[month]), encoding="utf-8")
        paths.append(path)
    return paths


# -- small helpers -----------------------------------------------------------------------------------

def _stamps(moment: datetime) -> dict[str, str]:
    return {"CreatedDate": sf_datetime(moment), "SystemModstamp": sf_datetime(moment),
            "LastModifiedDate": sf_datetime(moment)}


def _drift(rng: random.Random, sigma: float, months: int) -> list[float]:
    """Monthly multipliers around 1: a log-normal AR(1), so a channel wanders and comes back."""
    values, x = [], rng.gauss(0, sigma)
    for _ in range(months):
        x = 0.6 * x + rng.gauss(0, sigma * 0.8)
        values.append(math.exp(x - sigma ** 2 / 2))
    return values


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _business_moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A moment in working hours on a weekday between `start` and `end` (any moment when there is none)."""
    span = max(1, int((end - start).total_seconds()) - 1)
    for _ in range(6):
        at = start + timedelta(seconds=rng.randint(0, span))
        if at.weekday() < 5 and 8 <= at.hour < 18:
            return at.replace(microsecond=0)
    return (start + timedelta(seconds=rng.randint(0, span))).replace(microsecond=0)


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    return date(year, month, min(day.day, 28))
