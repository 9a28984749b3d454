"""Commands around nudges: silences and the feedback CSMs gave."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from worker.alerting import silences
from worker.cli.common import (
    DbOption,
    FormatOption,
    RulesOption,
    account_id_of,
    app,
    check_format,
    cli_settings,
    emit,
    err,
    open_store,
)
from worker.store import Store
from worker.terminal import (
    MAX_NAME,
    MAX_REASON,
    Column,
    FittedTable,
    error_text,
    for_format,
    free_text,
    one_of,
    plain,
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
                db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """Silence nudges that match every given field until a time; state is still kept, nothing is queued."""
    from datetime import UTC, date, datetime, timedelta

    from worker.alerting.rules import load_alert_rules
    from worker.clock import system_clock
    from worker.config import parse_duration
    from worker.store import iso

    if rule is None and account is None and owner is None:
        err.print(error_text("give at least one of --rule, --account, --owner (a silence of everything is a "
                             "stopped worker: stop it instead)"))
        raise typer.Exit(2)
    free_text("--reason", reason, MAX_REASON)
    if by is not None:
        free_text("--by", by, MAX_NAME)
    now = system_clock()
    try:
        ends = datetime.combine(date.fromisoformat(until), datetime.max.time(), UTC).replace(microsecond=0)
    except ValueError:
        try:
            ends = now + parse_duration(until)
        except ValueError:
            err.print(error_text(f"--until must be a date like 2026-12-31 or a duration like 3d, not {until!r}"))
            raise typer.Exit(2) from None
    if ends <= now or ends - now > timedelta(days=366):
        err.print(error_text("--until must be in the future and within a year"))
        raise typer.Exit(2)
    settings = cli_settings(db, rules_dir)
    if rule is not None:  # a misspelt rule would silence nothing, for as long as the silence lasts
        alerts = load_alert_rules(settings.rules_dir)
        one_of("--rule", rule, [r.name for r in alerts.rules.rules], f"alert rules in {alerts.path}")
    with open_store(settings) as store:
        if owner is not None:
            one_of("--owner", owner, _owners(store), "account owners (full name or email)")
        account_id = account_id_of(store, account) if account else None
        silence_id = silences.add_silence(store, rule=rule, account_id=account_id, owner=owner, until=ends,
                                          reason=reason, by=by, now=now)
    err.print(f"silence {silence_id} holds until {iso(ends)}")


def _rules_with_feedback(rules_dir: Path, store: Store) -> list[str]:
    """What `feedback ls --rule` can name: the alert rules in force (when they load) and any rule with feedback,
    a rule since removed included."""
    from worker.alerting.rules import load_alert_rules
    from worker.rulefile import RuleFileError

    try:
        in_force = [r.name for r in load_alert_rules(rules_dir).rules.rules]
    except RuleFileError:
        in_force = []
    return [*in_force, *(str(r["rule"]) for r in store.query("SELECT DISTINCT rule FROM feedback ORDER BY rule"))]


def _owners(store: Store) -> list[str]:
    """What a silence's owner can match (`alerting.silences.silenced_by`): an account owner's full name or
    email, as synced from Salesforce."""
    rows = store.query("SELECT DISTINCT u.name, u.email FROM accounts a JOIN users u ON u.source = 'salesforce' "
                       "AND u.source_id = a.owner_id WHERE a.is_deleted = 0")
    return [str(value) for row in rows for value in (row["name"], row["email"]) if value]


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
        emit(for_format(rows, fmt), fmt,
             ("id", "rule", "account_id", "owner", "until", "reason", "created_by", "created_at"))
        return
    Console().print(FittedTable("Silences", SILENCE_TABLE, [
        (str(row["id"]), row["rule"] or "any", row["account_id"] or "any", row["owner"] or "any", row["until"],
         row["reason"]) for row in rows], hint="--format csv shows them"))


SILENCE_TABLE = (Column("Id", justify="right"), Column("Rule", max_width=24), Column("Account", hide=1),
                 Column("Owner", max_width=24, hide=2), Column("Until"), Column("Reason", grows=True))


@silence_app.command("expire")
def silence_expire(silence_id: Annotated[int, typer.Argument(help="The silence's id (see silence ls).")],
                   db: DbOption = None) -> None:
    """End a silence now."""
    from worker.clock import system_clock

    settings = cli_settings(db)
    with open_store(settings) as store:
        changed = silences.expire_silence(store, silence_id, system_clock())
    if not changed:
        err.print(error_text(f"no silence {silence_id} in force"))
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
        if rule is not None:
            one_of("--rule", rule, _rules_with_feedback(settings.rules_dir, store), "rules in force or with feedback")
        account_id = account_id_of(store, account) if account else None
        rows = list_feedback(store, rule=rule, account_id=account_id)
    if fmt != "table":
        emit(for_format(rows, fmt), fmt, FEEDBACK_COLUMNS)
        return
    Console().print(feedback_table(rows))


@feedback_app.command("accept")
def feedback_accept(feedback_id: Annotated[int, typer.Argument(help="The correction's id (see feedback ls).")],
                    by: Annotated[str | None, typer.Option(help="Who confirms it.")] = None,
                    db: DbOption = None) -> None:
    """Make a correction proposed in Slack an override; it keeps its term and expires by itself."""
    from worker.clock import system_clock
    from worker.service.feedback import accept_proposal

    if by is not None:
        free_text("--by", by, MAX_NAME)
    settings = cli_settings(db)
    with open_store(settings) as store:
        row = accept_proposal(store, feedback_id, by, system_clock())
    err.print(plain(f"{row['account_id']} pinned at {row['proposed_value']:g} until {row['proposed_until']} "
                    "(takes effect at the next score)"))


FEEDBACK_TABLE = (Column("Id", justify="right"), Column("When", hide=2), Column("Rule", max_width=20),
                  Column("Account", max_width=24), Column("Verdict", max_width=12), Column("By", max_width=20, hide=1),
                  Column("Reason", grows=True, min_room=20), Column("Correction", max_width=24, hide=1))


def feedback_table(rows: list[dict[str, Any]]) -> FittedTable:
    from worker.service.feedback import LABELS

    def cells(row: dict[str, Any]) -> tuple[str | None, ...]:
        correction = ""
        if row["proposed_value"] is not None:
            correction = f"{row['proposed_value']:g} until {row['proposed_until']} ({row['override_status']})"
        return (str(row["id"]), row["created_at"], row["rule"], row["account_name"] or row["account_id"],
                LABELS.get(row["verdict"], row["verdict"]), row["user_name"] or row["user_id"], row["reason"],
                correction)
    return FittedTable("Feedback from Slack", FEEDBACK_TABLE, [cells(row) for row in rows],
                       hint="--format csv shows them")
