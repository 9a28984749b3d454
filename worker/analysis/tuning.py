"""`healthbeat backtest --tune`: propose group and measure weights that rank churn better, never apply them.

The fit is a coordinate search on AUC: one weight at a time is tried at a few multiples of its value
(×0 to ×2, floored at 1 since the scorecard wants weights above zero) and kept when it ranks the training
snapshots' churn better by more than a small margin, after paying a price for the share of weight it
moves, and without making either half of the accounts worse; passes repeat until nothing moves. Churn
events are few and snapshots of one account are alike, so these guards are what keep the search from
fitting one account's quirks. The result stays readable: only weights that earned their change move,
to whole numbers of at least 1, and every other weight keeps its number (weights are relative, so a level
need not sum to 100). Points and bands are left alone;
measures are neither added nor removed.

Training and holdout are periods, not shuffled rows, over the whole history the backtest replays: the
holdout is the latest stretch of snapshots holding a third of the churn events (at least
`MIN_HOLDOUT_EVENTS`), and a training snapshot must have its whole horizon before the holdout starts, so no
churn is seen by both (`worker.analysis.folds`). Training needs `MIN_TRAIN_EVENTS` churn events; with fewer in
the history the answer says how many there are and how many are needed. The proposal is written only when it
does at least as well as the current weights on the holdout; otherwise the answer says why and the current
scorecard stands.

The proposed file is the current `scorecard.yaml` with the weights edited in place (its comments kept),
a header with old → new weights and the training and holdout AUC, and `# was N` beside each changed weight.
Ops compare it with `rules diff` and `rules preview` and adopt it by copying it into `rules/`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import yaml

from worker.analysis.backtest import Observation, measure_keys
from worker.analysis.folds import Shortfall, holdout_split
from worker.rulefile import raise_problems, read_yaml, validate
from worker.scoring.scorecard import Scorecard, semantic_problems
from worker.store import iso

FACTORS = (0.0, 0.5, 0.75, 1.25, 1.5, 2.0)
MIN_GAIN = 0.002  # training AUC a change must add to be kept (and may cost neither half of the accounts)
MOVE_PRICE = 0.02  # AUC a change must pay per share of weight it moves: readable proposals stay near the current
MAX_PASSES = 8
MIN_TRAIN_EVENTS = 5  # churn events (accounts) the training period needs: fewer is a fit to one account
MIN_HOLDOUT_EVENTS = 3  # and the holdout

Pair = tuple[Observation, bool]


@dataclass(frozen=True)
class Weights:
    """Group weights and, per group, measure weights (relative within their level)."""

    groups: dict[str, float]
    measures: dict[str, dict[str, float]]

    @classmethod
    def of(cls, scorecard: Scorecard) -> Weights:
        return cls({g: spec.weight for g, spec in scorecard.groups.items()},
                   {g: {m: s.weight for m, s in spec.measures.items()} for g, spec in scorecard.groups.items()})

    def changes(self, new: Weights) -> list[str]:
        """Each weight that differs, as `engagement.meetings: 30 → 45`."""
        lines = [f"{g}: {_show(w)} → {_show(new.groups[g])}" for g, w in self.groups.items() if w != new.groups[g]]
        for group, measures in self.measures.items():
            lines += [f"{group}.{m}: {_show(w)} → {_show(new.measures[group][m])}"
                      for m, w in measures.items() if w != new.measures[group][m]]
        return lines


@dataclass(frozen=True)
class Period:
    first: date | None
    last: date | None
    snapshots: int  # account-snapshots
    churned: int  # of them, followed by churn within the horizon

    def __str__(self) -> str:
        return f"{self.first} to {self.last} ({self.snapshots} account-snapshots, {self.churned} before a churn)"


@dataclass(frozen=True)
class Fit:
    old: Weights
    new: Weights
    train: Period
    holdout: Period
    train_auc: tuple[float | None, float | None]  # (current, proposed)
    holdout_auc: tuple[float | None, float | None]
    excluded: int  # snapshots of accounts in segments that override weights
    proposed: bool
    reason: str
    shortfall: Shortfall | None = None  # what the history lacks, when it is too little to tune on


class _Scorer:
    """Scores for any weights from the points the replay kept: the arithmetic of `score_account`, fast.

    Group scores are cached per group, so trying one measure's weight recomputes one group only. AUC comes
    for all the samples and for two halves of the accounts (by a hash of the id), so a change that helps one
    half at the other's expense (one odd account buying a weight) is refused."""

    def __init__(self, scorecard: Scorecard, samples: Sequence[Pair]) -> None:
        keys = measure_keys(scorecard)
        self.groups = list(scorecard.groups)
        self.labels = [y for _, y in samples]
        self.halves = [zlib.crc32(obs.account_id.encode()) % 2 for obs, _ in samples]
        self.present = [[[(keys[i][1], p) for i in range(len(keys)) if keys[i][0] == g
                          and (p := obs.points[i]) is not None] for g in self.groups] for obs, _ in samples]
        self._cache: dict[str, list[float | None]] = {}

    def group_scores(self, group: str, weights: dict[str, float], *, keep: bool = True) -> list[float | None]:
        index = self.groups.index(group)
        out: list[float | None] = []
        for sample in self.present:
            total = sum(weights[m] for m, _ in sample[index])
            out.append(sum(weights[m] * p for m, p in sample[index]) / total if total > 0 else None)
        if keep:
            self._cache[group] = out
        return out

    def scores(self, weights: Weights, trial: tuple[str, list[float | None]] | None = None) -> list[float]:
        columns = [trial[1] if trial and trial[0] == g else self._cache.get(g) or
                   self.group_scores(g, weights.measures[g]) for g in self.groups]
        out = []
        for row in range(len(self.labels)):
            parts = [(weights.groups[g], column[row]) for g, column in zip(self.groups, columns, strict=True)]
            total = sum(w for w, v in parts if v is not None)
            out.append(sum(w * v for w, v in parts if v is not None) / total if total > 0 else 0.0)
        return out

    def auc(self, weights: Weights, trial: tuple[str, list[float | None]] | None = None) -> float | None:
        return self.aucs(weights, trial)[0]

    def aucs(self, weights: Weights, trial: tuple[str, list[float | None]] | None = None
             ) -> tuple[float | None, float | None, float | None]:
        """AUC over all samples, then over each half of the accounts: one sort, one pass (Mann-Whitney U,
        counting for each churned sample the retained ones scored higher, ties half)."""
        order = sorted(zip(self.scores(weights, trial), self.labels, self.halves, strict=True), reverse=True)
        above = [0, 0]  # retained samples scored higher, per half
        u_all, u_half = 0.0, [0.0, 0.0]
        positives, negatives = [0, 0], [0, 0]
        index = 0
        while index < len(order):
            end = index
            while end < len(order) and order[end][0] == order[index][0]:
                end += 1
            tied_pos, tied_neg = [0, 0], [0, 0]
            for _, churned, half in order[index:end]:
                (tied_pos if churned else tied_neg)[half] += 1
            for half in (0, 1):
                u_half[half] += tied_pos[half] * (above[half] + tied_neg[half] / 2)
                u_all += tied_pos[half] * (sum(above) + sum(tied_neg) / 2)
            for half in (0, 1):
                above[half] += tied_neg[half]
                positives[half] += tied_pos[half]
                negatives[half] += tied_neg[half]
            index = end

        def ratio(u: float, p: int, n: int) -> float | None:
            return u / (p * n) if p and n else None

        return (ratio(u_all, sum(positives), sum(negatives)), ratio(u_half[0], positives[0], negatives[0]),
                ratio(u_half[1], positives[1], negatives[1]))


def rescore(scorecard: Scorecard, weights: Weights, observations: Sequence[Observation]) -> list[float]:
    """The overall scores `weights` give these observations, from the points the replay kept."""
    return _Scorer(scorecard, [(obs, False) for obs in observations]).scores(weights)


def split(pairs: Sequence[Pair], horizon_days: int, holdout_share: float) -> tuple[list[Pair], list[Pair]]:
    """The latest stretch of snapshot days holding `holdout_share` of the churn events is the holdout; training
    snapshots end a horizon before it (`worker.analysis.folds.holdout_split`). Empty when there is too little."""
    found = holdout_split(pairs, horizon_days, min_train=MIN_TRAIN_EVENTS, min_holdout=MIN_HOLDOUT_EVENTS,
                          share=holdout_share)
    return ([], []) if isinstance(found, Shortfall) else (found.train, found.holdout)


def fit_weights(scorecard: Scorecard, train: Sequence[Pair]) -> Weights:
    """Coordinate search on training AUC, less a price for moving away from the current weights; a change
    is kept only when it helps by more than `MIN_GAIN` and hurts neither half of the accounts. The result is
    whole numbers (every candidate is), and the weights that never moved keep their numbers."""
    scorer = _Scorer(scorecard, train)
    start = Weights.of(scorecard)
    weights = start
    best = _objective(scorer.aucs(weights), weights, start)
    if best is None:
        return start
    for _ in range(MAX_PASSES):
        moved = False
        for group in (list(scorecard.groups) if len(scorecard.groups) > 1 else []):
            for candidate in _candidates(weights.groups[group]):
                trial = Weights({**weights.groups, group: candidate}, weights.measures)
                value = _objective(scorer.aucs(trial), trial, start)
                if _better(value, best):
                    best, weights, moved = value, trial, True
        for group, measures in start.measures.items():
            for measure in (list(measures) if len(measures) > 1 else []):
                for candidate in _candidates(weights.measures[group][measure]):
                    proposal = {**weights.measures[group], measure: candidate}
                    trial = Weights(weights.groups, {**weights.measures, group: proposal})
                    column = scorer.group_scores(group, proposal, keep=False)
                    value = _objective(scorer.aucs(weights, (group, column)), trial, start)
                    if _better(value, best):
                        best, weights, moved = value, trial, True
                        scorer.group_scores(group, proposal)
        if not moved:
            break
    return weights


Objective = tuple[float, float, float]


def _objective(aucs: tuple[float | None, ...], weights: Weights, start: Weights) -> Objective | None:
    if any(a is None for a in aucs):
        return None
    price = MOVE_PRICE * _distance(weights, start)
    return (aucs[0] or 0.0) - price, (aucs[1] or 0.0) - price, (aucs[2] or 0.0) - price


def _better(value: Objective | None, best: Objective | None) -> bool:
    """Better overall by more than the noise margin, and worse in neither half of the accounts by more."""
    if value is None or best is None:
        return False
    return value[0] > best[0] + MIN_GAIN and all(v >= b - MIN_GAIN for v, b in zip(value[1:], best[1:], strict=True))


def _distance(a: Weights, b: Weights) -> float:
    """How far weights moved: the share of weight that changed hands, summed over the levels."""
    levels = [(a.groups, b.groups), *((a.measures[g], b.measures[g]) for g in a.measures)]
    total = 0.0
    for x, y in levels:
        sx, sy = sum(x.values()), sum(y.values())
        total += sum(abs(x[k] / sx - y[k] / sy) for k in x) / 2
    return total


def _candidates(value: float) -> list[float]:
    return sorted({max(1.0, round(value * f)) for f in FACTORS} - {value})


def tune(scorecard: Scorecard, pairs: Sequence[Pair], horizon_days: int, *, holdout_share: float = 1 / 3) -> Fit:
    """Fit on the earlier period, judge on the later one, and say whether the proposal is worth making."""
    weighted_segments = {s.name for s in scorecard.segments
                         if s.groups or any(o.weight is not None for o in s.measures.values())}
    usable = [p for p in pairs if p[0].segment not in weighted_segments]
    found = holdout_split(usable, horizon_days, min_train=MIN_TRAIN_EVENTS, min_holdout=MIN_HOLDOUT_EVENTS,
                          share=holdout_share)
    old = Weights.of(scorecard)
    if isinstance(found, Shortfall):
        return Fit(old, old, _period([]), _period([]), (None, None), (None, None), len(pairs) - len(usable),
                   False, f"not enough churn to tune: {found}", found)
    train, holdout = found.train, found.holdout
    train_period, holdout_period = _period(train), _period(holdout)
    new = fit_weights(scorecard, train)
    train_auc = (_auc(scorecard, train, old), _auc(scorecard, train, new))
    holdout_auc = (_auc(scorecard, holdout, old), _auc(scorecard, holdout, new))
    proposed, reason = True, "the proposed weights rank churn at least as well on the holdout"
    if new == old:
        proposed, reason = False, "no weight change improves the training AUC by more than noise: keep the current"
    elif (holdout_auc[1] or 0) < (holdout_auc[0] or 0):
        proposed = False
        reason = (f"the fitted weights do worse on the holdout (AUC {_show(holdout_auc[1])} < "
                  f"{_show(holdout_auc[0])}): they fit noise in the training period; keep the current")
    return Fit(old, new, train_period, holdout_period, train_auc, holdout_auc, len(pairs) - len(usable),
               proposed, reason)


def _auc(scorecard: Scorecard, pairs: Sequence[Pair], weights: Weights) -> float | None:
    value = _Scorer(scorecard, pairs).auc(weights)
    return None if value is None else round(value, 4)


def _period(pairs: Sequence[Pair]) -> Period:
    days = [obs.day for obs, _ in pairs]
    return Period(min(days, default=None), max(days, default=None), len(pairs), sum(1 for _, y in pairs if y))


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# -- the proposed file ---------------------------------------------------------------------------------

def write_proposal(source: Path, fit: Fit, out: Path, *, made_at: datetime) -> None:
    """The source scorecard with the new weights in place and the figures in a header; checked like
    `rules check` before it is left on disk (a `RuleFileError` if it would not load)."""
    text = source.read_text(encoding="utf-8")
    edits = sorted(_weight_edits(text, fit), reverse=True)
    for start, end, replacement in edits:
        text = text[:start] + replacement + text[end:]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_header(source, fit, made_at) + text, encoding="utf-8")
    loaded = read_yaml(out)
    raise_problems(loaded, semantic_problems(validate(loaded, Scorecard)))


def _weight_edits(text: str, fit: Fit) -> list[tuple[int, int, str]]:
    root = yaml.compose(text)
    groups = _child(root, "groups")
    edits = []
    for group, old in fit.old.groups.items():
        group_node = _child(groups, group)
        edits += _edit(text, _child(group_node, "weight"), old, fit.new.groups[group])
        measures = _child(group_node, "measures")
        for measure, old_weight in fit.old.measures[group].items():
            node = _child(_child(measures, measure), "weight")
            edits += _edit(text, node, old_weight, fit.new.measures[group][measure])
    return edits


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for k, value in node.value if getattr(k, "value", None) == key), None)


def _edit(text: str, node: yaml.Node | None, old: float, new: float) -> list[tuple[int, int, str]]:
    if old == new:
        return []
    if not isinstance(node, yaml.ScalarNode):
        raise ValueError(f"the scorecard no longer has the weight {_show(old)} it was tuned from: "
                         f"was it edited during the backtest?")
    start, end = node.start_mark.index, node.end_mark.index
    rest_of_line = text[end:].split("\n", 1)[0]
    note = f"  # was {_show(old)}" if not rest_of_line.strip() else ""
    return [(start, end, _show(new) + note)]


def _header(source: Path, fit: Fit, made_at: datetime) -> str:
    lines = [
        f"# PROPOSED by `healthbeat backtest --tune` on {iso(made_at)} from {source}. NOT IN FORCE.",
        "# Compare: `healthbeat rules diff DIR` and `healthbeat rules preview DIR` (DIR holding this file as",
        "# scorecard.yaml beside alerts.yaml); adopt it by copying it into rules/.",
        f"# Training  {fit.train}: AUC {_show(fit.train_auc[0])} → {_show(fit.train_auc[1])}",
        f"# Holdout   {fit.holdout}: AUC {_show(fit.holdout_auc[0])} → {_show(fit.holdout_auc[1])}",
        "# Weights (old → new):",
        *(f"#   {change}" for change in fit.old.changes(fit.new)),
        "#",
    ]
    return "\n".join(lines) + "\n"


def fit_lines(fit: Fit) -> list[str]:
    """The fit in a few sentences for the terminal."""
    lines = [f"Tuning: training {fit.train}; holdout {fit.holdout}.",
             f"AUC current → proposed: training {_show(fit.train_auc[0])} → {_show(fit.train_auc[1])}, "
             f"holdout {_show(fit.holdout_auc[0])} → {_show(fit.holdout_auc[1])}."]
    if fit.excluded:
        lines.append(f"{fit.excluded} snapshots of accounts in segments with their own weights were left out.")
    changes = fit.old.changes(fit.new)
    if changes:
        lines.append("Weights: " + "; ".join(changes))
    lines.append(("Proposed: " if fit.proposed else "Not proposed: ") + fit.reason)
    return lines


def fit_as_dict(fit: Fit) -> dict[str, object]:
    def period(p: Period) -> dict[str, object]:
        return {"from": p.first and p.first.isoformat(), "to": p.last and p.last.isoformat(),
                "snapshots": p.snapshots, "churned": p.churned}

    return {"proposed": fit.proposed, "reason": fit.reason, "train": period(fit.train),
            "holdout": period(fit.holdout),
            "auc": {"train": {"current": fit.train_auc[0], "proposed": fit.train_auc[1]},
                    "holdout": {"current": fit.holdout_auc[0], "proposed": fit.holdout_auc[1]}},
            "weights": {"current": {"groups": fit.old.groups, "measures": fit.old.measures},
                        "proposed": {"groups": fit.new.groups, "measures": fit.new.measures}},
            "changes": fit.old.changes(fit.new), "excluded_snapshots": fit.excluded}
