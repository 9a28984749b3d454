"""Scoring every account: raw measures (set-based SQL) → points → groups → overall, plus derived scores.

Deterministic given the store, the scorecard and `as_of`: the same inputs give the same scores, so history
can be replayed and a rule change previewed. Each score carries its coverage (share of weight that had data)
and an explanation naming the measures that moved it most, in words a CSM can read.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import pairwise
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from worker.scoring.churn_model import RENEWAL, LoadedChurnModel, drivers
from worker.scoring.measures import (
    ACTIVITY_KINDS,
    LIBRARY,
    REPLY_MEASURES,
    Measure,
    account_scope,
    in_scope,
    newest_of_kind,
    query_replies,
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
    pass over `usage_daily` for all the usage measures together, one over the activities of a kind for the
    measures that read the same ones (`query_rows`), and one read of the inbound emails' first replies for the
    measures of them (`query_replies`)."""
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
    replies = [signature for signature, (measure, _) in jobs.items() if measure.name in REPLY_MEASURES]
    if len(replies) > 1:
        values |= dict(zip(replies, query_replies(store, [jobs[s] for s in replies], as_of, scoped=scoped),
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
    known: dict[float | None, float | None] = {value: interpolate(points, value)
                                               for value in dict.fromkeys(raw) if value is not None}
    known[None] = if_missing
    return list(map(known.__getitem__, raw))


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


def _column(values: Sequence[float | None]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """A column of raw values or points as an array (None as NaN), and where it has a value. Neither holds a
    NaN of its own: SQLite stores NaN as NULL, and points are interpolated between a scorecard's finite ones."""
    array = np.array(values, dtype=np.float64)
    return array, ~np.isnan(array)


def _score_columns(accounts: Sequence[str], groups: tuple[_GroupPlan, ...]) -> _Columns:
    """Points → group scores → overall, coverage and each measure's share, for every account of `accounts`.

    Each sum adds the same terms in the same order as a weighted mean over one account's present values
    would (Python's `sum` from 0), so a score never moves by a rounding step because of how it was computed;
    numpy's arithmetic on an array is the same IEEE arithmetic as Python's on each float (no term is fused or
    reordered), a term absent from a sum is left out by `where`, never added as 0 (which would turn -0.0 into
    0.0), and the rounding is Python's `round`. Coverage is the share of the scorecard's weight whose measures
    had data: a value the missing-data policy filled in (neutral, zero) moves the score but is not data.
    """
    n = len(accounts)
    total_group_weight = sum(g.weight for g in groups)
    coverage, overall, overall_weight = np.zeros(n), np.zeros(n), np.zeros(n)
    group_scores: dict[str, list[float | None]] = {}
    columns: list[tuple[_MeasurePlan, list[float | None], list[float | None], npt.NDArray[np.bool_],
                        npt.NDArray[np.float64], float]] = []
    with np.errstate(divide="ignore", invalid="ignore"):  # a group without points: its score is None
        for group in groups:
            live, total, with_data = np.zeros(n), np.zeros(n), np.zeros(n)
            measured = []
            for m in group.measures:
                raw = list(map(m.values.get, accounts))
                points = _points_column(m.spec.points, raw, m.if_missing)
                values, has = _column(points)
                w = m.spec.weight
                live = np.where(has, live + w, live)
                total = np.where(has, total + w * values, total)
                with_data = np.where(_column(raw)[1], with_data + w, with_data)
                measured.append((m, raw, points, has))
            known = live != 0
            scores = total / live
            group_scores[group.name] = [g if k else None for g, k in zip(scores.tolist(), known.tolist(),
                                                                          strict=True)]
            share, gw, mw = group.weight / total_group_weight, group.weight, group.measures_weight
            coverage = coverage + share * with_data / mw
            overall = np.where(known, overall + gw * scores, overall)
            overall_weight = np.where(known, overall_weight + gw, overall_weight)
            columns += [(m, raw, points, has, live, gw) for m, raw, points, has in measured]
        final = np.where(overall_weight != 0, overall / overall_weight, 0.0)
        shares = [np.where(has, m.spec.weight / live * gw / overall_weight, 0.0).tolist()
                  for m, _, _, has, live, gw in columns]
    return _Columns(
        scores=[round(t, 2) for t in final.tolist()], coverage=[round(c, 4) for c in coverage.tolist()],
        groups=group_scores, measures=tuple(m for m, *_ in columns), raw=[raw for _, raw, *_ in columns],
        points=[points for _, _, points, *_ in columns], shares=shares)


def _derived_columns(accounts: Sequence[str], measures: list[tuple[MeasureSpec, Mapping[str, float] | None,
                                                                   float | None]], health: list[float]
                     ) -> list[float | None]:
    """A derived score for every account of `accounts`: the same weighted points, `health` as an input (the
    arithmetic as in `_score_columns`)."""
    n = len(accounts)
    total, weight = np.zeros(n), np.zeros(n)
    for spec, values, if_missing in measures:
        raw: Sequence[float | None] = health if values is None else list(map(values.get, accounts))
        points, has = _column(_points_column(spec.points, raw, if_missing))
        w = spec.weight
        total = np.where(has, total + w * points, total)
        weight = np.where(has, weight + w, weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        derived = total / weight
    return [round(d, 2) if w != 0 else None for d, w in zip(derived.tolist(), weight.tolist(), strict=True)]


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


def _most_telling(keys: Sequence[str], present: Sequence[object | None], points: Sequence[float | None],
                  shares: Sequence[float], band: str, limit: int, falling: bool) -> list[int]:
    """The places of the few measures that moved the score most, of those with points and a reason (`present`
    not None): the biggest weighted strengths of a green score (not falling fast), else the biggest weighted
    shortfalls. Ties go to the key, then to the earlier measure."""
    if band == "green" and not falling:
        ranked = sorted((-s * p, keys[n], n) for n, (v, p, s) in enumerate(zip(present, points, shares, strict=True))
                        if p is not None and v is not None and p >= 70)
    else:
        ranked = sorted((-s * (100 - p), keys[n], n)
                        for n, (v, p, s) in enumerate(zip(present, points, shares, strict=True))
                        if p is not None and v is not None and p < 60)
    return [n for *_, n in ranked[:limit]]


def _reason_text(picked: Sequence[int], say: Callable[[int], str], missing: int, count: int) -> str:
    text = "; ".join(say(n) for n in picked) or "No single measure stands out"
    if missing and missing * 2 >= count:
        text += f" (little data: {count - missing} of {count} measures)"
    return text


def explain(results: list[MeasureResult], band: str, limit: int, *, falling: bool = False) -> str:
    """The few measures that moved the score most: the biggest weighted shortfalls for red and yellow
    accounts (and for a green one that is falling fast), the biggest weighted strengths for green ones."""
    picked = _most_telling([r.key for r in results], [r.raw if r.has_reason else None for r in results],
                           [r.points for r in results], [r.weight for r in results], band, limit, falling)
    return _reason_text(picked, lambda n: results[n].reason or "", sum(r.points is None for r in results),
                        len(results))


class _Explainer:
    """`explain` for the accounts of one scorecard, each given as its columns' rows: reasons are put into
    words only for the measures named, and each measure's words for a raw value only once (counts and whole
    days repeat across accounts)."""

    def __init__(self, measures: Sequence[_MeasurePlan], limit: int) -> None:
        self.measures = measures
        self.keys = [m.key for m in measures]
        self.limit = limit
        self.said: list[dict[float, str]] = [{} for _ in measures]

    def reasons(self, found: _Columns, strengths: Sequence[bool]) -> list[str]:
        """Each account's reason (in the order scored), `_most_telling` a measure at a time: per measure, each
        account's candidate as the tuple it is ranked by (or None), built for strengths where the account's
        reason names strengths (`strengths`: green and not falling fast) and for shortfalls elsewhere; then
        per account its candidates sorted, in C."""
        candidates = [
            [None if p is None or v is None else ((-s * p, key, n) if p >= 70 else None) if strong
             else ((-s * (100 - p), key, n) if p < 60 else None)
             for v, p, s, strong in zip(raw, points, shares, strengths, strict=True)]
            for n, (key, raw, points, shares) in enumerate(zip(self.keys, found.raw, found.points, found.shares,
                                                              strict=True))]
        count, limit, say = len(self.measures), self.limit, self._say
        said = []
        for index, (ranked, points) in enumerate(zip(zip(*candidates, strict=True), zip(*found.points, strict=True),
                                                     strict=True)):
            picked = [n for *_, n in sorted(filter(None, ranked))[:limit]]
            said.append(_reason_text(picked, lambda n: say(n, cast(float, found.raw[n][index])),  # noqa: B023
                                     points.count(None), count))
        return said

    def _say(self, n: int, value: float) -> str:
        if value and (said := self.said[n].get(value)) is not None:  # 0.0 and -0.0 are equal keys: said apart
            return said
        said = self.measures[n].measure.describe(value, self.measures[n].params)
        if value:
            self.said[n][value] = said
        return said


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


# The stored columns of a score and of its day's history row, in the order `_Scored` keeps a score's values.
_SCORE_COLUMNS = ("account_id", "score", "band", "computed_score", "trend", "trend_delta", "reason", "coverage",
                  "churn_risk", "expansion_readiness", "confidence", "overridden", "measures", "segment",
                  "churn_drivers", "scorecard_hash", "scored_at")
_HISTORY_COLUMNS = ("account_id", "day", "score", "band", "churn_risk", "expansion_readiness", "coverage",
                    "scored_at")
_HISTORY_OF_SCORE = (0, None, 1, 2, 8, 9, 7, 16)  # each history column's place in a score's values (None: the day)


def _upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


_STORE_SCORES = _upsert("scores", _SCORE_COLUMNS, ("account_id",))
_STORE_HISTORY = _upsert("score_history", _HISTORY_COLUMNS, ("account_id", "day"))


@dataclass
class _Scored:
    """What scoring some accounts produced, before it is stored (it may come from another process): each
    score's values as a tuple in the order of `_SCORE_COLUMNS` (a tuple pickles and binds for less than a dict
    per account), and the day of its history row."""

    day: str = ""
    score_rows: list[tuple[Any, ...]] = field(default_factory=list)
    changed: int = 0

    def history_rows(self) -> Iterator[tuple[Any, ...]]:
        """Each score's row of `score_history` (made from the score, not carried beside it)."""
        day = self.day
        return ((row[0], day, row[1], row[2], row[8], row[9], row[7], row[16]) for row in self.score_rows)


def _json_numbers(values: Sequence[float | None]) -> list[str]:
    """Each value of a column of floats (or None) as `json.dumps` writes it. A column of few distinct values
    (counts, points of whole days, weights) is written once per value; any other in one call to the encoder (in
    C), split at its separators, which a number never holds. 0.0 and -0.0 are equal keys but not the same
    text: a column with a -0.0 is written whole."""
    if not values:
        return []
    distinct = dict.fromkeys(values)
    if len(distinct) * 3 > len(values) or (0.0 in distinct and any(
            math.copysign(1.0, v) < 0 for v in values if v == 0.0 and v is not None)):
        return _json_split(values)
    said = dict(zip(distinct, _json_split(list(distinct)), strict=True))
    return list(map(said.__getitem__, values))


def _json_split(values: Sequence[float | None]) -> list[str]:
    said = json.dumps(list(values))[1:-1].split(", ")
    return said if len(said) == len(values) else [json.dumps(v) for v in values]


def _measures_json(columns: _Columns, order: Sequence[tuple[str, int]]) -> list[str]:
    """Per account (in the order scored), the JSON `scores.measures` keeps, byte for byte what `json.dumps`
    writes for `{key: {"points": .., "raw": .., "weight": ..}}` in `order`: the keys' text written once, each
    measure's numbers a column at a time, an account's text one `%` format of them (a dict and a `json.dumps`
    per account were a sixth of a whole re-score's Python)."""
    template = "{" + ", ".join(json.dumps(key).replace("%", "%%") + ': {"points": %s, "raw": %s, "weight": %s}'
                               for key, _ in order) + "}"
    said: list[list[str]] = []
    for _, n in order:
        weights = {share: round(share, 4) for share in dict.fromkeys(columns.shares[n])}  # never -0.0
        said += [_json_numbers(columns.points[n]), _json_numbers(columns.raw[n]),
                 _json_numbers(list(map(weights.__getitem__, columns.shares[n])))]
    if not said:
        return [template] * len(columns.scores)
    return [template % row for row in zip(*said, strict=True)]


def _score_some(store: Store, loaded: LoadedScorecard, as_of: datetime, accounts: Collection[str] | None,
                churn_model: LoadedChurnModel | None = None) -> _Scored:
    """Score every live account, or those of `accounts` (read through `temp.scope`), without storing."""
    base = loaded.scorecard
    with account_scope(store, accounts) as scoped:
        raw = _measure_raw(store, base, as_of, scoped=scoped)
        renewals = LIBRARY[RENEWAL].query(store, {}, as_of, scoped=scoped) if churn_model is not None else {}
        baselines = trend_baselines(store, base, as_of, scoped=scoped)
        ages = newest_data_ages(store, as_of, scoped=scoped)
        previous = {str(a): (score, band) for a, score, band in store.conn.execute(
            in_scope("SELECT account_id, score, band FROM scores WHERE SCOPE(account_id)", scoped=scoped))}
        live = live_accounts(store, scoped=scoped)
    by_segment = {None: base} | {segment.name: base.for_segment(segment) for segment in base.segments}
    members: dict[str | None, list[str]] = {name: [] for name in by_segment}
    places: list[tuple[str | None, int]] = []  # each live account's segment and place among its members
    for account in live:
        segment = base.segment_of(account) if base.segments else None
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
    # Each account's band and trend, then per scorecard its accounts' reasons and JSON of their measures (keys
    # sorted; for a key used twice, its last result), a column at a time.
    bands: list[str] = []
    trends: list[tuple[str, float | None]] = []
    strengths = {name: [False] * len(ids) for name, ids in members.items()}
    for account, (name, index), override in zip(live, places, overrides, strict=True):
        scorecard = by_segment[name]
        score = health[name][index]
        bands.append(band := band_of(score, scorecard, 1.0 if override else columns[name].coverage[index]))
        trends.append(moved := trend(score, baselines.get(account["id"]), scorecard))
        strengths[name][index] = band == "green" and not (moved[1] is not None
                                                          and moved[1] <= -3 * scorecard.trend.flat)
    reasons = {name: _Explainer(c.measures, by_segment[name].max_reasons).reasons(c, strengths[name])
               for name, c in columns.items() if members[name]}
    jsons = {name: _measures_json(c, sorted({m.key: n for n, m in enumerate(c.measures)}.items()))
             for name, c in columns.items() if members[name]}
    scored_at = iso(as_of)
    learned = _LearnedRisk(churn_model, raw, renewals, _plan(base)) if churn_model is not None else None
    digest = rules_digest(loaded, churn_model)
    trust: dict[tuple[float, float | None, str | None], str] = {}  # confidence, by coverage, age and segment
    scored = _Scored(day=as_of.date().isoformat())
    add = scored.score_rows.append
    for account, (name, index), override, band, (trend_text, delta) in zip(live, places, overrides, bands, trends,
                                                                           strict=True):
        account_id = account["id"]
        scorecard, found = by_segment[name], columns[name]
        computed, coverage = found.scores[index], found.coverage[index]
        score = health[name][index]
        reason = reasons[name][index]
        if override:
            reason = f"{override[1]} (computed {round(computed)}: {reason})"
        churn, expansion = (derived[name][d][index] if d in derived[name] else None
                            for d in ("churn_risk", "expansion_readiness"))
        churn_drivers = None
        if learned is not None:
            churn, churn_drivers = learned.of(account_id)
        age = ages.get(account_id)
        if (said := trust.get((coverage, age, name))) is None:
            said = trust[coverage, age, name] = confidence(coverage, age, scorecard)
        add((account_id, score, band, computed, trend_text, delta, reason, coverage, churn, expansion, said,
             int(bool(override)), jsons[name][index], name, churn_drivers, digest, scored_at))
        before = previous.get(account_id)
        if before is None or before[0] != score or before[1] != band:
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
# The accounts go out in chunks, each a share of those left (guided self-scheduling), so that the processes share
# the work as it goes, none waiting on another at the end (an org's oldest accounts, the first ids, have the
# longest histories), and a process holds one chunk's scores at a time, whatever the org's size.
MAX_CHUNK_ACCOUNTS = 10_000
MIN_CHUNK_ACCOUNTS = 250


def scoring_processes() -> int:
    return max(1, min(MAX_PROCESSES, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


class _Chunks:
    """The accounts to score, handed out from the front: each chunk a share of what is left, large while much
    is, small at the end, where one process may be waiting for the others."""

    def __init__(self, ids: list[str], processes: int) -> None:
        self.ids, self.processes, self.start = ids, processes, 0

    def next(self) -> list[str] | None:
        left = len(self.ids) - self.start
        if left <= 0:
            return None
        size = max(MIN_CHUNK_ACCOUNTS, min(MAX_CHUNK_ACCOUNTS, -(-left // (2 * self.processes))))
        chunk = self.ids[self.start:self.start + size]
        self.start += len(chunk)
        return chunk


def _scored_parts(store: Store, loaded: LoadedScorecard, as_of: datetime, accounts: Collection[str] | None,
                  processes: int, parallel_from: int, churn_model: LoadedChurnModel | None
                  ) -> Generator[_Scored, None, None]:
    """The scores of `accounts` (None: every live account) in parts, as they are ready: the pool's processes
    and this one take chunks in turn, and each part is yielded, to be stored, as soon as this process is free."""
    ids = [] if accounts is not None else [
        str(a) for (a,) in store.conn.execute("SELECT id FROM accounts WHERE is_deleted = 0 ORDER BY id")]
    if accounts is not None or processes < 2 or len(ids) < max(parallel_from, 2) or not store.on_disk:
        yield _score_some(store, loaded, as_of, accounts, churn_model)
        return
    chunks, path = _Chunks(ids, processes), str(store.path)
    # 'spawn', not 'fork': the worker runs threads (health server, scheduler) that a fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes - 1, mp_context=context) as pool:
        in_flight: list[Future[_Scored]] = []

        def top_up() -> None:
            """A chunk for each of the pool's processes and one more queued, so none is idle until the next
            look (the pool starts what it is given: a queued chunk can no longer be taken back)."""
            while len(in_flight) < processes and (chunk := chunks.next()) is not None:
                in_flight.append(pool.submit(_score_part, path, loaded, as_of, chunk, churn_model))

        top_up()
        while (mine := chunks.next()) is not None:
            # Read, like the pool's processes, through a reader of its own: its small page cache scans a chunk
            # in less CPU than the writer's 64 MB one (measured: BENCHMARKS.md, 'Figures behind the code').
            yield _score_part(path, loaded, as_of, mine, churn_model)
            for future in [f for f in in_flight if f.done()]:
                in_flight.remove(future)
                yield future.result()
            top_up()
        for future in in_flight:
            yield future.result()


def score_accounts(store: Store, loaded: LoadedScorecard, as_of: datetime, *,
                   only: changes.ChangeSet | None = None, processes: int | None = None,
                   parallel_from: int = PARALLEL_FROM_ACCOUNTS,
                   churn_model: LoadedChurnModel | None = None) -> ScoringReport:
    """Score every live account, or only the accounts `only` names, keeping one history row per account per day
    and clearing the change marks it answered.

    Set-based: one query per distinct measure, one for the accounts, one for the trend baselines; the
    per-account work in Python is arithmetic only. With `only`, each query seeks just those accounts; a
    whole re-score of many accounts runs in chunks over `processes` (default: one per core), this process
    storing each part as it comes while the others compute theirs. With `churn_model`, churn risk is the
    learned model's probability instead of the scorecard's rule.

    Each part is stored in a transaction of its own, so that a click on a nudge waits for one part's write,
    never for the whole re-score (`BUSY_TIMEOUT_MS` in `worker.service.slack_actions`); the marks are cleared
    and the re-score recorded only after the last. A crash between parts leaves the re-score unrecorded, so the
    next cycle does it again: the parts already stored get the same values, which marks nothing anew, and the
    marks the stored parts set are still there for evaluation and write-back. A part reads only its own
    accounts' rows, so the parts stored before it change nothing it computes.
    """
    answered = only if only is not None else changes.pending(store, changes.SCORE, as_of)
    parts = _scored_parts(store, loaded, as_of, only.accounts if only is not None else None,
                          scoring_processes() if processes is None else processes, parallel_from, churn_model)
    report = ScoringReport(full=only is None)
    bands: Counter[str] = Counter()
    scored: set[str] = set()
    try:
        for part in parts:
            with store.transaction() as conn:
                conn.executemany(_STORE_SCORES, part.score_rows)
                conn.executemany(_STORE_HISTORY, part.history_rows())
            scored.update(row[0] for row in part.score_rows)
            bands.update(row[2] for row in part.score_rows)
            report.changed += part.changed
    finally:
        parts.close()
    with store.transaction() as conn:
        # The accounts no longer live: of those marked, or after a whole re-score of every one scored before.
        stale = answered.accounts if only is not None else {
            str(a) for (a,) in conn.execute("SELECT account_id FROM scores")}
        conn.executemany("DELETE FROM scores WHERE account_id = ?", [(a,) for a in sorted(stale - scored)])
        changes.clear(conn, answered)  # the rows that changed are marked for evaluation and write-back
        if scored:
            changes.record_scores_stored(store, len(scored), as_of)
        if only is None:
            record_full_rescore(store, rules_digest(loaded, churn_model), as_of)
        else:
            record_rescore_time(store, rules_digest(loaded, churn_model), as_of)
    report.scored = len(scored)
    # Every account's band: after a whole re-score, those just stored.
    report.bands = dict(bands) if only is None else _bands(store)
    return report
