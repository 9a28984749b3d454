"""`healthbeat backtest`: the backtest, its charts and, with `--tune`, the proposed weights, as one result.

The one module that joins the replay (`backtest`), the fit (`tuning`) and the charts (`plots`), so none
of them needs another's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from worker.alerting.rules import LoadedRules
from worker.analysis.backtest import Observation, Plan, backtest_as_dict, format_backtest, labelled, run_backtest
from worker.analysis.outcomes import Outcomes
from worker.analysis.plots import plot_backtest
from worker.analysis.tuning import Fit, Period, fit_as_dict, fit_lines, tune, write_proposal
from worker.scoring.scorecard import LoadedScorecard
from worker.store import Store
from worker.terminal import counted


@dataclass(frozen=True)
class CommandResult:
    """What `healthbeat backtest` prints (stdout alone holds the table or the JSON), says, and exits with."""

    output: str
    messages: tuple[str, ...]
    exit_code: int


def run_command(store: Store, loaded: LoadedScorecard, alerts: LoadedRules | None, outcomes: Outcomes,
                plan: Plan, *, fmt: str = "table", plot_dir: Path | None = None, tune_out: Path | None = None,
                now: datetime | None = None) -> CommandResult:
    """The backtest, its charts, and with `tune_out` the tuning and its proposed file.

    Exit 1 when charts cannot be drawn or tuning proposes nothing (the file is then not written)."""
    result, replayed = run_backtest(store, loaded, alerts, outcomes, plan)
    messages: list[str] = []
    code = 0
    document: dict[str, Any] = backtest_as_dict(result)
    text = format_backtest(result)
    if tune_out is not None:
        pairs = labelled(replayed.observations, outcomes, plan.horizon_days, plan.until.date())
        fit = tune(loaded.scorecard, pairs, plan.horizon_days)
        document["tuning"] = fit_as_dict(fit)
        text += "\n" + "\n".join(fit_lines(fit))
        if fit.proposed:
            write_proposal(loaded.path, fit, tune_out, made_at=now or plan.until)
            document["tuning"]["written_to"] = str(tune_out)
            messages.append(f"proposed scorecard written to {tune_out}: put it beside a copy of alerts.yaml as "
                            f"DIR/scorecard.yaml, then `healthbeat rules diff DIR` and `healthbeat rules preview DIR`")
        else:
            messages.append(f"no proposal written to {tune_out}: {fit.reason}")
            if not fit.train.churned or not fit.holdout.churned:
                messages.append(churn_coverage(store, outcomes, plan, pairs, fit))
            code = 1
    if plot_dir is not None:
        try:
            charts = plot_backtest(result, plot_dir)
        except RuntimeError as exc:
            messages.append(str(exc))
            code = 1
        else:
            messages.append("charts written: " + ", ".join(str(p) for p in charts))
    output = json.dumps(document, indent=2, ensure_ascii=False) if fmt == "json" else text
    return CommandResult(output, tuple(messages), code)


def churn_coverage(store: Store, outcomes: Outcomes, plan: Plan, pairs: Sequence[tuple[Observation, bool]],
                   fit: Fit) -> str:
    """What the history holds against what the tuning saw, when it saw too little churn: the lost renewals
    in the store, how many the replayed period labels and how many each side of the split got, and the
    `--period` that would reach back to the first of them (a horizon before it, and not before the store
    has three months of data)."""
    lost = sorted(outcomes.churned_on.values())
    first_day, until = plan.days()[0], plan.until.date()

    def events(period: Period) -> int:
        if period.first is None or period.last is None:
            return 0
        return len({o.account_id for o, y in pairs if y and period.first <= o.day <= period.last})

    labelled_events = len({o.account_id for o, y in pairs if y})
    text = (f"the store records {counted(len(lost), 'lost renewal')}"
            + (f" ({lost[0]} to {lost[-1]})" if lost else "")
            + f"; the replayed period ({first_day} to {until}) labels {labelled_events} of them, of which "
            f"{events(fit.train)} fall to the training snapshots and {events(fit.holdout)} to the holdout")
    data = [str(v)[:10] for v in (store.scalar("SELECT min(occurred_at) FROM activities WHERE is_deleted = 0"),
                                  store.scalar("SELECT min(day) FROM usage_daily")) if v]
    if not lost:
        return text + "; more history is needed"
    start = lost[0] - plan.horizon
    if data:
        start = max(start, date.fromisoformat(min(data)) + timedelta(days=90))
    if start < first_day:
        return text + f"; --period {(until - start).days}d would replay from {start}"
    return text + "; the store holds no earlier churn to reach: more history is needed"
