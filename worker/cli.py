"""The `healthbeat` command. Names and options are a contract with users and deployments (DESIGN §9).

Machine-readable output (`--format json|csv`) goes to stdout alone and logs to stderr; exit 0 means success
and anything else names what failed.
"""

from __future__ import annotations

import csv
import json
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

from worker.config import ConfigError, Settings, load_settings
from worker.logs import add_secrets, configure_logging
from worker.rulebook import RuleBook, load_rules
from worker.store import Store, StoreLocked

if TYPE_CHECKING:
    from worker.cycle import CycleReport

log = logging.getLogger("healthbeat")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Healthbeat: customer-health scores from CRM, support and usage activity, written "
                       "back to Salesforce, with Slack nudges for account owners.")
rules_app = typer.Typer(no_args_is_help=True, help="Check, test, preview and compare the rule files.")
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
        settings = load_settings(**overrides)
    except ConfigError as exc:
        err.print(f"[red]Configuration:[/red] {exc}")
        raise typer.Exit(2) from None
    add_secrets(settings.secret_values())
    return settings


def _open_store(settings: Settings, *, lock: bool = True) -> Store:
    try:
        return Store(settings.db, lock=lock)
    except StoreLocked as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from None


def _run_stages(stages: tuple[str, ...], db: Path | None, rules_dir: Path | None, dry_run: bool,
                verbose: bool) -> CycleReport:
    from worker.cycle import Cycle, build_clients

    configure_logging(verbose)
    settings = _settings(db, rules_dir)
    try:
        clients = build_clients(settings)
    except ConfigError as exc:
        err.print(f"[red]Configuration:[/red] {exc}")
        raise typer.Exit(2) from None
    with _open_store(settings) as store, _progress() as progress:
        report = Cycle(store, settings, RuleBook(settings.rules_dir), clients, dry_run=dry_run,
                       progress=progress).run(stages)
        clients.close()
    if stages == ("sync",) and report.sync is not None:
        _print_sync_table(report.sync.table())
    if not report.ok:
        typer.echo(report.summary(), err=True)
        for problem in report.problems():
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)
    return report


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
    for column in ("Stream", "Read", "Deleted", "Quarantined", "API calls", "Seconds", "Failed"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["stream"], str(row["read"]), str(row["deleted"]), str(row["quarantined"]),
                      str(row["api_calls"]), f"{row['seconds']:.1f}", row["failed"])
    Console(stderr=True).print(table)


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
    """Pull activity from Salesforce, Zendesk and usage files into the store (incremental); a table per stream."""
    _run_stages(("sync",), db, None, False, verbose)


quarantine_app = typer.Typer(no_args_is_help=True, help="Records that failed validation, kept with the reason.")
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("ls")
def quarantine_ls(fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
                  source: Annotated[str | None, typer.Option(help="salesforce, zendesk or usage.")] = None,
                  limit: Annotated[int, typer.Option(help="The newest N.")] = 100, db: DbOption = None) -> None:
    """List quarantined records: where from, which id, and why (a capped copy of the payload in json)."""
    _check_format(fmt)
    settings = _settings(db)
    with _open_store(settings, lock=False) as store:
        rows = store.query("SELECT id, source, stream, source_id, reason, seen_at, substr(raw, 1, 2000) AS raw "
                           "FROM quarantine WHERE (? IS NULL OR source = ?) ORDER BY id DESC LIMIT ?",
                           (source, source, limit))
    if fmt != "table":
        _emit(rows, fmt, ("id", "source", "stream", "source_id", "reason", "seen_at", "raw"))
        return
    table = Table(title=f"Quarantine (newest {limit})")
    for column in ("Source", "Stream", "Id", "Reason", "Seen"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["source"], row["stream"], row["source_id"] or "", row["reason"], row["seen_at"])
    Console().print(table)


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


SCORE_COLUMNS = ("account_id", "name", "owner", "segment", "score", "band", "trend", "churn_risk",
                 "expansion_readiness", "coverage", "confidence", "reason")
scores_app = typer.Typer(help="The latest score of every account, and one account's history.")
app.add_typer(scores_app, name="scores")
FormatOption = Annotated[str, typer.Option("--format", help="table, json or csv.")]


def read_scores(store: Store, *, band: str | None = None, owner: str | None = None,
                segment: str | None = None) -> list[dict[str, Any]]:
    where, params = ["h.score IS NOT NULL"], []
    for column, value in (("h.band", band), ("h.owner", owner), ("s.segment", segment)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return store.query(
        "SELECT h.account_id, h.name, h.owner, s.segment, h.score, h.band, h.trend, h.churn_risk, "
        "h.expansion_readiness, h.coverage, s.confidence, h.reason FROM account_health h "
        f"JOIN scores s USING (account_id) WHERE {' AND '.join(where)} ORDER BY h.score, h.name", params)


def scores_table(rows: list[dict[str, Any]], title: str = "Account health") -> Table:
    colours = {"red": "red", "yellow": "yellow", "green": "green"}
    table = Table(title=title, show_lines=False)
    for column in ("Account", "Owner", "Score", "Band", "Trend", "Churn", "Expansion", "Confidence", "Reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        colour = colours.get(row["band"], "white")
        coverage = f" {round(100 * row['coverage'])}%" if row.get("coverage") is not None else ""
        table.add_row(row["name"], row["owner"] or "", f"{row['score']:.0f}",
                      f"[{colour}]{row['band']}[/{colour}]", row["trend"] or "", _whole(row["churn_risk"]),
                      _whole(row.get("expansion_readiness")), f"{row.get('confidence') or ''}{coverage}",
                      row["reason"] or "")
    return table


def _whole(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json", "csv"):
        err.print(f"[red]--format must be table, json or csv, not {fmt!r}[/red]")
        raise typer.Exit(2)


def _emit(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] | list[str]) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


@scores_app.callback(invoke_without_command=True)
def scores(ctx: typer.Context, fmt: FormatOption = "table",
           band: Annotated[str | None, typer.Option(help="Only this band: red, yellow or green.")] = None,
           owner: Annotated[str | None, typer.Option(help="Only accounts of this owner (full name).")] = None,
           segment: Annotated[str | None, typer.Option(help="Only this scorecard segment.")] = None,
           db: DbOption = None) -> None:
    """Show the latest score of every account (filter by band, owner, segment)."""
    if ctx.invoked_subcommand is not None:
        return
    _check_format(fmt)
    settings = _settings(db)
    with _open_store(settings, lock=False) as store:
        rows = read_scores(store, band=band, owner=owner, segment=segment)
    if fmt == "table":
        Console().print(scores_table(rows))
    else:
        _emit(rows, fmt, SCORE_COLUMNS)


AccountArgument = Annotated[str, typer.Argument(help="Salesforce Account Id (15 or 18 characters) or exact name.")]


def _account(store: Store, text: str) -> str:
    from worker.explain import AccountNotFound, resolve_account

    try:
        return resolve_account(store, text)
    except AccountNotFound as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@scores_app.command("history")
def scores_history(account: AccountArgument, days: Annotated[int, typer.Option(help="How far back.")] = 90,
                   png: Annotated[Path | None, typer.Option(help="Also draw the history to this PNG file.")]
                   = None, fmt: FormatOption = "table", db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """One account's daily scores, with a sparkline (and a PNG chart with --png)."""
    from worker.cycle import system_clock
    from worker.explain import history, plot_history, sparkline

    _check_format(fmt)
    settings = _settings(db, rules_dir)
    with _open_store(settings, lock=False) as store:
        account_id = _account(store, account)
        name = store.scalar("SELECT name FROM accounts WHERE id = ?", (account_id,))
        rows = history(store, account_id, days, system_clock().date())
    if fmt != "table":
        _emit(rows, fmt, ("day", "score", "band", "churn_risk", "coverage"))
    else:
        Console().print(f"{name}: {sparkline([r['score'] for r in rows])}  "
                        + (f"{rows[0]['score']:.0f} → {rows[-1]['score']:.0f} over {len(rows)} days" if rows
                           else "no history yet"))
    if png is not None and rows:
        rulebook = RuleBook(settings.rules_dir)
        rulebook.reload()
        bands = rulebook.require()[0].scorecard.bands
        try:
            plot_history(rows, f"{name}: health score", str(png), red=bands.red, yellow=bands.yellow)
        except RuntimeError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        err.print(f"chart written to {png}")


@app.command()
def explain(account: AccountArgument, fmt: Annotated[str, typer.Option("--format", help="table or json.")]
            = "table", db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """Why an account has its score: every measure's raw value, points, weight and contribution."""
    from worker.explain import explain_account, format_explanation

    settings = _settings(db, rules_dir)
    rulebook = RuleBook(settings.rules_dir)
    rulebook.reload()
    scorecard, _ = rulebook.require()
    with _open_store(settings, lock=False) as store:
        account_id = _account(store, account)
        from worker.explain import AccountNotFound

        try:
            explanation = explain_account(store, scorecard.scorecard, account_id)
        except AccountNotFound as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        from worker.cycle import system_clock
        from worker.feedback import account_feedback

        said = account_feedback(store, account_id, system_clock().date())
    if fmt == "json":
        sys.stdout.write(json.dumps({**explanation.as_json(), "feedback": said.as_json()}, indent=2,
                                    ensure_ascii=False) + "\n")
    else:
        Console().print(format_explanation(explanation))
        Console().print(said.render())


@app.command()
def backtest(
        period: Annotated[str, typer.Option(help="How far back the snapshots go, e.g. 365d or 78w.")] = "365d",
        step: Annotated[str, typer.Option(help="Time between snapshots, e.g. 7d or 30d.")] = "14d",
        horizon: Annotated[str, typer.Option(help="Churn counts when it comes within this time of a snapshot.")]
        = "90d",
        until: Annotated[str | None, typer.Option(help="Last snapshot day, YYYY-MM-DD (default: today).")] = None,
        fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
        plot: Annotated[Path | None, typer.Option(help="Write PNG charts to this folder "
                                                       "(needs the charts extra).")] = None,
        guardrail: Annotated[list[str] | None, typer.Option(help="A band share ops accept, e.g. red:5-25 "
                                                                 "(repeatable; default red:5-25).")] = None,
        renewal_type: Annotated[list[str] | None, typer.Option(help="An Opportunity Type that is a renewal "
                                                                    "(repeatable; default Renewal).")] = None,
        renewal_name: Annotated[str, typer.Option(help="A word in an Opportunity's name that makes it a renewal "
                                                       "('' to go by type alone).")] = "renewal",
        churn_field: Annotated[str | None, typer.Option(help="A column of the accounts table holding a churn "
                                                             "date, used beside the renewals.")] = None,
        tune: Annotated[bool, typer.Option("--tune", help="Fit weights on the earlier snapshots, check them on "
                                                          "the later ones, and write a proposal to --out.")] = False,
        out: Annotated[Path | None, typer.Option(help="Where --tune writes the proposed scorecard.")] = None,
        db: DbOption = None, rules_dir: RulesOption = None, verbose: VerboseOption = False) -> None:
    """How well the health score foresaw churn, replayed from the store; --tune proposes better weights."""
    from datetime import UTC, date, datetime, time

    from worker.backtest import Guardrail, Plan, run_command
    from worker.config import parse_duration
    from worker.cycle import system_clock
    from worker.outcomes import OutcomeConfigError, OutcomeRules, read_outcomes

    configure_logging(verbose)
    if fmt not in ("table", "json"):
        err.print(f"[red]--format must be table or json, not {fmt!r}[/red]")
        raise typer.Exit(2)
    if tune != (out is not None):
        err.print("[red]--tune and --out go together: --tune --out FILE[/red]")
        raise typer.Exit(2)
    try:
        last = (datetime.combine(date.fromisoformat(until), time(23, 59, 59), UTC) if until else system_clock())
        plan = Plan(until=min(last, system_clock()), period=parse_duration(period), step=parse_duration(step),
                    horizon=parse_duration(horizon),
                    guardrails=tuple(Guardrail.parse(g) for g in guardrail or ["red:5-25"]))
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    settings = _settings(db, rules_dir)
    rulebook = RuleBook(settings.rules_dir)
    rulebook.reload()  # logs every problem; broken alert rules only mean no rule is replayed
    if rulebook.scorecard is None:
        raise typer.Exit(1)
    if not settings.db.exists():
        err.print(f"[red]No database at {settings.db}: run a cycle first (healthbeat run --once).[/red]")
        raise typer.Exit(1)
    rules = OutcomeRules(tuple(renewal_type or ["Renewal"]), renewal_name or None, churn_field)
    with _open_store(settings, lock=False) as store:
        try:
            outcomes = read_outcomes(store, rules)
        except OutcomeConfigError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        result = run_command(store, rulebook.scorecard, rulebook.alerts, outcomes, plan, fmt=fmt, plot_dir=plot,
                             tune_out=out)
    typer.echo(result.output)
    for message in result.messages:
        err.print(message, markup=False, highlight=False)
    raise typer.Exit(result.exit_code)


override_app = typer.Typer(no_args_is_help=True, help="Pin an account's score by hand (a CSM override).")
app.add_typer(override_app, name="override")


@override_app.command("set")
def override_set(account: AccountArgument,
                 value: Annotated[float, typer.Option(min=0, max=100, help="The score to show, 0..100.")],
                 reason: Annotated[str, typer.Option(help="Why: shown in Salesforce and Slack.")],
                 until: Annotated[str | None, typer.Option(help="Last day it holds (YYYY-MM-DD); default "
                                                                "30 days from today.")] = None,
                 by: Annotated[str | None, typer.Option(help="Who set it.")] = None,
                 db: DbOption = None) -> None:
    """Pin an account's score until a date; it shows as pinned and expires by itself."""
    from datetime import date, timedelta

    from worker.cycle import system_clock
    from worker.store import iso

    today = system_clock().date()
    try:
        last_day = date.fromisoformat(until) if until else today + timedelta(days=30)
    except ValueError:
        err.print(f"[red]--until must be a date like 2026-12-31, not {until!r}[/red]")
        raise typer.Exit(2) from None
    if last_day < today:
        err.print(f"[red]--until {last_day} is in the past[/red]")
        raise typer.Exit(2)
    settings = _settings(db)
    with _open_store(settings) as store:
        account_id = _account(store, account)
        with store.transaction() as conn:
            conn.execute("INSERT INTO overrides VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET "
                         "value = excluded.value, reason = excluded.reason, until = excluded.until, "
                         "set_by = excluded.set_by, set_at = excluded.set_at",
                         (account_id, value, reason, last_day.isoformat(), by, iso(system_clock())))
    err.print(f"{account_id} pinned at {value:g} until {last_day} (takes effect at the next score)")


@override_app.command("clear")
def override_clear(account: AccountArgument, db: DbOption = None) -> None:
    """Remove an account's override; the computed score shows again at the next score."""
    settings = _settings(db)
    with _open_store(settings) as store:
        account_id = _account(store, account)
        with store.transaction() as conn:
            removed = conn.execute("DELETE FROM overrides WHERE account_id = ?", (account_id,)).rowcount
    err.print(f"{account_id}: override removed" if removed else f"{account_id} had no override")


@override_app.command("ls")
def override_ls(fmt: FormatOption = "table", db: DbOption = None) -> None:
    """List the overrides set from the command line (and whether each still holds)."""
    _check_format(fmt)
    settings = _settings(db)
    with _open_store(settings, lock=False) as store:
        rows = store.query("SELECT o.account_id, a.name, o.value, o.reason, o.until, o.set_by, o.set_at "
                           "FROM overrides o LEFT JOIN accounts a ON a.id = o.account_id ORDER BY o.until")
    if fmt != "table":
        _emit(rows, fmt, ("account_id", "name", "value", "reason", "until", "set_by", "set_at"))
        return
    table = Table(title="Score overrides")
    for column in ("Account", "Value", "Until", "Reason", "Set by"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"] or row["account_id"], f"{row['value']:g}", row["until"] or "", row["reason"],
                      row["set_by"] or "")
    Console().print(table)


@app.command()
def demo(db: Annotated[Path, typer.Option("--db", help="Where to leave the demo's SQLite database.")]
         = Path("healthbeat-demo.db"),
         accounts: Annotated[int, typer.Option(help="How many accounts the sandbox world holds.")] = 30,
         seed: Annotated[int, typer.Option(help="Seed of the deterministic world.")] = 7,
         rules_dir: RulesOption = None, verbose: VerboseOption = False) -> None:
    """Start local sandboxes of Salesforce, Zendesk and Slack, run two cycles around a change, and show it."""
    from worker.demo import run_demo

    configure_logging(verbose, quiet_below=logging.WARNING if not verbose else logging.DEBUG)
    rules = _settings(rules_dir=rules_dir).rules_dir
    _, _, problems = load_rules(rules)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        typer.echo(f"The demo needs the rule files: run it from the repository's root, or give --rules-dir "
                   f"(looked in {rules.resolve()}).", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_demo(db, accounts=accounts, seed=seed, rules_dir=rules))


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


@rules_app.command("test")
def rules_test(files: Annotated[list[Path] | None, typer.Argument(
                   help="Test files (default: RULES_DIR/tests/*.yaml).")] = None,
               rules_dir: RulesOption = None) -> None:
    """Run the rule tests (promtool-style): given facts over cycles, expect these nudges. Exit 1 on any failure."""
    from worker.rule_tests import format_report, run_rule_tests

    report = run_rule_tests(_settings(rules_dir=rules_dir).rules_dir, files)
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
    settings = _settings(db, rules_dir)
    if not settings.db.exists():
        err.print(f"[red]No database at {settings.db}: run a cycle first (healthbeat run --once).[/red]")
        raise typer.Exit(1)
    with _open_store(settings, lock=False) as store:
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

    settings = _settings(rules_dir=rules_dir)
    try:
        changes = diff_rules(settings.rules_dir, new_rules_dir)
    except RuleFileError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(1) from None
    typer.echo("\n".join(changes) if changes else f"no changes from {settings.rules_dir} to {new_rules_dir}")


silence_app = typer.Typer(no_args_is_help=True, help="Hold nudges back for a while (by rule, account or owner).")
app.add_typer(silence_app, name="silence")


@silence_app.command("add")
def silence_add(reason: Annotated[str, typer.Option(help="Why: kept with the silence.")],
                until: Annotated[str, typer.Option(help="Last moment it holds: YYYY-MM-DD (end of that day, UTC) "
                                                        "or a duration from now such as 3d or 12h.")],
                rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
                account: Annotated[str | None, typer.Option(help="Only this account (Id or exact name).")] = None,
                owner: Annotated[str | None, typer.Option(help="Only this owner (full name or email).")] = None,
                by: Annotated[str | None, typer.Option(help="Who set it.")] = None,
                db: DbOption = None) -> None:
    """Silence nudges that match every given field until a time; state is still kept, nothing is queued."""
    from datetime import UTC, date, datetime, timedelta

    from worker.config import parse_duration
    from worker.cycle import system_clock
    from worker.store import iso

    if rule is None and account is None and owner is None:
        err.print("[red]give at least one of --rule, --account, --owner (a silence of everything is a "
                  "stopped worker: stop it instead)[/red]")
        raise typer.Exit(2)
    now = system_clock()
    try:
        ends = datetime.combine(date.fromisoformat(until), datetime.max.time(), UTC).replace(microsecond=0)
    except ValueError:
        try:
            ends = now + parse_duration(until)
        except ValueError:
            err.print(f"[red]--until must be a date like 2026-12-31 or a duration like 3d, not {until!r}[/red]")
            raise typer.Exit(2) from None
    if ends <= now or ends - now > timedelta(days=366):
        err.print("[red]--until must be in the future and within a year[/red]")
        raise typer.Exit(2)
    settings = _settings(db)
    with _open_store(settings) as store:
        account_id = _account(store, account) if account else None
        with store.transaction() as conn:
            silence_id = conn.execute(
                "INSERT INTO silences (rule, account_id, owner, until, reason, created_by, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (rule, account_id, owner, iso(ends), reason, by, iso(now))).lastrowid
    err.print(f"silence {silence_id} holds until {iso(ends)}")


@silence_app.command("ls")
def silence_ls(fmt: FormatOption = "table", all_: Annotated[bool, typer.Option("--all", help="Expired ones too.")]
               = False, db: DbOption = None) -> None:
    """List the silences in force (or all of them)."""
    from worker.cycle import system_clock
    from worker.store import iso

    _check_format(fmt)
    settings = _settings(db)
    with _open_store(settings, lock=False) as store:
        rows = store.query("SELECT id, rule, account_id, owner, until, reason, created_by, created_at FROM silences "
                           + ("" if all_ else "WHERE until > ? ") + "ORDER BY id",
                           () if all_ else (iso(system_clock()),))
    if fmt != "table":
        _emit(rows, fmt, ("id", "rule", "account_id", "owner", "until", "reason", "created_by", "created_at"))
        return
    table = Table(title="Silences")
    for column in ("Id", "Rule", "Account", "Owner", "Until", "Reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["id"]), row["rule"] or "any", row["account_id"] or "any", row["owner"] or "any",
                      row["until"], row["reason"])
    Console().print(table)


@silence_app.command("expire")
def silence_expire(silence_id: Annotated[int, typer.Argument(help="The silence's id (see silence ls).")],
                   db: DbOption = None) -> None:
    """End a silence now."""
    from worker.cycle import system_clock
    from worker.store import iso

    settings = _settings(db)
    with _open_store(settings) as store, store.transaction() as conn:
        changed = conn.execute("UPDATE silences SET until = ? WHERE id = ? AND until > ?",
                               (iso(system_clock()), silence_id, iso(system_clock()))).rowcount
    if not changed:
        err.print(f"[red]no silence {silence_id} in force[/red]")
        raise typer.Exit(1)
    err.print(f"silence {silence_id} expired")


db_app = typer.Typer(no_args_is_help=True, help="The SQLite database: schema, backups, retention.")
app.add_typer(db_app, name="db")


@db_app.command("migrate")
def db_migrate(db: DbOption = None) -> None:
    """Bring the database's schema up to date (the worker also does this at start) and print its version."""
    settings = _settings(db)
    with _open_store(settings) as store:
        typer.echo(f"{settings.db}: schema version {store.schema_version}")


@db_app.command("backup")
def db_backup(target: Annotated[Path, typer.Argument(help="Where to write the copy (must not exist).")],
              db: DbOption = None) -> None:
    """A consistent copy through SQLite's online backup, safe while the worker runs."""
    import sqlite3

    settings = _settings(db)
    if target.exists():
        err.print(f"[red]{target} exists; choose a new file[/red]")
        raise typer.Exit(2)
    with _open_store(settings, lock=False) as store:
        destination = sqlite3.connect(target)
        try:
            store.conn.backup(destination)
        finally:
            destination.close()
    typer.echo(f"backed up {settings.db} to {target}")


@db_app.command("prune")
def db_prune(db: DbOption = None) -> None:
    """Apply the retention settings now (each cycle also does): old texts, history, receipts."""
    from worker.cycle import system_clock
    from worker.retention import prune

    settings = _settings(db)
    with _open_store(settings) as store:
        removed = prune(store, settings, system_clock())
    typer.echo(", ".join(f"{k}: {v}" for k, v in removed.items()) or "nothing to prune")


@app.command()
def doctor(db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """Check the settings, database, rule files, and access to Salesforce, Zendesk, Slack and usage files."""
    from worker.doctor import checks_from_environment, format_checks

    overrides: dict[str, Any] = {}
    if db is not None:
        overrides["HEALTHBEAT_DB"] = db
    if rules_dir is not None:
        overrides["HEALTHBEAT_RULES_DIR"] = rules_dir
    checks = checks_from_environment(**overrides)
    typer.echo(format_checks(checks))
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


salesforce_app = typer.Typer(no_args_is_help=True, help="Prepare a Salesforce org for Healthbeat.")
app.add_typer(salesforce_app, name="salesforce")


@salesforce_app.command("fields")
def salesforce_fields(package: Annotated[Path | None, typer.Option(
        "--package", help="Write a Metadata API package (package.xml, objects/Account.object and a "
                          "permission set) to this folder instead of printing the steps.")] = None) -> None:
    """How to create the Account custom fields that Healthbeat writes and reads."""
    from worker.salesforce_setup import admin_instructions, write_package

    if package is None:
        typer.echo(admin_instructions(), nl=False)
        return
    settings = _settings()
    for path in write_package(package, api_version=settings.salesforce_api_version):
        typer.echo(path)


feedback_app = typer.Typer(no_args_is_help=True, help="What CSMs said about the nudges, from the buttons in Slack.")
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("ls")
def feedback_ls(fmt: FormatOption = "table",
                rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
                account: Annotated[str | None, typer.Option(help="Only this account (Id or exact name).")] = None,
                db: DbOption = None) -> None:
    """The feedback given on nudges, newest first, with each correction and what became of it."""
    from worker.feedback import FEEDBACK_COLUMNS, feedback_table, list_feedback

    _check_format(fmt)
    settings = _settings(db)
    with _open_store(settings, lock=False) as store:
        account_id = _account(store, account) if account else None
        rows = list_feedback(store, rule=rule, account_id=account_id)
    if fmt != "table":
        _emit(rows, fmt, FEEDBACK_COLUMNS)
        return
    Console().print(feedback_table(rows))


@feedback_app.command("accept")
def feedback_accept(feedback_id: Annotated[int, typer.Argument(help="The correction's id (see feedback ls).")],
                    by: Annotated[str | None, typer.Option(help="Who confirms it.")] = None,
                    db: DbOption = None) -> None:
    """Make a correction proposed in Slack an override; it keeps its term and expires by itself."""
    from worker.cycle import system_clock
    from worker.feedback import FeedbackError, accept_proposal

    settings = _settings(db)
    with _open_store(settings) as store:
        try:
            row = accept_proposal(store, feedback_id, by, system_clock())
        except FeedbackError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    err.print(f"{row['account_id']} pinned at {row['proposed_value']:g} until {row['proposed_until']} "
              "(takes effect at the next score)")


@rules_app.command("stats")
def rules_stats(fmt: FormatOption = "table", db: DbOption = None) -> None:
    """Per rule: alerts sent, useful / not useful in Slack, and the median time to feedback."""
    from worker.feedback import rule_stats, stats_table

    _check_format(fmt)
    settings = _settings(db)
    with _open_store(settings, lock=False) as store:
        stats = rule_stats(store)
    if fmt != "table":
        _emit([s.as_json() for s in stats], fmt, ("rule", "alerts_sent", "answered", "useful", "not_useful",
                                                   "usefulness", "score_wrong", "median_minutes_to_feedback"))
        return
    Console().print(stats_table(stats))


def main() -> None:
    app(prog_name="healthbeat")
