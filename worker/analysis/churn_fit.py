"""Learning churn risk from the org's own history: a small, regularised logistic regression, judged on a later
period it never saw, and written as a rule file ops review (`worker.scoring.churn_model`).

What it learns from. The backtest's replay (`worker.analysis.backtest.replay`) scores every customer as of
snapshot days over the whole history the store holds, with only what was known on each day: activity,
tickets and usage up to that day, renewals as they stood (one created later did not exist yet; one closed
later was still open). Each snapshot is labelled by what followed: churn (a renewal closed lost) within the
horizon, or not. The features are the scorecard's measures (raw values, standardised; whatever measures
the scorecard defines) and the renewal as known then: whether an open renewal closes within the horizon,
and the days to it. The model is the probability of churn within the horizon: churn comes at renewals, so
the calendar carries much of it, and the measures say which renewals will be lost.

How it is kept honest:
- time-ordered, never shuffled: the holdout is the latest stretch of history holding a third of the churn
  events (at least `MIN_HOLDOUT_LOST`), and the fit sees only snapshots a whole horizon before it;
- the L2 strength is chosen by rolling time-ordered folds inside the fitting period (log-loss on each later
  fold, from a fit on what came a horizon before it), never on the holdout;
- enough outcomes or no model: at least `MIN_LOST` lost and `MIN_WON` won renewals to fit on, and
  `MIN_HOLDOUT_LOST` lost ones to judge on; otherwise the answer says what is missing and the scorecard's
  rule stays;
- a leakage probe (`worker.analysis.backtest.leaking_measures`) recomputes every feature on a copy of the
  store cut at a snapshot day and refuses to fit on a measure that reads past it.

The model written is fitted again on all of the labelled history with the chosen strength; the file keeps
the holdout's figures (AUC, top-decile lift, a reliability table, and the hand-set churn risk's and the
single signals' AUC on the same snapshots) so ops see what it was worth before adopting it. A refit on a
slow schedule (`HEALTHBEAT_CHURN_REFIT`, the cycle's `refit` stage) writes `churn_model.proposed.yaml` beside
the rules and logs how it compares; ops adopt it by renaming it to `churn_model.yaml`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import statistics
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.analysis.backtest import (
    SIGNALS,
    Observation,
    Plan,
    ReplayStopped,
    auc,
    history_start,
    labelled,
    leaking_measures,
    measure_keys,
    replay,
)
from worker.analysis.folds import Pair, Shortfall, Split, churn_events, holdout_split, rolling_folds
from worker.analysis.outcomes import Outcomes, read_outcomes
from worker.rulefile import RuleFileError
from worker.scoring.churn_model import (
    MODEL_FILE,
    PROPOSED_FILE,
    RENEWAL,
    CalibrationRow,
    ChurnModel,
    Feature,
    LoadedChurnModel,
    Period,
    Training,
    Validation,
    load_churn_model,
    measure_uses,
    problem_of,
    read_churn_model,
)
from worker.scoring.scorecard import LoadedScorecard, Scorecard, duration_text
from worker.store import Store, iso
from worker.terminal import counted

log = logging.getLogger(__name__)

MIN_LOST = 30  # churn events (lost renewals) a fit needs to learn from
MIN_WON = 30  # renewals won within the horizon of a training snapshot
MIN_HOLDOUT_LOST = 10  # churn events the later period needs for its figures to mean something
MIN_FOLD_LOST = 10  # churn events per time-ordered fold when choosing the L2 strength
L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
DEFAULT_L2 = 1e-2  # when the fitting period is too short for folds
RENEWAL_CAP_DAYS = 365.0
CALIBRATION_BUCKETS = 10
MAX_FIT_ACCOUNTS = 5_000  # a larger org is fitted on every churned account and a sample of the others
RENEWAL_SIGNAL = next(i for i, s in enumerate(SIGNALS) if s.key == "renewal_proximity")

Array = npt.NDArray[np.float64]


# -- features ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """A feature before it is fitted: which measure it reads and how."""

    measure: str
    uses: str | None = None
    within_days: int | None = None
    cap: float | None = None

    def feature(self, mean: float, scale: float, weight: float) -> Feature:
        return Feature.model_validate({
            "measure": self.measure, "uses": self.uses,
            "within": None if self.within_days is None else timedelta(days=self.within_days), "cap": self.cap,
            "mean": mean, "scale": scale, "weight": weight})


def candidates(scorecard: Scorecard, horizon_days: int) -> list[Candidate]:
    """The renewal as known then (within the horizon; days to it, capped), then every scorecard measure."""
    uses = measure_uses(scorecard)
    return [Candidate(RENEWAL, within_days=horizon_days), Candidate(RENEWAL, cap=RENEWAL_CAP_DAYS),
            *(Candidate(f"{g}.{m}", uses=uses[f"{g}.{m}"]) for g, m in measure_keys(scorecard))]


def design(pairs: Sequence[Pair], chosen: Sequence[Candidate], scorecard: Scorecard) -> tuple[Array, Array]:
    """The feature values (NaN where a measure had no data) and labels of `pairs`, one row each."""
    index = {f"{g}.{m}": n for n, (g, m) in enumerate(measure_keys(scorecard))}
    probe = [c.feature(0.0, 1.0, 0.0) for c in chosen]
    rows = []
    for obs, _ in pairs:
        renewal = obs.signals[RENEWAL_SIGNAL] if len(obs.signals) > RENEWAL_SIGNAL else None
        row = []
        for candidate, feature in zip(chosen, probe, strict=True):
            raw = renewal if candidate.measure == RENEWAL else obs.raw[index[candidate.measure]]
            value = feature.value(raw)
            row.append(math.nan if value is None else value)
        rows.append(row)
    x = np.array(rows, dtype=np.float64).reshape(len(pairs), len(chosen))
    return x, np.array([1.0 if y else 0.0 for _, y in pairs])


@dataclass(frozen=True)
class Fitted:
    """A fitted logistic regression on standardised features."""

    mean: Array
    scale: Array
    intercept: float
    weights: Array

    def z(self, x: Array) -> Array:
        z = (x - self.mean) / self.scale
        return np.clip(np.nan_to_num(z, nan=0.0), -5.0, 5.0)

    def predict(self, x: Array) -> Array:
        return _sigmoid(self.intercept + self.z(x) @ self.weights)


def _sigmoid(x: Array) -> Array:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def standardisation(x: Array, w: Array) -> tuple[Array, Array]:
    """Weighted mean and standard deviation of each column over its known values (scale 1 when constant)."""
    known = ~np.isnan(x)
    weights = np.where(known, w[:, None], 0.0)
    total = weights.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    mean = np.where(total > 0, (np.nan_to_num(x) * weights).sum(axis=0) / safe, 0.0)
    variance = (((np.nan_to_num(x) - mean) ** 2) * weights).sum(axis=0) / safe
    scale = np.sqrt(variance)
    return mean, np.where(scale > 1e-9, scale, 1.0)


def fit_logistic(x: Array, y: Array, l2: float, w: Array | None = None) -> Fitted:
    """L2-penalised logistic regression by Newton's method: minimises the weighted mean log-loss plus
    `l2`/2 × the squared weights (the intercept is not penalised). Deterministic; a few iterations."""
    w = np.ones(len(y)) if w is None else w
    mean, scale = standardisation(x, w)
    z = np.clip(np.nan_to_num((x - mean) / scale, nan=0.0), -5.0, 5.0)
    design_ = np.hstack([np.ones((len(y), 1)), z])
    share = w / w.sum()
    penalty = np.full(design_.shape[1], l2)
    penalty[0] = 0.0
    rate = float(np.clip((share * y).sum(), 1e-6, 1 - 1e-6))
    beta = np.zeros(design_.shape[1])
    beta[0] = math.log(rate / (1 - rate))

    def loss(b: Array) -> float:
        t = design_ @ b
        return float((share * (np.logaddexp(0.0, t) - y * t)).sum() + 0.5 * (penalty * b * b).sum())

    current = loss(beta)
    for _ in range(100):
        p = _sigmoid(design_ @ beta)
        gradient = design_.T @ (share * (p - y)) + penalty * beta
        hessian = (design_ * (share * p * (1 - p))[:, None]).T @ design_ + np.diag(penalty + 1e-10)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-4:
            trial = beta - size * step
            value = loss(trial)
            if value <= current + 1e-12:
                break
            size /= 2
        else:
            break  # no step along Newton's direction lowers the loss: this is the minimum to rounding
        beta, previous, current = trial, current, value
        if abs(previous - current) < 1e-10 or float(np.abs(size * step).max()) < 1e-8:
            break
    return Fitted(mean, scale, float(beta[0]), beta[1:])


def log_loss(p: Array, y: Array, w: Array | None = None) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.average(losses, weights=w))


def choose_l2(pairs: Sequence[Pair], x: Array, y: Array, w: Array, horizon_days: int
              ) -> tuple[float, int]:
    """The L2 strength with the lowest log-loss over rolling time-ordered folds of the fitting period (each
    fold judged by a fit on the snapshots a horizon before it); `DEFAULT_L2` when no fold can be cut."""
    folds = rolling_folds(pairs, horizon_days, min_events=MIN_FOLD_LOST)
    if not folds:
        return DEFAULT_L2, 0
    row = {id(p): n for n, p in enumerate(pairs)}
    totals = dict.fromkeys(L2_GRID, 0.0)
    for fold in folds:
        train = np.array([row[id(p)] for p in fold.train])
        test = np.array([row[id(p)] for p in fold.holdout])
        for l2 in L2_GRID:
            fitted = fit_logistic(x[train], y[train], l2, w[train])
            totals[l2] += log_loss(fitted.predict(x[test]), y[test], w[test]) * w[test].sum()
    best = min(L2_GRID, key=lambda l2: (round(totals[l2], 9), -l2))  # ties: the stronger penalty
    return best, len(folds)


# -- judging on the later period -----------------------------------------------------------------------

@dataclass(frozen=True)
class LeadTime:
    churned: int  # churned accounts observed in the period before their churn
    flagged: int  # of them, flagged at their last snapshot before it
    median_days: float | None  # from the start of that flagged stretch to the churn


@dataclass(frozen=True)
class Judged:
    """The learned churn risk beside the hand-set scorecard on the same later snapshots it never saw."""

    fitted_on: tuple[date, date]
    judged_on: tuple[date, date]
    snapshots: int
    lost: int
    won: int
    auc: float | None
    baselines: dict[str, float | None]  # hand-set churn risk, health, and each single signal
    top_decile_lift: float | None
    hand_set_top_decile_lift: float | None
    red_lift: float | None
    calibration: list[tuple[float, float, int]]  # (mean predicted, observed rate, snapshots), by tenth
    lead: dict[str, LeadTime]  # learned top decile, hand-set top decile, red band
    # On the snapshots whose open renewal closes within the horizon (there the calendar says nothing more): how
    # many, how many before a churn, and the AUC of the learned and hand-set churn risk and of health.
    near_renewal: tuple[int, int, dict[str, float | None]] = (0, 0, {})


def _lift(flags: Sequence[bool], labels: Sequence[bool]) -> float | None:
    overall = sum(labels) / len(labels) if labels else 0
    flagged = [y for f, y in zip(flags, labels, strict=True) if f]
    if not flagged or not overall:
        return None
    return round(sum(flagged) / len(flagged) / overall, 2)


def _top_decile(values: Sequence[float]) -> float:
    """The value at or above which the riskiest tenth lies."""
    ordered = sorted(values, reverse=True)
    return ordered[max(0, math.ceil(len(ordered) / 10) - 1)] if ordered else math.inf


def calibration(p: Sequence[float], labels: Sequence[bool], buckets: int = CALIBRATION_BUCKETS
                ) -> list[tuple[float, float, int]]:
    """Reliability: the snapshots in tenths by predicted probability, each tenth's mean prediction against the
    share of it followed by churn (percent)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rows = []
    for k in range(buckets):
        part = order[len(order) * k // buckets: len(order) * (k + 1) // buckets]
        if part:
            rows.append((round(100 * statistics.fmean(p[i] for i in part), 2),
                         round(100 * sum(labels[i] for i in part) / len(part), 2), len(part)))
    return rows


def lead_time(pairs: Sequence[Pair], flagged: Sequence[bool], outcomes: Outcomes) -> LeadTime:
    """For each account churning after the period's first snapshot: was it flagged at its last snapshot
    before churning, and since when (the start of that unbroken flagged stretch)."""
    by_account: dict[str, list[tuple[date, bool]]] = defaultdict(list)
    for (obs, _), flag in zip(pairs, flagged, strict=True):
        by_account[obs.account_id].append((obs.day, flag))
    days_ahead, churned = [], 0
    for account_id, stretch in by_account.items():
        churn = outcomes.churn_day(account_id)
        before = sorted(s for s in stretch if churn is not None and s[0] < churn)
        if churn is None or not before:
            continue
        churned += 1
        since = None
        for day, flag in reversed(before):
            if not flag:
                break
            since = day
        if since is not None:
            days_ahead.append((churn - since).days)
    return LeadTime(churned, len(days_ahead), statistics.median(days_ahead) if days_ahead else None)


def judge(fitted: Fitted, split: Split, x: Array, outcomes: Outcomes, horizon_days: int,
          rows: Mapping[int, int]) -> Judged:
    """The fit's figures on the holdout, beside the hand-set churn risk, the health score and single signals."""
    holdout = split.holdout
    idx = np.array([rows[id(p)] for p in holdout])
    p = [float(v) for v in fitted.predict(x[idx])]
    labels = [y for _, y in holdout]
    churned = [v for v, y in zip(p, labels, strict=True) if y]
    retained = [v for v, y in zip(p, labels, strict=True) if not y]

    def rank(values: Sequence[float | None], among: Sequence[bool] | None = None) -> float | None:
        kept = [(v, y) for n, (v, y) in enumerate(zip(values, labels, strict=True))
                if v is not None and (among is None or among[n])]
        value = auc([-v for v, y in kept if y and v is not None], [-v for v, y in kept if not y and v is not None])
        return None if value is None else round(value, 4)

    model_auc = auc([-v for v in churned], [-v for v in retained])
    hand_set = [o.churn_risk for o, _ in holdout]
    baselines: dict[str, float | None] = {
        "hand_set_churn_risk": rank(hand_set), "health": rank([-o.score for o, _ in holdout])}
    for index, signal in enumerate(SIGNALS):
        baselines[signal.key] = rank([-signal.risk(o.signals[index] if len(o.signals) > index else None)
                                      for o, _ in holdout])
    top = _top_decile(p)
    flags = [v >= top for v in p]
    known_hand_set = [v for v in hand_set if v is not None]
    hand_top = _top_decile(known_hand_set)
    hand_flags = [v is not None and v >= hand_top for v in hand_set]
    red = [o.band == "red" for o, _ in holdout]
    near = [len(o.signals) > RENEWAL_SIGNAL and o.signals[RENEWAL_SIGNAL] is not None
            and float(o.signals[RENEWAL_SIGNAL] or 0) <= horizon_days for o, _ in holdout]
    near_figures = (sum(near), sum(1 for n, y in zip(near, labels, strict=True) if n and y),
                    {"learned": rank(list(p), near), "hand_set_churn_risk": rank(hand_set, near),
                     "health": rank([-o.score for o, _ in holdout], near)})
    return Judged(
        _span(split.train), _span(holdout), len(holdout), churn_events(holdout),
        won_renewals(holdout, outcomes, horizon_days),
        None if model_auc is None else round(model_auc, 4), baselines, _lift(flags, labels),
        _lift(hand_flags, labels), _lift(red, labels), calibration(p, labels),
        {"learned": lead_time(holdout, flags, outcomes), "hand_set": lead_time(holdout, hand_flags, outcomes),
         "red": lead_time(holdout, red, outcomes)}, near_figures)


def _span(pairs: Sequence[Pair]) -> tuple[date, date]:
    days = [o.day for o, _ in pairs]
    return min(days), max(days)


def won_renewals(pairs: Sequence[Pair], outcomes: Outcomes, horizon_days: int) -> int:
    """Renewals won within the horizon after a snapshot of `pairs`: the retained side of what a fit learns."""
    days: dict[str, list[date]] = defaultdict(list)
    for obs, _ in pairs:
        days[obs.account_id].append(obs.day)
    horizon = timedelta(days=horizon_days)
    return sum(1 for e in outcomes.renewals_won()
               if any(d < e.day <= d + horizon for d in days.get(e.account_id, ())))


# -- the fit ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChurnFit:
    """A fitted model with its judgement, or why none was fitted (`model` None, `reason` says what is missing)."""

    model: ChurnModel | None
    judged: Judged | None
    reason: str
    l2: float | None = None
    folds: int = 0
    notes: tuple[str, ...] = ()


def fit_churn_model(pairs: Sequence[Pair], outcomes: Outcomes, scorecard: Scorecard, horizon_days: int, *,
                    fitted_at: datetime, weights: Callable[[Observation], float] | None = None) -> ChurnFit:
    """Split in time, choose the L2 strength on folds of the earlier period, judge a fit on the later one, and
    fit the model kept on all of it. `weights` (default 1) stand for accounts a large org's fit sampled."""
    found = holdout_split(pairs, horizon_days, min_train=MIN_LOST, min_holdout=MIN_HOLDOUT_LOST)
    if isinstance(found, Shortfall):
        return ChurnFit(None, None, f"not enough churn to learn from: {found}; churn risk stays the scorecard's "
                                    f"rule")
    won = won_renewals(found.train, outcomes, horizon_days)
    if won < MIN_WON:
        first, last = _span(found.train)
        return ChurnFit(None, None, f"not enough renewals won to learn from: the fitting period ({first} to "
                                    f"{last}) has {counted(won, 'renewal')} won within {horizon_days} days of a "
                                    f"snapshot, and a fit needs {MIN_WON}; churn risk stays the scorecard's rule")
    chosen = candidates(scorecard, horizon_days)
    x, y = design(pairs, chosen, scorecard)
    w = np.array([1.0 if weights is None else weights(o) for o, _ in pairs])
    rows = {id(p): n for n, p in enumerate(pairs)}
    train = np.array([rows[id(p)] for p in found.train])
    l2, folds = choose_l2(found.train, x[train], y[train], w[train], horizon_days)
    judged = judge(fit_logistic(x[train], y[train], l2, w[train]), found, x, outcomes, horizon_days, rows)
    kept = fit_logistic(x, y, l2, w)
    first, last = _span(pairs)
    model = ChurnModel(
        horizon=timedelta(days=horizon_days), fitted_at=fitted_at,
        training=Training.model_validate({"from": first, "to": last, "snapshots": len(pairs),
                                          "lost_renewals": churn_events(pairs),
                                          "won_renewals": won_renewals(pairs, outcomes, horizon_days)}),
        l2=l2, validation=_validation(judged), intercept=round(kept.intercept, 4),
        features=[c.feature(_round(m), _round(s), round(float(b), 4))
                  for c, m, s, b in zip(chosen, kept.mean, kept.scale, kept.weights, strict=True)])
    how = (f"chosen on {counted(folds, 'time-ordered fold')}" if folds
           else "the default: the fitting period is too short for time-ordered folds")
    return ChurnFit(model, judged, f"fitted on {counted(len(pairs), 'snapshot')}; L2 {l2:g} ({how})", l2, folds)


def _round(value: float) -> float:
    """Six significant digits: the file stays readable and the risk it gives moves by far less than a point."""
    return float(f"{float(value):.6g}")


def _validation(judged: Judged) -> Validation:
    return Validation(
        fitted_on=Period.model_validate({"from": judged.fitted_on[0], "to": judged.fitted_on[1]}),
        judged_on=Training.model_validate({"from": judged.judged_on[0], "to": judged.judged_on[1],
                                           "snapshots": judged.snapshots, "lost_renewals": judged.lost,
                                           "won_renewals": judged.won}),
        auc=judged.auc, baselines=judged.baselines, top_decile_lift=judged.top_decile_lift,
        calibration=[CalibrationRow(predicted=p, observed=o, snapshots=n) for p, o, n in judged.calibration])


# -- from the store ----------------------------------------------------------------------------------------

def fit_population(outcomes: Outcomes, limit: int = MAX_FIT_ACCOUNTS
                   ) -> tuple[set[str] | None, Callable[[Observation], float]]:
    """Which customers to replay for a fit, and each one's weight: all of them up to `limit`; beyond, every
    account that churned and a fixed sample of the others (by a hash of the id), weighted up to stand for the
    rest, so that the fit costs the same on 100,000 accounts as on 5,000 and stays calibrated."""
    customers = set(outcomes.customers)
    if len(customers) <= limit:
        return (customers or None), lambda _: 1.0
    churned = {a for a in customers if outcomes.churn_day(a) is not None}
    others = sorted(customers - churned)
    rate = max(1, limit - len(churned)) / max(1, len(others))
    sampled = {a for a in others if zlib.crc32(a.encode()) % 10_000 < rate * 10_000}
    weight = 1 / rate

    def weight_of(obs: Observation) -> float:
        return 1.0 if obs.account_id in churned else weight

    return churned | sampled, weight_of


def history_days(store: Store, plan: Plan) -> list[date]:
    """The snapshot days of the whole history the store holds: from the first day with 90 days of data behind
    it, every `plan.step` up to `plan.until`."""
    return plan.history_days(history_start(store, plan))


def history_pairs(store: Store, loaded: LoadedScorecard, outcomes: Outcomes, plan: Plan, *,
                  population: set[str] | None = None, days: Sequence[date] | None = None,
                  stop: Callable[[], bool] | None = None) -> tuple[list[Pair], list[date]]:
    """Every labelled snapshot of `days` (default: `history_days`), replayed."""
    days = list(days) if days is not None else history_days(store, plan)
    result = replay(store, loaded, None, days, plan.until, population=population or outcomes.customers or None,
                    churned_on=outcomes.churned_on, stop=stop)
    return labelled(result.observations, outcomes, plan.horizon_days, plan.until.date()), days


def fit_from_store(store: Store, loaded: LoadedScorecard, outcomes: Outcomes, plan: Plan, *, fitted_at: datetime,
                   stop: Callable[[], bool] | None = None) -> ChurnFit:
    """Probe the scorecard for leakage, replay the history and fit (no replay when the store records too little
    churn, or when a measure leaks)."""
    lost = len(outcomes.churned_on)
    if lost < MIN_LOST + MIN_HOLDOUT_LOST:
        more = MIN_LOST + MIN_HOLDOUT_LOST - lost
        return ChurnFit(None, None, f"not enough churn to learn from: the store records "
                                    f"{counted(lost, 'lost renewal')} and a fit needs at least {MIN_LOST} to fit on "
                                    f"and {MIN_HOLDOUT_LOST} later ones to judge on ({more} more); churn risk stays "
                                    f"the scorecard's rule")
    days = history_days(store, plan)
    if days:  # before the replay: a scorecard that leaks is refused in seconds, not after minutes of replay
        leaks = leaking_measures(store, loaded.scorecard, days[len(days) // 2], plan.until)
        if leaks:
            return ChurnFit(None, None, "refused: these measures read data from after the snapshot day they are "
                                        "computed for (leakage): " + "; ".join(leaks))
    population, weight = fit_population(outcomes)
    pairs, _ = history_pairs(store, loaded, outcomes, plan, population=population, days=days, stop=stop)
    notes = () if population is None or len(population) >= len(outcomes.customers) else (
        f"fitted on {counted(len(population), 'account')} of {len(outcomes.customers)} (every churned account and "
        f"a fixed sample of the others, weighted to stand for them)",)
    fit = fit_churn_model(pairs, outcomes, loaded.scorecard, plan.horizon_days, fitted_at=fitted_at,
                          weights=weight)
    return ChurnFit(fit.model, fit.judged, fit.reason, fit.l2, fit.folds, (*fit.notes, *notes))


# -- the file ----------------------------------------------------------------------------------------------

def _num(value: float | None) -> str:
    """A number as YAML reads it back exactly: Python's shortest round-trip form, with a point in the mantissa
    (PyYAML reads `1e-05` as text), `null` for none."""
    if value is None:
        return "null"
    value = float(value)
    if not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def _text(value: str) -> str:
    """A name plain when YAML reads it back as the same text, else quoted (a group named `health #1`)."""
    return value if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS else json.dumps(value,
                                                                                             ensure_ascii=False)


_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "~"}


def model_text(model: ChurnModel, *, source: str, proposed: bool) -> str:
    """The model as a readable YAML file: figures first, then one line per feature, comments that say how
    to read it and what to do with it. Every number is written so that it reads back exactly: the file is the
    model."""
    horizon = model.horizon_days
    v = model.validation
    lines = [
        f"# Churn model {'PROPOSED' if proposed else 'fitted'} by `{source}` on {iso(model.fitted_at)}."
        + (" NOT IN FORCE." if proposed else ""),
        f"# Churn risk = the probability (0-100) that an account churns (a renewal closed lost) within {horizon}",
        "# days: 100 / (1 + exp(-(intercept + sum of weight x z))), z = (value - mean) / scale clipped to +-5; a",
        "# measure without data counts as its mean (z = 0). An account's largest weight x z terms are what drive",
        "# its risk (`healthbeat explain`). Features read the scorecard's measures as `group.measure`, computed as",
        "# `uses` says, and the renewal as it was known on the day.",
    ]
    if proposed:
        lines += [f"# Compare it with the model in force: `healthbeat rules diff DIR` (DIR holding it as {MODEL_FILE}",
                  f"# beside scorecard.yaml and alerts.yaml); adopt it by renaming it to {MODEL_FILE}.",
                  f"# Without {MODEL_FILE} in rules/, churn risk is the scorecard's derived.churn_risk rule."]
    lines += [
        "version: 1",
        f"horizon: {duration_text(model.horizon)}",
        f"fitted_at: {iso(model.fitted_at)}",
        f"training: {{from: {model.training.from_}, to: {model.training.to}, snapshots: {model.training.snapshots}, "
        f"lost_renewals: {model.training.lost_renewals}, won_renewals: {model.training.won_renewals}}}",
        f"l2: {_num(model.l2)}                  # penalty on the squared weights, chosen on time-ordered folds",
    ]
    if v is not None:
        lines += [
            "validation:          # the same recipe fitted on the earlier history alone, judged on the later period",
            f"  fitted_on: {{from: {v.fitted_on.from_}, to: {v.fitted_on.to}}}",
            f"  judged_on: {{from: {v.judged_on.from_}, to: {v.judged_on.to}, snapshots: {v.judged_on.snapshots}, "
            f"lost_renewals: {v.judged_on.lost_renewals}, won_renewals: {v.judged_on.won_renewals}}}",
            f"  auc: {_num(v.auc)}",
            "  baselines:          # AUC on the same snapshots" if v.baselines else "  baselines: {}",
            *(f"    {_text(k)}: {_num(a)}" for k, a in v.baselines.items()),
            f"  top_decile_lift: {_num(v.top_decile_lift)}   # churn rate of the riskiest tenth over the overall rate",
            "  calibration:        # by tenth of predicted risk: mean predicted and observed churn (percent)"
            if v.calibration else "  calibration: []",
            *(f"    - {{predicted: {_num(c.predicted)}, observed: {_num(c.observed)}, snapshots: {c.snapshots}}}"
              for c in v.calibration),
        ]
    lines += [f"intercept: {_num(model.intercept)}", "features:"]
    for f in model.features:
        kind = (f"within: {duration_text(f.within)}, " if f.within is not None
                else f"cap: {_num(f.cap)}, " if f.cap is not None
                else f"uses: {json.dumps(f.uses, ensure_ascii=False)}, " if f.uses is not None else "")
        lines.append(f"  - {{measure: {_text(f.measure)}, {kind}mean: {_num(f.mean)}, scale: {_num(f.scale)}, "
                     f"weight: {_num(f.weight)}}}")
    return "\n".join(lines) + "\n"


def write_model(model: ChurnModel, out: Path, scorecard: Scorecard, *, source: str, proposed: bool) -> None:
    """Write the file and read it back as the worker would; written beside its final name first, so a worker
    never reads half a file. A `RuleFileError` naming `out` when it would not load or cannot be written (a
    folder that is not one, no permission): the command that asked says so in one line."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(model_text(model, source=source, proposed=proposed), encoding="utf-8")
        try:
            read_churn_model(partial, scorecard)
        except RuleFileError:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise problem_of(out, f"cannot write: {exc.strerror or exc}") from None


# -- in words ----------------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _lead(lead: LeadTime) -> str:
    ahead = "-" if lead.median_days is None else counted(round(lead.median_days), "day")
    return f"{lead.flagged} of {lead.churned} flagged before churning, median {ahead} ahead"


def judged_lines(judged: Judged, horizon_days: int) -> list[str]:
    """The learned churn risk beside the hand-set scorecard on the same held-out snapshots."""
    b = judged.baselines
    lines = [
        f"Learned churn risk (fitted on {judged.fitted_on[0]} to {judged.fitted_on[1]}, judged on "
        f"{judged.judged_on[0]} to {judged.judged_on[1]}: {counted(judged.snapshots, 'snapshot')}, "
        f"{judged.lost} lost and {judged.won} won renewals): AUC {_f(judged.auc)} against hand-set churn risk "
        f"{_f(b.get('hand_set_churn_risk'))}, health {_f(b.get('health'))}, "
        + ", ".join(f"{s.label} {_f(b.get(s.key))}" for s in SIGNALS) + ".",
        f"Riskiest tenth: lift {_x(judged.top_decile_lift)} learned, {_x(judged.hand_set_top_decile_lift)} hand-set "
        f"churn risk; red band lift {_x(judged.red_lift)}. Lead time: learned top tenth "
        f"{_lead(judged.lead['learned'])}; hand-set top tenth {_lead(judged.lead['hand_set'])}; red "
        f"{_lead(judged.lead['red'])}.",
        f"Calibration (predicted → observed churn within {horizon_days} days, by tenth of predicted risk): "
        + ", ".join(f"{p:.1f}% → {o:.1f}% ({n})" for p, o, n in judged.calibration) + ".",
        f"Where the open renewal closes within {horizon_days} days ({counted(judged.near_renewal[0], 'snapshot')}, "
        f"{judged.near_renewal[1]} before a churn): AUC learned {_f(judged.near_renewal[2].get('learned'))}, "
        f"hand-set churn risk {_f(judged.near_renewal[2].get('hand_set_churn_risk'))}, health "
        f"{_f(judged.near_renewal[2].get('health'))}.",
    ]
    return lines


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}×"


def fit_lines(fit: ChurnFit) -> list[str]:
    if fit.model is None or fit.judged is None:
        return [f"Learned churn risk: {fit.reason}."]
    return [*judged_lines(fit.judged, fit.model.horizon_days), f"Model: {fit.reason}.",
            *(f"Note: {n}" for n in fit.notes)]


def judged_as_dict(judged: Judged) -> dict[str, Any]:
    return {
        "fitted_on": {"from": judged.fitted_on[0].isoformat(), "to": judged.fitted_on[1].isoformat()},
        "judged_on": {"from": judged.judged_on[0].isoformat(), "to": judged.judged_on[1].isoformat(),
                      "snapshots": judged.snapshots, "lost_renewals": judged.lost, "won_renewals": judged.won},
        "auc": judged.auc, "baselines": judged.baselines, "top_decile_lift": judged.top_decile_lift,
        "hand_set_top_decile_lift": judged.hand_set_top_decile_lift, "red_lift": judged.red_lift,
        "calibration": [{"predicted": p, "observed": o, "snapshots": n} for p, o, n in judged.calibration],
        "lead_time": {k: {"churned_accounts": v.churned, "flagged_before_churn": v.flagged,
                          "median_days": v.median_days} for k, v in judged.lead.items()},
        "near_renewal": {"snapshots": judged.near_renewal[0], "positives": judged.near_renewal[1],
                         "auc": judged.near_renewal[2]}}


def fit_as_dict(fit: ChurnFit) -> dict[str, Any]:
    return {"fitted": fit.model is not None, "reason": fit.reason, "l2": fit.l2, "folds": fit.folds,
            "notes": list(fit.notes), **({"judged": judged_as_dict(fit.judged)} if fit.judged else {})}


# -- the slow refit --------------------------------------------------------------------------------------

REFIT_CURSOR = "churn_model.refit"


@dataclass
class RefitReport:
    fitted: bool = False
    written: str | None = None
    reason: str = ""
    lines: list[str] = field(default_factory=list)


def refit_due(store: Store, now: datetime, every: timedelta) -> bool:
    last = store.cursor(REFIT_CURSOR)
    return last is None or datetime.fromisoformat(last.replace("Z", "+00:00")) + every <= now


def refit(store: Store, loaded: LoadedScorecard, rules_dir: Path, outcomes: Outcomes, now: datetime, *,
          stop: Callable[[], bool] | None = None) -> RefitReport:
    """Fit on the store's whole history and leave the result beside the rules as `churn_model.proposed.yaml`
    (when the folder is writable: a Kubernetes ConfigMap is not, and then the comparison is only logged),
    never in force: ops compare it (`rules diff`) and adopt it by renaming it. The time is recorded, so the
    next refit waits for the schedule whatever the outcome."""
    report = RefitReport()
    fit = fit_from_store(store, loaded, outcomes, Plan(until=now), fitted_at=now, stop=stop)
    report.lines = fit_lines(fit)
    report.reason = fit.reason
    with store.transaction():
        store.save_cursor(REFIT_CURSOR, iso(now), 0, now)
    if fit.model is None:
        log.info("churn model refit: %s", fit.reason)
        return report
    report.fitted = True
    try:
        current = load_churn_model(rules_dir, loaded.scorecard)
    except RuleFileError:
        current = None
    log.info("churn model refit: %s; %s", comparison(fit.model, current), " ".join(report.lines))
    out = rules_dir / PROPOSED_FILE
    if not os.access(rules_dir, os.W_OK):
        log.warning("churn model refit: %s is not writable (a ConfigMap?): the proposal is not written; run "
                    "`healthbeat churn-model fit --out FILE` where you keep the rules to get it", rules_dir)
        return report
    try:
        write_model(fit.model, out, loaded.scorecard, source="healthbeat run (scheduled refit)", proposed=True)
    except RuleFileError as exc:
        log.warning("churn model refit: the proposal is not written: %s", exc)
        return report
    report.written = str(out)
    log.info("churn model refit: proposal written to %s; adopt it by renaming it to %s", out, MODEL_FILE)
    return report


def comparison(new: ChurnModel, current: LoadedChurnModel | None) -> str:
    """The proposal against the model in force, by their held-out AUC."""
    fresh = new.validation.auc if new.validation else None
    if current is None:
        return f"proposed model held-out AUC {_f(fresh)} (none in force: churn risk is the scorecard's rule)"
    old = current.model.validation.auc if current.model.validation else None
    return (f"proposed model held-out AUC {_f(fresh)} against {_f(old)} for the one in force "
            f"(fitted {current.model.fitted_at.date()})")


def scheduled_refit(store: Store, loaded: LoadedScorecard, rules_dir: Path, now: datetime, every: timedelta,
                    stop: Callable[[], bool]) -> str | None:
    """The cycle's refit (`worker.cycle.RefitJob`): None until `every` has passed since the last one; then the
    refit, in a few words for the cycle's summary line. A stop request ends it between snapshots (it runs again
    next cycle); a failure (a large org's replay out of memory) is logged and waits for the next turn, so that a
    proposal job never fails every cycle of the worker that runs it."""
    if not refit_due(store, now, every):
        return None
    previous = store.cursor(REFIT_CURSOR)
    # The attempt is recorded before it starts: a worker killed during the replay (out of memory, say) must not
    # start it again at every restart, each one killed the same way.
    with store.transaction():
        store.save_cursor(REFIT_CURSOR, iso(now), 0, now)
    try:
        report = refit(store, loaded, rules_dir, read_outcomes(store), now, stop=stop)
    except ReplayStopped:
        with store.transaction():
            store.save_cursor(REFIT_CURSOR, previous, 0, now)
        return "stopped on request (it runs again next cycle)"
    except Exception as exc:  # a proposal must never fail the cycle, nor every cycle after it until it works
        log.exception("churn model refit failed; the next try is in %s", duration_text(every))
        with store.transaction():
            store.save_cursor(REFIT_CURSOR, iso(now), 0, now)
        return f"failed ({type(exc).__name__}: {exc}); the next try is in {duration_text(every)}"
    if report.written:
        return f"proposal written to {report.written}"
    return "proposed, not written (the rules folder is read-only)" if report.fitted else report.reason
