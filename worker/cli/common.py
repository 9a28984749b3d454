"""What every command shares: the app, the options, settings, the store, and output to stdout.

Machine-readable output (`--format json|csv`) goes to stdout alone and logs to stderr; exit 0 means success
and anything else names what failed.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import sqlite3
import sys
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from worker.config import Settings, load_settings
from worker.errors import ConfigError, HealthbeatError, NoDatabase
from worker.logs import add_secrets, configure_logging, set_org
from worker.rulefile import RuleFileError
from worker.store import Store, store_error
from worker.terminal import clean

WORKER_COMMANDS: Final = frozenset({"run", "sync", "score", "writeback", "notify", "db migrate", "db prune"})
"""The commands that are a worker: they run stages or maintain the whole store, and take the database's worker
lock, so a second one is refused (exit 3) while `healthbeat run` runs. Every other command reads, or writes a
few rows in short transactions, beside a running worker (`open_store`)."""

BUSY_WAIT: Final = 60.0
"""Seconds a command beside the worker waits for the worker's write to end (a full re-score of a large store
holds the write lock for a while) before it gives up with `StoreBusy`."""

_is_worker: ContextVar[bool] = ContextVar("healthbeat_worker_command", default=False)
_database: ContextVar[Path | None] = ContextVar("healthbeat_database", default=None)


class Commands(TyperGroup):
    """Every command's errors from the worker's error tree become a message on stderr and the branch's exit
    status (`worker.errors`): the one place where the CLI decides how a refusal reads and how it exits.
    SQLite's own errors about the database file (damaged, busy, unreadable) read the same way."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for path, command in _walk(self, ()):
            _plain_placeholders(command)
            if " ".join(path) in WORKER_COMMANDS and command.callback is not None:
                command.callback = _as_worker(command.callback)

    def invoke(self, ctx: Any) -> Any:  # click.Context; typer may vendor its own click
        try:
            return super().invoke(ctx)
        except HealthbeatError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_status) from None
        except sqlite3.DatabaseError as exc:
            refusal = store_error(exc, _database.get(), opened=True)
            if refusal is None:
                raise
            report_error(refusal)
            raise typer.Exit(refusal.exit_status) from None


def _walk(command: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under this one (itself included) with its words after `healthbeat`."""
    found = [(path, command)]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found += _walk(sub, (*path, name))
    return found


def _as_worker(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def as_worker(*args: Any, **kwargs: Any) -> Any:
        token = _is_worker.set(True)
        try:
            return callback(*args, **kwargs)
        finally:
            _is_worker.reset(token)

    return as_worker


_PLACEHOLDERS: Final = {"str": "<text>", "list[str]": "<text>...", "list[Path]": "<path>..."}


def _plain_placeholders(command: Any) -> None:
    """Typer labels each parameter in the help with its Python type: `<bool>` after every flag (which takes no
    value), `<str>`, `<list[Path]>`. Flags get no placeholder and the rest read as words (`<text>`, `<path>...`);
    a placeholder a command sets itself (`metavar`) stays."""
    ctx = typer.Context(command)
    for param in [*command.params, command.get_help_option(ctx)]:
        if param is None or not hasattr(param, "display_type"):
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
            continue
        shown = str(param.display_type(ctx))
        label = _PLACEHOLDERS.get(shown.strip("<>"), shown)
        if param.param_type_name == "option":
            if param.metavar is None:
                param.metavar = label
        elif label != shown:  # an argument's type column ignores `metavar`: typer reads it from here
            param.display_type_rich = lambda ctx, label=label: label


def report_error(exc: HealthbeatError) -> None:
    """One message per refusal, never cut into lines at the console's width (logs and pipes keep it whole)."""
    if isinstance(exc, RuleFileError):
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
    elif isinstance(exc, ConfigError):
        err.print(f"[red]Configuration:[/red] {escape(clean(str(exc)))}", soft_wrap=True)
    else:
        err.print(f"[red]{escape(clean(str(exc)))}[/red]", soft_wrap=True)


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True,
                  help="Healthbeat: customer-health scores from CRM, support and usage activity, written "
                       "back to Salesforce, with Slack nudges for account owners.")

DbOption = Annotated[Path | None, typer.Option("--db", help="SQLite database (default: HEALTHBEAT_DB).")]
RulesOption = Annotated[Path | None, typer.Option("--rules-dir",
                                                  help="Rule files (default: HEALTHBEAT_RULES_DIR).")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would be written and sent, and change "
                                                              "nothing: not Salesforce, not Slack, not the "
                                                              "database (the stages run on a copy of it).")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging: each stage, each page "
                                                                    "stored, each HTTP request.")]
err = Console(stderr=True)


def cli_settings(db: Path | None = None, rules_dir: Path | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if db is not None:
        overrides["HEALTHBEAT_DB"] = db
    if rules_dir is not None:
        overrides["HEALTHBEAT_RULES_DIR"] = rules_dir
    settings = load_settings(**overrides)
    add_secrets(settings.secret_values())
    set_org(settings.org)
    return settings


def open_store(settings: Settings, *, lock: bool = True) -> Store:
    """The store for this command. `lock=False`: the command only reads (it may read a database a newer
    Healthbeat wrote). Otherwise it may write: a worker command (`WORKER_COMMANDS`) takes the worker lock and
    is refused while another worker runs; any other command writes its few rows in short transactions beside
    a running worker, waiting up to `BUSY_WAIT` for the worker's write to end."""
    _database.set(settings.db)
    if not lock:
        if not settings.db.exists():  # reading must never leave an empty database (or folder) behind
            raise NoDatabase(f"no database at {settings.db}: check --db or HEALTHBEAT_DB, or run a cycle first "
                             "(healthbeat run --once)")
        return Store(settings.db, reading=True, busy_timeout=BUSY_WAIT)
    if _is_worker.get():
        return Store(settings.db, lock=True)
    return Store(settings.db, busy_timeout=BUSY_WAIT)


HTTP_LOGGERS: Final = ("httpx", "urllib3", "simple_salesforce", "slack_sdk", "apscheduler.executors")


def setup_logging(verbose: bool, *, quiet_below: int | None = None) -> None:
    """The command's logging: with `--verbose`, debug lines from the worker (each stage, each page stored) and
    every HTTP request the clients make (URLs and statuses; credentials masked like everything else)."""
    configure_logging(verbose, quiet_below=quiet_below)
    if verbose:
        for name in HTTP_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)


FormatOption = Annotated[str, typer.Option("--format", help="table, json or csv.")]


def check_format(fmt: str) -> None:
    if fmt not in ("table", "json", "csv"):
        err.print(f"[red]--format must be table, json or csv, not {escape(clean(repr(fmt)))}[/red]")
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
