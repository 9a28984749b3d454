"""Scoring every account: raw measures (set-based SQL) → points → groups → overall, plus derived scores.

Deterministic given the store, the scorecard and `as_of`: the same inputs give the same scores, so history
can be replayed and a rule change previewed. Each score carries its coverage (share of weight that had data)
and an explanation naming the measures that moved it most, in words a CSM can read.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import chain, pairwise
from typing import Any, cast

from worker.scoring.churn_model import RENEWAL, LoadedChurnModel, drivers
from worker.scoring.measures import (
    ACTIVITY_KINDS,
    LIBRARY,
    Measure,
    account_scope,
    in_scope,
    newest_of_kind,
    query_rows,
    query_usage,
)
from worker.scoring.scorecard import LoadedScorecard, MeasureSpec, Scorecard
from worker.store import Store, changes, iso
from worker.store.changes import full_rescore_due, record_full_rescore, record_rescore_time

log = logging.getLogger(__name__)

_MISSING_POINTS: dict[str, float | None] = {"skip": None, "neutral": 50.0, "zero": 0.0}

Raw = dict[str, dict[str, float]]  # "group.measure" -> account -> raw value


@dataclass(slots=True)
class MeasureResult:  # 16 per account, so not frozen: a frozen dataclass's __init__ costs several times as much
    key: str
    raw: float | None
    points: float | None
    weight: float  # share of the overall score (0..1) this measure carried
    said: str | None = None  # the raw value in words, when known up front
    measure: Measure | None = None  # otherwise the measure that says it, when asked
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_reason(self) -> bool:
        if self.raw is None:
            return False
        return bool(self.said) if self.said is not None else self.measure is not None

    @property
    def reason(self) -> str | None:
        """The raw value in words; built on demand (a score names two or three of its measures)."""
        if self.said is not None or self.raw is None or self.measure is None:
            return self.said
        return self.measure.describe(self.raw, self.params)


@dataclass(frozen=True)
class _MeasurePlan:
    key: str
    qualified: str  # "group.measure", the key of `Raw`
    spec: MeasureSpec
    measure: Measure
    params: Mapping[str, Any]
    values: Mapping[str, float]  # this measure's raw values by account
    if_missing: float | None  # the points the missing-data policy gives


@dataclass(frozen=True)
class _GroupPlan:
    name: str
    weight: float
    measures_weight: float
    measures: tuple[_MeasurePlan, ...]


def _plan(scorecard: Scorecard, raw: Raw | None = None) -> tuple[_GroupPlan, ...]:
    """What `score_account` walks for every account, worked out once per scorecard (and raw values)."""
    return tuple(
        _GroupPlan(name, group.weight, sum(s.weight for s in group.measures.values()), tuple(
            _MeasurePlan(key, f"{name}.{key}", spec, LIBRARY[spec.measure or key], spec.params(),
                         (raw or {}).get(f"{name}.{key}", {}), _MISSING_POINTS[spec.missing or scorecard.missing])
            for key, spec in group.measures.items()))
        for name, group in scorecard.groups.items())


def _derived_plan(scorecard: Scorecard, raw: Raw) -> dict[str, list[tuple[MeasureSpec, Mapping[str, float] | None,
                                                                          float | None]]]:
    """Per derived score: each measure's spec, its raw values (None for `health`) and its missing points."""
    return {name: [(spec, None if (spec.measure or key) == "health" else raw.get(f"{name}.{key}", {}),
                    _MISSING_POINTS[spec.missing or scorecard.missing]) for key, spec in derived.measures.items()]
            for name, derived in scorecard.derived.items()}


@dataclass
class ScoringReport:
    scored: int = 0  # accounts scored in this run
    changed: int = 0  # of those, how many moved (score or band)
    bands: dict[str, int] = field(default_factory=dict)  # every scored account's band, after this run
    full: bool = True  # every account, or only the changed ones
    full_reason: str | None = None


def interpolate(points: list[tuple[float, float]], raw: float) -> float:
    """Piecewise linear between the file's [raw, score] pairs; flat beyond both ends."""
    if raw <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in pairwise(points):
        if raw <= x1:
            return y0 + (y1 - y0) * (raw - x0) / (x1 - x0)
    return points[-1][1]


def band_of(score: float, scorecard: Scorecard, coverage: float = 1.0) -> str:
    """The band of a score computed on `coverage` of the scorecard's weight (`Scorecard.band`: "unknown" when
    too little of it had data). A score a CSM pinned by hand is theirs: it has the band of its value."""
    return scorecard.band(score, coverage)


def _measure_raw(store: Store, scorecard: Scorecard, as_of: datetime, *, scoped: bool = False) -> Raw:
    """One query per distinct (measure, parameters) in the whole scorecard, however often it is used, one
    pass over `usage_daily` for all the usage measures together, and one over the activities of a kind for the
    measures that read the same ones (`query_rows`)."""
    jobs: dict[str, tuple[Measure, dict[str, Any]]] = {}
    signature_of: dict[str, str] = {}
    specs = [(f"{g}.{k}", k, s) for g, group in scorecard.groups.items() for k, s in group.measures.items()]
    specs += [(f"{d}.{k}", k, s) for d, derived in scorecard.derived.items() for k, s in derived.measures.items()]
    for qualified, key, spec in specs:
        name = spec.measure or key
        if name not in LIBRARY:
            continue
        params = spec.params()
        measure = LIBRARY[name]
        if "features" in measure.needs:
            params["features"] = tuple(scorecard.features)
        signature = json.dumps([name, sorted((k, str(v)) for k, v in params.items())])
        jobs.setdefault(signature, (measure, params))
        signature_of[qualified] = signature
    usage = [signature for signature, (measure, _) in jobs.items() if measure.over_usage_days]
    values = dict(zip(usage, query_usage(store, [jobs[s] for s in usage], as_of, scoped=scoped), strict=True))
    passes: dict[str, list[str]] = {}  # measures over the same rows, read in one pass when there are several
    for signature, (measure, _) in jobs.items():
        if measure.over_rows is not None and measure.row_expression is not None:
            passes.setdefault(measure.over_rows, []).append(signature)
    for together in (t for t in passes.values() if len(t) > 1):
        values |= dict(zip(together, query_rows(store, [jobs[s] for s in together], as_of, scoped=scoped),
                           strict=True))
    for signature, (measure, params) in jobs.items():
        if signature not in values:
            values[signature] = measure.query(store, params, as_of, scoped=scoped)
    return {qualified: values[signature] for qualified, signature in signature_of.items()}


def _points_for(spec: MeasureSpec, value: float | None, default_policy: str) -> float | None:
    """A raw value's points, or what the missing-data policy gives when there is none."""
    return _points_column(spec.points, [value], _MISSING_POINTS[spec.missing or default_policy])[0]


def _points_column(points: list[tuple[float, float]], raw: Sequence[float | None], if_missing: float | None
                   ) -> list[float | None]:
    """Each raw value's points, or what the missing-data policy gives where there is none: each distinct value
    interpolated once (most measures take a few dozen values over 100,000 accounts: counts, whole days)."""
    known: dict[float, float] = {}
    column: list[float | None] = []
    for value in raw:
        if value is None:
            column.append(if_missing)
        elif (found := known.get(value)) is not None:
            column.append(found)
        else:
            column.append(known.setdefault(value, interpolate(points, value)))
    return column


@dataclass(frozen=True)
class _Columns:
    """One scorecard's arithmetic for many accounts, one list per quantity, one entry per account (in the
    order scored): computed a measure at a time, which costs less than an account at a time (measured:
    BENCHMARKS.md, 'Figures behind the code')."""

    scores: list[float]  # overall, rounded as stored
    coverage: list[float]
    groups: dict[str, list[float | None]]
    measures: tuple[_MeasurePlan, ...]  # in the order of a score's results
    raw: list[list[float | None]]  # per measure
    points: list[list[float | None]]
    shares: list[list[float]]  # each measure's share of the final number (0 without points)


def _score_columns(accounts: Sequence[str], groups: tuple[_GroupPlan, ...]) -> _Columns:
    """Points → group scores → overall, coverage and each measure's share, for every account of `accounts`.

    Each sum adds the same terms in the same order as a weighted mean over one account's present values
    would (Python's `sum` from 0), so a score never moves by a rounding step because of how it was computed.
    Coverage is the share of the scorecard's weight whose measures had data: a value the missing-data policy
    filled in (neutral, zero) moves the score but is not data.
    """
    n = len(accounts)
    total_group_weight = sum(g.weight for g in groups)
    coverage, overall, overall_weight = [0.0] * n, [0.0] * n, [0.0] * n
    group_scores: dict[str, list[float | None]] = {}
    columns: list[tuple[_MeasurePlan, list[float | None], list[float | None], list[float], float]] = []
    for group in groups:
        live, total, with_data = [0.0] * n, [0.0] * n, [0.0] * n
        measured = []
        for m in group.measures:
            raw = [m.values.get(account) for account in accounts]
            points = _points_column(m.spec.points, raw, m.if_missing)
            w = m.spec.weight
            live = [s + w if p is not None else s for s, p in zip(live, points, strict=True)]
            total = [s + w * p if p is not None else s for s, p in zip(total, points, strict=True)]
            with_data = [s + w if v is not None else s for s, v in zip(with_data, raw, strict=True)]
            measured.append((m, raw, points))
        scores = [t / lw if lw != 0 else None for t, lw in zip(total, live, strict=True)]
        group_scores[group.name] = scores
        share, gw, mw = group.weight / total_group_weight, group.weight, group.measures_weight
        coverage = [c + share * d / mw for c, d in zip(coverage, with_data, strict=True)]
        overall = [o + gw * g if g is not None else o for o, g in zip(overall, scores, strict=True)]
        overall_weight = [o + gw if g is not None else o for o, g in zip(overall_weight, scores, strict=True)]
        columns += [(m, raw, points, live, gw) for m, raw, points in measured]
    return _Columns(
        scores=[round(t / w if w != 0 else 0.0, 2) for t, w in zip(overall, overall_weight, strict=True)],
        coverage=[round(c, 4) for c in coverage], groups=group_scores,
        measures=tuple(m for m, *_ in columns), raw=[raw for _, raw, *_ in columns],
        points=[points for _, _, points, *_ in columns],
        shares=[[m.spec.weight / lw * gw / ow if p is not None else 0.0
                 for p, lw, ow in zip(points, live, overall_weight, strict=True)]
                for m, _, points, live, gw in columns])


def _derived_columns(accounts: Sequence[str], measures: list[tuple[MeasureSpec, Mapping[str, float] | None,
                                                                   float | None]], health: list[float]
                     ) -> list[float | None]:
    """A derived score for every account of `accounts`: the same weighted points, `health` as an input."""
    n = len(accounts)
    total, weight = [0.0] * n, [0.0] * n
    for spec, values, if_missing in measures:
        raw: Sequence[float | None] = health if values is None else [values.get(account) for account in accounts]
        points = _points_column(spec.points, raw, if_missing)
        w = spec.weight
        total = [s + w * p if p is not None else s for s, p in zip(total, points, strict=True)]
        weight = [s + w if p is not None else s for s, p in zip(weight, points, strict=True)]
    return [round(t / w, 2) if w != 0 else None for t, w in zip(total, weight, strict=True)]


def score_account(account_id: str, raw: Raw, scorecard: Scorecard, plan: tuple[_GroupPlan, ...] | None = None
                  ) -> tuple[float, float, list[MeasureResult], dict[str, float | None]]:
    """The overall score, its coverage, per-measure results (with their share of the score) and groups, of
    one account (`_score_columns` for one)."""
    columns = _score_columns([account_id], plan if plan is not None else _plan(scorecard, raw))
    results = [MeasureResult(m.key, raw[0], points[0], shares[0], measure=m.measure, params=m.params)
               for m, raw, points, shares in zip(columns.measures, columns.raw, columns.points, columns.shares,
                                                 strict=True)]
    return (columns.scores[0], columns.coverage[0], results,
            {name: scores[0] for name, scores in columns.groups.items()})


def derived_score(scorecard: Scorecard, name: str, account_id: str, raw: Raw, health: float,
                  plan: dict[str, list[tuple[MeasureSpec, Mapping[str, float] | None, float | None]]] | None = None
                  ) -> float | None:
    """A derived score (churn risk, expansion readiness) of one account."""
    measures = (plan if plan is not None else _derived_plan(scorecard, raw)).get(name)
    return None if measures is None else _derived_columns([account_id], measures, [health])[0]


# A measure that may explain a score: its key, points, share of the score and its place among the results.
_Candidate = tuple[str, float, float, int]


def _explained(candidates: list[_Candidate], say: Callable[[int], str], missing: int, count: int, band: str,
               limit: int, falling: bool) -> str:
    if band == "green" and not falling:
        picked = sorted((c for c in candidates if c[1] >= 70), key=lambda c: (-c[2] * c[1], c[0]))[:limit]
    else:
        picked = sorted((c for c in candidates if c[1] < 60), key=lambda c: (-c[2] * (100 - c[1]), c[0]))[:limit]
    text = "; ".join(say(c[3]) for c in picked) or "No single measure stands out"
    if missing and missing * 2 >= count:
        text += f" (little data: {count - missing} of {count} measures)"
    return text


def explain(results: list[MeasureResult], band: str, limit: int, *, falling: bool = False) -> str:
    """The few measures that moved the score most: the biggest weighted shortfalls for red and yellow
    accounts (and for a green one that is falling fast), the biggest weighted strengths for green ones."""
    candidates = [(r.key, r.points, r.weight, n) for n, r in enumerate(results)
                  if r.points is not None and r.has_reason]
    return _explained(candidates, lambda n: results[n].reason or "", sum(r.points is None for r in results),
                      len(results), band, limit, falling)


def _explain_row(measures: Sequence[_MeasurePlan], raw: Sequence[float | None], points: Sequence[float | None],
                 shares: Sequence[float], band: str, limit: int, falling: bool) -> str:
    """`explain` for one account's results given as columns' rows, reasons put into words only for those
    it names."""
    candidates = [(m.key, p, share, n) for n, (m, value, p, share) in enumerate(zip(measures, raw, points, shares,
                                                                                     strict=True))
                  if p is not None and value is not None]

    def say(n: int) -> str:
        return measures[n].measure.describe(cast(float, raw[n]), measures[n].params)

    missing = sum(p is None for p in points)
    return _explained(candidates, say, missing, len(measures), band, limit, falling)


def _override(account: Mapping[str, object], as_of: datetime) -> tuple[float, str] | None:
    value = account.get("override_value")
    if value is None:
        return None
    if not 0 <= float(str(value)) <= 100:
        log.warning("override of %s ignored: %s is outside 0..100", account.get("id"), value)
        return None
    until = account.get("override_until")
    if isinstance(until, str) and until and date.fromisoformat(until[:10]) < as_of.date():
        return None
    reason = account.get("override_reason") or "no reason given"
    suffix = f" until {until}" if until else ""
    return float(str(value)), f"Pinned by CSM at {round(float(str(value)))}{suffix}: {reason}"


def trend_baselines(store: Store, scorecard: Scorecard, as_of: datetime, *, scoped: bool = False
                    ) -> dict[str, float]:
    """Per account, the oldest score of an earlier day within the trend window: one query for all."""
    rows = store.conn.execute(in_scope("""
        SELECT account_id, score FROM (
            SELECT account_id, score, row_number() OVER (PARTITION BY account_id ORDER BY day) AS n
            FROM score_history WHERE day >= ? AND day < ? AND score IS NOT NULL AND SCOPE(account_id))
        WHERE n = 1""", scoped=scoped), ((as_of - scorecard.trend.window).date().isoformat(), as_of.date().isoformat()))
    return {str(account_id): float(score) for account_id, score in rows}


def trend(score: float, baseline: float | None, scorecard: Scorecard) -> tuple[str, float | None]:
    """The change against the baseline, with an arrow ("new" until an earlier day's score exists)."""
    if baseline is None:
        return "new", None
    delta = round(score - baseline, 1)
    days = round(scorecard.trend.window.total_seconds() / 86400)
    if delta >= scorecard.trend.flat:
        return f"↑ +{delta:g} ({days}d)", delta
    if delta <= -scorecard.trend.flat:
        return f"↓ {delta:g} ({days}d)", delta
    return f"→ {delta:+g} ({days}d)", delta


_LEVELS = ("Low", "Medium", "High")


def confidence(coverage: float, newest_age_days: float | None, scorecard: Scorecard) -> str:
    """How far to trust the score, in words for the Salesforce field (Text 40): how much of the scorecard had
    data, one level lower when the newest data is older than `stale_after`. The age is said in buckets, so
    the field changes when the data ages past a boundary, not every day."""
    level = 2 if coverage >= scorecard.confidence.high else 1 if coverage >= scorecard.confidence.medium else 0
    stale = scorecard.confidence.stale_after.total_seconds() / 86400
    if newest_age_days is None:
        return "Low, no activity data"
    if newest_age_days > stale:
        return f"{_LEVELS[max(0, level - 1)]}, no data in {round(stale)}+ days"
    freshness = "fresh data" if newest_age_days <= 7 else f"data 8-{round(stale)} days old"
    return f"{_LEVELS[level]}, {freshness}"


def newest_data_ages(store: Store, as_of: datetime, *, scoped: bool = False) -> dict[str, float]:
    """Per account, whole days since its newest activity or usage day known at `as_of`: one query, each
    kind's newest row found by walking its index backwards (a `max()` read every activity row of the store)."""
    newest_activity = ", ".join(f"coalesce({newest_of_kind(kind)}, '')" for kind in ACTIVITY_KINDS)
    rows = store.conn.execute(in_scope(f"""
        SELECT acc.id, julianday(:as_of_day) - julianday(max(
            coalesce(date(max({newest_activity})), ''),
            coalesce((SELECT max(u.day) FROM usage_daily u WHERE u.account_id = acc.id AND u.day <= :as_of_day), '')))
        FROM accounts acc WHERE acc.is_deleted = 0 AND SCOPE(acc.id)""", scoped=scoped),
        {"as_of": iso(as_of), "as_of_day": as_of.date().isoformat()})
    return {str(account_id): float(age) for account_id, age in rows if age is not None}


_ACCOUNTS = """
    SELECT a.id, a.type, a.industry,
           coalesce(o.value, a.override_value) AS override_value,
           CASE WHEN o.account_id IS NOT NULL THEN o.reason ELSE a.override_reason END AS override_reason,
           CASE WHEN o.account_id IS NOT NULL THEN o.until ELSE a.override_until END AS override_until,
           (SELECT p.amount FROM opportunities p WHERE p.account_id = a.id AND p.is_deleted = 0
              AND (p.is_closed = 0 OR p.is_won = 1) ORDER BY p.is_closed, p.close_date DESC LIMIT 1) AS arr
    FROM accounts a LEFT JOIN overrides o ON o.account_id = a.id
    WHERE a.is_deleted = 0 AND SCOPE(a.id) ORDER BY a.id"""


def live_accounts(store: Store, *, scoped: bool = False) -> list[dict[str, Any]]:
    """The live accounts with what scoring needs of them: segment facts, the override in force, ARR."""
    return store.query(in_scope(_ACCOUNTS, scoped=scoped))


def rules_digest(loaded: LoadedScorecard, churn_model: LoadedChurnModel | None) -> str:
    """What the scores were made of: the scorecard's digest, and the churn model's when one is in force (a new
    model re-scores every account, as a new scorecard does)."""
    return loaded.digest if churn_model is None else f"{loaded.digest}+{churn_model.digest}"


def score_changed_accounts(store: Store, loaded: LoadedScorecard, as_of: datetime, *,
                           churn_model: LoadedChurnModel | None = None) -> ScoringReport:
    """The cycle's scoring: every account when a whole re-score is due (the first of a day, a new
    scorecard or churn model), otherwise only the accounts whose data changed since they were scored, and
    nothing at all in a quiet cycle. Both give the same scores: see `worker.store.changes`."""
    digest = rules_digest(loaded, churn_model)
    why = full_rescore_due(store, digest, as_of)
    if why is not None:
        log.info("scoring every account: %s", why)
        report = score_accounts(store, loaded, as_of, churn_model=churn_model)
        report.full_reason = why
        return report
    marked = changes.pending(store, changes.SCORE, as_of)
    if not marked.marks:
        with store.transaction():
            record_rescore_time(store, digest, as_of)
        return ScoringReport(full=False, bands=_bands(store))
    return score_accounts(store, loaded, as_of, only=marked, churn_model=churn_model)


def _bands(store: Store) -> dict[str, int]:
    return {str(band): int(n) for band, n in store.conn.execute("SELECT band, count(*) FROM scores GROUP BY band")}


@dataclass
class _Scored:
    """What scoring some accounts produced, before it is stored (it may come from another process)."""

    score_rows: list[dict[str, Any]] = field(default_factory=list)
    history_rows: list[dict[str, Any]] = field(default_factory=list)
    changed: int = 0


def _score_some(store: Store, loaded: LoadedScorecard, as_of: datetime, accounts: Collection[str] | None,
                churn_model: LoadedChurnModel | None = None) -> _Scored:
    """Score every live account, or those of `accounts` (read through `temp.scope`), without storing."""
    base = loaded.scorecard
    with account_scope(store, accounts) as scoped:
        raw = _measure_raw(store, base, as_of, scoped=scoped)
        renewals = LIBRARY[RENEWAL].query(store, {}, as_of, scoped=scoped) if churn_model is not None else {}
        baselines = trend_baselines(store, base, as_of, scoped=scoped)
        ages = newest_data_ages(store, as_of, scoped=scoped)
        previous = {r["account_id"]: r for r in store.query(
            in_scope("SELECT account_id, score, band FROM scores WHERE SCOPE(account_id)", scoped=scoped))}
        live = live_accounts(store, scoped=scoped)
    by_segment = {None: base} | {segment.name: base.for_segment(segment) for segment in base.segments}
    members: dict[str | None, list[str]] = {name: [] for name in by_segment}
    places: list[tuple[str | None, int]] = []  # each live account's segment and place among its members
    for account in live:
        segment = base.segment_of(account)
        name = segment.name if segment else None
        places.append((name, len(members[name])))
        members[name].append(account["id"])
    columns = {name: _score_columns(ids, _plan(by_segment[name], raw)) for name, ids in members.items()}
    overrides = [_override(account, as_of) for account in live]
    health = {name: list(c.scores) for name, c in columns.items()}
    for (name, index), override in zip(places, overrides, strict=True):
        if override:
            health[name][index] = override[0]
    derived = {name: {d: _derived_columns(members[name], measures, health[name])
                      for d, measures in _derived_plan(by_segment[name], raw).items()} for name in columns}
    # Per account, its measures' raw values, points and shares (one tuple each), and the measures' keys in the
    # order of the stored JSON (sorted; for a key used twice, its last result).
    rows = {name: (list(zip(*c.raw, strict=True)), list(zip(*c.points, strict=True)),
                   list(zip(*c.shares, strict=True)))
            for name, c in columns.items() if members[name]}
    json_order = {name: sorted({m.key: n for n, m in enumerate(c.measures)}.items()) for name, c in columns.items()}
    scored_at, day = iso(as_of), as_of.date().isoformat()
    learned = _LearnedRisk(churn_model, raw, renewals, _plan(base)) if churn_model is not None else None
    digest = rules_digest(loaded, churn_model)
    scored = _Scored()
    for account, (name, index), override in zip(live, places, overrides, strict=True):
        account_id = account["id"]
        scorecard, found = by_segment[name], columns[name]
        raw_row, points_row, shares_row = (r[index] for r in rows[name])
        computed, coverage = found.scores[index], found.coverage[index]
        score = health[name][index]
        band = band_of(score, scorecard, 1.0 if override else coverage)
        trend_text, delta = trend(score, baselines.get(account_id), scorecard)
        falling = delta is not None and delta <= -3 * scorecard.trend.flat
        reason = _explain_row(found.measures, raw_row, points_row, shares_row, band, scorecard.max_reasons, falling)
        if override:
            reason = f"{override[1]} (computed {round(computed)}: {reason})"
        churn, expansion = (derived[name][d][index] if d in derived[name] else None
                            for d in ("churn_risk", "expansion_readiness"))
        churn_drivers = None
        if learned is not None:
            churn, churn_drivers = learned.of(account_id)
        measures_json = json.dumps({key: {"points": points_row[n], "raw": raw_row[n], "weight": round(shares_row[n], 4)}
                                    for key, n in json_order[name]})
        scored.score_rows.append({
            "account_id": account_id, "score": score, "band": band, "computed_score": computed,
            "trend": trend_text, "trend_delta": delta, "reason": reason, "coverage": coverage,
            "churn_risk": churn, "expansion_readiness": expansion,
            "confidence": confidence(coverage, ages.get(account_id), scorecard),
            "overridden": int(bool(override)),
            "measures": measures_json, "segment": name, "churn_drivers": churn_drivers,
            "scorecard_hash": digest, "scored_at": scored_at})
        scored.history_rows.append({"account_id": account_id, "day": day, "score": score,
                                    "band": band, "churn_risk": churn, "expansion_readiness": expansion,
                                    "coverage": coverage, "scored_at": scored_at})
        before = previous.get(account_id)
        if before is None or before["score"] != score or before["band"] != band:
            scored.changed += 1
    return scored


class _LearnedRisk:
    """Churn risk from the learned model (`worker.scoring.churn_model`) in place of the scorecard's rule: the
    model's probability, and the terms that drive it for the account, as the JSON `scores.churn_drivers` keeps."""

    def __init__(self, loaded: LoadedChurnModel, raw: Raw, renewals: Mapping[str, float],
                 plan: tuple[_GroupPlan, ...]) -> None:
        self.model = loaded.model
        self.columns = {f.measure: renewals if f.measure == RENEWAL else raw.get(f.measure, {})
                        for f in self.model.features}
        self.describe = {m.qualified: (m.measure, m.params) for group in plan for m in group.measures}

    def of(self, account_id: str) -> tuple[float, str]:
        values = {measure: column.get(account_id) for measure, column in self.columns.items()}
        found = drivers(self.model, values, self.describe)
        return self.model.risk(values), json.dumps([d.as_json() for d in found])


def _score_part(path: str, loaded: LoadedScorecard, as_of: datetime, accounts: list[str],
                churn_model: LoadedChurnModel | None = None) -> _Scored:
    """`_score_some` on a read-only connection of its own: a pool process's part, or this process's."""
    with Store.open_readonly(path) as store:
        return _score_some(store, loaded, as_of, accounts, churn_model)


# A whole re-score splits the accounts over processes (one per core, at most this many) when there are enough
# accounts to pay for starting them: each part's queries seek only its accounts, so both the SQL and the
# per-account arithmetic divide between the cores.
MAX_PROCESSES = 4
PARALLEL_FROM_ACCOUNTS = 5_000


def scoring_processes() -> int:
    return max(1, min(MAX_PROCESSES, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def _scored_parts(store: Store, loaded: LoadedScorecard, as_of: datetime, accounts: Collection[str] | None,
                  processes: int, parallel_from: int, churn_model: LoadedChurnModel | None
                  ) -> Generator[_Scored, None, None]:
    """The scores of `accounts` (None: every live account) in parts, as they are ready: this process's own
    part first, while the pool's are still being computed, so that it can be stored meanwhile."""
    ids = [] if accounts is not None else [
        str(a) for (a,) in store.conn.execute("SELECT id FROM accounts WHERE is_deleted = 0 ORDER BY id")]
    if accounts is not None or processes < 2 or len(ids) < max(parallel_from, 2) or not store.on_disk:
        yield _score_some(store, loaded, as_of, accounts, churn_model)
        return
    size = -(-len(ids) // processes)
    parts = [ids[n:n + size] for n in range(0, len(ids), size)]
    # 'spawn', not 'fork': the worker runs threads (health server, scheduler) that a fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    # This process scores the first part itself: one process fewer to start, one part fewer to pickle back
    # (a part's rows make a large pickle, slow to load here).
    with ProcessPoolExecutor(max_workers=len(parts) - 1, mp_context=context) as pool:
        others = [pool.submit(_score_part, str(store.path), loaded, as_of, part, churn_model)
                  for part in parts[1:]]
        # Read, like the pool's processes, through a reader of its own: its small page cache scans a part in
        # less CPU than the writer's 64 MB one, and this part is the one the others wait for (measured:
        # BENCHMARKS.md, 'Figures behind the code').
        yield _score_part(str(store.path), loaded, as_of, parts[0], churn_model)
        for future in others:
            yield future.result()


def score_accounts(store: Store, loaded: LoadedScorecard, as_of: datetime, *,
                   only: changes.ChangeSet | None = None, processes: int | None = None,
                   parallel_from: int = PARALLEL_FROM_ACCOUNTS,
                   churn_model: LoadedChurnModel | None = None) -> ScoringReport:
    """Score every live account, or only the accounts `only` names, in one transaction that keeps one
    history row per account per day and clears the change marks it answered.

    Set-based: one query per distinct measure, one for the accounts, one for the trend baselines; the
    per-account work in Python is arithmetic only. With `only`, each query seeks just those accounts; a
    whole re-score of many accounts runs in `processes` parts (default: one per core), this process storing
    its own part while the others are still computing theirs (they read the last committed state). With
    `churn_model`, churn risk is the learned model's probability instead of the scorecard's rule.
    """
    answered = only if only is not None else changes.pending(store, changes.SCORE, as_of)
    parts = _scored_parts(store, loaded, as_of, only.accounts if only is not None else None,
                          scoring_processes() if processes is None else processes, parallel_from, churn_model)
    report = ScoringReport(full=only is None)
    bands: Counter[str] = Counter()
    try:
        first = next(parts)  # computed before the write lock is taken
        scored: set[str] = set()
        with store.transaction() as conn:
            for part in chain([first], parts):
                store.upsert("scores", part.score_rows, ("account_id",))
                store.upsert("score_history", part.history_rows, ("account_id", "day"))
                scored.update(row["account_id"] for row in part.score_rows)
                bands.update(row["band"] for row in part.score_rows)
                report.changed += part.changed
            # The accounts no longer live: of those marked, or after a whole re-score of every one scored before.
            stale = answered.accounts if only is not None else {
                str(a) for (a,) in conn.execute("SELECT account_id FROM scores")}
            conn.executemany("DELETE FROM scores WHERE account_id = ?", [(a,) for a in sorted(stale - scored)])
            changes.clear(conn, answered)  # the rows that changed are marked for evaluation and write-back
            if only is None:
                record_full_rescore(store, rules_digest(loaded, churn_model), as_of)
            else:
                record_rescore_time(store, rules_digest(loaded, churn_model), as_of)
    finally:
        parts.close()
    report.scored = len(scored)
    # Every account's band: after a whole re-score, those just stored.
    report.bands = dict(bands) if only is None else _bands(store)
    return report
