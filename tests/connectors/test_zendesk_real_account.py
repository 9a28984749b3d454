"""Zendesk as a real account is: the sandbox does what Zendesk documents, and the client copes, over real HTTP.

Each sandbox behaviour cites the documentation it follows:

- rate limits: https://developer.zendesk.com/api-reference/introduction/rate-limits/ (an account-wide limit
  per minute on every endpoint, 200 on the smallest plan to 700, shared by all the account's integrations;
  ``X-Rate-Limit`` and ``X-Rate-Limit-Remaining`` on every answer; 429 with ``Retry-After`` beyond it);
- incremental exports: https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/
  (10 requests a minute; the ticket event export is time-based: ``start_time``, up to 1,000 events a page,
  ``end_time``, ``next_page``, ``count``, ``end_of_stream``; ``include=comment_events`` gives each comment as a
  child event of ``event_type: Comment``; the ticket export sideloads ``include=metric_sets``);
- ticket metrics: https://developer.zendesk.com/api-reference/ticketing/tickets/ticket_metrics/ (``solved_at``);
- the standard automation "Close ticket 4 days after status is set to solved":
  https://support.zendesk.com/hc/en-us/articles/4408835051546 (About the standard Support automations; Zendesk
  runs automations hourly, the sandbox closes at the exact moment).

The wire format is checked with raw httpx; the client through its own methods. One fake clock drives the
sandbox and the client: a wait advances it, so no test really waits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.zendesk.client import ZendeskClient
from connectors.zendesk.records import BadRecord, ZendeskComment, ZendeskTicket
from connectors.zendesk.sandbox import ZendeskSandbox
from tests.connectors.zendesk_fixtures import EMAIL, TOKEN, ClientFactory, Customer, SandboxFactory
from tests.fake_time import FakeTime

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MAY = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)
EVENTS = "/api/v2/incremental/ticket_events.json"
TICKETS = "/api/v2/incremental/tickets/cursor.json"


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> ZendeskSandbox:
    return make_sandbox()


def statuses(sandbox: ZendeskSandbox) -> list[int]:
    return [call.status for call in sandbox.calls]


# == 2. One account-wide limit on every endpoint, and a client that keeps well within it ======================

# -- the sandbox, as Zendesk documents it ---------------------------------------------------------------------

def test_every_answer_says_the_accounts_limit_and_what_is_left_of_it_this_minute(api: httpx.Client) -> None:
    first, second = api.get("/api/v2/users/me.json"), api.get("/api/v2/organizations.json")
    assert (first.headers["X-Rate-Limit"], first.headers["X-Rate-Limit-Remaining"]) == ("200", "199")
    assert (second.headers["X-Rate-Limit"], second.headers["X-Rate-Limit-Remaining"]) == ("200", "198")


def test_every_endpoint_counts_against_the_account_limit_and_beyond_it_is_429_with_retry_after(
        make_sandbox: SandboxFactory, fake_time: FakeTime) -> None:
    sandbox = make_sandbox(api_requests_per_minute=3)
    with httpx.Client(base_url=sandbox.url, auth=(f"{EMAIL}/token", TOKEN)) as api:
        for path in ("/api/v2/users/me.json", "/api/v2/organizations.json", f"{TICKETS}?start_time=0"):
            assert api.get(path).status_code == 200
        fake_time.advance(seconds=20)
        refused = api.get("/api/v2/users/show_many.json", params={"ids": "1"})
        assert refused.status_code == 429
        assert refused.json()["error"] == "APIRateLimitExceeded"
        assert (refused.headers["Retry-After"], refused.headers["X-Rate-Limit-Remaining"]) == ("40", "0")
        fake_time.advance(seconds=40)
        assert api.get("/api/v2/users/me.json").status_code == 200


def test_the_accounts_other_integrations_spend_the_same_limit(sandbox: ZendeskSandbox, api: httpx.Client) -> None:
    sandbox.spend_requests(150)
    assert api.get("/api/v2/users/me.json").headers["X-Rate-Limit-Remaining"] == "49"


def test_each_incremental_export_also_has_ten_requests_a_minute_of_its_own(
        api: httpx.Client, fake_time: FakeTime) -> None:
    start = {"start_time": str(int(MAY.timestamp()))}
    assert {api.get(TICKETS, params=start).status_code for _ in range(10)} == {200}
    assert api.get(TICKETS, params=start).status_code == 429
    assert {api.get(EVENTS, params=start).status_code for _ in range(10)} == {200}
    assert api.get(EVENTS, params=start).status_code == 429
    assert api.get("/api/v2/users/me.json").status_code == 200  # 22 of the account's 200
    fake_time.advance(minutes=1)
    assert api.get(EVENTS, params=start).status_code == 200


# -- the client -----------------------------------------------------------------------------------------------

def test_every_endpoint_is_paced_to_the_clients_api_budget_and_never_meets_a_429(
        sandbox: ZendeskSandbox, make_client: ClientFactory, fake_time: FakeTime, customer: Customer) -> None:
    client = make_client(sandbox, api_requests_per_minute=4)
    for _ in range(3):
        client.verify()
        list(client.organizations())
        client.users([customer.user_id])
    assert set(statuses(sandbox)) == {200} and len(sandbox.calls) == 9
    assert len(fake_time.sleeps) == 2 and sum(fake_time.sleeps) >= 120  # 4 + 4 + 1 over three minutes


def test_the_default_budget_leaves_the_smallest_plan_room_for_the_customers_other_integrations(
        sandbox: ZendeskSandbox, make_client: ClientFactory, fake_time: FakeTime) -> None:
    sandbox.spend_requests(80)  # another integration's minute on a 200-a-minute plan
    client = make_client(sandbox)
    for _ in range(150):
        client.verify()
    assert set(statuses(sandbox)) == {200}
    assert fake_time.now - NOW.timestamp() >= 60  # 100 a minute at most


def test_an_account_nearly_spent_by_other_integrations_makes_the_client_wait_the_minute_out(
        sandbox: ZendeskSandbox, make_client: ClientFactory, fake_time: FakeTime) -> None:
    client = make_client(sandbox)
    sandbox.spend_requests(185)
    client.verify()  # X-Rate-Limit-Remaining: 14, under a tenth of 200
    client.verify()
    assert fake_time.sleeps == [60]
    assert set(statuses(sandbox)) == {200}


def test_a_429_waits_its_retry_after_and_not_the_minute_again(
        sandbox: ZendeskSandbox, make_client: ClientFactory, fake_time: FakeTime) -> None:
    client = make_client(sandbox)
    sandbox.spend_requests(200)
    client.verify()
    client.verify()
    assert fake_time.sleeps == [60]
    assert statuses(sandbox) == [429, 200, 200]


def test_an_api_budget_below_one_request_a_minute_is_refused_naming_the_parameter(sandbox: ZendeskSandbox) -> None:
    with pytest.raises(ValueError, match="api_requests_per_minute"):
        ZendeskClient(sandbox.url, EMAIL, TOKEN, api_requests_per_minute=0)


# == 3. The true solve time: closed days after solving, solved_at in the ticket metrics =======================

def export_tickets(api: httpx.Client, **params: str) -> dict[str, Any]:
    page: dict[str, Any] = api.get(TICKETS, params={"start_time": str(int(MAY.timestamp())), **params}).json()
    return page


def solved_ticket(sandbox: ZendeskSandbox, customer: Customer, fake_time: FakeTime) -> int:
    """A ticket opened in May and solved now (NOW, the fake clock's start)."""
    ticket_id = sandbox.add_ticket(subject="Help", requester_id=customer.user_id, organization_id=customer.org_id,
                                   created_at=MAY, description="It broke")
    sandbox.update_ticket(ticket_id, status="solved")
    return ticket_id


# -- the sandbox ----------------------------------------------------------------------------------------------

def test_a_solved_ticket_is_closed_four_days_later_which_moves_its_updated_at(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer, fake_time: FakeTime) -> None:
    solved_ticket(sandbox, customer, fake_time)
    fake_time.advance(days=4, seconds=-1)
    [before] = export_tickets(api)["tickets"]
    fake_time.advance(days=3)
    [after] = export_tickets(api)["tickets"]
    assert (before["status"], before["updated_at"]) == ("solved", "2024-06-01T12:00:00Z")
    assert (after["status"], after["updated_at"]) == ("closed", "2024-06-05T12:00:00Z")


def test_the_ticket_metrics_keep_the_true_solved_at_after_the_close(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer, fake_time: FakeTime) -> None:
    ticket_id = solved_ticket(sandbox, customer, fake_time)
    fake_time.advance(days=10)
    page = export_tickets(api, include="metric_sets")
    [metrics] = page["metric_sets"]
    assert (metrics["ticket_id"], metrics["solved_at"]) == (ticket_id, "2024-06-01T12:00:00Z")
    assert metrics["full_resolution_time_in_minutes"]["calendar"] == (NOW - MAY).total_seconds() // 60
    assert "include=metric_sets" in page["after_url"]


def test_metric_sets_come_only_when_asked_for(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer, fake_time: FakeTime) -> None:
    solved_ticket(sandbox, customer, fake_time)
    assert "metric_sets" not in export_tickets(api)


def test_a_ticket_reopened_before_its_close_stays_open_and_counts_a_reopen(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer, fake_time: FakeTime) -> None:
    ticket_id = solved_ticket(sandbox, customer, fake_time)
    fake_time.advance(days=1)
    sandbox.update_ticket(ticket_id, status="open")
    fake_time.advance(days=10)
    page = export_tickets(api, include="metric_sets")
    assert [t["status"] for t in page["tickets"]] == ["open"]
    assert page["metric_sets"][0]["reopens"] == 1


def test_the_close_is_an_event_of_the_ticket_made_by_a_rule(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer, fake_time: FakeTime) -> None:
    ticket_id = solved_ticket(sandbox, customer, fake_time)
    fake_time.advance(days=5)
    events = api.get(EVENTS, params={"start_time": str(int(NOW.timestamp()) + 1)}).json()["ticket_events"]
    assert [(e["ticket_id"], e["via"]["channel"], e["timestamp"]) for e in events] == [
        (ticket_id, "rule", int((NOW + timedelta(days=4)).timestamp()))]
    assert events[0]["child_events"][0] | {"id": 0, "via": None} == {
        "id": 0, "via": None, "via_reference_id": None, "status": "closed", "previous_value": "solved",
        "event_type": "Change"}


# -- the client -----------------------------------------------------------------------------------------------

def test_each_export_page_carries_its_tickets_solve_times(
        sandbox: ZendeskSandbox, make_client: ClientFactory, customer: Customer, fake_time: FakeTime) -> None:
    solved = solved_ticket(sandbox, customer, fake_time)
    still_open = sandbox.add_ticket(subject="Other", requester_id=customer.user_id, organization_id=None,
                                    created_at=MAY, description="Hello")
    fake_time.advance(days=6)
    [page] = make_client(sandbox).ticket_pages(cursor=None, start_time=LONG_AGO)
    assert {i: m.solved_at for i, m in page.metrics.items()} == {solved: NOW, still_open: None}
    assert all(c.query["include"] == "metric_sets" for c in sandbox.calls if c.path == TICKETS)


def test_a_malformed_metric_set_is_skipped_and_its_ticket_still_comes(
        sandbox: ZendeskSandbox, make_client: ClientFactory, customer: Customer, fake_time: FakeTime) -> None:
    ticket_id = solved_ticket(sandbox, customer, fake_time)
    sandbox.override_json("metric_set", ticket_id, solved_at="the day before yesterday")
    [page] = make_client(sandbox).ticket_pages(cursor=None, start_time=LONG_AGO)
    assert [t.id for t in page.tickets if isinstance(t, ZendeskTicket)] == [ticket_id]
    assert page.metrics == {}


# == 1. Comments in bulk: the incremental ticket event export ==================================================

def export_events(api: httpx.Client, start: datetime = MAY, **params: str) -> dict[str, Any]:
    page: dict[str, Any] = api.get(EVENTS, params={"start_time": str(int(start.timestamp())), **params}).json()
    return page


def conversation(sandbox: ZendeskSandbox, customer: Customer, *, at: datetime = MAY) -> int:
    """A ticket the customer opens, an agent's internal note an hour later, the customer's thanks after two."""
    ticket_id = sandbox.add_ticket(subject="Help", requester_id=customer.user_id, organization_id=customer.org_id,
                                   created_at=at, description="It broke")
    sandbox.add_comment(ticket_id, author_id=sandbox.agent_id, body="Looking <now>", public=False,
                        created_at=at + timedelta(hours=1))
    sandbox.add_comment(ticket_id, author_id=customer.user_id, body="Thanks", created_at=at + timedelta(hours=2))
    return ticket_id


# -- the sandbox ----------------------------------------------------------------------------------------------

def test_ticket_events_are_time_based_pages_with_end_time_next_page_count_and_end_of_stream(
        make_sandbox: SandboxFactory) -> None:
    sandbox = make_sandbox(page_size=2)
    org_id = sandbox.add_organization("Acme")
    ticket_id = conversation(sandbox, Customer(org_id, sandbox.add_user("Jo", "jo@acme.com", organization_id=org_id)))
    with httpx.Client(base_url=sandbox.url, auth=(f"{EMAIL}/token", TOKEN)) as api:
        first = export_events(api, include="comment_events")
        second = api.get(first["next_page"]).json()
    assert [(e["ticket_id"], e["timestamp"]) for e in first["ticket_events"]] == [
        (ticket_id, int(MAY.timestamp())), (ticket_id, int(MAY.timestamp()) + 3600)]
    assert (first["count"], first["end_time"], first["end_of_stream"]) == (2, int(MAY.timestamp()) + 3600, False)
    assert httpx.URL(first["next_page"]).params["start_time"] == str(first["end_time"])
    assert httpx.URL(first["next_page"]).params["include"] == "comment_events"
    # a page starts at the last one's end_time: that second's event comes again (Zendesk's duplicates)
    assert [e["timestamp"] - first["end_time"] for e in second["ticket_events"]] == [0, 3600]
    assert (second["count"], second["end_of_stream"]) == (2, True)


def test_with_comment_events_each_comment_is_a_child_event_with_author_body_and_visibility(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    ticket_id = conversation(sandbox, customer)
    events = export_events(api, include="comment_events")["ticket_events"]
    comments = [c for e in events for c in e["child_events"] if c["event_type"] == "Comment"]
    assert [(c["author_id"], c["body"], c["public"]) for c in comments] == [
        (customer.user_id, "It broke", True), (sandbox.agent_id, "Looking <now>", False),
        (customer.user_id, "Thanks", True)]
    assert comments[1]["html_body"].count("&lt;now&gt;") == 1 and comments[1]["created_at"] == "2024-05-01T10:30:00Z"
    assert [e["ticket_id"] for e in events] == [ticket_id] * 3
    assert {c["event_type"] for c in events[0]["child_events"]} == {"Create", "Comment"}
    # a comment's id is its Comment event's, the id the comments endpoint gives it too
    listed = api.get(f"/api/v2/tickets/{ticket_id}/comments.json").json()["comments"]
    assert [c["id"] for c in comments] == [c["id"] for c in listed]


def test_without_comment_events_a_comment_is_only_said_to_be_present(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    conversation(sandbox, customer)
    [note] = [c for c in export_events(api)["ticket_events"][1]["child_events"]]
    assert (note["event_type"], note["comment_present"], note["comment_public"], "body" in note) == (
        "Comment", True, False, False)


def test_the_event_export_needs_a_start_time_at_least_a_minute_old(api: httpx.Client) -> None:
    assert api.get(EVENTS).status_code == 400
    too_recent = api.get(EVENTS, params={"start_time": str(int(NOW.timestamp()) - 30)})
    assert too_recent.status_code == 400 and "start_time" in too_recent.json()["description"]


def test_a_page_of_events_holds_every_event_of_its_last_second(
        make_sandbox: SandboxFactory, fake_time: FakeTime) -> None:
    sandbox = make_sandbox(page_size=2)
    user_id = sandbox.add_user("Jo", "jo@example.com")
    ids = [sandbox.add_ticket(subject=f"T{i}", requester_id=user_id, organization_id=None, created_at=MAY)
           for i in range(3)]
    sandbox.add_ticket(subject="Later", requester_id=user_id, organization_id=None, created_at=MAY + timedelta(1))
    with httpx.Client(base_url=sandbox.url, auth=(f"{EMAIL}/token", TOKEN)) as api:
        page = export_events(api)
    assert ([e["ticket_id"] for e in page["ticket_events"]], page["end_of_stream"]) == (ids, False)


def test_a_back_dated_change_written_after_an_export_was_read_still_comes_in_the_next_export(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    # Nothing is written in Zendesk's past: an export is ordered by when a change was made (generated_timestamp,
    # an event's timestamp), so a ticket imported with an old created_at still comes after the last export.
    conversation(sandbox, customer, at=MAY + timedelta(days=10))
    tickets, events = export_tickets(api), export_events(api, include="comment_events")
    late = conversation(sandbox, customer, at=MAY + timedelta(days=1))  # dated before what was read
    after = api.get(TICKETS, params={"cursor": tickets["after_cursor"]}).json()["tickets"]
    more = export_events(api, datetime.fromtimestamp(events["end_time"], UTC), include="comment_events")
    assert [(t["id"], t["created_at"]) for t in after] == [(late, "2024-05-02T09:30:00Z")]
    assert after[0]["generated_timestamp"] > int(NOW.timestamp()) - 1
    assert [e["ticket_id"] for e in more["ticket_events"]][-3:] == [late] * 3


# -- the client -----------------------------------------------------------------------------------------------

def test_event_pages_give_each_comment_once_with_its_ticket_and_where_to_resume(
        make_sandbox: SandboxFactory, make_client: ClientFactory) -> None:
    sandbox = make_sandbox(page_size=2)
    org_id = sandbox.add_organization("Acme")
    customer = Customer(org_id, sandbox.add_user("Jo", "jo@acme.com", organization_id=org_id))
    first, second = conversation(sandbox, customer), conversation(sandbox, customer, at=MAY + timedelta(days=1))
    pages = list(make_client(sandbox).ticket_event_pages(start_time=LONG_AGO))
    comments = [c for p in pages for c in p.comments if isinstance(c, ZendeskComment)]
    assert [(c.ticket_id, c.body) for c in comments] == [
        (t, body) for t in (first, second) for body in ("It broke", "Looking <now>", "Thanks")]
    assert [c.public for c in comments[:3]] == [True, False, True]
    assert comments[1].created_at == MAY + timedelta(hours=1) and comments[1].author_id == sandbox.agent_id
    assert [p.end_of_stream for p in pages] == [False] * 4 + [True]  # each page starts at the last one's end
    assert pages[-1].next_start == MAY + timedelta(days=1, hours=2)
    assert [c.query["include"] for c in sandbox.calls] == ["comment_events"] * 5


def test_the_event_export_is_paced_with_the_other_exports(
        make_sandbox: SandboxFactory, make_client: ClientFactory, fake_time: FakeTime) -> None:
    sandbox = make_sandbox(page_size=2)
    user_id = sandbox.add_user("Jo", "jo@example.com")
    for i in range(12):
        sandbox.add_ticket(subject=f"T{i}", requester_id=user_id, organization_id=None,
                           created_at=MAY + timedelta(minutes=i), description="Hi")
    client = make_client(sandbox, requests_per_minute=10)
    comments = [c for p in client.ticket_event_pages(start_time=LONG_AGO) for c in p.comments]
    calls = len(sandbox.calls)
    assert len(comments) == 12 and calls == 11  # a page of two brings one new event: the other is the last one's
    assert set(statuses(sandbox)) == {200} and fake_time.sleeps == [60]


def test_a_malformed_comment_or_event_is_a_bad_record_and_the_rest_come(
        sandbox: ZendeskSandbox, make_client: ClientFactory, customer: Customer) -> None:
    ticket_id = conversation(sandbox, customer)
    [_, note, _] = make_client(sandbox).ticket_comments(ticket_id)
    sandbox.override_json("comment", note.id, public="sometimes")
    later = sandbox.add_ticket(subject="Other", requester_id=customer.user_id, organization_id=None,
                               created_at=MAY + timedelta(days=1), description="Hello")
    sandbox.override_json("ticket_event", max_event_id(sandbox, later), ticket_id=None)
    [page] = make_client(sandbox).ticket_event_pages(start_time=LONG_AGO)
    good = [c.body for c in page.comments if isinstance(c, ZendeskComment)]
    bad = [(b.kind, b.reason) for b in page.comments if isinstance(b, BadRecord)]
    assert good == ["It broke", "Thanks"]
    assert [kind for kind, _ in bad] == ["comment", "ticket_event"]
    assert f"ticket {ticket_id}" in bad[0][1] and "'public'" in bad[0][1] and "'ticket_id'" in bad[1][1]


def test_an_event_naming_a_comment_without_its_text_marks_the_ticket_unread(
        sandbox: ZendeskSandbox, make_client: ClientFactory, customer: Customer) -> None:
    ticket_id = conversation(sandbox, customer)
    event_id = max_event_id(sandbox, ticket_id)
    sandbox.override_json("ticket_event", event_id, child_events=[
        {"id": 1, "event_type": "Comment", "comment_present": True, "comment_public": True}])
    [page] = make_client(sandbox).ticket_event_pages(start_time=LONG_AGO)
    assert page.unread_tickets == {ticket_id}
    assert [c.body for c in page.comments if isinstance(c, ZendeskComment)] == ["It broke", "Looking <now>"]


def test_the_event_export_stops_for_now_rather_than_ask_for_a_start_time_zendesk_would_refuse(
        make_sandbox: SandboxFactory, make_client: ClientFactory, fake_time: FakeTime) -> None:
    sandbox = make_sandbox(page_size=1)  # the sandbox does not hold back the last minute's events, Zendesk does
    user_id = sandbox.add_user("Jo", "jo@example.com")
    for seconds in (30, 20, 10):
        sandbox.add_ticket(subject="New", requester_id=user_id, organization_id=None,
                           created_at=NOW - timedelta(seconds=seconds), description="Just now")
    pages = list(make_client(sandbox).ticket_event_pages(start_time=LONG_AGO))
    assert set(statuses(sandbox)) == {200} and len(pages) == 1
    assert (pages[-1].next_start, pages[-1].end_of_stream) == (NOW - timedelta(seconds=30), False)


def test_a_full_page_of_events_in_one_second_moves_on_to_the_next_second(
        make_sandbox: SandboxFactory, make_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    sandbox = make_sandbox(page_size=2)
    user_id = sandbox.add_user("Jo", "jo@example.com")
    for i in range(3):
        sandbox.add_ticket(subject=f"T{i}", requester_id=user_id, organization_id=None, created_at=MAY)
    sandbox.add_ticket(subject="Later", requester_id=user_id, organization_id=None, created_at=MAY + timedelta(1),
                       description="Later on")
    start = MAY  # a page from MAY holds MAY's three events; a start exactly there makes the page all one second
    pages = list(make_client(sandbox).ticket_event_pages(start_time=start))
    assert [p.next_start for p in pages] == [MAY + timedelta(seconds=1), MAY + timedelta(days=1)]
    assert [c.body for p in pages for c in p.comments if isinstance(c, ZendeskComment)] == ["Later on"]
    assert "all at" in caplog.text


def max_event_id(sandbox: ZendeskSandbox, ticket_id: int) -> int:
    """The id of a ticket's latest event, as the export shows it."""
    with httpx.Client(base_url=sandbox.url, auth=(f"{EMAIL}/token", TOKEN)) as api:
        events = export_events(api, LONG_AGO)["ticket_events"]
    return max(e["id"] for e in events if e["ticket_id"] == ticket_id)
