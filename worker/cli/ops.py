"""Commands an operator keeps the worker running with: doctor, db, quarantine, salesforce fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console

from worker.cli.common import DbOption, RulesOption, app, check_format, cli_settings, emit, err, open_store
from worker.terminal import Column, FittedTable, error_text, for_format, one_of

quarantine_app = typer.Typer(no_args_is_help=True, help="Records that failed validation, kept with the reason.")
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("ls")
def quarantine_ls(fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
                  source: Annotated[str | None, typer.Option(help="salesforce, zendesk or usage.")] = None,
                  limit: Annotated[int, typer.Option(min=1, help="The newest N.")] = 100,
                  db: DbOption = None) -> None:
    """List quarantined records: where from, which id, and why (a capped copy of the payload in json)."""
    check_format(fmt)
    if source is not None:
        one_of("--source", source, QUARANTINE_SOURCES, "sources")
    settings = cli_settings(db)
    with open_store(settings, lock=False) as store:
        rows = store.query("SELECT id, source, stream, source_id, reason, seen_at, substr(raw, 1, 2000) AS raw "
                           "FROM quarantine WHERE (? IS NULL OR source = ?) ORDER BY id DESC LIMIT ?",
                           (source, source, limit))
    if fmt != "table":
        emit(for_format(rows, fmt), fmt, ("id", "source", "stream", "source_id", "reason", "seen_at", "raw"))
        return
    Console().print(FittedTable(f"Quarantine (newest {limit})", QUARANTINE_TABLE, [
        (row["source"], row["stream"], row["source_id"], row["reason"], row["seen_at"]) for row in rows],
        hint="--format json shows them, with the payload"))


QUARANTINE_SOURCES: Final = ("salesforce", "zendesk", "usage")
"""Where a quarantined record comes from (`worker.sync`: one source per connector and the usage files)."""
QUARANTINE_TABLE = (Column("Source", hide=2), Column("Stream", max_width=20), Column("Id", max_width=24),
                    Column("Reason", grows=True), Column("Seen", hide=1))



db_app = typer.Typer(no_args_is_help=True, help="The SQLite database: schema, backups, retention.")
app.add_typer(db_app, name="db")


@db_app.command("migrate")
def db_migrate(db: DbOption = None) -> None:
    """Bring the database's schema up to date (the worker also does this at start) and print its version."""
    settings = cli_settings(db)
    with open_store(settings) as store:
        typer.echo(f"{settings.db}: schema version {store.schema_version}")


@db_app.command("backup")
def db_backup(target: Annotated[Path, typer.Argument(help="Where to write the copy (must not exist).")],
              db: DbOption = None) -> None:
    """A consistent copy through SQLite's online backup, safe while the worker runs; readable by its owner only."""
    settings = cli_settings(db)
    if target.exists():
        err.print(error_text(f"{target} exists; choose a new file"))
        raise typer.Exit(2)
    with open_store(settings, lock=False) as store:
        store.backup(target)
    typer.echo(f"backed up {settings.db} to {target}")


@db_app.command("prune")
def db_prune(db: DbOption = None) -> None:
    """Apply the retention settings now (each cycle also does): old texts, history, receipts."""
    from worker.clock import system_clock
    from worker.store.retention import prune

    settings = cli_settings(db)
    with open_store(settings) as store:
        removed = prune(store, system_clock(), text_retention=settings.retention_text,
                        history_retention=settings.retention_history)
    typer.echo(", ".join(f"{k}: {v}" for k, v in removed.items()) or "nothing to prune")


@app.command()
def doctor(db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """Check the settings, database, rule files, and access to Salesforce, Zendesk, Slack and usage files."""
    from worker.ops.doctor import checks_from_environment, format_checks

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
    from worker.ops.salesforce_fields import admin_instructions, write_package

    if package is None:
        typer.echo(admin_instructions(), nl=False)
        return
    settings = cli_settings()
    for path in write_package(package, api_version=settings.salesforce_api_version):
        typer.echo(path)
