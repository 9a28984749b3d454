"""`healthbeat backtest`: the backtest, the learned churn risk beside it, its charts and, with `--tune`, the
proposed weights, as one result; and `healthbeat churn-model fit`.

The one module that joins the replay (`backtest`), the fits (`tuning`, `churn_fit`) and the charts (`plots`),
so none of them needs another's. The replay reaches back over the whole history the store holds: the figures
of the backtest are those of its period, the learned churn risk is fitted on the earlier history and judged
beside the hand-set scorecard on the later, and `--tune` splits the whole of it in time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.alerting.rules import LoadedRules
from worker.analysis import churn_fit
from worker.analysis.backtest import Plan, backtest_as_dict, format_backtest, labelled, run_backtest
from worker.analysis.outcomes import Outcomes
from worker.analysis.plots import plot_backtest
from worker.analysis.tuning import fit_as_dict, fit_lines, tune, write_proposal
from worker.scoring.churn_model import MODEL_FILE
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
    result, replayed = run_backtest(store, loaded, alerts, outcomes, plan, history=True)
    messages: list[str] = []
    code = 0
    document: dict[str, Any] = backtest_as_dict(result)
    pairs = labelled(replayed.observations, outcomes, plan.horizon_days, plan.until.date())
    learned = churn_fit.fit_churn_model(pairs, outcomes, loaded.scorecard, plan.horizon_days,
                                        fitted_at=now or plan.until)
    document["learned_churn_risk"] = churn_fit.fit_as_dict(learned)
    text = format_backtest(result, more=churn_fit.fit_lines(learned)[:4])
    if tune_out is not None:
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
            if fit.shortfall is not None:
                messages.append(churn_coverage(store, outcomes))
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


def churn_coverage(store: Store, outcomes: Outcomes) -> str:
    """Beside what the replayed history lacks (the fit's reason), what the store holds: the lost renewals it
    records (and when), and how far back its data reaches."""
    lost = sorted(outcomes.churned_on.values())
    text = f"the store records {counted(len(lost), 'lost renewal')}" + (f" ({lost[0]} to {lost[-1]})" if lost else "")
    data = [str(v)[:10] for v in (store.scalar("SELECT min(occurred_at) FROM activities WHERE is_deleted = 0"),
                                  store.scalar("SELECT min(day) FROM usage_daily")) if v]
    if data:
        text += (f"; the store's data starts on {min(data)} (snapshots need 90 days of it behind them: a longer "
                 f"HEALTHBEAT_SALESFORCE_BACKFILL reaches further back)")
    return text


@dataclass(frozen=True)
class ModelResult:
    """What `healthbeat churn-model fit` prints, says, and exits with."""

    output: str
    messages: tuple[str, ...]
    exit_code: int


def fit_command(store: Store, loaded: LoadedScorecard, outcomes: Outcomes, plan: Plan, out: Path, *,
                fmt: str = "table", now: datetime) -> ModelResult:
    """Fit the churn model on the store's whole history and write it to `out` (exit 1, nothing written, when
    there is too little history or a measure leaks)."""
    fit = churn_fit.fit_from_store(store, loaded, outcomes, plan, fitted_at=now)
    lines = churn_fit.fit_lines(fit)
    document: dict[str, Any] = churn_fit.fit_as_dict(fit)
    messages: list[str] = []
    code = 0
    if fit.model is None:
        messages.append(f"no churn model written to {out}: {fit.reason}")
        code = 1
    else:
        proposed = out.name != MODEL_FILE
        churn_fit.write_model(fit.model, out, loaded.scorecard, source="healthbeat churn-model fit", proposed=proposed)
        document["written_to"] = str(out)
        messages.append(f"churn model written to {out}" + (
            f": compare it with `healthbeat rules diff DIR` (DIR a copy of the rules with it as "
            f"{MODEL_FILE}); adopt it by renaming it to {MODEL_FILE} in the rules folder"
            if proposed else ": it is in force from the next cycle"))
    output = json.dumps(document, indent=2, ensure_ascii=False) if fmt == "json" else "\n".join(lines)
    return ModelResult(output, tuple(messages), code)
