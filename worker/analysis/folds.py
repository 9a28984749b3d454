"""Time-ordered splits of labelled snapshots, cut by churn events rather than by days.

Churn is rare and arrives unevenly: a split by days (the last third is the holdout) can leave one side with
no churn at all on an org with dozens of lost renewals in its history. Here every split is in time (an earlier
period to fit on, a later one to judge on, a whole horizon apart so that no churn is seen by both) and is
placed where each side holds enough churn events: distinct accounts with a snapshot followed by churn (an
account churns once; after that it is no longer observed). When the history holds too few, `Shortfall`
says exactly how many events each side has and needs.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from worker.analysis.backtest import Observation
from worker.terminal import counted

Pair = tuple[Observation, bool]


def churn_events(pairs: Sequence[Pair]) -> int:
    """Distinct accounts whose snapshots here are followed by churn within the horizon."""
    return len({o.account_id for o, y in pairs if y})


def _days(pairs: Sequence[Pair]) -> list[date]:
    return sorted({o.day for o, _ in pairs})


@dataclass(frozen=True)
class Split:
    train: list[Pair]
    holdout: list[Pair]

    @property
    def holdout_from(self) -> date | None:
        return min((o.day for o, _ in self.holdout), default=None)


@dataclass(frozen=True)
class Shortfall:
    """Why no split will do, in numbers: the events the history labels, and what each side needs."""

    events: int
    first: date | None
    last: date | None
    train_needed: int
    holdout_needed: int
    best_train: int  # the most events a training side reached while the holdout kept what it needs

    def __str__(self) -> str:
        span = f" ({self.first} to {self.last})" if self.first else ""
        if self.events < self.holdout_needed + self.train_needed:
            more = self.holdout_needed + self.train_needed - self.events
            return (f"the replayed history{span} labels {counted(self.events, 'churn event')} (accounts churning "
                    f"within the horizon of a snapshot); fitting needs at least {self.train_needed} to fit on and "
                    f"{self.holdout_needed} later ones to judge on, a horizon apart: {more} more")
        return (f"the replayed history{span} labels {counted(self.events, 'churn event')}, but with "
                f"{self.holdout_needed} kept for judging, the snapshots a horizon before them reach only "
                f"{self.best_train} of the {self.train_needed} needed to fit on (the events are too close together: "
                f"more history is needed)")


class _Timeline:
    """Pairs in day order, with the churn events up to and from each snapshot day, so that every candidate
    split costs a lookup rather than a pass over the pairs."""

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = sorted(pairs, key=lambda p: p[0].day)
        self.days = _days(pairs)
        by_day: dict[date, set[str]] = {}
        for o, y in pairs:
            if y:
                by_day.setdefault(o.day, set()).add(o.account_id)
        self.by_day = by_day
        seen: set[str] = set()
        self.up_to: list[int] = []  # events on snapshot days up to days[i]
        for day in self.days:
            seen |= by_day.get(day, set())
            self.up_to.append(len(seen))
        seen = set()
        self.from_: list[int] = [0] * len(self.days)  # events on snapshot days from days[i] on
        for index in range(len(self.days) - 1, -1, -1):
            seen |= by_day.get(self.days[index], set())
            self.from_[index] = len(seen)

    def events_until(self, last: date) -> int:
        index = bisect_right(self.days, last) - 1
        return self.up_to[index] if index >= 0 else 0

    def between(self, first: date | None, last: date | None) -> list[Pair]:
        """The pairs of snapshot days from `first` to `last` (None: no bound)."""
        keys = [p[0].day for p in self.pairs]
        lo = 0 if first is None else bisect_left(keys, first)
        hi = len(keys) if last is None else bisect_right(keys, last)
        return self.pairs[lo:hi]


def holdout_split(pairs: Sequence[Pair], horizon_days: int, *, min_train: int, min_holdout: int,
                  share: float = 1 / 3) -> Split | Shortfall:
    """The latest stretch of snapshot days holding `share` of the churn events (at least `min_holdout`) is the
    holdout; training is every snapshot a horizon or more before it. When training then holds fewer than
    `min_train` events, the holdout shrinks (never below `min_holdout`) to give training more."""
    line = _Timeline(pairs)
    days = line.days
    total = line.up_to[-1] if days else 0
    want = max(min_holdout, math.ceil(total * share))
    horizon = timedelta(days=horizon_days)
    chosen: date | None = None
    best_train = 0
    # From the latest day backwards: the holdout grows, and training shrinks, as its first day moves earlier.
    for index in range(len(days) - 1, 0, -1):
        if line.from_[index] < min_holdout:
            continue
        events = line.events_until(days[index] - horizon)
        if events < min_train:
            best_train = max(best_train, events)
            break
        chosen = days[index]
        if line.from_[index] >= want:
            break
    if chosen is None:
        return Shortfall(total, days[0] if days else None, days[-1] if days else None, min_train, min_holdout,
                         best_train)
    return Split(line.between(None, chosen - horizon), line.between(chosen, None))


def rolling_folds(pairs: Sequence[Pair], horizon_days: int, *, min_events: int, max_folds: int = 4
                  ) -> list[Split]:
    """Rolling-origin folds over `pairs`: the latest stretches of days, each holding at least `min_events` churn
    events, each judged by what the snapshots a horizon before it would learn (which need `min_events` too).
    Oldest fold first; empty when the history is too short for even one."""
    line = _Timeline(pairs)
    days = line.days
    horizon = timedelta(days=horizon_days)
    folds: list[Split] = []
    end = len(days)
    while len(folds) < max_folds and end > 0:
        held: set[str] = set()
        start = end
        while start > 0 and len(held) < min_events:
            start -= 1
            held |= line.by_day.get(days[start], set())
        if len(held) < min_events:
            break
        first, last = days[start], days[end - 1]
        if line.events_until(first - horizon) < min_events:
            break
        folds.append(Split(line.between(None, first - horizon), line.between(first, last)))
        end = start
    return folds[::-1]
