"""The learned churn model (`rules/churn_model.yaml`): a logistic regression ops can read, diff and review.

Churn risk from the scorecard's `derived.churn_risk` is a hand-weighted rule. Once an org has enough
history (renewals lost and won), `healthbeat churn-model fit` (`worker.analysis.churn_fit`) learns from it
instead, and writes what it learned as a rule file beside the scorecard: an intercept and, per feature, the
measure it reads, how that measure is standardised (mean, scale) and its weight. While the file is in
`rules/` and loads cleanly, an account's churn risk is the model's probability that it churns (a renewal
closed lost) within the model's horizon, from 0 to 100:

    z = (value - mean) / scale, clipped to ±CLIP       (a measure without data: z = 0, its mean)
    churn risk = 100 / (1 + exp(-(intercept + Σ weight × z)))

and what drives it for one account are its largest `weight × z` terms (`drivers`). Without the file, churn
risk stays the scorecard's rule: a fresh install has no history to learn from.

The features are the scorecard's own measures (raw values, whatever measures the scorecard defines when the
model is fitted) and the renewal as it was known on the day: whether an open renewal closes within the
horizon, and the days to it. A feature names its measure as `group.measure` and says what it was computed
with (`uses`, e.g. `meetings(window=90d)`): a scorecard edited since so that a measure is gone or means
something else makes the model unusable until it is fitted again, and `rules check` says which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.rulefile import LoadedFile, Problem, RuleFileError, raise_problems, read_yaml, validate
from worker.scoring.measures import LIBRARY, Measure
from worker.scoring.scorecard import Duration, Scorecard, duration_text

MODEL_FILE = "churn_model.yaml"
PROPOSED_FILE = "churn_model.proposed.yaml"
RENEWAL = "days_to_renewal"  # the one feature that is not a scorecard measure: the renewal as known then
CLIP = 5.0  # standardised values beyond this many scales count as this many: one odd value cannot dominate
DRIVERS = 3  # the terms a churn risk is explained by


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    """One term of the model. `measure` is a scorecard measure (`group.measure`) or `days_to_renewal`."""

    measure: str
    uses: str | None = Field(default=None, description="the library measure and parameters it was fitted on")
    within: Duration | None = Field(default=None, description="days_to_renewal: 1 when the renewal closes "
                                                              "within this, else 0")
    cap: float | None = Field(default=None, gt=0, description="days_to_renewal: farther (or no open renewal) "
                                                              "counts as this many days")
    mean: float
    scale: float = Field(gt=0)
    weight: float

    @model_validator(mode="after")
    def _one_kind(self) -> Feature:
        if self.measure == RENEWAL:
            if (self.within is None) == (self.cap is None):
                raise ValueError("a days_to_renewal feature has either `within` (a duration) or `cap` (days)")
            if self.uses is not None:
                raise ValueError("days_to_renewal takes no `uses`")
        elif self.within is not None or self.cap is not None:
            raise ValueError("`within` and `cap` belong to days_to_renewal features only")
        elif "." not in self.measure:
            raise ValueError(f"name the scorecard measure as group.measure (e.g. engagement.{self.measure}), "
                             f"or days_to_renewal")
        return self

    @property
    def label(self) -> str:
        if self.measure != RENEWAL:
            return self.measure
        if self.within is not None:
            return f"renewal within {duration_text(self.within)}"
        return "days to renewal"

    def value(self, raw: float | None) -> float | None:
        """The number the feature standardises: the raw value, or for the renewal the indicator or the
        capped days (no open renewal reads as the cap, or as not within)."""
        if self.measure != RENEWAL:
            return raw
        if self.within is not None:
            return 1.0 if raw is not None and raw <= self.within / timedelta(days=1) else 0.0
        assert self.cap is not None
        return self.cap if raw is None else min(raw, self.cap)

    def z(self, raw: float | None) -> float:
        value = self.value(raw)
        if value is None:
            return 0.0
        return max(-CLIP, min(CLIP, (value - self.mean) / self.scale))


class Period(_Strict):
    from_: date = Field(alias="from")
    to: date

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Training(_Strict):
    from_: date = Field(alias="from")
    to: date
    snapshots: int = Field(ge=0)
    lost_renewals: int = Field(ge=0)
    won_renewals: int = Field(ge=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CalibrationRow(_Strict):
    predicted: float = Field(ge=0, le=100, description="mean predicted churn risk in the bucket (percent)")
    observed: float = Field(ge=0, le=100, description="share of its snapshots followed by churn (percent)")
    snapshots: int = Field(ge=0)


class Validation(_Strict):
    """The same recipe fitted on the earlier history alone and judged on the later period it never saw."""

    fitted_on: Period
    judged_on: Training
    auc: float | None = Field(ge=0, le=1)
    baselines: dict[str, float | None] = Field(default_factory=dict)
    top_decile_lift: float | None = None
    calibration: list[CalibrationRow] = Field(default_factory=list)


class ChurnModel(_Strict):
    version: int = Field(default=1, ge=1, le=1)
    horizon: Duration = Field(description="churn risk is the probability of churn within this")
    fitted_at: datetime
    training: Training
    l2: float = Field(ge=0)
    validation: Validation | None = None
    intercept: float
    features: list[Feature] = Field(min_length=1)

    @field_validator("horizon")
    @classmethod
    def _a_day_or_more(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=1):
            raise ValueError("the horizon is a day or more (churn within it is what the risk is the chance of)")
        return value

    @field_validator("fitted_at")
    @classmethod
    def _to_the_second(cls, value: datetime) -> datetime:
        """As the file says it: to the second, in UTC (a time without a zone is UTC), so that a model written and
        read back is the same model."""
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)

    @property
    def horizon_days(self) -> int:
        return round(self.horizon / timedelta(days=1))

    def logit(self, raw: Mapping[str, float | None]) -> float:
        return self.intercept + sum(f.weight * f.z(raw.get(f.measure)) for f in self.features)

    def risk(self, raw: Mapping[str, float | None]) -> float:
        """Churn risk 0..100 from each feature's raw value (keyed by `Feature.measure`), rounded as stored."""
        return round(100 * _sigmoid(self.logit(raw)), 2)

    def contributions(self, raw: Mapping[str, float | None]) -> list[tuple[Feature, float]]:
        return [(f, f.weight * f.z(raw.get(f.measure))) for f in self.features]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def measure_uses(scorecard: Scorecard) -> dict[str, str]:
    """Per scorecard measure (`group.measure`), what its raw value is computed with, in words a reviewer reads:
    the library measure and the parameters the scorecard gives it, e.g. `meetings(window=90d)`, with the
    scorecard's feature list for a measure that counts features (`feature_adoption`), which means something else
    once the list changes."""
    uses = {}
    for group, spec in scorecard.groups.items():
        for key, measure in spec.measures.items():
            name = measure.measure or key
            given = measure.params()
            if name in LIBRARY and "features" in LIBRARY[name].needs:
                given["features"] = tuple(scorecard.features)
            params = ", ".join(f"{k}={_param(v)}" for k, v in sorted(given.items()))
            uses[f"{group}.{key}"] = f"{name}({params})"
    return uses


def _param(value: Any) -> str:
    if isinstance(value, timedelta):
        return duration_text(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(str(v) for v in value) + "]"
    return str(value)


def semantic_problems(model: ChurnModel, scorecard: Scorecard) -> list[tuple[tuple[str | int, ...], str]]:
    """Each feature must read a measure the scorecard in force computes the way the model was fitted on."""
    uses = measure_uses(scorecard)
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[tuple[str, float | None, float | None]] = set()
    for index, feature in enumerate(model.features):
        loc: tuple[str | int, ...] = ("features", index, "measure")
        within = None if feature.within is None else feature.within / timedelta(days=1)
        key = (feature.measure, within, feature.cap)  # a measure is one feature, whatever `uses` each copy says
        if key in seen:
            problems.append((loc, f"{feature.measure} is a feature twice"))
        seen.add(key)
        if feature.measure == RENEWAL:
            continue
        if feature.measure not in uses:
            problems.append((loc, f"scorecard.yaml has no measure {feature.measure}: the model was fitted on "
                                  f"another scorecard; fit it again (healthbeat churn-model fit)"))
        elif feature.uses is not None and feature.uses != uses[feature.measure]:
            problems.append((("features", index, "uses"),
                             f"scorecard.yaml now computes {feature.measure} as {uses[feature.measure]}, the model "
                             f"was fitted on {feature.uses}; fit it again (healthbeat churn-model fit)"))
    return problems


@dataclass(frozen=True)
class LoadedChurnModel:
    """A validated model, the file it came from and the digest of its text (part of what a score was made of)."""

    model: ChurnModel
    path: Path
    digest: str


def read_churn_model(path: Path, scorecard: Scorecard | None) -> LoadedChurnModel:
    """Read and check one model file (against `scorecard` when given); a `RuleFileError` names every problem
    with its line and field."""
    loaded: LoadedFile = read_yaml(path)
    model = validate(loaded, ChurnModel)
    if scorecard is not None:
        raise_problems(loaded, semantic_problems(model, scorecard))
    return LoadedChurnModel(model, path, loaded.digest)


def load_churn_model(rules_dir: Path, scorecard: Scorecard | None) -> LoadedChurnModel | None:
    """`rules_dir/churn_model.yaml`, or None when there is none (churn risk is then the scorecard's rule)."""
    path = rules_dir / MODEL_FILE
    if not path.exists() and not path.is_symlink():
        return None
    return read_churn_model(path, scorecard)


def problem_of(path: Path, message: str) -> RuleFileError:
    return RuleFileError([Problem(str(path), None, "", message)])


# -- one account's risk and what drives it -------------------------------------------------------------

@dataclass(frozen=True)
class Driver:
    """One term of an account's churn risk: the measure, its raw value, `weight × z`, and the value in words."""

    measure: str
    raw: float | None
    contribution: float
    says: str

    def as_json(self) -> dict[str, Any]:
        return {"measure": self.measure, "raw": self.raw, "contribution": round(self.contribution, 3),
                "says": self.says}


def drivers(model: ChurnModel, raw: Mapping[str, float | None], describe: Mapping[str, tuple[Measure, Any]],
            limit: int = DRIVERS) -> list[Driver]:
    """The terms that move this account's churn risk most: those raising it, largest first; when none does,
    those keeping it low. `describe` gives each scorecard measure's library measure and parameters, to put
    its raw value in words."""
    merged: dict[str, tuple[Feature, float]] = {}  # the renewal's features are one driver: the renewal
    for feature, contribution in model.contributions(raw):
        key = RENEWAL if feature.measure == RENEWAL else feature.label
        first, total = merged.get(key, (feature, 0.0))
        merged[key] = (first, total + contribution)
    terms = [(f, c) for f, c in merged.values() if round(c, 3) != 0]
    rising = sorted((t for t in terms if t[1] > 0), key=lambda t: -t[1])
    picked = rising[:limit] if rising else sorted(terms, key=lambda t: t[1])[:limit]
    return [Driver(RENEWAL if f.measure == RENEWAL else f.label, raw.get(f.measure), c,
                   _says(f, raw.get(f.measure), describe)) for f, c in picked]


def _says(feature: Feature, raw: float | None, describe: Mapping[str, tuple[Measure, Any]]) -> str:
    if feature.measure == RENEWAL:
        if raw is None:
            return "No open renewal"
        return LIBRARY[RENEWAL].describe(raw, {})
    if raw is None:
        return "no data"
    found = describe.get(feature.measure)
    return found[0].describe(raw, found[1]) if found else f"{feature.measure} {raw:g}"


def drivers_text(found: Sequence[Driver]) -> str:
    """Drivers in one line, as a reason reads: "Renewal in 40 days; No meetings in 90 days"."""
    return "; ".join(d.says for d in found)
