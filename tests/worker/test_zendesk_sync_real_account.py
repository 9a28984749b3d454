"""The Zendesk sync against a Zendesk that behaves as a real account does (its documentation is cited in
`tests/connectors/test_zendesk_real_account.py`): the real client over HTTP into a real store.

One fake clock drives the sandbox, the client's pacing and the sync's "now": a wait advances it, so a
minute of Zendesk's rate limits costs no real time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.zendesk.client import ZendeskClient
from connectors.zendesk.sandbox import ZendeskSandbox
from tests.fake_time import FakeTime
from worker.scoring.measures import LIBRARY
from worker.store import MIGRATIONS, Store, iso, parse_iso
from worker.store import database as store_module
from worker.sync.report import SyncReport
from worker.sync.zendesk import RESTART_OVERLAP, sync_zendesk

EMAIL = "agent@example.com"
TOKEN = "sandbox-token"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
ACME = "001000000000001AAA"
EVENTS = "/api/v2/incremental/ticket_events.json"
TICKETS = "/api/v2/incremental/tickets/cursor.json"



@dataclass
class Zendesk:
    """A Zendesk account, a client for it and a store, on one fake clock."""

    sandbox: ZendeskSandbox
    store: Store
    time: FakeTime
    client_options: dict[str, Any] = field(default_factory=dict)
    clients: list[ZendeskClient] = field(default_factory=list)
    org: int = 0
    customer: int = 0
    agent: int = 0

    def client(self) -> ZendeskClient:
        client = ZendeskClient(self.sandbox.url, EMAIL, TOKEN, sleep=self.time.sleep, clock=self.time.time,
                               **self.client_options)
        self.clients.append(client)
        return client

    def sync(self, client: ZendeskClient | None = None) -> SyncReport:
        """One cycle's Zendesk sync (a new client, as a new `healthbeat sync` makes, unless one is given)."""
        report = SyncReport()
        sync_zendesk(self.store, client or self.client(), self.time.datetime(), report)
        return report

    def ticket(self, *, created: datetime, text: str = "It broke", reply: str | None = "On it",
               solved: datetime | None = None) -> int:
        """A ticket of the customer's, its description, the agent's reply an hour later, and maybe a solve."""
        ticket_id = self.sandbox.add_ticket(subject=text[:20], requester_id=self.customer, organization_id=self.org,
                                            created_at=created, description=text)
        if reply is not None:
            self.sandbox.add_comment(ticket_id, author_id=self.agent, body=reply,
                                     created_at=created + timedelta(hours=1))
        if solved is not None:
            self.sandbox.update_ticket(ticket_id, status="solved", at=solved)
        return ticket_id

    def calls(self, path: str) -> list[dict[str, str]]:
        return [c.query for c in self.sandbox.calls if c.path == path]

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return self.store.query(sql, params)


def make_zendesk(tmp_path: Path, **sandbox_options: Any) -> Iterator[Zendesk]:
    time = FakeTime()
    sandbox = ZendeskSandbox(email=EMAIL, api_token=TOKEN, clock=time.datetime, **sandbox_options)
    sandbox.start()
    store = Store(tmp_path / "hb.db")
    store.upsert("accounts", [{"id": ACME, "name": "Acme", "is_deleted": 0}], ("id",))
    zd = Zendesk(sandbox, store, time)
    zd.org = sandbox.add_organization("Acme", external_id=ACME, domain_names=["acme.example"])
    zd.customer = sandbox.add_user("Cy Customer", "cy@acme.example", organization_id=zd.org)
    zd.agent = sandbox.add_user("Al Agent", "al@support.example", role="agent")
    yield zd
    for client in zd.clients:
        client.close()
    store.close()
    sandbox.stop()


@pytest.fixture
def zd(tmp_path: Path) -> Iterator[Zendesk]:
    yield from make_zendesk(tmp_path)


def ticket_row(zd: Zendesk, ticket_id: int) -> dict[str, Any]:
    [row] = zd.rows("SELECT * FROM activities WHERE source = 'zendesk' AND source_id = ?", f"ticket:{ticket_id}")
    return row


# == 2. Pacing everywhere ======================================================================================

def test_a_backfill_on_an_account_with_little_to_spare_keeps_within_it_on_every_endpoint(tmp_path: Path) -> None:
    for zd in make_zendesk(tmp_path, api_requests_per_minute=8, page_size=5):  # exports alone may ask 10
        zd.client_options = {"api_requests_per_minute": 6}
        for n in range(30):
            zd.ticket(created=NOW - timedelta(days=30 - n))

        report = zd.sync()

        assert report.failed_streams == {}
        assert {c.status for c in zd.sandbox.calls} == {200}  # the account's limit was never met
        assert len(zd.sandbox.calls) >= 20
        assert zd.time.now - NOW.timestamp() >= 60 * ((len(zd.sandbox.calls) - 1) // 6)  # 6 a minute, in all
        assert zd.rows("SELECT count(*) AS n FROM activities WHERE kind = 'ticket_comment'") == [{"n": 60}]


# == 3. The true solve time =====================================================================================

def test_a_ticket_closed_days_after_it_was_solved_keeps_its_solve_time(zd: Zendesk) -> None:
    solved = NOW - timedelta(days=1)
    ticket_id = zd.ticket(created=NOW - timedelta(days=3), solved=solved)
    zd.sync()
    zd.time.advance(days=5)  # the standard automation closes it 4 days after the solve

    zd.sync()

    row = ticket_row(zd, ticket_id)
    assert (row["status"], row["closed_at"]) == ("closed", iso(solved))
    assert row["modstamp"] == iso(solved + timedelta(days=4))


def test_resolution_days_count_to_the_solve_not_to_the_automatic_close(zd: Zendesk) -> None:
    created = NOW - timedelta(days=20)
    zd.ticket(created=created, solved=created + timedelta(days=1))  # closed by the automation 4 days later

    zd.sync()

    assert LIBRARY["resolution_days"].query(zd.store, {}, zd.time.datetime()) == {ACME: pytest.approx(1.0)}


def test_a_solved_ticket_without_its_metrics_keeps_the_solve_time_already_stored(zd: Zendesk) -> None:
    solved = NOW - timedelta(days=1)
    ticket_id = zd.ticket(created=NOW - timedelta(days=3), solved=solved)
    zd.sync()
    zd.sandbox.override_json("metric_set", ticket_id, solved_at=None)
    zd.time.advance(days=5)

    zd.sync()

    assert ticket_row(zd, ticket_id)["closed_at"] == iso(solved)


def test_upgrading_the_store_reads_the_tickets_again_once_for_their_solve_times(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    with monkeypatch.context() as patch:
        solve_times = next(n for n, m in enumerate(MIGRATIONS)
                           if "DELETE FROM sync_state WHERE stream = 'zendesk.tickets'" in m)
        patch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:solve_times])
        with Store(path) as old, old.transaction():
            old.save_cursor("zendesk.tickets", "c3RvcmVk", 10, NOW)
            old.save_cursor("zendesk.organizations", iso(NOW), 1, NOW)

    with Store(path) as store:
        assert store.cursor("zendesk.tickets") is None
        assert store.cursor("zendesk.organizations") == iso(NOW)
        plan = " ".join(str(r[3]) for r in store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM activities WHERE source = 'zendesk' AND parent_id = '7'"))
    assert "activities_parent" in plan


# == 4. A refused cursor =======================================================================================

def test_a_refused_cursor_restarts_from_the_newest_ticket_stored_less_an_overlap_not_a_year_back(
        zd: Zendesk) -> None:
    for days in (300, 200, 100, 2):
        zd.ticket(created=NOW - timedelta(days=days), reply=None)
    zd.sync()
    newest = parse_iso(zd.rows("SELECT max(modstamp) AS m FROM activities WHERE kind = 'ticket'")[0]["m"])
    with zd.store.transaction():
        zd.store.save_cursor("zendesk.tickets", "bm90IGEgY3Vyc29y", 0, NOW)  # expired, or never valid
    zd.sandbox.reset_calls()
    zd.time.advance(hours=1)

    report = zd.sync()

    refused, restart = zd.calls(TICKETS)[:2]
    assert "cursor" in refused and report.failed_streams == {}
    assert int(restart["start_time"]) == int((newest - RESTART_OVERLAP).timestamp())
    assert report.records["zendesk.tickets"] == 1  # the newest ticket again, not the year's four


def test_without_a_stored_ticket_a_refused_cursor_restarts_from_the_backfill(zd: Zendesk) -> None:
    with zd.store.transaction():
        zd.store.save_cursor("zendesk.tickets", "bm90IGEgY3Vyc29y", 0, NOW)
    zd.ticket(created=NOW - timedelta(days=300), reply=None)

    report = zd.sync()

    assert int(zd.calls(TICKETS)[1]["start_time"]) == int((NOW - timedelta(days=365)).timestamp())
    assert report.records["zendesk.tickets"] == 1


# == 1. Comments in bulk, from the ticket event export =========================================================

def comment_rows(zd: Zendesk) -> list[tuple[str, str, str | None, int]]:
    return [(r["text"], r["direction"], r["account_id"], r["is_deleted"]) for r in zd.rows(
        "SELECT text, direction, account_id, is_deleted FROM activities WHERE kind = 'ticket_comment' "
        "ORDER BY occurred_at, source_id")]


def comment_calls(zd: Zendesk) -> list[str]:
    return [c.path for c in zd.sandbox.calls if c.path.endswith("/comments.json")]


def test_a_backfill_reads_comments_a_thousand_events_a_call_not_a_call_per_ticket(zd: Zendesk) -> None:
    for n in range(40):
        zd.ticket(created=NOW - timedelta(days=40 - n), text=f"Broken {n}", reply=f"Fixed {n}")

    report = zd.sync()

    assert comment_calls(zd) == []
    kinds = [c.path for c in zd.sandbox.calls]
    users = "/api/v2/users/show_many.json"  # the requesters (most comments' authors) first, then the agent
    assert kinds == ["/api/v2/users/me.json", TICKETS, users, EVENTS, users, "/api/v2/organizations.json"]
    assert report.records["zendesk.comments"] == 80 and report.failed_streams == {}
    rows = comment_rows(zd)
    assert rows[:2] == [("Broken 0", "in", ACME, 0), ("Fixed 0", "out", ACME, 0)] and len(rows) == 80


def test_the_next_cycle_reads_the_events_from_where_the_last_one_stopped(zd: Zendesk) -> None:
    ticket_id = zd.ticket(created=NOW - timedelta(days=3))
    zd.sync()
    stored = zd.store.cursor("zendesk.ticket_events")
    zd.time.advance(minutes=15)
    zd.sandbox.add_comment(ticket_id, author_id=zd.customer, body="Still broken")
    zd.sandbox.reset_calls()
    zd.time.advance(minutes=15)

    report = zd.sync()

    [query] = zd.calls(EVENTS)
    assert stored is not None and iso(datetime.fromtimestamp(int(query["start_time"]), UTC)) in stored
    assert report.records["zendesk.comments"] == 1  # the new one: the last cycle's last comes again, not stored
    assert [r[0] for r in comment_rows(zd)] == ["It broke", "On it", "Still broken"]
    assert comment_calls(zd) == []


def test_a_quiet_cycle_leaves_the_comments_it_reads_again_alone(zd: Zendesk) -> None:
    zd.ticket(created=NOW - timedelta(days=3))
    zd.sync()
    with zd.store.transaction() as conn:  # as the sentiment stage and the scoring stage leave them
        conn.execute("UPDATE activities SET sentiment = 0.5 WHERE kind = 'ticket_comment'")
        conn.execute("DELETE FROM account_changes")
    zd.time.advance(minutes=15)

    zd.sync()  # the event export starts at the last page's end: its last event comes again

    assert zd.rows("SELECT DISTINCT sentiment FROM activities WHERE kind = 'ticket_comment'") == [{"sentiment": 0.5}]
    assert zd.rows("SELECT stage, account_id FROM account_changes") == []


def test_an_unreadable_stored_event_position_goes_on_from_the_newest_ticket(zd: Zendesk) -> None:
    zd.ticket(created=NOW - timedelta(days=3))
    zd.sync()
    with zd.store.transaction():
        zd.store.save_cursor("zendesk.ticket_events", "not json", 0, NOW)
    zd.sandbox.reset_calls()

    report = zd.sync()

    assert report.failed_streams == {}
    newest = parse_iso(zd.rows("SELECT max(modstamp) AS m FROM activities WHERE kind = 'ticket'")[0]["m"])
    assert int(zd.calls(EVENTS)[0]["start_time"]) == int((newest - RESTART_OVERLAP).timestamp())


def test_a_ticket_moved_to_another_organization_takes_its_comments_along(zd: Zendesk) -> None:
    ticket_id = zd.ticket(created=NOW - timedelta(days=3))
    stranger = zd.sandbox.add_organization("Initech", domain_names=["initech.example"])
    zd.sync()
    zd.time.advance(hours=1)
    zd.sandbox.update_ticket(ticket_id, organization_id=stranger)
    zd.time.advance(hours=1)

    zd.sync()

    assert [r[2] for r in comment_rows(zd)] == [None, None]  # Initech belongs to no account
    assert {r["related_id"] for r in zd.rows("SELECT related_id FROM activities")} == {f"org:{stranger}"}


def test_the_comments_of_a_deleted_ticket_stop_counting_even_those_read_after_the_deletion(zd: Zendesk) -> None:
    kept = zd.ticket(created=NOW - timedelta(days=3), text="Kept")
    gone = zd.ticket(created=NOW - timedelta(days=2), text="Gone")
    zd.sync()
    zd.time.advance(hours=1)
    zd.sandbox.delete_ticket(gone)
    zd.time.advance(hours=1)

    zd.sync()

    assert [(r[0], r[3]) for r in comment_rows(zd)] == [("Kept", 0), ("On it", 0), ("Gone", 1), ("On it", 1)]
    assert ticket_row(zd, kept)["is_deleted"] == 0


def test_a_ticket_whose_events_were_missed_has_its_comments_read_by_itself(zd: Zendesk) -> None:
    zd.ticket(created=NOW - timedelta(days=3))
    zd.sync()
    zd.time.advance(hours=1)
    missed = zd.ticket(created=zd.time.datetime(), text="Nobody saw this", reply=None)
    position = json.loads(zd.store.cursor("zendesk.ticket_events") or "{}")
    with zd.store.transaction():  # the event stream moved past its creation without reading it (a lost page)
        zd.store.save_cursor("zendesk.ticket_events", json.dumps(
            {**position, "start": iso(zd.time.datetime() + timedelta(minutes=10))}), 0, NOW)
    zd.sandbox.reset_calls()
    zd.time.advance(hours=1)

    report = zd.sync()

    assert comment_calls(zd) == [f"/api/v2/tickets/{missed}/comments.json"]
    assert "Nobody saw this" in [r[0] for r in comment_rows(zd)]
    assert report.records["zendesk.comments"] == 1


def test_a_ticket_whose_event_named_a_comment_without_its_text_has_its_comments_read_by_itself(
        zd: Zendesk) -> None:
    ticket_id = zd.ticket(created=NOW - timedelta(days=3), reply="The secret fix")
    zd.sandbox.override_json("ticket_event", last_event_id(zd, ticket_id), child_events=[
        {"id": 1, "event_type": "Comment", "comment_present": True, "comment_public": True}])

    zd.sync()

    assert comment_calls(zd) == [f"/api/v2/tickets/{ticket_id}/comments.json"]
    assert [r[0] for r in comment_rows(zd)] == ["It broke", "The secret fix"]


def test_upgrading_from_per_ticket_comments_starts_the_events_at_the_newest_ticket_not_a_year_back(
        zd: Zendesk) -> None:
    zd.ticket(created=NOW - timedelta(days=200))
    zd.ticket(created=NOW - timedelta(days=2))
    zd.sync()
    with zd.store.transaction() as conn:  # as an older Healthbeat left it: tickets and comments, no event stream
        conn.execute("DELETE FROM sync_state WHERE stream = 'zendesk.ticket_events'")
    newest = parse_iso(zd.rows("SELECT max(modstamp) AS m FROM activities WHERE kind = 'ticket'")[0]["m"])
    zd.sandbox.reset_calls()
    zd.time.advance(hours=1)

    zd.sync()

    [query] = zd.calls(EVENTS)
    assert int(query["start_time"]) == int((newest - RESTART_OVERLAP).timestamp())
    assert comment_calls(zd) == []


def test_a_failing_event_export_fails_the_comments_alone_and_resumes_next_cycle(zd: Zendesk) -> None:
    zd.ticket(created=NOW - timedelta(days=3))
    zd.sandbox.fail_next(503, path_contains="ticket_events", times=5)

    first = zd.sync()
    zd.time.advance(minutes=15)
    second = zd.sync()

    assert list(first.failed_streams) == ["zendesk.comments"] and first.records["zendesk.tickets"] == 1
    assert second.failed_streams == {} and [r[0] for r in comment_rows(zd)] == ["It broke", "On it"]


def last_event_id(zd: Zendesk, ticket_id: int) -> int:
    with httpx.Client(base_url=zd.sandbox.url, auth=(f"{EMAIL}/token", TOKEN)) as api:
        events = api.get(EVENTS, params={"start_time": "0"}).json()["ticket_events"]
    zd.sandbox.reset_calls()
    return max(e["id"] for e in events if e["ticket_id"] == ticket_id)
