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
from rich.markup import escape
from typer.core import TyperGroup

from worker.config import Settings, load_settings
from worker.errors import ConfigError, HealthbeatError
from worker.logs import add_secrets
from worker.rulefile import RuleFileError
from worker.store import Store


class Commands(TyperGroup):
    """Every command's errors from the worker's error tree become a message on stderr and the branch's exit
    status (`worker.errors`): the one place where the CLI decides how a refusal reads and how it exits."""

    def invoke(self, ctx: Any) -> Any:  # click.Context; typer may vendor its own click
        try:
            return super().invoke(ctx)
        except HealthbeatError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_status) from None


def report_error(exc: HealthbeatError) -> None:
    if isinstance(exc, RuleFileError):
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
    elif isinstance(exc, ConfigError):
        err.print(f"[red]Configuration:[/red] {escape(str(exc))}")
    else:
        err.print(f"[red]{escape(str(exc))}[/red]")


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True,
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
    settings = load_settings(**overrides)
    add_secrets(settings.secret_values())
    return settings


def open_store(settings: Settings, *, lock: bool = True) -> Store:
    return Store(settings.db, lock=lock)


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
    from worker.scoring.explain import resolve_account

    return resolve_account(store, text)
