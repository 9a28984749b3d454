"""`healthbeat demo`: the whole worker, end to end, against local sandboxes on loopback.

It starts the Salesforce (HTTPS), Zendesk and Slack sandboxes, fills them with a deterministic world,
runs a first cycle (the backfill), lets three weeks pass in the sandboxes' shared clock (ordinary activity
for most accounts, a bad week for a few, silence for one), runs a second cycle and shows what changed:
the scores, what the Salesforce sandbox now holds on the Account records, and the Slack messages sent.
A third cycle shows that nothing is written or sent twice. The database stays behind for `sqlite3`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.sandboxes.world import World, advance, build_world, stir_trouble
from connectors.slack.sandbox import SlackSandbox
from worker.clock import ShiftedClock
from worker.config import load_settings
from worker.cycle import Cycle, CycleReport, build_clients
from worker.demo.harness import DEMO_MARKER, Sandboxes, pick_changes, sandbox_environment, start_sandboxes
from worker.rulebook.in_force import RuleBook
from worker.scoring.latest import read_scores
from worker.store import Store, lock_file
from worker.terminal import scores_table

log = logging.getLogger(__name__)

def _prepare_db(db: Path, console: Console) -> bool:
    """A demo database may be replaced; anything else at that path is the user's and is left alone."""
    if not db.exists():
        return True
    try:
        with Store(db) as store:
            is_demo = store.cursor(DEMO_MARKER) is not None
    except Exception:
        is_demo = False
    if not is_demo:
        console.print(f"[red]{db} exists and is not a Healthbeat demo database; choose another --db.[/red]")
        return False
    lock = lock_file(db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
    return True


def run_demo(db: Path, *, accounts: int = 30, seed: int = 7, rules_dir: Path = Path("rules"),
             console: Console | None = None) -> int:
    console = console or Console()
    if not _prepare_db(db, console):
        return 2
    clock = ShiftedClock()
    usage_dir = Path(tempfile.mkdtemp(prefix="healthbeat-demo-usage-"))
    sandboxes = start_sandboxes(clock)
    try:
        console.rule("[bold]Healthbeat demo")
        console.print(f"Sandboxes on loopback: Salesforce {sandboxes.salesforce.url} (HTTPS), "
                      f"Zendesk {sandboxes.zendesk.url}, Slack {sandboxes.slack.url}")
        world = build_world(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage_dir,
                            accounts=accounts, seed=seed, now=clock())
        console.print(f"World: {accounts} accounts, {len(world.owners)} owners "
                      f"({len(world.owners_without_slack)} without a Slack user), seed {seed}")
        settings = load_settings(**sandbox_environment(sandboxes, db, usage_dir, rules_dir))
        with Store(db, lock=True) as store:
            with store.transaction():
                store.save_cursor(DEMO_MARKER, f"seed={seed}", 0, clock())
            clients = build_clients(settings)
            cycle = Cycle(store, settings, RuleBook(settings.rules_dir), clients, clock=clock)
            first = _timed_cycle(console, "Cycle 1: backfill", cycle, sandboxes)
            if not first.ok:
                console.print("[red]The first cycle failed; see above.[/red]")
                return 1
            troubled, silent = pick_changes(store, include_owner=min(world.owners_without_slack, default=None))
            start = clock()
            clock.offset += timedelta(days=21)
            advance(world, start, clock(), quiet=[silent, *troubled])
            stir_trouble(world, troubled, clock())
            console.print(f"\n[bold]Three weeks pass.[/bold] A bad week (angry emails, urgent tickets) for "
                          f"{', '.join(world.account(a).name for a in troubled)}; "
                          f"{world.account(silent).name} goes silent.")
            second = _timed_cycle(console, "Cycle 2: after the change", cycle, sandboxes)
            third = _timed_cycle(console, "Cycle 3: nothing new", cycle, sandboxes)
            console.print(scores_table(read_scores(store), title="Account health (healthbeat scores)"))
            _show_salesforce(console, sandboxes.salesforce, [*troubled, silent])
            _show_slack(console, sandboxes.slack, world)
            clients.close()
        ok = all(r.ok for r in (first, second, third))
        console.print(f"\nThe database is at [bold]{db}[/bold]: try "
                      f"`sqlite3 {db} 'select * from account_health'` or `healthbeat scores --db {db}`.")
        return 0 if ok else 1
    finally:
        sandboxes.stop()
        shutil.rmtree(usage_dir, ignore_errors=True)


def _timed_cycle(console: Console, title: str, cycle: Cycle, sandboxes: Sandboxes) -> CycleReport:
    for server in (sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack):
        server.reset_calls()
    started = time.perf_counter()
    report = cycle.run()
    elapsed = time.perf_counter() - started
    sf_calls = len(sandboxes.salesforce.calls)
    composite = sum(1 for c in sandboxes.salesforce.calls if "composite/sobjects" in c.path)
    posts = sum(1 for c in sandboxes.slack.calls if c.method == "chat.postMessage")
    console.print(f"\n[bold]{title}[/bold] ({elapsed:.1f}s): {report.summary()}")
    console.print(f"  API calls: Salesforce {sf_calls} ({composite} composite write-backs), "
                  f"Zendesk {len(sandboxes.zendesk.calls)}, Slack {len(sandboxes.slack.calls)} "
                  f"({posts} chat.postMessage)")
    return report


def _show_salesforce(console: Console, salesforce: SalesforceSandbox, account_ids: list[str]) -> None:
    table = Table(title="What the Salesforce sandbox now holds (changed accounts)")
    for column in ("Account", "Health_Score__c", "Health_Band__c", "Health_Trend__c", "Churn_Risk__c",
                   "Health_Confidence__c", "Health_Reason__c"):
        table.add_column(column, overflow="fold")
    for account_id in account_ids:
        record = salesforce.get("Account", account_id)
        table.add_row(record["Name"], str(record.get("Health_Score__c")), str(record.get("Health_Band__c")),
                      str(record.get("Health_Trend__c")), str(record.get("Churn_Risk__c")),
                      str(record.get("Health_Confidence__c")), str(record.get("Health_Reason__c")))
    console.print(table)


def _show_slack(console: Console, slack: SlackSandbox, world: World) -> None:
    names = {slack_id: world.owners[owner][0] for owner, slack_id in world.slack_user_ids.items()}
    table = Table(title="Slack messages the Slack sandbox received")
    table.add_column("To")
    table.add_column("Message", overflow="fold")
    for message in slack.messages:
        if message.kind == "im" and message.user:
            to = f"DM to {names.get(message.user, message.user)}"
        else:
            to = "#cs-alerts (fallback)" if message.channel == world.fallback_channel_id else message.channel
        table.add_row(to, message.text)
    if not slack.messages:
        table.add_row("-", "(none)")
    console.print(table)
