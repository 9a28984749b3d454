"""The scorecard file (`rules/scorecard.yaml`): measures → groups → overall, validated on load.

Strict models (a misspelt key is an error, never silently ignored), and checks that cross fields: points
strictly increasing in raw value, scores within 0..100, bands in order, parameters the measure accepts.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.config import Duration
from worker.measures import DERIVED_ONLY, LIBRARY, known_measures
from worker.rulefile import LoadedFile, read_yaml, validate

MissingPolicy = Literal["skip", "neutral", "zero"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeasureSpec(_Strict):
    measure: str | None = Field(default=None, description="library measure; defaults to the key")
    weight: float = Field(gt=0)
    points: list[tuple[float, float]] = Field(min_length=2)
    missing: MissingPolicy | None = None
    window: Duration | None = None
    within: Duration | None = None
    half_life: Duration | None = None
    priorities: list[str] | None = None

    @field_validator("points")
    @classmethod
    def _points_in_order(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for (raw_a, _), (raw_b, _) in pairwise(points):
            if raw_b <= raw_a:
                raise ValueError(f"raw values must increase strictly ({raw_a} then {raw_b})")
        for _, score in points:
            if not 0 <= score <= 100:
                raise ValueError(f"scores must be within 0..100 (got {score})")
        return points

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in (("window", self.window), ("within", self.within),
                                  ("half_life", self.half_life),
                                  ("priorities", tuple(self.priorities) if self.priorities else None))
                if v is not None}


def _check_measures(measures: dict[str, MeasureSpec], allow_derived: bool) -> None:
    for key, spec in measures.items():
        name = spec.measure or key
        if name in DERIVED_ONLY and allow_derived:
            continue
        if name not in LIBRARY:
            raise ValueError(f"measures.{key}: unknown measure {name!r}; known: {', '.join(known_measures())}")
        accepted = set(LIBRARY[name].defaults)
        for param in spec.params():
            if param not in accepted:
                raise ValueError(f"measures.{key}.{param}: {name} takes no {param!r} "
                                 f"(it takes: {', '.join(sorted(accepted)) or 'no parameters'})")


class GroupSpec(_Strict):
    weight: float = Field(gt=0)
    measures: dict[str, MeasureSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _known(self) -> GroupSpec:
        _check_measures(self.measures, allow_derived=False)
        return self


class DerivedSpec(_Strict):
    description: str = ""
    measures: dict[str, MeasureSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _known(self) -> DerivedSpec:
        _check_measures(self.measures, allow_derived=True)
        return self


class Bands(_Strict):
    red: float = Field(ge=0, le=100)
    yellow: float = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Bands:
        if self.red >= self.yellow:
            raise ValueError(f"red ({self.red}) must be below yellow ({self.yellow})")
        return self


class Trend(_Strict):
    window: Duration = timedelta(days=30)
    flat: float = Field(default=3, ge=0, description="changes smaller than this read as flat")


class Confidence(_Strict):
    high: float = Field(default=0.8, ge=0, le=1)
    medium: float = Field(default=0.5, ge=0, le=1)


class Scorecard(_Strict):
    version: Literal[1] = 1
    bands: Bands
    missing: MissingPolicy = "skip"
    trend: Trend = Trend()
    confidence: Confidence = Confidence()
    features: list[str] = Field(default_factory=list, description="the features that count for adoption")
    max_reasons: int = Field(default=3, ge=1, le=5)
    groups: dict[str, GroupSpec] = Field(min_length=1)
    derived: dict[Literal["churn_risk", "expansion_readiness"], DerivedSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _features_when_adoption(self) -> Scorecard:
        uses_adoption = any((spec.measure or key) == "feature_adoption"
                            for group in self.groups.values() for key, spec in group.measures.items())
        if uses_adoption and not self.features:
            raise ValueError("features: list the features that count for feature_adoption")
        return self


class LoadedScorecard:
    """A validated scorecard and the digest of its text, recorded with every score it produced."""

    def __init__(self, scorecard: Scorecard, source: LoadedFile) -> None:
        self.scorecard = scorecard
        self.path = source.path
        self.digest = source.digest


def load_scorecard(rules_dir: Path) -> LoadedScorecard:
    loaded = read_yaml(rules_dir / "scorecard.yaml")
    return LoadedScorecard(validate(loaded, Scorecard), loaded)
