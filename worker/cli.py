"""The `healthbeat` command. Names and options are a contract with users and deployments (DESIGN §9).

Machine-readable output (`--format json|csv`) goes to stdout alone and logs to stderr; exit 0 means success
and anything else names what failed.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.config import ConfigError, Settings, load_settings
from worker.logs import configure_logging
from worker.rulebook import RuleBook, load_rules
from worker.store import Store, StoreLocked

log = logging.getLogger("healthbeat")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Healthbeat: customer-health scores from CRM, support and usage activity, written "
                       "back to Salesforce, with Slack nudges for account owners.")
rules_app = typer.Typer(no_args_is_help=True, help="Check the rule files under the rules directory.")
app.add_typer(rules_app, name="rules")

DbOption = Annotated[Path | None, typer.Option("--db", help="SQLite database (default: HEALTHBEAT_DB).")]
RulesOption = Annotated[Path | None, typer.Option("--rules-dir",
                                                  help="Rule files (default: HEALTHBEAT_RULES_DIR).")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would be written; write nothing "
                                                              "to Salesforce or Slack.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
err = Console(stderr=True)


def _settings(db: Path | None = None, rules_dir: Path | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if db is not None:
        overrides["HEALTHBEAT_DB"] = db
    if rules_dir is not None:
        overrides["HEALTHBEAT_RULES_DIR"] = rules_dir
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        err.print(f"[red]Configuration:[/red] {exc}")
        raise typer.Exit(2) from None


def _open_store(settings: Settings, *, lock: bool = True) -> Store:
    try:
        return Store(settings.db, lock=lock)
    except StoreLocked as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from None


def _run_stages(stages: tuple[str, ...], db: Path | None, rules_dir: Path | None, dry_run: bool,
                verbose: bool) -> None:
    from worker.cycle import Cycle, build_clients

    configure_logging(verbose)
    settings = _settings(db, rules_dir)
    try:
        clients = build_clients(settings)
    except ConfigError as exc:
        err.print(f"[red]Configuration:[/red] {exc}")
        raise typer.Exit(2) from None
    with _open_store(settings) as store:
        report = Cycle(store, settings, RuleBook(settings.rules_dir), clients, dry_run=dry_run).run(stages)
        clients.close()
    if not report.ok:
        typer.echo(report.summary(), err=True)
        for problem in report.problems():
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)


@app.command()
def run(once: Annotated[bool, typer.Option("--once", help="Run one full cycle and exit (for cron and "
                                                          "Kubernetes jobs); non-zero exit if it failed.")] = False,
        db: DbOption = None, rules_dir: RulesOption = None, dry_run: DryRunOption = False,
        verbose: VerboseOption = False) -> None:
    """Run the worker: a cycle every HEALTHBEAT_INTERVAL (default 15m), until stopped."""
    if once:
        _run_stages(("sync", "score", "evaluate", "writeback", "notify"), db, rules_dir, dry_run, verbose)
        return
    from worker.scheduler import run_forever

    configure_logging(verbose)
    settings = _settings(db, rules_dir)
    raise typer.Exit(run_forever(settings, dry_run=dry_run))


@app.command()
def sync(db: DbOption = None, verbose: VerboseOption = False) -> None:
    """Pull activity from Salesforce, Zendesk and usage files into the store (incremental)."""
    _run_stages(("sync",), db, None, False, verbose)


@app.command()
def score(db: DbOption = None, rules_dir: RulesOption = None, verbose: VerboseOption = False) -> None:
    """Score every account from what the store holds (no network)."""
    from worker.scoring import score_accounts

    configure_logging(verbose)
    settings = _settings(db, rules_dir)
    rulebook = RuleBook(settings.rules_dir)
    if rulebook.reload() and rulebook.scorecard is None:
        raise typer.Exit(1)
    scorecard, _ = rulebook.require()
    from worker.cycle import system_clock

    with _open_store(settings) as store:
        report = score_accounts(store, scorecard, system_clock())
    err.print(f"scored {report.scored} accounts ({report.changed} changed)")


@app.command()
def writeback(db: DbOption = None, dry_run: DryRunOption = False, verbose: VerboseOption = False) -> None:
    """Write changed scores to the Salesforce Account fields."""
    _run_stages(("writeback",), db, None, dry_run, verbose)


@app.command()
def notify(db: DbOption = None, rules_dir: RulesOption = None, dry_run: DryRunOption = False,
           verbose: VerboseOption = False) -> None:
    """Evaluate the alert rules and send the nudges they owe."""
    _run_stages(("evaluate", "notify"), db, rules_dir, dry_run, verbose)


SCORE_COLUMNS = ("account_id", "name", "owner", "score", "band", "trend", "churn_risk",
                 "expansion_readiness", "coverage", "reason")


def read_scores(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT account_id, name, owner, score, band, trend, churn_risk, expansion_readiness, "
                       "coverage, reason FROM account_health WHERE score IS NOT NULL ORDER BY score, name")


def scores_table(rows: list[dict[str, Any]], title: str = "Account health") -> Table:
    colours = {"red": "red", "yellow": "yellow", "green": "green"}
    table = Table(title=title, show_lines=False)
    for column in ("Account", "Owner", "Score", "Band", "Trend", "Churn", "Reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        colour = colours.get(row["band"], "white")
        table.add_row(row["name"], row["owner"] or "", f"{row['score']:.0f}",
                      f"[{colour}]{row['band']}[/{colour}]", row["trend"] or "",
                      "" if row["churn_risk"] is None else f"{row['churn_risk']:.0f}", row["reason"] or "")
    return table


@app.command()
def scores(fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
           db: DbOption = None) -> None:
    """Show the latest score of every account."""
    if fmt not in ("table", "json", "csv"):
        err.print(f"[red]--format must be table, json or csv, not {fmt!r}[/red]")
        raise typer.Exit(2)
    settings = _settings(db)
    with _open_store(settings, lock=False) as store:
        rows = read_scores(store)
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(SCORE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    else:
        Console().print(scores_table(rows))


@app.command()
def demo(db: Annotated[Path, typer.Option("--db", help="Where to leave the demo's SQLite database.")]
         = Path("healthbeat-demo.db"),
         accounts: Annotated[int, typer.Option(help="How many accounts the sandbox world holds.")] = 30,
         seed: Annotated[int, typer.Option(help="Seed of the deterministic world.")] = 7,
         verbose: VerboseOption = False) -> None:
    """Start local sandboxes of Salesforce, Zendesk and Slack, run two cycles around a change, and show it."""
    from worker.demo import run_demo

    configure_logging(verbose, quiet_below=logging.WARNING if not verbose else logging.DEBUG)
    raise typer.Exit(run_demo(db, accounts=accounts, seed=seed))


@rules_app.command("check")
def rules_check(rules_dir: RulesOption = None) -> None:
    """Validate scorecard.yaml and alerts.yaml: every problem with file, line and field."""
    settings = _settings(rules_dir=rules_dir)
    _, _, problems = load_rules(settings.rules_dir)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1)
    typer.echo(f"{settings.rules_dir}: scorecard.yaml and alerts.yaml are valid")


def main() -> None:
    app(prog_name="healthbeat")
