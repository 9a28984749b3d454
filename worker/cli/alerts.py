"""Commands around nudges: silences and the feedback CSMs gave."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.alerting import silences
from worker.cli.common import (
    DbOption,
    FormatOption,
    account_id_of,
    app,
    check_format,
    cli_settings,
    emit,
    err,
    open_store,
)

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

    from worker.clock import system_clock
    from worker.config import parse_duration
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
    settings = cli_settings(db)
    with open_store(settings) as store:
        account_id = account_id_of(store, account) if account else None
        silence_id = silences.add_silence(store, rule=rule, account_id=account_id, owner=owner, until=ends,
                                          reason=reason, by=by, now=now)
    err.print(f"silence {silence_id} holds until {iso(ends)}")


@silence_app.command("ls")
def silence_ls(fmt: FormatOption = "table", all_: Annotated[bool, typer.Option("--all", help="Expired ones too.")]
               = False, db: DbOption = None) -> None:
    """List the silences in force (or all of them)."""
    from worker.clock import system_clock

    check_format(fmt)
    settings = cli_settings(db)
    with open_store(settings, lock=False) as store:
        rows = silences.list_silences(store, system_clock(), expired_too=all_)
    if fmt != "table":
        emit(rows, fmt, ("id", "rule", "account_id", "owner", "until", "reason", "created_by", "created_at"))
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
    from worker.clock import system_clock

    settings = cli_settings(db)
    with open_store(settings) as store:
        changed = silences.expire_silence(store, silence_id, system_clock())
    if not changed:
        err.print(f"[red]no silence {silence_id} in force[/red]")
        raise typer.Exit(1)
    err.print(f"silence {silence_id} expired")



feedback_app = typer.Typer(no_args_is_help=True, help="What CSMs said about the nudges, from the buttons in Slack.")
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("ls")
def feedback_ls(fmt: FormatOption = "table",
                rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
                account: Annotated[str | None, typer.Option(help="Only this account (Id or exact name).")] = None,
                db: DbOption = None) -> None:
    """The feedback given on nudges, newest first, with each correction and what became of it."""
    from worker.service.feedback import FEEDBACK_COLUMNS, list_feedback

    check_format(fmt)
    settings = cli_settings(db)
    with open_store(settings, lock=False) as store:
        account_id = account_id_of(store, account) if account else None
        rows = list_feedback(store, rule=rule, account_id=account_id)
    if fmt != "table":
        emit(rows, fmt, FEEDBACK_COLUMNS)
        return
    Console().print(feedback_table(rows))


@feedback_app.command("accept")
def feedback_accept(feedback_id: Annotated[int, typer.Argument(help="The correction's id (see feedback ls).")],
                    by: Annotated[str | None, typer.Option(help="Who confirms it.")] = None,
                    db: DbOption = None) -> None:
    """Make a correction proposed in Slack an override; it keeps its term and expires by itself."""
    from worker.clock import system_clock
    from worker.service.feedback import accept_proposal

    settings = cli_settings(db)
    with open_store(settings) as store:
        row = accept_proposal(store, feedback_id, by, system_clock())
    err.print(f"{row['account_id']} pinned at {row['proposed_value']:g} until {row['proposed_until']} "
              "(takes effect at the next score)")


def feedback_table(rows: list[dict[str, Any]]) -> Table:
    from worker.service.feedback import LABELS

    table = Table(title="Feedback from Slack")
    for column in ("Id", "When", "Rule", "Account", "Verdict", "By", "Reason", "Correction"):
        table.add_column(column, overflow="fold")
    for row in rows:
        correction = ""
        if row["proposed_value"] is not None:
            correction = f"{row['proposed_value']:g} until {row['proposed_until']} ({row['override_status']})"
        table.add_row(str(row["id"]), row["created_at"], row["rule"], row["account_name"] or row["account_id"],
                      LABELS.get(row["verdict"], row["verdict"]), row["user_name"] or row["user_id"],
                      row["reason"] or "", correction)
    return table
