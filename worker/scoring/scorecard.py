"""The scorecard file (`rules/scorecard.yaml`): measures → groups → overall, validated on load.

Strict models (a misspelt key is an error, never silently ignored), and checks that cross fields: points
strictly increasing in raw value, scores within 0..100, bands in order, parameters the measure accepts.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from worker.config import parse_duration
from worker.rulefile import LoadedFile, raise_problems, read_yaml, validate
from worker.scoring.measures import DERIVED_ONLY, LIBRARY

MissingPolicy = Literal["skip", "neutral", "zero"]


def _duration_with_unit(value: object) -> timedelta:
    """In a rule file a bare number is ambiguous (90 what?): a duration must carry its unit."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"give a unit: {value}d for days, {value}h for hours (a bare number is ambiguous)")
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration_with_unit)]


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
    baseline: Duration | None = None
    min_baseline: float | None = Field(default=None, ge=0, description="the least activity that makes a usual")
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
                                  ("half_life", self.half_life), ("baseline", self.baseline),
                                  ("min_baseline", self.min_baseline),
                                  ("priorities", tuple(self.priorities) if self.priorities else None))
                if v is not None}


class GroupSpec(_Strict):
    weight: float = Field(gt=0)
    measures: dict[str, MeasureSpec] = Field(min_length=1)



class DerivedSpec(_Strict):
    description: str = ""
    measures: dict[str, MeasureSpec] = Field(min_length=1)



class SegmentMatch(_Strict):
    """Every condition given must hold; `arr` is the amount of the account's next renewal (or last won deal)."""

    type: list[str] | None = None
    industry: list[str] | None = None
    arr_min: float | None = Field(default=None, ge=0)
    arr_max: float | None = Field(default=None, ge=0)

    def matches(self, account: dict[str, Any]) -> bool:
        arr = account.get("arr")
        return all((
            self.type is None or account.get("type") in self.type,
            self.industry is None or account.get("industry") in self.industry,
            self.arr_min is None or (arr is not None and arr >= self.arr_min),
            self.arr_max is None or (arr is not None and arr < self.arr_max),
        ))


class MeasureOverride(_Strict):
    weight: float | None = Field(default=None, gt=0)
    points: list[tuple[float, float]] | None = Field(default=None, min_length=2)

    _points = field_validator("points")(MeasureSpec._points_in_order.__func__)  # type: ignore[attr-defined]


class GroupOverride(_Strict):
    weight: float = Field(gt=0)


class Segment(_Strict):
    """Accounts that are scored differently: other weights, other points (never other measures)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    match: SegmentMatch
    groups: dict[str, GroupOverride] = Field(default_factory=dict)
    measures: dict[str, MeasureOverride] = Field(default_factory=dict, description='keys "group.measure"')


def duration_text(value: timedelta) -> str:
    """A duration as the rule files write it: the largest whole unit of d, h, m, s (90d, 36h)."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


UNKNOWN = "unknown"
"""The band of a score with too little data behind it to call it red, yellow or green (`Scorecard.band`)."""

BANDS = ("red", "yellow", "green", UNKNOWN)
"""Every band a score can fall in: the three a score earns, worst first, then "we do not know"."""


class Bands(_Strict):
    red: float = Field(ge=0, le=100)
    yellow: float = Field(ge=0, le=100)
    min_coverage: float = Field(default=0, ge=0, le=1, description="below this coverage the band is unknown")

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
    stale_after: Duration = timedelta(days=30)


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
    segments: list[Segment] = Field(default_factory=list)

    def band(self, score: float, coverage: float) -> str:
        """The band of a score, or `unknown` when too little of the scorecard had data to call it.

        A score is a weighted mean of what there was: an account we know almost nothing about would otherwise be
        called red or green by the measures that the missing-data policy fills in (`zero`, `neutral`) or by the
        one or two it has, and a CSM would act on a guess. Coverage (the share of the scorecard's weight whose
        measures had data) below `bands.min_coverage`, or none at all, says "we do not know" instead.
        """
        if coverage <= 0 or coverage < self.bands.min_coverage:
            return UNKNOWN
        if score < self.bands.red:
            return "red"
        if score < self.bands.yellow:
            return "yellow"
        return "green"

    def all_measures(self) -> list[tuple[tuple[str | int, ...], str, MeasureSpec]]:
        """(location in the file, library name, spec) of every measure, groups then derived scores."""
        found: list[tuple[tuple[str | int, ...], str, MeasureSpec]] = []
        for group_name, group in self.groups.items():
            found += [(("groups", group_name, "measures", key), spec.measure or key, spec)
                      for key, spec in group.measures.items()]
        for derived_name, derived in self.derived.items():
            found += [(("derived", derived_name, "measures", key), spec.measure or key, spec)
                      for key, spec in derived.measures.items()]
        return found

    def segment_of(self, account: dict[str, Any]) -> Segment | None:
        return next((segment for segment in self.segments if segment.match.matches(account)), None)

    def for_segment(self, segment: Segment | None) -> Scorecard:
        """This scorecard with a segment's weights and points in place (the measures stay the same)."""
        if segment is None:
            return self
        groups = {}
        for group_name, group in self.groups.items():
            measures = {}
            for key, spec in group.measures.items():
                override = segment.measures.get(f"{group_name}.{key}")
                measures[key] = spec if override is None else spec.model_copy(update={
                    k: v for k, v in (("weight", override.weight), ("points", override.points)) if v is not None})
            weight = segment.groups[group_name].weight if group_name in segment.groups else group.weight
            groups[group_name] = group.model_copy(update={"weight": weight, "measures": measures})
        return self.model_copy(update={"groups": groups})


def semantic_problems(scorecard: Scorecard) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks across fields and against the measure library, each at the place in the file it concerns."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    library = ", ".join(sorted(LIBRARY))
    for loc, name, spec in scorecard.all_measures():
        derived = loc[0] == "derived"
        if name in DERIVED_ONLY:
            if not derived:
                problems.append((loc, f"{name!r} (the overall score) is an input of derived scores only"))
            for param in spec.params():
                problems.append(((*loc, param), f"{name} takes no parameters"))
            continue
        if name not in LIBRARY:
            extra = f", {', '.join(sorted(DERIVED_ONLY))}" if derived else ""
            problems.append((loc, f"unknown measure {name!r}; known: {library}{extra}"))
            continue
        accepted = set(LIBRARY[name].defaults)
        for param in spec.params():
            if param not in accepted:
                problems.append(((*loc, param), f"{name} takes no {param!r} "
                                                f"(it takes: {', '.join(sorted(accepted)) or 'no parameters'})"))
        if "features" in LIBRARY[name].needs and not scorecard.features:
            problems.append((("features",), f"list the features that count for {name} ({'.'.join(map(str, loc))})"))
    for index, segment in enumerate(scorecard.segments):
        for group_name in segment.groups:
            if group_name not in scorecard.groups:
                problems.append((("segments", index, "groups", group_name), f"no group {group_name!r}"))
        for ref in segment.measures:
            group_name, _, key = ref.partition(".")
            if key not in scorecard.groups.get(group_name, GroupSpec.model_construct(measures={})).measures:
                problems.append((("segments", index, "measures", ref),
                                 f"no measure {ref!r} (write it as group.measure)"))
    names = [segment.name for segment in scorecard.segments]
    for index, name in enumerate(names):
        if name in names[:index]:
            problems.append((("segments", index, "name"), f"segment {name!r} is defined twice"))
    return problems


class LoadedScorecard:
    """A validated scorecard and the digest of its text, recorded with every score it produced."""

    def __init__(self, scorecard: Scorecard, source: LoadedFile) -> None:
        self.scorecard = scorecard
        self.path = source.path
        self.digest = source.digest


def load_scorecard(rules_dir: Path) -> LoadedScorecard:
    loaded = read_yaml(rules_dir / "scorecard.yaml")
    scorecard = validate(loaded, Scorecard)
    raise_problems(loaded, semantic_problems(scorecard))
    return LoadedScorecard(scorecard, loaded)
