"""`healthbeat backtest`: the backtest, its charts and, with `--tune`, the proposed weights, as one result.

The one module that joins the replay (`backtest`), the fit (`tuning`) and the charts (`plots`), so none
of them needs another's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.alerting.rules import LoadedRules
from worker.analysis.backtest import Plan, backtest_as_dict, format_backtest, labelled, run_backtest
from worker.analysis.outcomes import Outcomes
from worker.analysis.plots import plot_backtest
from worker.analysis.tuning import fit_as_dict, fit_lines, tune, write_proposal
from worker.scoring.scorecard import LoadedScorecard
from worker.store import Store


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
