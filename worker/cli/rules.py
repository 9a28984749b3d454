"""Commands ops check rule files with: rules check, test, preview, diff, stats."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from worker.cli.common import (
    DbOption,
    FormatOption,
    RulesOption,
    app,
    check_format,
    cli_settings,
    emit,
    err,
    open_store,
)
from worker.rulebook.in_force import load_rules
from worker.scoring.churn_model import MODEL_FILE
from worker.terminal import Column, FittedTable, error_text, for_format

if TYPE_CHECKING:
    from worker.service.feedback import RuleStats

rules_app = typer.Typer(no_args_is_help=True, help="Check, test, preview and compare the rule files.")
app.add_typer(rules_app, name="rules")


@rules_app.command("check")
def rules_check(rules_dir: RulesOption = None) -> None:
    """Validate scorecard.yaml, alerts.yaml and churn_model.yaml (when there is one), and run the scorecard's
    tests: every problem with file, line and field."""
    from worker.rulebook.scorecard_tests import run_scorecard_tests

    settings = cli_settings(rules_dir=rules_dir)
    scorecard, _, problems = load_rules(settings.rules_dir)
    # A broken scorecard is already named above; its tests could only say so again.
    tests = run_scorecard_tests(settings.rules_dir) if scorecard is not None else None
    if tests is not None:
        problems += tests.problems + [failure for case in tests.failed for failure in case.failures]
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1)
    passed = f"; {len(tests.passed)} scorecard tests pass" if tests is not None and tests.results else ""
    model = settings.rules_dir / MODEL_FILE
    files = (f"scorecard.yaml, alerts.yaml and {MODEL_FILE} are" if model.exists()
             else "scorecard.yaml and alerts.yaml are")
    typer.echo(f"{settings.rules_dir}: {files} valid{passed}")


@rules_app.command("test")
def rules_test(files: Annotated[list[Path] | None, typer.Argument(
                   help="Test files (default: RULES_DIR/tests/*.yaml).")] = None,
               rules_dir: RulesOption = None) -> None:
    """Run the rule tests (promtool-style): alert rules (given facts over cycles, expect these nudges) and the
    scorecard (given activity, expect these measures, scores and bands). Exit 1 on any failure."""
    from worker.rulebook.alert_tests import format_report
    from worker.rulebook.scorecard_tests import run_all_rule_tests

    report = run_all_rule_tests(cli_settings(rules_dir=rules_dir).rules_dir, files)
    typer.echo(format_report(report))
    if not report.ok:
        raise typer.Exit(1)


@rules_app.command("preview")
def rules_preview(new_rules_dir: Annotated[Path, typer.Argument(help="The changed rule directory.")],
                  fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
                  db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """What NEW_RULES_DIR would change on the current data (an in-memory copy; the database is never written)."""
    from worker.clock import system_clock
    from worker.rulebook.preview import format_preview, preview_rules, to_json

    if fmt not in ("table", "json"):
        err.print(error_text(f"--format must be table or json, not {fmt!r}"))
        raise typer.Exit(2)
    settings = cli_settings(db, rules_dir)
    if not settings.db.exists():
        err.print(error_text(f"No database at {settings.db}: run a cycle first (healthbeat run --once)."))
        raise typer.Exit(1)
    with open_store(settings, lock=False) as store:
        preview = preview_rules(store, settings.rules_dir, new_rules_dir, system_clock())
    if fmt == "json":
        sys.stdout.write(to_json(preview) + "\n")
    else:
        typer.echo(format_preview(preview))


@rules_app.command("diff")
def rules_diff(new_rules_dir: Annotated[Path, typer.Argument(help="The changed rule directory.")],
               rules_dir: RulesOption = None) -> None:
    """What changed from the rules in force (--rules-dir) to NEW_RULES_DIR, in words."""
    from worker.rulebook.diff import diff_rules

    settings = cli_settings(rules_dir=rules_dir)
    changes = diff_rules(settings.rules_dir, new_rules_dir)
    typer.echo("\n".join(changes) if changes else f"no changes from {settings.rules_dir} to {new_rules_dir}")



@rules_app.command("stats")
def rules_stats(fmt: FormatOption = "table", db: DbOption = None) -> None:
    """Per rule: alerts sent, useful / not useful in Slack, and the median time to feedback."""
    from worker.service.feedback import rule_stats

    check_format(fmt)
    settings = cli_settings(db)
    with open_store(settings, lock=False) as store:
        stats = rule_stats(store)
    if fmt != "table":
        emit(for_format([s.as_json() for s in stats], fmt), fmt,
             ("rule", "alerts_sent", "answered", "useful", "not_useful", "usefulness", "score_wrong",
              "median_minutes_to_feedback"))
        return
    Console().print(stats_table(stats))


STATS_TABLE = (Column("Rule", grows=True, min_room=16), Column("Alerts sent", justify="right"),
               Column("Answered", justify="right", hide=1), Column("Useful", justify="right"),
               Column("Not useful", justify="right"), Column("Usefulness", justify="right"),
               Column("Score wrong", justify="right"), Column("Median time to feedback", justify="right"))


def stats_table(stats: list[RuleStats]) -> FittedTable:
    def cells(s: RuleStats) -> tuple[str, ...]:
        rate = "-" if s.usefulness is None else f"{100 * s.usefulness:.0f}%"
        median = "-" if s.median_seconds_to_feedback is None else _duration(s.median_seconds_to_feedback)
        return (s.rule, str(s.alerts_sent), str(s.answered), str(s.useful), str(s.not_useful), rate,
                str(s.score_wrong), median)
    return FittedTable("Alert rules: how their nudges were received", STATS_TABLE, [cells(s) for s in stats])


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
