"""`healthbeat backtest`: does the health score see churn coming? Replayed from the store, locally.

The store's history is replayed at snapshot days (every two weeks over the last year by default): every
account is scored as of each day with only what was known then, the alert rules are stepped over the
snapshots with the worker's own pure transition (`worker.alerting.engine.step_rule`), and the scores are
set against outcomes (`worker.analysis.outcomes`: renewals lost or won). The figures: AUC of the score
against churn within the horizon (90 days by default), churn rate by band, lead time before churn, each
alert rule's recall, precision and volume per owner, and the band distribution over time against the guardrails ops set.

A score is only worth its weights if it beats what a CSM could read off one column, so the same labelled
snapshots are also ranked by single signals (`SIGNALS`: days since the last two-way touch, tickets in the
last 90 days, days to the open renewal) and their AUC is shown beside the score's, with the red band's lift
(its churn rate over the overall rate) and recall (the share of snapshots before a churn that were red).
Churn happens at renewals, so on a short horizon the renewal date alone ranks well: a score that does no
better than it adds nothing a renewal calendar does not.

No leakage. Measures only see activities, tickets and usage up to the snapshot time. Beyond them, the
store holds present state that would leak the outcome into a past score, and the replay undoes it:
- opportunities: `is_closed`/`is_won` say how a renewal *ended*; on the copy each snapshot sees a renewal
  closing after that day as still open (which feeds `days_to_renewal` and a segment's ARR);
- CSM overrides are today's judgement: ignored, the backtest judges the computed score.
What it cannot undo is said in the result's notes: a ticket reopened and solved again keeps only its
latest solve time, and account fields such as contracted seats hold today's value. All of this happens on
an in-memory copy of the store: the live tables are never touched.
"""

from __future__ import annotations

import io
import math
import statistics
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

from rich.console import Console
from rich.table import Table

from worker.alerting.engine import step_rule
from worker.alerting.rules import AlertRule, LoadedRules
from worker.analysis.outcomes import Outcomes
from worker.rulebook.preview import snapshot
from worker.scoring.engine import (
    MeasureResult,
    Raw,
    _measure_raw,
    band_of,
    derived_score,
    explain,
    live_accounts,
    score_account,
    trend,
)
from worker.scoring.measures import LIBRARY
from worker.scoring.scorecard import BANDS, LoadedScorecard, Scorecard
from worker.store import Store, iso
from worker.terminal import counted

LEAD_POINTS = (30, 60, 90)  # days before churn at which the share of churned accounts in red is shown
CURVE_BUCKET = 15  # days: width of the buckets of "mean score by days before the outcome"
CURVE_DAYS = 180


# -- the plan ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Guardrail:
    """The share of accounts ops want in a band, e.g. red between 5 % and 25 %."""

    band: str
    low: float  # 0..1
    high: float

    @classmethod
    def parse(cls, text: str) -> Guardrail:
        """`red:5-25` (percent) → red between 5 % and 25 %."""
        band, _, bounds = text.partition(":")
        low, _, high = bounds.replace("%", "").partition("-")
        try:
            guard = cls(band.strip(), float(low) / 100, float(high) / 100)
        except ValueError:
            raise ValueError(f"a guardrail reads like red:5-25 (band:low%-high%), not {text!r}") from None
        if guard.band not in BANDS or not 0 <= guard.low <= guard.high <= 1:
            raise ValueError(f"a guardrail needs a band ({', '.join(BANDS)}) and 0 <= low <= high <= 100: {text!r}")
        return guard

    def __str__(self) -> str:
        return f"{self.band} {self.low:.0%}-{self.high:.0%}"


@dataclass(frozen=True)
class Plan:
    """What to replay: snapshots every `step` over `period` up to `until`, churn looked for within `horizon`."""

    until: datetime
    period: timedelta = timedelta(days=365)
    step: timedelta = timedelta(days=14)
    horizon: timedelta = timedelta(days=90)
    guardrails: tuple[Guardrail, ...] = (Guardrail("red", 0.05, 0.25),)

    def days(self) -> list[date]:
        """Snapshot days, oldest first, the last one on `until`'s day."""
        step = max(1, round(self.step.total_seconds() / 86400))
        last = self.until.date()
        count = int(self.period.total_seconds() / 86400) // step
        return [last - timedelta(days=step * k) for k in range(count, -1, -1)]

    def history_days(self, first: date) -> list[date]:
        """The plan's days, and before them every earlier step back to `first`: the whole history, for fitting
        on its earlier part and judging on its later one."""
        step = max(1, round(self.step.total_seconds() / 86400))
        days = self.days()
        earlier = []
        day = days[0] - timedelta(days=step)
        while day >= first:
            earlier.append(day)
            day -= timedelta(days=step)
        return [*reversed(earlier), *days]

    @property
    def horizon_days(self) -> int:
        return round(self.horizon.total_seconds() / 86400)


def as_of(day: date, until: datetime) -> datetime:
    """A snapshot sees its whole day (never beyond `until`)."""
    return min(datetime.combine(day, time(23, 59, 59), UTC), until)


def label(day: date, churned_on: date | None, horizon_days: int, until: date) -> bool | None:
    """True: churned within the horizon after `day`; False: did not; None: the horizon is not over yet.

    A snapshot whose horizon runs past `until` gets no label even when its account did churn: keeping only
    those would fill the last months with churned accounts alone and flatter every figure."""
    if day + timedelta(days=horizon_days) > until:
        return None
    return churned_on is not None and day < churned_on <= day + timedelta(days=horizon_days)


# -- the replay ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    """One account scored as of one snapshot day."""

    account_id: str
    owner_id: str | None
    day: date
    score: float
    band: str
    coverage: float
    churn_risk: float | None
    segment: str | None
    points: tuple[float | None, ...]  # per measure, in `measure_keys(scorecard)` order (for tuning)
    signals: tuple[float | None, ...] = ()  # raw single signals, in `SIGNALS` order (None: the store has none)
    raw: tuple[float | None, ...] = ()  # per measure, its raw value, in `measure_keys(scorecard)` order


@dataclass(frozen=True)
class AlertFire:
    rule: str
    account_id: str
    owner_id: str | None
    day: date


@dataclass
class Replay:
    days: list[date]
    observations: list[Observation] = field(default_factory=list)
    fires: list[AlertFire] = field(default_factory=list)
    # rule -> account -> snapshot days on which an announced alert of the rule was firing
    warning_days: dict[str, dict[str, list[date]]] = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def measure_keys(scorecard: Scorecard) -> list[tuple[str, str]]:
    return [(g, m) for g, group in scorecard.groups.items() for m in group.measures]


@dataclass(frozen=True)
class Signal:
    """One column a CSM could rank accounts by without a score: the baseline a score must beat."""

    key: str
    label: str
    higher_is_riskier: bool
    missing: float  # the value of an account the store has nothing for

    def risk(self, value: float | None) -> float:
        """The value oriented so that lower means riskier, as the score is (for `auc`)."""
        value = self.missing if value is None else value
        return -value if self.higher_is_riskier else value


SUPPORT_DAYS = 90
SIGNALS = (
    # never touched is the worst case; no open renewal is the safest (nothing to lose soon)
    Signal("recency", "days since the last two-way touch", True, math.inf),
    Signal("support_volume", f"tickets in the last {SUPPORT_DAYS} days", True, 0.0),
    Signal("renewal_proximity", "days to the open renewal", False, math.inf),
)
_TICKETS_SQL = """SELECT account_id, count(*) FROM activities
    WHERE kind = 'ticket' AND is_deleted = 0 AND account_id IS NOT NULL AND occurred_at <= :as_of
      AND occurred_at > :since GROUP BY account_id"""


def single_signals(store: Store, moment: datetime) -> dict[str, dict[str, float]]:
    """Each signal of `SIGNALS` per account as of `moment`, from the store as it stands (on a replay, the
    copy with the opportunities as they stood that day): the product's own definitions where it has one."""
    tickets = store.conn.execute(_TICKETS_SQL, {"as_of": iso(moment),
                                                "since": iso(moment - timedelta(days=SUPPORT_DAYS))})
    return {"recency": LIBRARY["days_since_two_way_touch"].query(store, {}, moment),
            "support_volume": {str(a): float(n) for a, n in tickets},
            "renewal_proximity": LIBRARY["days_to_renewal"].query(store, {}, moment)}


class ReplayStopped(Exception):
    """A stop was requested while replaying (the worker's SIGTERM during a scheduled refit)."""


def replay(store: Store, loaded: LoadedScorecard, alerts: LoadedRules | None, days: Sequence[date],
           until: datetime, *, population: Collection[str] | None = None,
           churned_on: Mapping[str, date] | None = None, alerts_from: date | None = None,
           stop: Callable[[], bool] | None = None) -> Replay:
    """Score every account of `population` (default: all) as of each day, on a copy of the store.

    An account is not observed on or after its churn day. Alert rules are replayed as if in force since
    before the first snapshot (no install baseline), one evaluation per snapshot, from `alerts_from` on
    (default: the first). `stop`, asked between snapshot days, ends the replay with `ReplayStopped`."""
    churned_on = churned_on or {}
    base = loaded.scorecard
    by_segment = {None: base} | {s.name: base.for_segment(s) for s in base.segments}
    result = Replay(list(days), rules=[r.name for r in alerts.rules.rules] if alerts else [])
    rules = alerts.rules.rules if alerts else []
    states: dict[tuple[str, str], dict[str, Any]] = {}
    announced: dict[tuple[str, str], int] = {}
    scores: dict[str, list[tuple[date, float]]] = defaultdict(list)
    with snapshot(store) as copy:
        people = {r["id"]: r for r in copy.query(
            "SELECT a.id, a.name, a.owner_id, u.name AS owner, u.email AS owner_email FROM accounts a "
            "LEFT JOIN users u ON u.source = 'salesforce' AND u.source_id = a.owner_id")}
        for day in days:
            if stop is not None and stop():
                raise ReplayStopped(f"stopped on request before the snapshot of {day}")
            moment = as_of(day, until)
            opportunities_as_of(copy, day)
            raw = _measure_raw(copy, base, moment)
            signals = single_signals(copy, moment)
            contexts = []
            for account in live_accounts(copy):
                account_id = account["id"]
                churn = churned_on.get(account_id)
                if (population is not None and account_id not in population) or (churn and churn <= day):
                    continue
                segment = base.segment_of(account)
                scorecard = by_segment[segment.name if segment else None]
                computed, coverage, results, _ = score_account(account_id, raw, scorecard)
                if coverage == 0:
                    continue  # nothing known about it yet: not a customer we could have scored
                person = people.get(account_id, {})
                context = _context(account, person, scorecard, raw, computed, coverage, results,
                                   segment.name if segment else "", scores[account_id], day,
                                   signals["renewal_proximity"].get(account_id))
                contexts.append(context)
                result.observations.append(Observation(
                    account_id, person.get("owner_id"), day, computed, context["band"], coverage,
                    context["churn_risk"], segment.name if segment else None, tuple(r.points for r in results),
                    tuple(signals[signal.key].get(account_id) for signal in SIGNALS), tuple(r.raw for r in results)))
                scores[account_id].append((day, computed))
            if alerts_from is None or day >= alerts_from:
                for rule in rules:
                    _step_alerts(result, rule, contexts, states, announced, moment, day)
    return result


def opportunities_as_of(copy: Store, day: date) -> None:
    """Rewrite a *copy* of the store's opportunities as they stood on `day`: one closing later was open then,
    whatever became of it, and one created later (`created_at`, Salesforce's `CreatedDate`) did not exist yet,
    so a renewal opened two months before its close is not seen a year before. An opportunity synced before
    the store kept creation times has none and counts as known all along (`data_notes` says how many). The
    present state is kept aside on first use, so days may come in any order."""
    copy.conn.execute("CREATE TABLE IF NOT EXISTS _opportunities_now AS "
                      "SELECT id, is_closed, is_won, is_deleted FROM opportunities")
    copy.conn.execute("""
        UPDATE opportunities SET
          is_closed = CASE WHEN close_date <= :day
                           THEN (SELECT n.is_closed FROM _opportunities_now n WHERE n.id = opportunities.id)
                           ELSE 0 END,
          is_won = CASE WHEN close_date <= :day
                        THEN (SELECT n.is_won FROM _opportunities_now n WHERE n.id = opportunities.id)
                        ELSE 0 END,
          is_deleted = CASE WHEN created_at IS NOT NULL AND substr(created_at, 1, 10) > :day THEN 1
                            ELSE (SELECT n.is_deleted FROM _opportunities_now n WHERE n.id = opportunities.id)
                            END""", {"day": day.isoformat()})


DATA_BEHIND = timedelta(days=90)  # a snapshot with less data behind it than this sees accounts half-formed


def history_start(store: Store, plan: Plan) -> date:
    """The first snapshot day of the whole history: the store's first activity or usage day plus `DATA_BEHIND`,
    or the plan's own first day when the store reaches no further back."""
    first_day = plan.days()[0]
    found = [str(v)[:10] for v in (store.scalar("SELECT min(occurred_at) FROM activities WHERE is_deleted = 0"),
                                   store.scalar("SELECT min(day) FROM usage_daily")) if v]
    if not found:
        return first_day
    return min(first_day, date.fromisoformat(min(found)) + DATA_BEHIND)


def cut_at(copy: Store, day: date, until: datetime) -> None:
    """Make a *copy* of the store hold only what existed on `day`: activities after it and usage days after
    it removed, and the opportunities as they stood (`opportunities_as_of`)."""
    moment = iso(as_of(day, until))
    copy.conn.execute("DELETE FROM activities WHERE occurred_at > ?", (moment,))
    copy.conn.execute("DELETE FROM usage_daily WHERE day > ?", (day.isoformat(),))
    opportunities_as_of(copy, day)


def leaking_measures(store: Store, scorecard: Scorecard, day: date, until: datetime) -> list[str]:
    """The measures (and single signals) whose values on `day` change when the data from after that day is taken
    away: a measure that reads past its `as_of` leaks the outcome into the past, and a fit on it would learn the
    future. Each is named with how many accounts it moves and one example."""
    moment = as_of(day, until)

    def values(cut: bool) -> dict[str, dict[str, float]]:
        with snapshot(store) as copy:
            if cut:
                cut_at(copy, day, until)
            else:
                opportunities_as_of(copy, day)
            raw = _measure_raw(copy, scorecard, moment)
            return {**raw, **{f"signal {k}": v for k, v in single_signals(copy, moment).items()}}

    full, known = values(False), values(True)
    leaks = []
    for name in sorted(full):
        later, then = full[name], known.get(name, {})
        moved = sorted(a for a in set(later) | set(then) if later.get(a) != then.get(a))
        if moved:
            example = moved[0]
            leaks.append(f"{name} moves for {counted(len(moved), 'account')} on {day} (e.g. {example}: "
                         f"{later.get(example)} with later data, {then.get(example)} without)")
    return leaks


def _context(account: Mapping[str, Any], person: Mapping[str, Any], scorecard: Scorecard, raw: Raw,
             score: float, coverage: float, results: list[MeasureResult], segment: str,
             earlier: list[tuple[date, float]], day: date, days_to_renewal: float | None) -> dict[str, Any]:
    """The names an alert condition may use, as `worker.alerting.engine.account_contexts` gives them."""
    window_start = day - scorecard.trend.window
    baseline = next((s for d, s in earlier if window_start <= d < day), None)
    trend_text, delta = trend(score, baseline, scorecard)
    band = band_of(score, scorecard, coverage)
    measures = {r.key: r.raw for r in results}
    account_id = str(account["id"])
    return {
        "account_id": account_id, "score": score, "band": band, "computed_score": score, "trend": trend_text,
        "trend_delta": delta, "reason": explain(results, band, scorecard.max_reasons), "coverage": coverage,
        "churn_risk": derived_score(scorecard, "churn_risk", account_id, raw, score),
        "expansion_readiness": derived_score(scorecard, "expansion_readiness", account_id, raw, score),
        "overridden": False, "measures": measures, "segment": segment,
        "account_name": person.get("name") or account_id, "account_type": account.get("type"),
        "owner": person.get("owner") or "", "owner_email": person.get("owner_email"),
        "owner_id": person.get("owner_id"),
        "previous_score": None if delta is None else round(score - delta, 2),
        "days_silent": measures.get("days_since_two_way_touch"), "days_to_renewal": days_to_renewal,
    }


def _step_alerts(result: Replay, rule: AlertRule, contexts: list[dict[str, Any]],
                 states: dict[tuple[str, str], dict[str, Any]], announced: dict[tuple[str, str], int],
                 moment: datetime, day: date) -> None:
    for context in contexts:  # in force since before the period: a known, inactive state, never a baseline
        states.setdefault((rule.name, context["account_id"]), {
            "rule": rule.name, "account_id": context["account_id"], "state": "inactive", "since": None,
            "pending_cycles": 0, "episode": 0, "last_notified_at": None, "rule_hash": rule.meaning_hash})
    owners = {c["account_id"]: c.get("owner_id") for c in contexts}
    for transition in step_rule(rule, contexts, states, moment):
        key = (rule.name, transition.account_id)
        if transition.row is None:
            result.errors.append(f"{rule.name} on {transition.account_id} as of {day}: {transition.error}")
            continue
        states[key] = transition.row
        if transition.owed == "fire":
            announced[key] = transition.row["episode"]
            result.fires.append(AlertFire(rule.name, transition.account_id, owners[transition.account_id], day))
        if transition.row["state"] == "firing" and announced.get(key) == transition.row["episode"]:
            result.warning_days.setdefault(rule.name, {}).setdefault(transition.account_id, []).append(day)


# -- the figures ---------------------------------------------------------------------------------------

def auc(churned: Sequence[float], retained: Sequence[float]) -> float | None:
    """P(a churned account scored lower than a retained one), ties counting half (Mann-Whitney U)."""
    if not churned or not retained:
        return None
    ranked = sorted([(s, 0) for s in churned] + [(s, 1) for s in retained])
    rank_sum, index = 0.0, 0
    while index < len(ranked):
        end = index
        while end + 1 < len(ranked) and ranked[end + 1][0] == ranked[index][0]:
            end += 1
        mean_rank = (index + end) / 2 + 1
        rank_sum += mean_rank * sum(1 for k in range(index, end + 1) if ranked[k][1] == 1)
        index = end + 1
    n_c, n_r = len(churned), len(retained)
    return (rank_sum - n_r * (n_r + 1) / 2) / (n_c * n_r)


def auc_standard_error(value: float, churned: int, retained: int) -> float:
    """Hanley and McNeil (1982): how much an AUC on this many cases moves by chance."""
    q1, q2 = value / (2 - value), 2 * value ** 2 / (1 + value)
    variance = (value * (1 - value) + (churned - 1) * (q1 - value ** 2)
                + (retained - 1) * (q2 - value ** 2)) / (churned * retained)
    return math.sqrt(max(variance, 0.0))


def roc_points(churned: Sequence[float], retained: Sequence[float]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) flagging every score at or below each threshold."""
    if not churned or not retained:
        return []
    low_churned, low_retained = sorted(churned), sorted(retained)
    points = [(0.0, 0.0)]
    for threshold in sorted(set(churned) | set(retained)):
        points.append((bisect_right(low_retained, threshold) / len(retained),
                       bisect_right(low_churned, threshold) / len(churned)))
    return points


@dataclass(frozen=True)
class Discrimination:
    auc: float | None
    auc_se: float | None
    churn_risk_auc: float | None
    observations: int  # account-snapshots with a known outcome
    accounts: int
    churn_events: int  # distinct churns behind the positive observations
    positives: int
    roc: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class BandRate:
    band: str
    observations: int
    churned: int

    @property
    def rate(self) -> float | None:
        return self.churned / self.observations if self.observations else None


@dataclass(frozen=True)
class Baseline:
    """How well one signal alone ranks the same labelled snapshots as the score."""

    key: str
    label: str
    auc: float | None
    observations: int  # labelled snapshots that carry the signal


@dataclass(frozen=True)
class LeadTime:
    churned_accounts: int  # churned accounts observed before their churn
    red_before: int  # of them, red at the last snapshot before churn
    median_days: float | None  # days from the start of that last red stretch to churn
    days: tuple[tuple[str, str, int | None], ...]  # (account, churn day, days red before)
    red_share_at: tuple[tuple[int, float | None, int], ...]  # (days before, share red, accounts)


@dataclass(frozen=True)
class RuleFigures:
    rule: str
    fires: int
    fires_known: int  # fires whose outcome within the horizon is known
    fires_before_churn: int
    churns: int
    churns_warned: int
    median_warning_days: float | None
    fires_per_owner_month: float
    peak_owner_month: int

    @property
    def precision(self) -> float | None:
        return self.fires_before_churn / self.fires_known if self.fires_known else None

    @property
    def recall(self) -> float | None:
        return self.churns_warned / self.churns if self.churns else None


@dataclass(frozen=True)
class BandShares:
    day: date
    accounts: int
    shares: Mapping[str, float]
    breaches: tuple[str, ...]


@dataclass(frozen=True)
class Backtest:
    plan: Plan
    snapshots: int
    accounts: int
    discrimination: Discrimination
    bands: tuple[BandRate, ...]
    lead: LeadTime
    rules: tuple[RuleFigures, ...]
    distribution: tuple[BandShares, ...]
    curve: tuple[tuple[int, float | None, float | None], ...]  # (days before, churned mean, retained mean)
    notes: tuple[str, ...]
    baselines: tuple[Baseline, ...] = ()

    @property
    def bands_ordered(self) -> bool:
        """Is red riskier than yellow, and yellow than green (bands with no observations skipped)?"""
        rates = [b.rate for b in self.bands if b.rate is not None]
        return all(a > b for a, b in pairwise(rates))

    @property
    def churn_rate(self) -> float | None:
        """Churned snapshots over all labelled snapshots, whatever their band."""
        observations = sum(b.observations for b in self.bands)
        return sum(b.churned for b in self.bands) / observations if observations else None

    @property
    def red_lift(self) -> float | None:
        """How many times likelier a red snapshot is to be followed by churn than any snapshot."""
        red = next((b.rate for b in self.bands if b.band == "red"), None)
        overall = self.churn_rate
        return red / overall if red is not None and overall else None

    @property
    def red_recall(self) -> float | None:
        """The share of snapshots followed by churn that were red: how much of the churn the red band catches."""
        churned = sum(b.churned for b in self.bands)
        red = sum(b.churned for b in self.bands if b.band == "red")
        return red / churned if churned else None


def labelled(observations: Sequence[Observation], outcomes: Outcomes, horizon_days: int, until: date
             ) -> list[tuple[Observation, bool]]:
    out = []
    for obs in observations:
        known = label(obs.day, outcomes.churn_day(obs.account_id), horizon_days, until)
        if known is not None:
            out.append((obs, known))
    return out


def discrimination(pairs: Sequence[tuple[Observation, bool]], outcomes: Outcomes) -> Discrimination:
    churned = [o.score for o, y in pairs if y]
    retained = [o.score for o, y in pairs if not y]
    value = auc(churned, retained)
    risk = auc([-(o.churn_risk or 0) for o, y in pairs if y and o.churn_risk is not None],
               [-(o.churn_risk or 0) for o, y in pairs if not y and o.churn_risk is not None])
    events = {(o.account_id, outcomes.churn_day(o.account_id)) for o, y in pairs if y}
    return Discrimination(
        None if value is None else round(value, 4),
        None if value is None else round(auc_standard_error(value, len(churned), len(retained)), 4),
        None if risk is None else round(risk, 4), len(pairs), len({o.account_id for o, _ in pairs}),
        len(events), len(churned), tuple(roc_points(churned, retained)))


def baselines(pairs: Sequence[tuple[Observation, bool]]) -> tuple[Baseline, ...]:
    """The AUC of each single signal on the labelled snapshots that carry it (every replayed one does)."""
    out = []
    for index, signal in enumerate(SIGNALS):
        carried = [(signal.risk(o.signals[index]), y) for o, y in pairs if len(o.signals) > index]
        value = auc([r for r, y in carried if y], [r for r, y in carried if not y])
        out.append(Baseline(signal.key, signal.label, None if value is None else round(value, 4), len(carried)))
    return tuple(out)


def band_rates(pairs: Sequence[tuple[Observation, bool]]) -> tuple[BandRate, ...]:
    return tuple(BandRate(band, sum(1 for o, _ in pairs if o.band == band),
                          sum(1 for o, y in pairs if o.band == band and y)) for band in BANDS)


def lead_time(observations: Sequence[Observation], outcomes: Outcomes, step_days: int) -> LeadTime:
    by_account: dict[str, list[Observation]] = defaultdict(list)
    for obs in observations:
        by_account[obs.account_id].append(obs)
    rows: list[tuple[str, str, int | None]] = []
    at: dict[int, list[bool]] = {k: [] for k in LEAD_POINTS}
    for account_id, churn in sorted(outcomes.churned_on.items()):
        before = sorted((o for o in by_account.get(account_id, []) if o.day < churn), key=lambda o: o.day)
        if not before:
            continue
        red_since = None
        for obs in reversed(before):
            if obs.band != "red":
                break
            red_since = obs.day
        rows.append((account_id, churn.isoformat(), None if red_since is None else (churn - red_since).days))
        for days_before in LEAD_POINTS:
            target = churn - timedelta(days=days_before)
            near = [o for o in before if target - timedelta(days=step_days) < o.day <= target]
            if near:
                at[days_before].append(near[-1].band == "red")
    red = [d for _, _, d in rows if d is not None]
    return LeadTime(len(rows), len(red), statistics.median(red) if red else None, tuple(rows),
                    tuple((k, sum(v) / len(v) if v else None, len(v)) for k, v in at.items()))


def rule_figures(result: Replay, observations: Sequence[Observation], outcomes: Outcomes, horizon_days: int,
                 until: date) -> tuple[RuleFigures, ...]:
    horizon = timedelta(days=horizon_days)
    first = result.days[0] if result.days else until
    observed = {o.account_id for o in observations}
    churns = {a: d for a, d in outcomes.churned_on.items() if a in observed and first < d <= until}
    owners = {o.owner_id for o in observations}
    months = max((until - first).days, 1) / 30.44
    figures = []
    for rule in result.rules:
        fires = [f for f in result.fires if f.rule == rule]
        known = [(f, label(f.day, outcomes.churn_day(f.account_id), horizon_days, until)) for f in fires]
        warned, leads = 0, []
        for account_id, churn in churns.items():
            days = [d for d in result.warning_days.get(rule, {}).get(account_id, []) if churn - horizon <= d < churn]
            if days:
                warned += 1
                leads.append((churn - min(days)).days)
        per_owner_month = Counter((f.owner_id, f.day.strftime("%Y-%m")) for f in fires)
        figures.append(RuleFigures(
            rule, len(fires), sum(1 for _, y in known if y is not None), sum(1 for _, y in known if y),
            len(churns), warned, statistics.median(leads) if leads else None,
            round(len(fires) / max(len(owners), 1) / months, 2), max(per_owner_month.values(), default=0)))
    return tuple(figures)


def band_distribution(observations: Sequence[Observation], guardrails: Sequence[Guardrail]
                      ) -> tuple[BandShares, ...]:
    by_day: dict[date, Counter[str]] = defaultdict(Counter)
    for obs in observations:
        by_day[obs.day][obs.band] += 1
    rows = []
    for day in sorted(by_day):
        total = sum(by_day[day].values())
        shares = {band: by_day[day][band] / total for band in BANDS}
        breaches = tuple(str(g) for g in guardrails if not g.low <= shares[g.band] <= g.high)
        rows.append(BandShares(day, total, shares, breaches))
    return tuple(rows)


def score_before_outcome(observations: Sequence[Observation], outcomes: Outcomes
                         ) -> tuple[tuple[int, float | None, float | None], ...]:
    """Mean score of churned and of retained accounts by days before the churn or the won renewal."""
    by_account: dict[str, list[Observation]] = defaultdict(list)
    for obs in observations:
        by_account[obs.account_id].append(obs)
    buckets: dict[tuple[int, bool], list[float]] = defaultdict(list)
    ends = [(a, d, True) for a, d in outcomes.churned_on.items()]
    ends += [(e.account_id, e.day, False) for e in outcomes.renewals_won()]
    for account_id, end, churned in ends:
        for obs in by_account.get(account_id, []):
            before = (end - obs.day).days
            if 0 < before <= CURVE_DAYS:
                buckets[((before - 1) // CURVE_BUCKET * CURVE_BUCKET + CURVE_BUCKET, churned)].append(obs.score)

    def mean(values: list[float]) -> float | None:
        return round(statistics.fmean(values), 1) if values else None

    return tuple((d, mean(buckets[(d, True)]), mean(buckets[(d, False)]))
                 for d in range(CURVE_BUCKET, CURVE_DAYS + 1, CURVE_BUCKET))


def run_backtest(store: Store, loaded: LoadedScorecard, alerts: LoadedRules | None, outcomes: Outcomes,
                 plan: Plan, *, history: bool = False) -> tuple[Backtest, Replay]:
    """Replay the plan's snapshots and compute every figure (the replay is returned for tuning). With
    `history`, the replay reaches back over the whole history the store holds (`history_start`), for fitting
    on its earlier part: the figures stay those of the plan's period, and the replay returned holds it all."""
    days = plan.days()
    replayed = plan.history_days(history_start(store, plan)) if history else days
    population = outcomes.customers or None
    result = replay(store, loaded, alerts, replayed, plan.until, population=population,
                    churned_on=outcomes.churned_on, alerts_from=days[0])
    return summarize(plan_view(result, days[0]), outcomes, plan,
                     notes=data_notes(store, outcomes, plan, days)), result


def plan_view(result: Replay, first: date) -> Replay:
    """The part of a replay from `first` on (alerts are only stepped from there)."""
    if not result.days or result.days[0] >= first:
        return result
    return Replay([d for d in result.days if d >= first], [o for o in result.observations if o.day >= first],
                  result.fires, result.warning_days, result.rules, result.errors)


def summarize(result: Replay, outcomes: Outcomes, plan: Plan, *, notes: Sequence[str] = ()) -> Backtest:
    observations = result.observations
    until = plan.until.date()
    pairs = labelled(observations, outcomes, plan.horizon_days, until)
    step = max(1, round(plan.step.total_seconds() / 86400))
    errors = [f"{counted(len(result.errors), 'alert evaluation')} failed, e.g. {result.errors[0]}"] \
        if result.errors else []
    return Backtest(
        plan, len(result.days), len({o.account_id for o in observations}), discrimination(pairs, outcomes),
        band_rates(pairs), lead_time(observations, outcomes, step),
        rule_figures(result, observations, outcomes, plan.horizon_days, until),
        band_distribution(observations, plan.guardrails), score_before_outcome(observations, outcomes),
        (*notes, *errors), baselines(pairs))


def data_notes(store: Store, outcomes: Outcomes, plan: Plan, days: Sequence[date]) -> list[str]:
    """What a reader of the figures should know about the data behind them."""
    notes = ["Leakage guarded: renewals are read as they stood on each snapshot day; CSM overrides are "
             "ignored (computed scores are judged); activities, tickets and usage after a snapshot are unseen.",
             "Not undone: a solved ticket's close time is its last update, and account fields (contracted "
             "seats, type) hold today's values."]
    if not outcomes.churned_on:
        notes.append("No churn recorded (no renewal closed lost): nothing to predict; check --renewal-type.")
    undated = store.scalar("SELECT count(*) FROM opportunities WHERE created_at IS NULL AND is_deleted = 0")
    if undated:
        notes.append(f"{counted(undated, 'opportunity', 'opportunities')} without a creation date (synced before "
                     f"Healthbeat kept CreatedDate; the next sync fills it in) "
                     + ("counts" if undated == 1 else "count") + " as known on every snapshot day.")
    churned = list(outcomes.churned_on)
    deleted = store.scalar(f"SELECT count(*) FROM accounts WHERE is_deleted = 1 "
                           f"AND id IN ({','.join('?' * len(churned))})", churned) if churned else 0
    if deleted:
        notes.append(f"{counted(deleted, 'churned account')} "
                     + ("is deleted in the CRM and is" if deleted == 1 else "are deleted in the CRM and are")
                     + " not in the backtest.")
    if days:
        needed = (days[0] - timedelta(days=90)).isoformat()
        for what, sql in (("tickets", "SELECT min(occurred_at) FROM activities WHERE kind = 'ticket'"),
                          ("emails and meetings", "SELECT min(occurred_at) FROM activities "
                                                  "WHERE kind IN ('email', 'meeting')"),
                          ("usage", "SELECT min(day) FROM usage_daily")):
            first = store.scalar(sql)
            if first and str(first)[:10] > needed:
                notes.append(f"The store's {what} start on {str(first)[:10]}: snapshots before "
                             f"{(date.fromisoformat(str(first)[:10]) + timedelta(days=90)).isoformat()} "
                             f"see less than 90 days of them.")
    return notes


# -- output --------------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_lines(bt: Backtest) -> list[str]:
    d = bt.discrimination
    plan = bt.plan
    first = plan.days()[0]
    lines = [f"Backtest {first} → {plan.until.date()}: {counted(bt.snapshots, 'snapshot')} every "
             f"{counted(round(plan.step.total_seconds() / 86400), 'day')}, {counted(bt.accounts, 'account')}; "
             f"churn within {counted(plan.horizon_days, 'day')}.",
             f"AUC {num(d.auc)} (± {num(d.auc_se)}) over {counted(d.observations, 'account-snapshot')} of "
             f"{counted(d.accounts, 'account')}, {counted(d.churn_events, 'churn event')} "
             f"({counted(d.positives, 'snapshot')} before a churn); churn risk AUC {num(d.churn_risk_auc)}.",
             "Churn rate by band: " + ", ".join(f"{b.band} {_pct(b.rate)} ({b.churned}/{b.observations})"
                                                for b in bt.bands)
             + ("" if bt.bands_ordered else "  ← NOT ordered red > yellow > green")]
    lines += comparison_lines(bt)
    lead = bt.lead
    ahead = "-" if lead.median_days is None else counted(round(lead.median_days), "day")
    lines.append(f"Lead time: {lead.red_before} of {counted(lead.churned_accounts, 'churned account')} "
                 f"{'was' if lead.red_before == 1 else 'were'} red before churning, median {ahead} ahead; red at "
                 + ", ".join(f"{counted(k, 'day')} before: {_pct(share)} (of {n})"
                             for k, share, n in lead.red_share_at))
    breached = [s for s in bt.distribution if s.breaches]
    guards = ", ".join(str(g) for g in plan.guardrails) or "none"
    lines.append(f"Guardrails ({guards}): {len(breached)} of {counted(len(bt.distribution), 'snapshot')} outside"
                 + (f", e.g. {breached[-1].day}: "
                    + ", ".join(f"{b} {_pct(breached[-1].shares.get(b, 0.0))}" for b in BANDS) if breached else ""))
    return lines + [f"Note: {n}" for n in bt.notes]


def comparison_lines(bt: Backtest) -> list[str]:
    """The red band's lift and recall, and what single signals reach on the same snapshots."""
    red = next((b for b in bt.bands if b.band == "red"), None)
    churned = sum(b.churned for b in bt.bands)
    lines = []
    if red is not None and churned:
        lift = "-" if bt.red_lift is None else f"{bt.red_lift:.1f}×"
        lines.append(f"Red band: lift {lift} (churn {_pct(red.rate)} in red against {_pct(bt.churn_rate)} "
                     f"overall), recall {_pct(bt.red_recall)} ({red.churned} of "
                     f"{counted(churned, 'snapshot')} before a churn in red).")
    if bt.baselines:
        lines.append("Single signals on the same snapshots, AUC: "
                     + ", ".join(f"{b.label} {num(b.auc)}" for b in bt.baselines)
                     + f" (score {num(bt.discrimination.auc)}, churn risk {num(bt.discrimination.churn_risk_auc)}).")
    return lines


def format_backtest(bt: Backtest, width: int = 120, *, more: Sequence[str] = ()) -> str:
    """The summary, `more` lines after it (the learned churn risk's comparison), then the tables."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print("\n".join([*summary_lines(bt), *more]), markup=False, highlight=False)
    rules = Table(title="Alert rules replayed", title_justify="left")
    for column in ("Rule", "Fires", "Precision", "Recall", "Median warning", "Per owner-month", "Peak"):
        rules.add_column(column)
    for r in bt.rules:
        rules.add_row(r.rule, str(r.fires), f"{_pct(r.precision)} ({r.fires_before_churn}/{r.fires_known})",
                      f"{_pct(r.recall)} ({r.churns_warned}/{r.churns})",
                      "-" if r.median_warning_days is None else counted(round(r.median_warning_days), "day"),
                      f"{r.fires_per_owner_month:.2f}", str(r.peak_owner_month))
    if bt.rules:
        console.print(rules)
    bands = Table(title="Band distribution over time", title_justify="left")
    for column in ("Snapshot", "Accounts", *BANDS, "Outside guardrails"):
        bands.add_column(column)
    for row in bt.distribution[:: max(1, len(bt.distribution) // 12)]:
        bands.add_row(row.day.isoformat(), str(row.accounts), *(_pct(row.shares.get(b, 0.0)) for b in BANDS),
                      ", ".join(row.breaches))
    console.print(bands)
    return buffer.getvalue().rstrip("\n")


def backtest_as_dict(bt: Backtest) -> dict[str, Any]:
    d = bt.discrimination
    return {
        "from": bt.plan.days()[0].isoformat(), "until": iso(bt.plan.until),
        "step_days": round(bt.plan.step.total_seconds() / 86400), "horizon_days": bt.plan.horizon_days,
        "snapshots": bt.snapshots, "accounts": bt.accounts,
        "auc": {"score": d.auc, "standard_error": d.auc_se, "churn_risk": d.churn_risk_auc,
                "observations": d.observations, "accounts": d.accounts, "churn_events": d.churn_events,
                "positive_observations": d.positives},
        "churn_rate_by_band": [{"band": b.band, "observations": b.observations, "churned": b.churned,
                                "rate": b.rate} for b in bt.bands],
        "bands_ordered": bt.bands_ordered,
        "lead_time": {"churned_accounts": bt.lead.churned_accounts, "red_before_churn": bt.lead.red_before,
                      "median_days": bt.lead.median_days,
                      "red_share_at": [{"days_before": k, "share": s, "accounts": n}
                                       for k, s, n in bt.lead.red_share_at],
                      "accounts": [{"account_id": a, "churned_on": c, "red_days_before": r}
                                   for a, c, r in bt.lead.days]},
        "rules": [{**asdict(r), "precision": r.precision, "recall": r.recall} for r in bt.rules],
        "guardrails": [str(g) for g in bt.plan.guardrails],
        "band_distribution": [{"day": s.day.isoformat(), "accounts": s.accounts, **dict(s.shares),
                               "outside": list(s.breaches)} for s in bt.distribution],
        "score_before_outcome": [{"days_before": k, "churned": c, "retained": r} for k, c, r in bt.curve],
        "notes": list(bt.notes),
        "red_band": {"lift": bt.red_lift, "recall": bt.red_recall, "churn_rate": bt.churn_rate},
        "baselines": {b.key: {"label": b.label, "auc": b.auc, "observations": b.observations}
                      for b in bt.baselines},
    }
