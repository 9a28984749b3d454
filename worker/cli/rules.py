"""Commands ops check rule files with: rules check, test, preview, diff, stats."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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
from worker.rulebook import load_rules

rules_app = typer.Typer(no_args_is_help=True, help="Check, test, preview and compare the rule files.")
app.add_typer(rules_app, name="rules")


@rules_app.command("check")
def rules_check(rules_dir: RulesOption = None) -> None:
    """Validate scorecard.yaml and alerts.yaml: every problem with file, line and field."""
    settings = cli_settings(rules_dir=rules_dir)
    _, _, problems = load_rules(settings.rules_dir)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1)
    typer.echo(f"{settings.rules_dir}: scorecard.yaml and alerts.yaml are valid")


@rules_app.command("test")
def rules_test(files: Annotated[list[Path] | None, typer.Argument(
                   help="Test files (default: RULES_DIR/tests/*.yaml).")] = None,
               rules_dir: RulesOption = None) -> None:
    """Run the rule tests (promtool-style): given facts over cycles, expect these nudges. Exit 1 on any failure."""
    from worker.rule_tests import format_report, run_rule_tests

    report = run_rule_tests(cli_settings(rules_dir=rules_dir).rules_dir, files)
    typer.echo(format_report(report))
    if not report.ok:
        raise typer.Exit(1)


@rules_app.command("preview")
def rules_preview(new_rules_dir: Annotated[Path, typer.Argument(help="The changed rule directory.")],
                  fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
                  db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """What NEW_RULES_DIR would change on the current data (an in-memory copy; the database is never written)."""
    from worker.cycle import system_clock
    from worker.rule_preview import format_preview, preview_rules, to_json
    from worker.rulefile import RuleFileError

    if fmt not in ("table", "json"):
        err.print(f"[red]--format must be table or json, not {fmt!r}[/red]")
        raise typer.Exit(2)
    settings = cli_settings(db, rules_dir)
    if not settings.db.exists():
        err.print(f"[red]No database at {settings.db}: run a cycle first (healthbeat run --once).[/red]")
        raise typer.Exit(1)
    with open_store(settings, lock=False) as store:
        try:
            preview = preview_rules(store, settings.rules_dir, new_rules_dir, system_clock())
        except RuleFileError as exc:
            for problem in exc.problems:
                typer.echo(str(problem), err=True)
            raise typer.Exit(1) from None
    if fmt == "json":
        sys.stdout.write(to_json(preview) + "\n")
    else:
        typer.echo(format_preview(preview))


@rules_app.command("diff")
def rules_diff(new_rules_dir: Annotated[Path, typer.Argument(help="The changed rule directory.")],
               rules_dir: RulesOption = None) -> None:
    """What changed from the rules in force (--rules-dir) to NEW_RULES_DIR, in words."""
    from worker.rule_diff import diff_rules
    from worker.rulefile import RuleFileError

    settings = cli_settings(rules_dir=rules_dir)
    try:
        changes = diff_rules(settings.rules_dir, new_rules_dir)
    except RuleFileError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(1) from None
    typer.echo("\n".join(changes) if changes else f"no changes from {settings.rules_dir} to {new_rules_dir}")



@rules_app.command("stats")
def rules_stats(fmt: FormatOption = "table", db: DbOption = None) -> None:
    """Per rule: alerts sent, useful / not useful in Slack, and the median time to feedback."""
    from worker.feedback import rule_stats, stats_table

    check_format(fmt)
    settings = cli_settings(db)
    with open_store(settings, lock=False) as store:
        stats = rule_stats(store)
    if fmt != "table":
        emit([s.as_json() for s in stats], fmt, ("rule", "alerts_sent", "answered", "useful", "not_useful",
                                                   "usefulness", "score_wrong", "median_minutes_to_feedback"))
        return
    Console().print(stats_table(stats))
