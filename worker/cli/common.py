"""What every command shares: the app, the options, settings, the store, and output to stdout.

Machine-readable output (`--format json|csv`) goes to stdout alone and logs to stderr; exit 0 means success
and anything else names what failed.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from worker.config import Settings, load_settings
from worker.errors import ConfigError, StoreLocked
from worker.logs import add_secrets
from worker.store import Store

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Healthbeat: customer-health scores from CRM, support and usage activity, written "
                       "back to Salesforce, with Slack nudges for account owners.")

DbOption = Annotated[Path | None, typer.Option("--db", help="SQLite database (default: HEALTHBEAT_DB).")]
RulesOption = Annotated[Path | None, typer.Option("--rules-dir",
                                                  help="Rule files (default: HEALTHBEAT_RULES_DIR).")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would be written; write nothing "
                                                              "to Salesforce or Slack.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
err = Console(stderr=True)


def cli_settings(db: Path | None = None, rules_dir: Path | None = None) -> Settings:
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


def open_store(settings: Settings, *, lock: bool = True) -> Store:
    try:
        return Store(settings.db, lock=lock)
    except StoreLocked as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from None


FormatOption = Annotated[str, typer.Option("--format", help="table, json or csv.")]


def check_format(fmt: str) -> None:
    if fmt not in ("table", "json", "csv"):
        err.print(f"[red]--format must be table, json or csv, not {fmt!r}[/red]")
        raise typer.Exit(2)


def emit(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] | list[str]) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


AccountArgument = Annotated[str, typer.Argument(help="Salesforce Account Id (15 or 18 characters) or exact name.")]


def account_id_of(store: Store, text: str) -> str:
    from worker.errors import AccountNotFound
    from worker.scoring.explain import resolve_account

    try:
        return resolve_account(store, text)
    except AccountNotFound as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
