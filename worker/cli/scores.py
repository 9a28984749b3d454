"""Commands a CSM reads scores with: scores, scores history, explain, override, backtest."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from worker.cli.common import (
    AccountArgument,
    DbOption,
    FormatOption,
    RulesOption,
    VerboseOption,
    account_id_of,
    app,
    check_format,
    cli_settings,
    emit,
    err,
    open_store,
    setup_logging,
)
from worker.rulebook.in_force import RuleBook
from worker.scoring import overrides
from worker.scoring.latest import BANDS, read_scores, scored_owners, scored_segments
from worker.store import Store
from worker.terminal import (
    MAX_NAME,
    MAX_REASON,
    Column,
    FittedTable,
    counted,
    error_text,
    for_format,
    free_text,
    one_of,
    plain,
    scores_table,
)

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.scoring.scorecard import LoadedScorecard

SCORE_COLUMNS = ("account_id", "name", "owner", "segment", "score", "band", "trend", "churn_risk",
                 "expansion_readiness", "coverage", "confidence", "reason")
scores_app = typer.Typer(help="The latest score of every account, and one account's history.")
app.add_typer(scores_app, name="scores")


@scores_app.callback(invoke_without_command=True)
def scores(ctx: typer.Context, fmt: FormatOption = "table",
           band: Annotated[str | None, typer.Option(help="Only this band: red, yellow or green.")] = None,
           owner: Annotated[str | None, typer.Option(help="Only accounts of this owner (full name).")] = None,
           segment: Annotated[str | None, typer.Option(help="Only this scorecard segment.")] = None,
           db: DbOption = None) -> None:
    """Show the latest score of every account (filter by band, owner, segment)."""
    if ctx.invoked_subcommand is not None:
        return
    check_format(fmt)
    if band is not None:
        band = one_of("--band", band.lower(), BANDS, "bands")
    settings = cli_settings(db)
    with open_store(settings, lock=False) as store:
        if owner is not None and (owners := scored_owners(store)):  # no owners: nothing to list either way
            one_of("--owner", owner, owners, "owners of scored accounts")
        if segment is not None:
            one_of("--segment", segment, _segments(settings.rules_dir, store), "segments")
        rows = read_scores(store, band=band, owner=owner, segment=segment)
    if fmt == "table":
        Console().print(scores_table(rows))
    else:
        emit(for_format(rows, fmt), fmt, SCORE_COLUMNS)


def _segments(rules_dir: Path, store: Store) -> list[str]:
    """What `--segment` can name: the scorecard's segments (when it loads) and those the scores were made in."""
    from worker.rulefile import RuleFileError
    from worker.scoring.scorecard import load_scorecard

    try:
        defined = [segment.name for segment in load_scorecard(rules_dir).scorecard.segments]
    except RuleFileError:
        defined = []
    return [*defined, *scored_segments(store)]


@scores_app.command("history")
def scores_history(account: AccountArgument, days: Annotated[int, typer.Option(min=1, help="How far back.")] = 90,
                   png: Annotated[Path | None, typer.Option(help="Also draw the history to this PNG file.")]
                   = None, fmt: FormatOption = "table", db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """One account's daily scores, with a sparkline (and a PNG chart with --png)."""
    from worker.clock import system_clock
    from worker.scoring.explain import history, plot_history, sparkline

    check_format(fmt)
    settings = cli_settings(db, rules_dir)
    with open_store(settings, lock=False) as store:
        account_id = account_id_of(store, account)
        name = store.scalar("SELECT name FROM accounts WHERE id = ?", (account_id,))
        rows = history(store, account_id, days, system_clock().date())
    if fmt != "table":
        emit(for_format(rows, fmt), fmt, ("day", "score", "band", "churn_risk", "coverage"))
    else:
        Console().print(Text.assemble(plain(name), f": {sparkline([r['score'] for r in rows])}  ",
                                      f"{rows[0]['score']:.0f} → {rows[-1]['score']:.0f} over "
                                      f"{counted(len(rows), 'day')}" if rows else "no history yet"))
    if png is not None and rows:
        rulebook = RuleBook(settings.rules_dir)
        rulebook.reload()
        bands = rulebook.require()[0].scorecard.bands
        try:
            plot_history(rows, f"{name}: health score", str(png), red=bands.red, yellow=bands.yellow)
        except RuntimeError as exc:
            err.print(error_text(str(exc)))
            raise typer.Exit(1) from None
        err.print(plain(f"chart written to {png}"))


@app.command()
def explain(account: AccountArgument, fmt: Annotated[str, typer.Option("--format", help="table or json.")]
            = "table", db: DbOption = None, rules_dir: RulesOption = None) -> None:
    """Why an account has its score: every measure's raw value, points, weight and contribution."""
    from worker.scoring.explain import explain_account, format_explanation

    settings = cli_settings(db, rules_dir)
    rulebook = RuleBook(settings.rules_dir)
    rulebook.reload()
    scorecard, _ = rulebook.require()
    with open_store(settings, lock=False) as store:
        account_id = account_id_of(store, account)

        explanation = explain_account(store, scorecard.scorecard, account_id)
        from worker.clock import system_clock
        from worker.service.feedback import account_feedback

        said = account_feedback(store, account_id, system_clock().date())
        churn = churn_explanation(store, account_id, rulebook)
    if fmt == "json":
        sys.stdout.write(json.dumps({**explanation.as_json(), "feedback": said.as_json(), "churn_risk": churn},
                                    indent=2, ensure_ascii=False) + "\n")
    else:
        Console().print(format_explanation(explanation))
        if churn["model"] is not None:
            Console().print(plain(churn_text(churn)))
        Console().print(said.render())


def churn_explanation(store: Store, account_id: str, rulebook: RuleBook) -> dict[str, object]:
    """Where the account's churn risk comes from: the learned model's terms that drive it (weight x
    standardised value, from `scores.churn_drivers`), or the scorecard's rule when no model was in force."""
    row = store.query("SELECT churn_risk, churn_drivers FROM scores WHERE account_id = ?", (account_id,))
    found = row[0] if row else {}
    drivers = json.loads(found["churn_drivers"]) if found.get("churn_drivers") else None
    model = rulebook.churn_model
    return {"value": found.get("churn_risk"),
            "model": None if drivers is None else {
                "file": str(model.path) if model else None,
                "horizon_days": model.model.horizon_days if model else None,
                "fitted_at": model.model.fitted_at.isoformat() if model else None},
            "drivers": drivers or [],
            "from": "the scorecard's derived.churn_risk rule" if drivers is None else "the learned churn model"}


def churn_text(churn: dict[str, object]) -> str:
    """`churn_explanation` in one line, as `explain` prints it: the risk, what it is the chance of, its drivers."""
    model = churn["model"]
    horizon = model.get("horizon_days") if isinstance(model, dict) else None
    value = churn["value"]
    head = (f"Churn risk {value:.0f}%" if isinstance(value, int | float) else "Churn risk -") + (
        f": the learned model's chance of churn within {horizon} days" if horizon
        else ": from the learned churn model it was scored with (no longer in the rules folder)")
    drivers = churn["drivers"] if isinstance(churn["drivers"], list) else []
    parts = [f"{d['says']} ({'+' if d['contribution'] >= 0 else ''}{d['contribution']:.2f})" for d in drivers]
    return head + (", driven by " + "; ".join(parts) if parts else "") + " (weight × standardised value)."


UntilOption = Annotated[str | None, typer.Option(help="Last snapshot day, YYYY-MM-DD (default: today).")]
RenewalTypeOption = Annotated[list[str] | None, typer.Option(help="An Opportunity Type that is a renewal "
                                                                   "(repeatable; default Renewal).")]
RenewalNameOption = Annotated[str, typer.Option(help="A word in an Opportunity's name that makes it a renewal "
                                                     "('' to go by type alone).")]
ChurnFieldOption = Annotated[str | None, typer.Option(help="A column of the accounts table holding a churn date, "
                                                           "used beside the renewals.")]


def _history_inputs(fmt: str, until: str | None, db: Path | None, rules_dir: Path | None
                    ) -> tuple[datetime, Settings, LoadedScorecard, RuleBook]:
    """What a replay of the store's history needs: the last snapshot moment (no later than now), the settings,
    the scorecard in force and the rule book; exits 2 on a bad option, 1 without a scorecard or a store."""
    from worker.clock import system_clock

    if fmt not in ("table", "json"):
        err.print(error_text(f"--format must be table or json, not {fmt!r}"))
        raise typer.Exit(2)
    try:
        last = datetime.combine(date.fromisoformat(until), time(23, 59, 59), UTC) if until else system_clock()
    except ValueError as exc:
        err.print(error_text(f"--until: {exc}"))
        raise typer.Exit(2) from None
    settings = cli_settings(db, rules_dir)
    rulebook = RuleBook(settings.rules_dir)
    rulebook.reload()  # logs every problem; broken alert rules only mean no rule is replayed
    if rulebook.scorecard is None:
        raise typer.Exit(1)
    if not settings.db.exists():
        err.print(error_text(f"No database at {settings.db}: run a cycle first (healthbeat run --once)."))
        raise typer.Exit(1)
    return min(last, system_clock()), settings, rulebook.scorecard, rulebook


def _finish(output: str, messages: Sequence[str], exit_code: int) -> NoReturn:
    typer.echo(output)
    for message in messages:
        err.print(message, markup=False, highlight=False)
    raise typer.Exit(exit_code)


@app.command()
def backtest(
        period: Annotated[str, typer.Option(help="How far back the snapshots go, e.g. 365d or 78w.")] = "365d",
        step: Annotated[str, typer.Option(help="Time between snapshots, e.g. 7d or 30d.")] = "14d",
        horizon: Annotated[str, typer.Option(help="Churn counts when it comes within this time of a snapshot.")]
        = "90d",
        until: UntilOption = None,
        fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
        plot: Annotated[Path | None, typer.Option(help="Write PNG charts to this folder "
                                                       "(needs the charts extra).")] = None,
        guardrail: Annotated[list[str] | None, typer.Option(help="A band share ops accept, e.g. red:5-25 "
                                                                 "(repeatable; default red:5-25).")] = None,
        renewal_type: RenewalTypeOption = None, renewal_name: RenewalNameOption = "renewal",
        churn_field: ChurnFieldOption = None,
        tune: Annotated[bool, typer.Option("--tune", help="Fit weights on the earlier snapshots, check them on "
                                                          "the later ones, and write a proposal to --out.")] = False,
        out: Annotated[Path | None, typer.Option(help="Where --tune writes the proposed scorecard.")] = None,
        db: DbOption = None, rules_dir: RulesOption = None, verbose: VerboseOption = False) -> None:
    """How well the health score foresaw churn, replayed from the store; --tune proposes better weights."""
    from worker.analysis.backtest import Guardrail, Plan
    from worker.analysis.command import run_command
    from worker.analysis.outcomes import OutcomeRules, read_outcomes
    from worker.config import parse_duration

    setup_logging(verbose)
    if tune != (out is not None):
        err.print("[red]--tune and --out go together: --tune --out FILE[/red]")
        raise typer.Exit(2)
    last, settings, scorecard, rulebook = _history_inputs(fmt, until, db, rules_dir)
    try:
        plan = Plan(until=last, period=parse_duration(period), step=parse_duration(step),
                    horizon=parse_duration(horizon),
                    guardrails=tuple(Guardrail.parse(g) for g in guardrail or ["red:5-25"]))
    except ValueError as exc:
        err.print(error_text(str(exc)))
        raise typer.Exit(2) from None
    rules = OutcomeRules(tuple(renewal_type or ["Renewal"]), renewal_name or None, churn_field)
    with open_store(settings, lock=False) as store:
        result = run_command(store, scorecard, rulebook.alerts, read_outcomes(store, rules), plan, fmt=fmt,
                             plot_dir=plot, tune_out=out)
    _finish(result.output, result.messages, result.exit_code)


churn_model_app = typer.Typer(no_args_is_help=True, help="The churn model learned from the org's own history.")
app.add_typer(churn_model_app, name="churn-model")


@churn_model_app.command("fit")
def churn_model_fit(
        out: Annotated[Path | None, typer.Option(help="Where to write the model (default: "
                                                       "RULES_DIR/churn_model.proposed.yaml, not in force).")] = None,
        horizon: Annotated[str, typer.Option(help="Churn risk is the chance of churn within this.")] = "90d",
        step: Annotated[str, typer.Option(help="Time between the replayed snapshots.")] = "14d",
        until: UntilOption = None,
        fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
        renewal_type: RenewalTypeOption = None, renewal_name: RenewalNameOption = "renewal",
        churn_field: ChurnFieldOption = None,
        db: DbOption = None, rules_dir: RulesOption = None, verbose: VerboseOption = False) -> None:
    """Fit the churn model on the store's whole history (renewals lost and won, the measures as they stood),
    judge it on the latest period it never saw, and write it as a rule file to review and adopt."""
    from worker.analysis.backtest import Plan
    from worker.analysis.command import fit_command
    from worker.analysis.outcomes import OutcomeRules, read_outcomes
    from worker.clock import system_clock
    from worker.config import parse_duration
    from worker.scoring.churn_model import PROPOSED_FILE

    setup_logging(verbose)
    last, settings, scorecard, _ = _history_inputs(fmt, until, db, rules_dir)
    try:
        plan = Plan(until=last, step=parse_duration(step), horizon=parse_duration(horizon))
    except ValueError as exc:
        err.print(error_text(str(exc)))
        raise typer.Exit(2) from None
    rules = OutcomeRules(tuple(renewal_type or ["Renewal"]), renewal_name or None, churn_field)
    with open_store(settings, lock=False) as store:
        result = fit_command(store, scorecard, read_outcomes(store, rules), plan,
                             out or settings.rules_dir / PROPOSED_FILE, fmt=fmt, now=system_clock())
    _finish(result.output, result.messages, result.exit_code)


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
    from datetime import timedelta

    from worker.clock import system_clock

    free_text("--reason", reason, MAX_REASON)
    if by is not None:
        free_text("--by", by, MAX_NAME)
    today = system_clock().date()
    try:
        last_day = date.fromisoformat(until) if until else today + timedelta(days=30)
    except ValueError:
        err.print(error_text(f"--until must be a date like 2026-12-31, not {until!r}"))
        raise typer.Exit(2) from None
    if last_day < today:
        err.print(error_text(f"--until {last_day} is in the past"))
        raise typer.Exit(2)
    settings = cli_settings(db)
    with open_store(settings) as store:
        account_id = account_id_of(store, account)
        overrides.pin(store, account_id, value, reason, last_day, by, system_clock())
    err.print(f"{account_id} pinned at {value:g} until {last_day} (takes effect at the next score)")


@override_app.command("clear")
def override_clear(account: AccountArgument, db: DbOption = None) -> None:
    """Remove an account's override; the computed score shows again at the next score."""
    settings = cli_settings(db)
    with open_store(settings) as store:
        account_id = account_id_of(store, account)
        removed = overrides.unpin(store, account_id)
    err.print(f"{account_id}: override removed" if removed else f"{account_id} had no override")


@override_app.command("ls")
def override_ls(fmt: FormatOption = "table", db: DbOption = None) -> None:
    """List the overrides set from the command line (and whether each still holds)."""
    check_format(fmt)
    settings = cli_settings(db)
    with open_store(settings, lock=False) as store:
        rows = overrides.list_overrides(store)
    if fmt != "table":
        emit(for_format(rows, fmt), fmt, ("account_id", "name", "value", "reason", "until", "set_by", "set_at"))
        return
    Console().print(FittedTable("Score overrides", OVERRIDE_TABLE, [
        (row["name"] or row["account_id"], f"{row['value']:g}", row["until"], row["reason"], row["set_by"])
        for row in rows], hint="--format csv shows them"))


OVERRIDE_TABLE = (Column("Account", max_width=28), Column("Value", justify="right"), Column("Until"),
                  Column("Reason", grows=True), Column("Set by", max_width=24, hide=1))
