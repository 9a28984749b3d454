"""Z1: a year's Zendesk backfill against a real account's limits: how many calls, and how long.

A Zendesk account's per-minute limit (200 on the smallest plan) is one for every API client of the account,
and its incremental exports allow 10 requests a minute; the sandbox enforces both. What takes the time is
therefore the waiting, not the worker: the sandbox and the client share a simulated clock (real time plus
every wait the client asked for), so an hour of Zendesk's pacing costs seconds here and is still counted.
The sandbox runs in the same process as the worker (the clock is shared through a function call), so the
real seconds are both of theirs; the figures that matter are the calls and the simulated seconds.

The world: `tickets` tickets spread over the last year, `tickets_per_org` to an organization (each mapped
to an account, with one requester), each with the customer's description and an agent's reply; most are
solved a day later and closed by the standard automation four days after that. The sync is
`worker.sync.zendesk.sync_zendesk` with the real `ZendeskClient` at its defaults (exports 10 a minute,
100 a minute in all), into an empty store.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
_EMAIL = "healthbeat@support.example"
_TOKEN = "bench-zendesk-token"  # noqa: S105 - the in-process sandbox's own throw-away credential


@dataclass(frozen=True)
class ZendeskSpec:
    tickets: int
    tickets_per_org: int = 20
    solved_share: float = 0.85
    api_limit: int = 200  # the account's requests a minute, all clients together: the smallest plan's
    seed: int = 7


class SimulatedTime:
    """Real time since the start, plus every wait the client asked for (which then costs nothing)."""

    def __init__(self, start: datetime) -> None:
        self._base = start.timestamp()
        self._started = time.perf_counter()
        self.waited = 0.0
        self.waits = 0

    def time(self) -> float:
        return self._base + (time.perf_counter() - self._started) + self.waited

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def sleep(self, seconds: float) -> None:
        self.waited += max(0.0, seconds)
        self.waits += 1


def load(sandbox: Any, spec: ZendeskSpec, now: datetime) -> dict[str, int]:
    """Fill the sandbox; returns what it holds. Deterministic for a spec."""
    rng = random.Random(spec.seed)
    agent = sandbox.add_user("Support Agent", "agent@support.example", role="agent")
    orgs = math.ceil(spec.tickets / spec.tickets_per_org)
    accounts: list[tuple[int, int]] = []
    for n in range(orgs):
        org = sandbox.add_organization(f"Customer {n}", external_id=account_id(n), domain_names=[f"c{n}.example"])
        accounts.append((org, sandbox.add_user(f"Ops {n}", f"ops@c{n}.example", organization_id=org)))
    for n in range(spec.tickets):
        org, requester = accounts[n % orgs]
        created = now - timedelta(days=360) + timedelta(seconds=rng.randrange(359 * 86400))
        ticket = sandbox.add_ticket(subject=f"Ticket {n}", requester_id=requester, organization_id=org,
                                    created_at=created, description=f"Something is wrong, case {n}")
        sandbox.add_comment(ticket, author_id=agent, body="Thanks, we are looking into it.",
                            created_at=created + timedelta(hours=2))
        if rng.random() < spec.solved_share:
            sandbox.update_ticket(ticket, status="solved", at=created + timedelta(days=1))
    return {"tickets": spec.tickets, "organizations": orgs, "users": orgs + 1, "requesters": orgs}


def account_id(n: int) -> str:
    return f"001{n:012d}AAA"


def zendesk_backfill(spec: ZendeskSpec, workdir: Path) -> dict[str, Any]:
    """Load the world, run one backfill, and count: calls by kind, 429s, simulated and real seconds."""
    from connectors.zendesk.client import ZendeskClient
    from connectors.zendesk.sandbox import ZendeskSandbox
    from worker.store import Store
    from worker.sync.report import SyncReport
    from worker.sync.zendesk import sync_zendesk

    clock = SimulatedTime(BENCH_NOW)
    sandbox = ZendeskSandbox(email=_EMAIL, api_token=_TOKEN, clock=clock.datetime,
                             api_requests_per_minute=spec.api_limit)
    sandbox.start()
    db = workdir / f"zendesk-{spec.tickets}.db"
    try:
        load_started = time.perf_counter()
        world = load(sandbox, spec, clock.datetime())
        load_seconds = time.perf_counter() - load_started
        store = Store(db)
        store.upsert("accounts", [{"id": account_id(n), "name": f"Customer {n}", "is_deleted": 0}
                                  for n in range(world["organizations"])], ("id",))
        client = ZendeskClient(sandbox.url, _EMAIL, _TOKEN, sleep=clock.sleep, clock=clock.time)
        sandbox.reset_calls()
        simulated, real, cpu = clock.time(), time.perf_counter(), _cpu()
        report = SyncReport()
        sync_zendesk(store, client, clock.datetime(), report)
        simulated, real, cpu = clock.time() - simulated, time.perf_counter() - real, _cpu() - cpu
        comments = store.scalar("SELECT count(*) FROM activities WHERE kind = 'ticket_comment'")
        mapped = store.scalar("SELECT count(*) FROM activities WHERE source = 'zendesk' AND account_id IS NOT NULL")
        stored_tickets = store.scalar("SELECT count(*) FROM activities WHERE kind = 'ticket'")
        world["events"] = sandbox.event_count  # the automatic closes included, made as the sandbox's clock passed them
        store.close()
        client.close()
    finally:
        sandbox.stop()
        db.unlink(missing_ok=True)
    kinds = Counter(call_kind(call.path) for call in sandbox.calls)
    statuses = Counter(call.status for call in sandbox.calls)
    expected = {"users/me": 1, "incremental tickets": math.ceil(world["tickets"] / 1000),
                "incremental ticket events": math.ceil(world["events"] / 1000),
                "organizations": math.ceil(world["organizations"] / 100),
                # the requesters, looked up a hundred a call before the events; then the agent, on the first page
                "users/show_many": math.ceil(world["requesters"] / 100) + 1}
    return {
        "spec": asdict(spec), "world": world, "load_seconds": load_seconds,
        "calls": dict(kinds), "calls_total": sum(kinds.values()), "expected": expected,
        "expected_total": sum(expected.values()), "rate_limited": statuses.get(429, 0),
        "simulated_seconds": simulated, "waited_seconds": clock.waited, "waits": clock.waits,
        "real_seconds": real, "cpu_seconds": cpu, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 1024, "tickets_stored": stored_tickets, "comments_stored": comments, "mapped": mapped,
        "failed_streams": report.failed_streams,
        # The way before (one comments call per ticket): the same calls less the event pages, plus a call per
        # ticket; at best the account's whole limit a minute (leaving nothing to the customer's other tools).
        "per_ticket_calls": sum(kinds.values()) - kinds.get("incremental ticket events", 0) + world["tickets"],
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def call_kind(path: str) -> str:
    """A Zendesk call's kind, as the benchmarks count them."""
    if "/incremental/ticket_events" in path:
        return "incremental ticket events"
    if "/incremental/tickets" in path:
        return "incremental tickets"
    if path.endswith("/comments.json"):
        return "ticket comments"
    if "/organizations" in path:
        return "organizations"
    if path.endswith("/users/me.json"):
        return "users/me"
    if "/users/show_many" in path:
        return "users/show_many"
    return path
