"""Commands that run the worker's stages: run, sync, score, writeback, notify, and the demo."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

from worker.cli.common import (
    DbOption,
    DryRunOption,
    RulesOption,
    VerboseOption,
    app,
    cli_settings,
    err,
    open_store,
    setup_logging,
)
from worker.config import Settings, shipped_rules
from worker.rulebook.in_force import RuleBook, load_rules

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from worker.cycle import CycleReport
    from worker.scoring.scorecard import LoadedScorecard
    from worker.store import Store


def _run_stages(stages: tuple[str, ...] | None, db: Path | None, rules_dir: Path | None, dry_run: bool,
                verbose: bool) -> CycleReport:
    """The stages named (every stage by default) as one cycle. The cycle's own summary line (logged) says
    what failed and why: it is not printed again."""
    from worker.cycle import Cycle, build_clients, stop_on_signals

    setup_logging(verbose)
    settings = cli_settings(db, rules_dir)
    with stop_on_signals() as stop:
        clients = build_clients(settings, stop=stop)
        try:
            with _store(settings, dry_run) as store, _progress() as progress:
                report = Cycle(store, settings, RuleBook(settings.rules_dir), clients, dry_run=dry_run,
                               progress=progress, stop=stop, refit=scheduled_refit).run(stages)
        finally:
            clients.close()
    if stages == ("sync",) and report.sync is not None:
        _print_sync_table(report.sync.table())
    if not report.ok:
        raise typer.Exit(1)
    return report


def scheduled_refit(store: Store, scorecard: LoadedScorecard, rules_dir: Path, now: datetime, every: timedelta,
                    stop: Callable[[], bool]) -> str | None:
    """The churn model's slow refit for the cycles these commands start (`worker.cycle.RefitJob`); numpy and the
    replay are loaded only when a refit is looked at."""
    from worker.analysis.churn_fit import scheduled_refit as refit

    return refit(store, scorecard, rules_dir, now, every, stop)


@contextmanager
def _store(settings: Settings, dry_run: bool) -> Iterator[Store]:
    """The worker's store, under its lock; for a dry run, an in-memory copy of it (as `rules preview` uses),
    so that evaluating alerts, planning write-backs and recording the cycle leave the database as it was."""
    if not dry_run:
        with open_store(settings) as store:
            yield store
        return
    from worker.rulebook.preview import snapshot

    with open_store(settings, lock=False) as live:
        copy = snapshot(live)
    with copy:
        yield copy


@contextmanager
def _progress() -> Iterator[Callable[[str, int], None] | None]:
    """Records per stream as a backfill runs, on a terminal only (logs and pipes stay quiet)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tasks: dict[str, TaskID] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:>9,} records"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        def advance(stream: str, records: int) -> None:
            if stream not in tasks:
                tasks[stream] = bar.add_task(stream, total=None)
            bar.update(tasks[stream], completed=records)

        yield advance


def _print_sync_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Sync by stream")
    for column in ("Stream", "Read", "Deleted", "Quarantined", "API calls", "Windows", "Narrowed", "Seconds",
                   "Storing", "Failed"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["stream"], str(row["read"]), str(row["deleted"]), str(row["quarantined"]),
                      str(row["api_calls"]), str(row["windows"]), str(row["narrowed"]),
                      f"{row['seconds']:.2f}", f"{row['storing_seconds']:.2f}", row["failed"])
    Console(stderr=True).print(table)


@app.command()
def run(once: Annotated[bool, typer.Option("--once", help="Run one full cycle and exit (for cron and "
                                                          "Kubernetes jobs); non-zero exit if it failed.")] = False,
        db: DbOption = None, rules_dir: RulesOption = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help=(
            "Write nothing to Salesforce and send nothing to Slack. With --once, change nothing in the database "
            "either (the cycle runs on a copy of it); without, the worker keeps its state in the database."))]
        = False,
        verbose: VerboseOption = False) -> None:
    """Run the worker: a cycle every HEALTHBEAT_INTERVAL (default 15m), until SIGTERM or SIGINT, which end the
    running cycle at its next safe point (a page stored, a stage's end), keeping what it did."""
    if once:
        _run_stages(None, db, rules_dir, dry_run, verbose)  # the whole FULL_CYCLE, prune included
        return
    from worker.service.scheduler import run_forever

    setup_logging(verbose)
    settings = cli_settings(db, rules_dir)
    raise typer.Exit(run_forever(settings, dry_run=dry_run, refit=scheduled_refit))


@app.command()
def sync(db: DbOption = None, verbose: VerboseOption = False) -> None:
    """Pull activity from Salesforce, Zendesk and usage files into the store (incremental); a table per stream."""
    _run_stages(("sync",), db, None, False, verbose)



@app.command()
def score(db: DbOption = None, rules_dir: RulesOption = None, verbose: VerboseOption = False) -> None:
    """Score every account from what the store holds (no network)."""
    from worker.scoring.engine import score_accounts

    setup_logging(verbose)
    settings = cli_settings(db, rules_dir)
    rulebook = RuleBook(settings.rules_dir)
    if rulebook.reload() and rulebook.scorecard is None:
        raise typer.Exit(1)
    scorecard, _ = rulebook.require()
    from worker.clock import system_clock

    with open_store(settings) as store:
        report = score_accounts(store, scorecard, system_clock(), churn_model=rulebook.churn_model)
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



@app.command()
def demo(db: Annotated[Path, typer.Option("--db", help="Where to leave the demo's SQLite database.")]
         = Path("healthbeat-demo.db"),
         accounts: Annotated[int, typer.Option(help="How many accounts the sandbox world holds.")] = 30,
         seed: Annotated[int, typer.Option(help="Seed of the deterministic world.")] = 7,
         rules_dir: RulesOption = None, verbose: VerboseOption = False) -> None:
    """Start local sandboxes of Salesforce, Zendesk and Slack, run three cycles (a backfill, one after three weeks
    of change, one with nothing new), and show what each wrote and sent."""
    from worker.demo.show import run_demo

    setup_logging(verbose, quiet_below=logging.WARNING)
    settings = cli_settings(rules_dir=rules_dir)
    rules = settings.rules_dir
    if "rules_dir" not in settings.model_fields_set and not rules.is_dir():
        rules = shipped_rules()  # outside a clone, with no rules of one's own: the ones Healthbeat ships
    _, _, problems = load_rules(rules)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        typer.echo(f"The demo needs valid rule files: correct them, or leave out --rules-dir and "
                   f"HEALTHBEAT_RULES_DIR to run it on the rules Healthbeat ships (looked in {rules.resolve()}).",
                   err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_demo(db, accounts=accounts, seed=seed, rules_dir=rules))
