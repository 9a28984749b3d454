"""The Zendesk sandbox speaks Zendesk's wire format: checked with raw httpx, no client adapter."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.zendesk.sandbox import ZendeskSandbox
from tests.connectors.zendesk_fixtures import EMAIL, TOKEN, Customer

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MAY = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
EXPORT = "/api/v2/incremental/tickets/cursor.json"


class Clock:
    """A settable clock shared with the sandbox (rate-limit window, start_time check, bumps)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[ZendeskSandbox]:
    with ZendeskSandbox(email=EMAIL, api_token=TOKEN, page_size=2, clock=clock) as sb:
        yield sb


def add_tickets(sandbox: ZendeskSandbox, customer: Customer, count: int, *, at: datetime = MAY) -> list[int]:
    return [sandbox.add_ticket(subject=f"Ticket {i}", requester_id=customer.user_id,
                               organization_id=customer.org_id, created_at=at + timedelta(minutes=i))
            for i in range(count)]


def export_all(api: httpx.Client, start_time: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow after_cursor to the end of the stream; return (pages, tickets)."""
    pages = [api.get(EXPORT, params={"start_time": int(start_time.timestamp())}).json()]
    while not pages[-1]["end_of_stream"]:
        pages.append(api.get(EXPORT, params={"cursor": pages[-1]["after_cursor"]}).json())
    return pages, [t for page in pages for t in page["tickets"]]


# -- lifecycle ------------------------------------------------------------------------------

def test_stop_releases_the_port_even_with_a_kept_alive_connection(clock: Clock) -> None:
    sandbox = ZendeskSandbox(email=EMAIL, api_token=TOKEN, clock=clock)
    sandbox.start()
    port = int(sandbox.url.rsplit(":", 1)[1])
    client = httpx.Client(base_url=sandbox.url, auth=(f"{EMAIL}/token", TOKEN))
    assert client.get("/api/v2/users/me.json").status_code == 200  # leaves a keep-alive connection open
    sandbox.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/v2/users/me.json")
    with socket.socket() as probe:  # a new server can take the port (as servers do, with SO_REUSEADDR)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    client.close()
    sandbox.stop()  # a second stop is harmless


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = ZendeskSandbox().url


# -- auth -----------------------------------------------------------------------------------

def test_wrong_token_is_401_with_zendesks_error_body(sandbox: ZendeskSandbox) -> None:
    response = httpx.get(f"{sandbox.url}/api/v2/users/me.json", auth=(f"{EMAIL}/token", "wrong"))
    assert response.status_code == 401
    assert response.json() == {"error": "Couldn't authenticate you"}


def test_password_style_auth_without_token_suffix_is_refused(sandbox: ZendeskSandbox) -> None:
    response = httpx.get(f"{sandbox.url}{EXPORT}?start_time=0", auth=(EMAIL, TOKEN))
    assert response.status_code == 401


def test_users_me_is_the_agent_the_credentials_belong_to(sandbox: ZendeskSandbox, api: httpx.Client) -> None:
    user = api.get("/api/v2/users/me.json").json()["user"]
    assert (user["id"], user["email"], user["role"]) == (sandbox.agent_id, EMAIL, "admin")


# -- incremental export ---------------------------------------------------------------------

def test_export_refuses_a_start_time_less_than_a_minute_old(api: httpx.Client) -> None:
    response = api.get(EXPORT, params={"start_time": int(NOW.timestamp()) - 30})
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidValue"
    assert "start_time" in response.json()["description"]


def test_export_accepts_a_start_time_exactly_a_minute_old(api: httpx.Client) -> None:
    assert api.get(EXPORT, params={"start_time": int(NOW.timestamp()) - 60}).status_code == 200


def test_export_pages_follow_updated_at_then_id_and_end_once(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    late = add_tickets(sandbox, customer, 1, at=MAY + timedelta(days=1))
    early = add_tickets(sandbox, customer, 4)
    pages, tickets = export_all(api, MAY - timedelta(days=1))
    assert [t["id"] for t in tickets] == early + late
    assert [p["end_of_stream"] for p in pages] == [False, False, True]
    assert all(p["before_cursor"] is None for p in pages)
    after_url = httpx.URL(pages[0]["after_url"])
    assert (str(after_url.copy_with(query=None)), after_url.params["cursor"]) == (
        f"{sandbox.url}{EXPORT}", pages[0]["after_cursor"])


def test_export_excludes_tickets_updated_before_start_time(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    ids = add_tickets(sandbox, customer, 3)
    _, tickets = export_all(api, MAY + timedelta(minutes=1))
    assert [t["id"] for t in tickets] == ids[1:]


def test_cursor_at_end_of_stream_resumes_to_later_changes_only(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer, clock: Clock) -> None:
    ids = add_tickets(sandbox, customer, 3)
    pages, _ = export_all(api, MAY - timedelta(days=1))
    sandbox.update_ticket(ids[0], status="solved")
    later = api.get(EXPORT, params={"cursor": pages[-1]["after_cursor"]}).json()
    assert [(t["id"], t["status"]) for t in later["tickets"]] == [(ids[0], "solved")]
    assert later["tickets"][0]["updated_at"] == "2024-06-01T12:00:00Z"
    assert later["end_of_stream"] is True


def test_a_ticket_changed_after_an_export_was_read_is_exported_once_at_its_new_place(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    """An incremental export returns the items changed since its start, compared by the ticket's
    `generated_timestamp` (developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/,
    and 'Using the Incremental Export API'): a changed ticket moves to its new time, and is never listed at both."""
    ids = add_tickets(sandbox, customer, 3)
    export_all(api, MAY - timedelta(days=1))
    sandbox.update_ticket(ids[0], status="solved")
    _, tickets = export_all(api, MAY - timedelta(days=1))
    assert [t["id"] for t in tickets] == [ids[1], ids[2], ids[0]]


def test_empty_export_still_gives_a_cursor_that_sees_later_tickets(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    first = api.get(EXPORT, params={"start_time": int(MAY.timestamp())}).json()
    assert (first["tickets"], first["end_of_stream"]) == ([], True)
    ticket_id = sandbox.add_ticket(subject="New", requester_id=customer.user_id, organization_id=None)
    later = api.get(EXPORT, params={"cursor": first["after_cursor"]}).json()
    assert [t["id"] for t in later["tickets"]] == [ticket_id]


def test_deleted_ticket_stays_in_the_export_with_status_deleted(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    [ticket_id] = add_tickets(sandbox, customer, 1)
    sandbox.delete_ticket(ticket_id)
    _, tickets = export_all(api, MAY - timedelta(days=1))
    assert [(t["id"], t["status"]) for t in tickets] == [(ticket_id, "deleted")]


def test_unparseable_cursor_is_400_invalid_cursor(api: httpx.Client) -> None:
    for cursor in ("not base64!", base64.b64encode(b"garbage").decode()):
        response = api.get(EXPORT, params={"cursor": cursor})
        assert response.status_code == 400
        assert response.json()["error"] == "InvalidCursor"


def test_ticket_json_has_zendesk_fields_and_utc_iso_timestamps(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    ticket_id = sandbox.add_ticket(subject="Printer on fire", requester_id=customer.user_id,
                                   organization_id=customer.org_id, priority="urgent", created_at=MAY,
                                   description="It is on fire.")
    [ticket] = export_all(api, MAY - timedelta(days=1))[1]
    assert ticket["url"] == f"{sandbox.url}/api/v2/tickets/{ticket_id}.json"
    assert {k: ticket[k] for k in ("subject", "description", "status", "priority", "requester_id",
                                   "submitter_id", "assignee_id", "organization_id", "created_at",
                                   "updated_at", "tags")} == {
        "subject": "Printer on fire", "description": "It is on fire.", "status": "open", "priority": "urgent",
        "requester_id": customer.user_id, "submitter_id": customer.user_id, "assignee_id": None,
        "organization_id": customer.org_id, "created_at": "2024-05-01T09:30:00Z",
        "updated_at": "2024-05-01T09:30:00Z", "tags": []}
    assert ticket["via"]["channel"] == "web"


def test_export_beyond_the_per_minute_limit_is_429_with_retry_after(
        clock: Clock, customer: Customer) -> None:
    with ZendeskSandbox(email=EMAIL, api_token=TOKEN, incremental_requests_per_minute=2, clock=clock) as sandbox, \
            httpx.Client(base_url=sandbox.url, auth=(f"{EMAIL}/token", TOKEN)) as api:
        params = {"start_time": int(MAY.timestamp())}
        assert [api.get(EXPORT, params=params).status_code for _ in range(2)] == [200, 200]
        clock.advance(20)
        refused = api.get(EXPORT, params=params)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "40"
        assert refused.json()["error"] == "APIRateLimitExceeded"
        assert api.get("/api/v2/users/me.json").status_code == 200  # other endpoints are not counted
        clock.advance(40)
        assert api.get(EXPORT, params=params).status_code == 200


# -- cursor pagination: comments, organizations ---------------------------------------------

def test_description_is_the_first_comment_and_comments_page_by_cursor(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    ticket_id = sandbox.add_ticket(subject="Help", requester_id=customer.user_id,
                                   organization_id=customer.org_id, created_at=MAY, description="First words")
    sandbox.add_comment(ticket_id, author_id=sandbox.agent_id, body="Looking <now>", public=False)
    sandbox.add_comment(ticket_id, author_id=customer.user_id, body="Thanks")
    path = f"/api/v2/tickets/{ticket_id}/comments.json"
    first = api.get(path).json()
    assert [c["body"] for c in first["comments"]] == ["First words", "Looking <now>"]
    assert first["comments"][1]["public"] is False
    assert first["comments"][1]["html_body"].count("&lt;now&gt;") == 1
    assert first["meta"]["has_more"] is True
    second = api.get(first["links"]["next"]).json()
    assert [c["body"] for c in second["comments"]] == ["Thanks"]
    assert (second["meta"]["has_more"], second["links"]["next"]) == (False, None)
    assert second["comments"][0]["type"] == "Comment"


def test_comment_bumps_the_tickets_updated_at_to_now(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    [ticket_id] = add_tickets(sandbox, customer, 1)
    sandbox.add_comment(ticket_id, author_id=customer.user_id, body="Any news?")
    [ticket] = export_all(api, MAY - timedelta(days=1))[1]
    assert ticket["updated_at"] == "2024-06-01T12:00:00Z"


def test_a_back_dated_comment_bumps_updated_at_to_its_own_time_for_history_loading(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    [ticket_id] = add_tickets(sandbox, customer, 1)
    sandbox.add_comment(ticket_id, author_id=customer.user_id, body="Any news?",
                        created_at=MAY + timedelta(days=2))
    [ticket] = export_all(api, MAY - timedelta(days=1))[1]
    assert ticket["updated_at"] == "2024-05-03T09:30:00Z"


def test_comments_of_an_unknown_or_deleted_ticket_are_404(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    [ticket_id] = add_tickets(sandbox, customer, 1)
    sandbox.delete_ticket(ticket_id)
    for missing in (ticket_id, 999_999):
        response = api.get(f"/api/v2/tickets/{missing}/comments.json")
        assert response.status_code == 404
        assert response.json() == {"error": "RecordNotFound", "description": "Not found"}


def test_page_size_above_100_is_refused(api: httpx.Client) -> None:
    response = api.get("/api/v2/organizations.json", params={"page[size]": 101})
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidPaginationParameter"


def test_organizations_page_by_cursor_with_their_mapping_fields(
        sandbox: ZendeskSandbox, api: httpx.Client) -> None:
    ids = [sandbox.add_organization(f"Org {i}", external_id=f"ext-{i}", domain_names=[f"o{i}.com"])
           for i in range(3)]
    first = api.get("/api/v2/organizations.json").json()
    second = api.get("/api/v2/organizations.json",
                     params={"page[after]": first["meta"]["after_cursor"]}).json()
    orgs = first["organizations"] + second["organizations"]
    assert [(o["id"], o["external_id"], o["domain_names"]) for o in orgs] == [
        (ids[i], f"ext-{i}", [f"o{i}.com"]) for i in range(3)]
    assert second["meta"]["has_more"] is False


def test_an_organizations_page_renders_only_its_own_organizations(
        sandbox: ZendeskSandbox, api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [sandbox.add_organization(f"Org {i}", external_id=None, domain_names=[]) for i in range(7)]
    rendered: list[int] = []
    render = sandbox._organization_json

    def counting(org: Any) -> Any:
        rendered.append(org.id)
        return render(org)

    monkeypatch.setattr(sandbox, "_organization_json", counting)
    first = api.get("/api/v2/organizations.json").json()
    second = api.get(first["links"]["next"]).json()

    size = len(first["organizations"])
    assert [o["id"] for o in second["organizations"]] == ids[size:2 * size]
    assert rendered == ids[:2 * size]  # a full listing stays linear in the number of organizations


# -- users ----------------------------------------------------------------------------------

def test_show_many_returns_the_known_users_only(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    users = api.get("/api/v2/users/show_many.json", params={"ids": f"{customer.user_id},424242"}).json()
    assert [(u["id"], u["role"], u["organization_id"]) for u in users["users"]] == [
        (customer.user_id, "end-user", customer.org_id)]


def test_show_many_refuses_more_than_100_ids(api: httpx.Client) -> None:
    response = api.get("/api/v2/users/show_many.json", params={"ids": ",".join(map(str, range(1, 102)))})
    assert response.status_code == 400


# -- faults and recording -------------------------------------------------------------------

def test_fail_next_hits_only_matching_requests_the_given_number_of_times(
        sandbox: ZendeskSandbox, api: httpx.Client) -> None:
    sandbox.fail_next(503, retry_after=3, path_contains="organizations", times=2)
    assert api.get("/api/v2/users/me.json").status_code == 200
    first = api.get("/api/v2/organizations.json")
    assert (first.status_code, first.headers["Retry-After"]) == (503, "3")
    assert [api.get("/api/v2/organizations.json").status_code for _ in range(2)] == [503, 200]


def test_injected_429_looks_like_zendesks_rate_limit(sandbox: ZendeskSandbox, api: httpx.Client) -> None:
    sandbox.fail_next(429, retry_after=7)
    response = api.get("/api/v2/users/me.json")
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    assert response.json()["error"] == "APIRateLimitExceeded"


def test_calls_record_method_path_query_and_status(sandbox: ZendeskSandbox, api: httpx.Client) -> None:
    api.get("/api/v2/users/me.json")
    sandbox.reset_calls()
    api.get(EXPORT, params={"start_time": 5})
    [call] = sandbox.calls
    assert (call.method, call.path, call.query, call.status) == ("GET", EXPORT, {"start_time": "5"}, 200)


def test_override_json_serves_a_malformed_field_in_the_tickets_place(
        sandbox: ZendeskSandbox, api: httpx.Client, customer: Customer) -> None:
    ids = add_tickets(sandbox, customer, 2)
    sandbox.override_json("ticket", ids[0], created_at="yesterday-ish")
    _, tickets = export_all(api, MAY - timedelta(days=1))
    assert [(t["id"], t["created_at"]) for t in tickets] == [
        (ids[0], "yesterday-ish"), (ids[1], "2024-05-01T09:31:00Z")]


def test_unknown_endpoint_is_404(api: httpx.Client) -> None:
    assert api.get("/api/v2/macros.json").status_code == 404


# -- data API -------------------------------------------------------------------------------

def test_update_ticket_refuses_fields_zendesk_would_not_let_us_set(
        sandbox: ZendeskSandbox, customer: Customer) -> None:
    [ticket_id] = add_tickets(sandbox, customer, 1)
    with pytest.raises(ValueError, match="updated_at"):
        sandbox.update_ticket(ticket_id, updated_at=NOW)
    with pytest.raises(ValueError, match="status"):
        sandbox.update_ticket(ticket_id, status="deleted")


def test_ticket_for_an_unknown_requester_is_refused(sandbox: ZendeskSandbox) -> None:
    with pytest.raises(KeyError):
        sandbox.add_ticket(subject="x", requester_id=1, organization_id=None)
