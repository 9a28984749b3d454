"""The Zendesk client, through real HTTP against the sandbox, with a fake clock: no real waits."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from connectors.zendesk.client import (
    TicketPage,
    ZendeskAuthError,
    ZendeskClient,
    ZendeskCursorRejected,
    ZendeskNotFound,
    ZendeskRateLimited,
    ZendeskRequestError,
    ZendeskUnavailable,
)
from connectors.zendesk.records import (
    BadRecord,
    ZendeskOrganization,
    ZendeskRecordError,
    ZendeskTicket,
    parse_organization,
    parse_ticket,
)
from connectors.zendesk.sandbox import ZendeskSandbox
from tests.connectors.zendesk_fixtures import EMAIL, TOKEN, ClientFactory, Customer, SandboxFactory
from tests.fake_time import FakeTime

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MAY = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> ZendeskSandbox:
    return make_sandbox(page_size=3)


@pytest.fixture
def client(make_client: ClientFactory, sandbox: ZendeskSandbox) -> ZendeskClient:
    return make_client(sandbox)


@pytest.fixture
def customer(sandbox: ZendeskSandbox) -> Customer:
    org_id = sandbox.add_organization("Acme", external_id="001000000000001AAA", domain_names=["Acme.com"])
    return Customer(org_id, sandbox.add_user("Jo Customer", "jo@acme.com", organization_id=org_id))


def add_tickets(sandbox: ZendeskSandbox, customer: Customer, count: int, *, at: datetime = MAY,
                spread: bool = True) -> list[int]:
    return [sandbox.add_ticket(subject=f"Ticket {i}", requester_id=customer.user_id,
                               organization_id=customer.org_id,
                               created_at=at + timedelta(minutes=i if spread else 0))
            for i in range(count)]


def export(client: ZendeskClient, cursor: str | None = None) -> list[TicketPage]:
    return list(client.ticket_pages(cursor=cursor, start_time=LONG_AGO))


def ticket_ids(pages: list[TicketPage]) -> list[int]:
    return [t.id for page in pages for t in page.tickets if isinstance(t, ZendeskTicket)]


# -- credentials ----------------------------------------------------------------------------

def test_verify_returns_the_agent_behind_the_credentials(
        client: ZendeskClient, sandbox: ZendeskSandbox) -> None:
    agent = client.verify()
    assert (agent.id, agent.email, agent.role, agent.is_customer) == (sandbox.agent_id, EMAIL, "admin", False)


def test_bad_credentials_name_zendesk_and_the_url_but_never_the_token(
        make_client: ClientFactory, sandbox: ZendeskSandbox) -> None:
    client = make_client(sandbox, token="wrong-token-value")
    with pytest.raises(ZendeskAuthError) as caught:
        client.verify()
    message = str(caught.value)
    assert "Zendesk" in message and sandbox.url in message and "ZENDESK_API_TOKEN" in message
    assert "wrong-token-value" not in message and TOKEN not in message
    assert client.calls == 1  # a 401 is not retried


# -- incremental export ---------------------------------------------------------------------

def test_export_reads_every_page_until_end_of_stream(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    ids = add_tickets(sandbox, customer, 8)
    pages = export(client)
    assert ticket_ids(pages) == ids
    assert [p.end_of_stream for p in pages] == [False, False, True]
    assert client.calls == 3
    assert all(p.after_cursor for p in pages)


def test_resuming_from_the_stored_cursor_sees_only_later_changes(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer, fake_time: FakeTime) -> None:
    ids = add_tickets(sandbox, customer, 4)
    stored = export(client)[-1].after_cursor
    fake_time.now += 600
    sandbox.add_comment(ids[2], author_id=customer.user_id, body="Still broken")
    new_id = sandbox.add_ticket(subject="New", requester_id=customer.user_id, organization_id=customer.org_id)
    later = export(client, cursor=stored)
    assert ticket_ids(later) == [ids[2], new_id]
    assert later[-1].end_of_stream and later[-1].after_cursor != stored


def test_deleted_ticket_arrives_flagged_as_deleted(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    [ticket_id] = add_tickets(sandbox, customer, 1)
    sandbox.delete_ticket(ticket_id)
    [page] = export(client)
    [ticket] = page.tickets
    assert isinstance(ticket, ZendeskTicket) and ticket.is_deleted


def test_start_time_is_moved_back_to_at_least_a_minute_ago(
        client: ZendeskClient, sandbox: ZendeskSandbox, fake_time: FakeTime) -> None:
    list(client.ticket_pages(cursor=None, start_time=NOW))
    [call] = sandbox.calls
    assert call.status == 200
    assert int(call.query["start_time"]) <= fake_time.now - 60


def test_1500_tickets_sharing_one_updated_at_are_exported_exactly_once(
        make_sandbox: SandboxFactory, make_client: ClientFactory) -> None:
    sandbox = make_sandbox()  # Zendesk's page of 1,000
    org_id = sandbox.add_organization("Bulk")
    user_id = sandbox.add_user("Bulk User", "bulk@example.com", organization_id=org_id)
    ids = add_tickets(sandbox, Customer(org_id, user_id), 1500, spread=False)
    client = make_client(sandbox)
    pages = export(client)
    assert sorted(ticket_ids(pages)) == ids
    assert [len(p.tickets) for p in pages] == [1000, 500]


def test_ticket_updated_during_the_export_comes_again_later_in_its_newer_version(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer, fake_time: FakeTime) -> None:
    ids = add_tickets(sandbox, customer, 5)
    pages = client.ticket_pages(cursor=None, start_time=LONG_AGO)
    first = next(pages)
    fake_time.now += 60
    sandbox.update_ticket(ids[0], status="solved")
    rest = list(pages)
    seen = [t for page in [first, *rest] for t in page.tickets if isinstance(t, ZendeskTicket)]
    assert [t.id for t in seen] == [*ids, ids[0]]
    assert (seen[0].status, seen[-1].status) == ("open", "solved")


def test_rejected_stored_cursor_falls_back_to_start_time_with_a_warning(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer,
        caplog: pytest.LogCaptureFixture) -> None:
    ids = add_tickets(sandbox, customer, 2)
    with caplog.at_level(logging.WARNING, logger="connectors.zendesk.client"):
        pages = export(client, cursor="bm90IGEgY3Vyc29y")
    assert ticket_ids(pages) == ids
    assert [c.status for c in sandbox.calls] == [400, 200]
    assert "start_time" in sandbox.calls[1].query
    assert "rejected the export cursor" in caplog.text


def test_cursor_rejected_again_after_the_fallback_raises(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    add_tickets(sandbox, customer, 5)
    sandbox.fail_next(400, path_contains="cursor=", times=2)
    with pytest.raises(ZendeskCursorRejected):
        export(client, cursor="c3RvcmVk")


def test_cursor_rejected_mid_export_restarts_without_repeating_tickets(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    ids = add_tickets(sandbox, customer, 5)
    pages = client.ticket_pages(cursor=None, start_time=LONG_AGO)
    first = next(pages)
    sandbox.fail_next(400, path_contains="cursor=")
    assert ticket_ids([first, *pages]) == ids


def test_malformed_ticket_becomes_a_bad_record_and_the_rest_continue(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    ids = add_tickets(sandbox, customer, 3)
    sandbox.override_json("ticket", ids[1], updated_at="last tuesday")
    [page] = export(client)
    good_1, bad, good_2 = page.tickets
    assert isinstance(bad, BadRecord)
    assert (bad.kind, bad.raw["id"]) == ("ticket", ids[1])
    assert "updated_at" in bad.reason
    assert ticket_ids([page]) == [ids[0], ids[2]]
    assert isinstance(good_1, ZendeskTicket) and isinstance(good_2, ZendeskTicket)


def test_ticket_without_an_id_is_a_bad_record_too(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    [ticket_id] = add_tickets(sandbox, customer, 1)
    sandbox.override_json("ticket", ticket_id, id=None)
    [page] = export(client)
    [bad] = page.tickets
    assert isinstance(bad, BadRecord) and "'id'" in bad.reason


# -- rate limits and retries ----------------------------------------------------------------

def test_429_waits_exactly_retry_after_seconds_then_succeeds(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer, fake_time: FakeTime) -> None:
    ids = add_tickets(sandbox, customer, 2)
    sandbox.fail_next(429, retry_after=7, path_contains="incremental")
    assert ticket_ids(export(client)) == ids
    assert fake_time.sleeps == [7]


def test_servers_own_rate_limit_is_waited_out_when_the_client_allows_more(
        make_sandbox: SandboxFactory, make_client: ClientFactory, fake_time: FakeTime) -> None:
    sandbox = make_sandbox(page_size=1, incremental_requests_per_minute=2)
    user_id = sandbox.add_user("Jo", "jo@example.com")
    ids = [sandbox.add_ticket(subject=f"T{i}", requester_id=user_id, organization_id=None,
                              created_at=MAY + timedelta(minutes=i)) for i in range(4)]
    client = make_client(sandbox, requests_per_minute=100)
    assert ticket_ids(export(client)) == ids
    assert 429 in [c.status for c in sandbox.calls]
    assert fake_time.sleeps == [60]


def test_export_is_paced_to_requests_per_minute_and_never_meets_a_429(
        make_sandbox: SandboxFactory, make_client: ClientFactory, fake_time: FakeTime) -> None:
    sandbox = make_sandbox(page_size=1, incremental_requests_per_minute=10)
    user_id = sandbox.add_user("Jo", "jo@example.com")
    ids = [sandbox.add_ticket(subject=f"T{i}", requester_id=user_id, organization_id=None,
                              created_at=MAY + timedelta(minutes=i)) for i in range(25)]
    client = make_client(sandbox, requests_per_minute=10)
    assert ticket_ids(export(client)) == ids
    assert {c.status for c in sandbox.calls} == {200}
    assert len(fake_time.sleeps) == 2 and sum(fake_time.sleeps) >= 120


def test_503_is_retried_with_bounded_backoff(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer, fake_time: FakeTime) -> None:
    ids = add_tickets(sandbox, customer, 2)
    sandbox.fail_next(503, times=2)
    assert ticket_ids(export(client)) == ids
    assert len(fake_time.sleeps) == 2 and all(0 < s <= 31 for s in fake_time.sleeps)
    assert client.calls == 3


def test_persistent_503_gives_up_after_max_attempts(
        make_client: ClientFactory, sandbox: ZendeskSandbox, fake_time: FakeTime) -> None:
    client = make_client(sandbox, max_attempts=3)
    sandbox.fail_next(503, times=10)
    with pytest.raises(ZendeskUnavailable, match="503"):
        list(client.organizations())
    assert (client.calls, len(fake_time.sleeps)) == (3, 2)


def test_refused_connection_is_retried_then_reported_as_unavailable(
        make_sandbox: SandboxFactory, make_client: ClientFactory, fake_time: FakeTime) -> None:
    gone = make_sandbox()
    client = make_client(gone, max_attempts=2)
    gone.stop()
    with pytest.raises(ZendeskUnavailable, match="could not be reached") as caught:
        client.verify()
    assert caught.value.__cause__ is None  # no httpx exception chained out
    assert len(fake_time.sleeps) == 1


def test_429_that_never_ends_gives_up_as_rate_limited(
        make_client: ClientFactory, sandbox: ZendeskSandbox, fake_time: FakeTime) -> None:
    client = make_client(sandbox, max_attempts=3)
    sandbox.fail_next(429, retry_after=2, times=10)
    with pytest.raises(ZendeskRateLimited) as caught:
        client.verify()
    assert (caught.value.retry_after, fake_time.sleeps) == (2, [2, 2])


def test_retry_after_longer_than_a_cycle_should_wait_stops_at_once(
        client: ZendeskClient, sandbox: ZendeskSandbox, fake_time: FakeTime) -> None:
    sandbox.fail_next(429, retry_after=3600)
    with pytest.raises(ZendeskRateLimited) as caught:
        client.verify()
    assert caught.value.retry_after == 3600
    assert fake_time.sleeps == []


def test_client_error_other_than_401_and_429_is_not_retried(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    sandbox.fail_next(400, path_contains="show_many")
    with pytest.raises(ZendeskRequestError) as caught:
        client.users([customer.user_id])
    assert caught.value.status == 400
    assert client.calls == 1


# -- comments, organizations, users ---------------------------------------------------------

def test_comments_are_read_across_several_pages_oldest_first(
        make_sandbox: SandboxFactory, make_client: ClientFactory, fake_time: FakeTime) -> None:
    sandbox = make_sandbox(page_size=2)
    user_id = sandbox.add_user("Jo", "jo@example.com")
    ticket_id = sandbox.add_ticket(subject="Help", requester_id=user_id, organization_id=None,
                                   created_at=MAY, description="It broke")
    for i in range(4):
        sandbox.add_comment(ticket_id, author_id=sandbox.agent_id, body=f"Reply {i}", public=i != 2,
                            created_at=MAY + timedelta(hours=i + 1))
    client = make_client(sandbox)
    comments = client.ticket_comments(ticket_id)
    assert [c.body for c in comments] == ["It broke", "Reply 0", "Reply 1", "Reply 2", "Reply 3"]
    assert [c.public for c in comments] == [True, True, True, False, True]
    assert {c.ticket_id for c in comments} == {ticket_id}
    assert comments[0].author_id == user_id and comments[0].created_at == MAY
    assert client.calls == 3


def test_comments_of_a_deleted_ticket_raise_not_found(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    [ticket_id] = add_tickets(sandbox, customer, 1)
    sandbox.delete_ticket(ticket_id)
    with pytest.raises(ZendeskNotFound):
        client.ticket_comments(ticket_id)


def test_organizations_are_read_across_pages_and_a_malformed_one_is_a_bad_record(
        client: ZendeskClient, sandbox: ZendeskSandbox, customer: Customer) -> None:
    more = [sandbox.add_organization(f"Org {i}", domain_names=[f"org{i}.example"]) for i in range(4)]
    sandbox.override_json("organization", more[1], domain_names="org1.example")
    items = list(client.organizations())
    good = [o for o in items if isinstance(o, ZendeskOrganization)]
    bad = [o for o in items if isinstance(o, BadRecord)]
    assert [o.id for o in good] == [customer.org_id, more[0], more[2], more[3]]
    assert good[0].domain_names == ("acme.com",) and good[0].external_id == "001000000000001AAA"
    assert [(b.kind, b.raw["id"]) for b in bad] == [("organization", more[1])]
    assert client.calls == 2


def test_users_are_fetched_100_ids_at_a_time(
        client: ZendeskClient, sandbox: ZendeskSandbox) -> None:
    ids = [sandbox.add_user(f"User {i}", f"u{i}@example.com") for i in range(150)]
    users = client.users([*ids, *ids[:10], 424242])
    assert [u.id for u in users] == ids
    assert all(u.is_customer for u in users)
    assert [len(c.query["ids"].split(",")) for c in sandbox.calls] == [100, 51]


# -- record parsing (pure) ------------------------------------------------------------------

def test_parse_ticket_refuses_a_boolean_id_and_a_timestamp_without_zone() -> None:
    stamp = "2024-05-01T09:30:00Z"
    raw = {"id": 1, "status": "open", "created_at": stamp, "updated_at": stamp}
    assert parse_ticket(raw).created_at == MAY
    with pytest.raises(ZendeskRecordError, match="'id'"):
        parse_ticket({**raw, "id": True})
    with pytest.raises(ZendeskRecordError, match="time zone"):
        parse_ticket({**raw, "updated_at": "2024-05-01T09:30:00"})


def test_parse_organization_normalises_domains_and_external_id() -> None:
    org = parse_organization({"id": 5, "name": "Acme", "external_id": 42, "domain_names": [" Acme.COM ", ""]})
    assert (org.external_id, org.domain_names) == ("42", ("acme.com",))
