"""The Salesforce sandbox speaks Salesforce's wire formats. Raw HTTPS with httpx, no client library."""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.salesforce.soql import BoundQuery
from tests.connectors.conftest import SfClock

V = "/services/data/v59.0"
MakeHttp = Callable[[SalesforceSandbox], tuple[httpx.Client, dict[str, str]]]


def soql(http: httpx.Client, auth: dict[str, str], query: str, *, endpoint: str = "query") -> httpx.Response:
    return http.get(f"{V}/{endpoint}", params={"q": query}, headers=auth)


def patch_accounts(
    http: httpx.Client, auth: dict[str, str], records: list[dict[str, Any]], all_or_none: bool = False
) -> httpx.Response:
    body = {"allOrNone": all_or_none, "records": [{"attributes": {"type": "Account"}, **record} for record in records]}
    return http.patch(f"{V}/composite/sobjects", json=body, headers=auth)


# --- OAuth ----------------------------------------------------------------------------------


def test_token_endpoint_issues_a_bearer_token_for_the_instance(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox
) -> None:
    response = sf_http.post(
        "/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"},
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"}
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == sf_sandbox.url
    assert re.fullmatch(r"00D\w{12}!\S+", body["access_token"])


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"client_id": "sandbox-client", "client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "someone-else", "client_secret": "sandbox-secret"}, "invalid_client_id"),
        (
            {"grant_type": "password", "client_id": "sandbox-client", "client_secret": "sandbox-secret"},
            "unsupported_grant_type",
        ),
    ],
)
def test_token_endpoint_refuses_bad_requests_with_oauth_error_bodies(
    sf_http: httpx.Client, form: dict[str, str], error: str
) -> None:
    response = sf_http.post("/services/oauth2/token", data={"grant_type": "client_credentials", **form})
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_data_call_without_a_valid_token_gets_invalid_session_id(sf_http: httpx.Client) -> None:
    response = sf_http.get(f"{V}/limits", headers={"Authorization": "Bearer 00Dforged!token"})
    assert response.status_code == 401
    assert response.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_expired_sessions_are_refused_until_a_new_token_is_issued(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    sf_sandbox.expire_sessions()
    assert sf_http.get(f"{V}/limits", headers=sf_auth).status_code == 401


def test_versions_list_needs_no_token(sf_http: httpx.Client) -> None:
    response = sf_http.get("/services/data/")
    assert response.status_code == 200
    assert {"label": "API 59.0", "url": "/services/data/v59.0", "version": "59.0"} in response.json()


def test_unsupported_api_version_is_not_found(sf_http: httpx.Client, sf_auth: dict[str, str]) -> None:
    response = sf_http.get("/services/data/v99.0/limits", headers=sf_auth)
    assert response.status_code == 404
    assert response.json()[0]["errorCode"] == "NOT_FOUND"


# --- limits ---------------------------------------------------------------------------------


def test_every_data_call_is_counted_in_sforce_limit_info_but_the_token_call_is_not(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    first = sf_http.get(f"{V}/limits", headers=sf_auth)
    second = sf_http.get(f"{V}/sobjects", headers=sf_auth)
    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    assert second.headers["Sforce-Limit-Info"] == "api-usage=2/15000"
    assert sf_sandbox.api_calls_used == 2


def test_limits_resource_reports_daily_api_requests(sf_http: httpx.Client, sf_auth: dict[str, str]) -> None:
    body = sf_http.get(f"{V}/limits", headers=sf_auth).json()
    assert body["DailyApiRequests"] == {"Max": 15000, "Remaining": 14999}


def test_calls_over_the_daily_limit_get_request_limit_exceeded(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp
) -> None:
    sandbox = make_sf_sandbox(daily_api_limit=2)
    http, auth = make_sf_http(sandbox)
    assert [http.get(f"{V}/limits", headers=auth).status_code for _ in range(3)] == [200, 200, 403]
    refused = http.get(f"{V}/limits", headers=auth)
    assert refused.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=2/2"


# --- query and queryAll ------------------------------------------------------------------------


def test_query_pages_with_next_records_url_and_total_size(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp
) -> None:
    sandbox = make_sf_sandbox(batch_size=2)
    inserted = [sandbox.insert("Account", {"Name": f"A{i}"}) for i in range(5)]
    http, auth = make_sf_http(sandbox)
    page = soql(http, auth, "SELECT Id, Name FROM Account ORDER BY Name").json()
    seen, pages = [], 1
    assert page["totalSize"] == 5
    while True:
        seen += [r["Id"] for r in page["records"]]
        if page["done"]:
            assert "nextRecordsUrl" not in page
            break
        assert re.fullmatch(r"/services/data/v59\.0/query/01g\w{15}-\d+", page["nextRecordsUrl"])
        page = http.get(page["nextRecordsUrl"], headers=auth).json()
        pages += 1
    assert (seen, pages) == (inserted, 3)


def test_query_records_carry_type_and_url_attributes_and_salesforce_values(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme", "Health_Score__c": 71})
    record = soql(sf_http, sf_auth, "SELECT Id, Health_Score__c, SystemModstamp FROM Account").json()["records"][0]
    assert record == {
        "attributes": {"type": "Account", "url": f"{V}/sobjects/Account/{account_id}"},
        "Id": account_id,
        "Health_Score__c": 71.0,
        "SystemModstamp": "2024-06-01T12:00:00.000+0000",
    }


def test_later_pages_come_from_the_snapshot_taken_at_query_time(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp
) -> None:
    sandbox = make_sf_sandbox(batch_size=1)
    first, second = (sandbox.insert("Account", {"Name": n}) for n in ("A", "B"))
    http, auth = make_sf_http(sandbox)
    page = soql(http, auth, "SELECT Id, Name FROM Account").json()
    sandbox.update("Account", second, {"Name": "renamed"})
    sandbox.insert("Account", {"Name": "C"})
    rest = http.get(page["nextRecordsUrl"], headers=auth).json()
    assert (page["records"][0]["Id"], rest["records"]) == (
        first,
        [{"attributes": {"type": "Account", "url": f"{V}/sobjects/Account/{second}"}, "Id": second, "Name": "B"}],
    )
    assert rest["done"] is True


class _HeldQuery:
    """`BoundQuery.run` held at its end until released: a query the sandbox is still working out."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        run = BoundQuery.run

        def held(query: BoundQuery, records: Any) -> list[dict[str, Any]]:
            rows = run(query, records)
            if not self.started.is_set():  # the first run only: one worked out again is not held
                self.started.set()
                assert self.release.wait(10), "the held query was never released"
            return rows

        monkeypatch.setattr(BoundQuery, "run", held)

    def ask(self, http: httpx.Client, auth: dict[str, str], query: str) -> Callable[[], httpx.Response | None]:
        """Send `query` on its own thread and return once the sandbox works on it: a call that gives its answer,
        or None if it has not come within 5 s."""
        answer: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answer.append(soql(http, auth, query)), daemon=True)
        asking.start()
        assert self.started.wait(5), "the query never reached the sandbox"

        def answered() -> httpx.Response | None:
            asking.join(5)
            return answer[0] if answer else None

        return answered


def test_a_query_being_worked_out_holds_up_no_other_session(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Salesforce serves an org's calls side by side: "There isn't a limit on the number of concurrent requests
    # shorter than 20 seconds", and 25 running longer (API Request Limits and Allocations, Salesforce Developer
    # Limits and Allocations Quick Reference). A worker reading one object's pages while it asks for the next
    # object's first page on a second session waits on neither.
    sandbox = make_sf_sandbox(batch_size=1)
    for name in ("A", "B"):
        sandbox.insert("Account", {"Name": name})
    (reader, reader_auth), (asker, asker_auth) = make_sf_http(sandbox), make_sf_http(sandbox)
    page = soql(reader, reader_auth, "SELECT Id, Name FROM Account ORDER BY Name").json()
    held = _HeldQuery(monkeypatch)
    answered = held.ask(asker, asker_auth, "SELECT Id FROM Account")
    try:
        rest = reader.get(page["nextRecordsUrl"], headers=reader_auth)
        assert (rest.status_code, [r["Name"] for r in rest.json()["records"]]) == (200, ["B"])
        assert not held.release.is_set()
    finally:
        held.release.set()
    response = answered()
    assert response is not None and response.json()["totalSize"] == 2


def test_a_record_changed_while_its_query_is_worked_out_is_answered_as_it_is_after_the_change(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worked out beside the change, the answer could hold a record half changed; it is worked out again instead.
    sandbox = make_sf_sandbox()
    account = sandbox.insert("Account", {"Name": "Before", "Industry": "Retail"})
    http, auth = make_sf_http(sandbox)
    held = _HeldQuery(monkeypatch)
    answered = held.ask(http, auth, "SELECT Name, Industry FROM Account")
    sandbox.update("Account", account, {"Name": "After", "Industry": "Banking"})
    held.release.set()
    response = answered()
    assert response is not None
    assert [(r["Name"], r["Industry"]) for r in response.json()["records"]] == [("After", "Banking")]


def test_a_query_worked_out_again_after_a_change_is_stopped_if_it_now_scans_too_many_records(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Answered as the records are after the change, the query is held to the scan its answer took, as any other
    # query is (QUERY_TIMEOUT, the stricter reading: Salesforce documents no query answered from before a write).
    sandbox = make_sf_sandbox()
    sandbox.query_timeout_rows = 2
    for name in ("A", "B"):
        sandbox.insert("Account", {"Name": name})
    http, auth = make_sf_http(sandbox)
    held = _HeldQuery(monkeypatch)
    answered = held.ask(http, auth, "SELECT Id FROM Account")
    sandbox.insert("Account", {"Name": "C"})
    held.release.set()
    response = answered()
    assert response is not None and response.status_code == 400
    assert response.json()[0]["errorCode"] == "QUERY_TIMEOUT"


def test_unknown_query_locator_is_refused(sf_http: httpx.Client, sf_auth: dict[str, str]) -> None:
    response = sf_http.get(f"{V}/query/01gD0000000000AAAA-2000", headers=sf_auth)
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_query_hides_deleted_records_and_query_all_shows_them(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    kept, gone = (sf_sandbox.insert("Account", {"Name": n}) for n in ("kept", "gone"))
    sf_sandbox.delete("Account", gone)
    live = soql(sf_http, sf_auth, "SELECT Id, IsDeleted FROM Account").json()["records"]
    everything = soql(sf_http, sf_auth, "SELECT Id, IsDeleted FROM Account", endpoint="queryAll").json()["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in live] == [(kept, False)]
    assert [(r["Id"], r["IsDeleted"]) for r in everything] == [(kept, False), (gone, True)]


def test_count_query_answers_total_size_without_records(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    for name in ("a", "b", "c"):
        sf_sandbox.insert("Account", {"Name": name})
    body = soql(sf_http, sf_auth, "SELECT COUNT() FROM Account WHERE Name != 'b'").json()
    assert body == {"totalSize": 2, "done": True, "records": []}


@pytest.mark.parametrize(
    ("query", "code", "fragment"),
    [
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        ("SELECT Nope FROM Account", "INVALID_FIELD", "No such column 'Nope' on entity 'Account'"),
        ("SELECT Id FROM Nope", "INVALID_TYPE", "sObject type 'Nope' is not supported"),
    ],
)
def test_refused_queries_answer_400_with_salesforce_error_list(
    sf_http: httpx.Client, sf_auth: dict[str, str], query: str, code: str, fragment: str
) -> None:
    response = soql(sf_http, sf_auth, query)
    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == code
    assert fragment in error["message"]


def test_unencoded_plus_in_a_datetime_literal_arrives_as_a_space_and_breaks_the_query(
    sf_http: httpx.Client, sf_auth: dict[str, str]
) -> None:
    raw = f"{V}/query?q=SELECT+Id+FROM+Account+WHERE+SystemModstamp+>+2024-01-01T00:00:00.000+0000"
    response = sf_http.get(raw, headers=sf_auth)
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "MALFORMED_QUERY"


# --- describe -----------------------------------------------------------------------------------


def test_describe_reports_custom_fields_with_type_precision_and_updateability(
    sf_http: httpx.Client, sf_auth: dict[str, str]
) -> None:
    body = sf_http.get(f"{V}/sobjects/Account/describe", headers=sf_auth).json()
    fields = {f["name"]: f for f in body["fields"]}
    assert body["name"] == "Account"
    assert (
        fields["Health_Score__c"]["type"],
        fields["Health_Score__c"]["precision"],
        fields["Health_Score__c"]["scale"],
        fields["Health_Score__c"]["custom"],
    ) == ("double", 5, 2, True)
    assert (fields["Health_Band__c"]["type"], fields["Health_Band__c"]["length"]) == ("string", 40)
    assert fields["SystemModstamp"]["updateable"] is False
    assert fields["Name"]["custom"] is False


def test_user_has_no_is_deleted_field(sf_http: httpx.Client, sf_auth: dict[str, str]) -> None:
    names = {f["name"] for f in sf_http.get(f"{V}/sobjects/User/describe", headers=sf_auth).json()["fields"]}
    assert "IsDeleted" not in names
    assert {"TimeZoneSidKey", "Email", "IsActive"} <= names


def test_describe_of_an_unknown_object_is_not_found(sf_http: httpx.Client, sf_auth: dict[str, str]) -> None:
    response = sf_http.get(f"{V}/sobjects/Nope/describe", headers=sf_auth)
    assert response.status_code == 404
    assert response.json() == [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]


def test_org_with_missing_field_and_object_describes_without_them(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp
) -> None:
    sandbox = make_sf_sandbox(missing_fields={"Account": {"Health_Trend__c"}, "EmailMessage": {"*"}})
    http, auth = make_sf_http(sandbox)
    fields = {f["name"] for f in http.get(f"{V}/sobjects/Account/describe", headers=auth).json()["fields"]}
    objects = {o["name"] for o in http.get(f"{V}/sobjects", headers=auth).json()["sobjects"]}
    assert "Health_Trend__c" not in fields and "Health_Score__c" in fields
    assert "EmailMessage" not in objects and "Account" in objects
    assert http.get(f"{V}/sobjects/EmailMessage/describe", headers=auth).status_code == 404


def test_global_describe_lists_every_object_with_its_key_prefix(sf_http: httpx.Client, sf_auth: dict[str, str]) -> None:
    body = sf_http.get(f"{V}/sobjects", headers=sf_auth).json()
    prefixes = {o["name"]: o["keyPrefix"] for o in body["sobjects"]}
    assert prefixes == {
        "Account": "001",
        "User": "005",
        "Event": "00U",
        "Task": "00T",
        "EmailMessage": "02s",
        "Case": "500",
        "Opportunity": "006",
        "Health_Snapshot__c": "a05",
    }


# --- sObject Collections update -------------------------------------------------------------


def test_collection_update_saves_fields_and_bumps_system_modstamp(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str], sf_clock: SfClock
) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme"})
    sf_clock.advance(minutes=5)
    response = patch_accounts(sf_http, sf_auth, [{"id": account_id, "Health_Score__c": 71, "Health_Band__c": "green"}])
    assert response.json() == [{"id": account_id, "success": True, "errors": []}]
    record = sf_sandbox.get("Account", account_id)
    assert (record["Health_Score__c"], record["Health_Band__c"]) == (71.0, "green")
    assert record["SystemModstamp"] == record["LastModifiedDate"] == "2024-06-01T12:05:00.000+0000"
    assert record["CreatedDate"] == "2024-06-01T12:00:00.000+0000"


def test_collection_update_reports_per_record_errors_in_request_order(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    ok, deleted, locked = (sf_sandbox.insert("Account", {"Name": n}) for n in ("ok", "deleted", "locked"))
    sf_sandbox.delete("Account", deleted)
    response = patch_accounts(
        sf_http,
        sf_auth,
        [
            {"id": ok, "Health_Band__c": "green"},
            {"id": "0015g0ZZZZZZZZZ", "Health_Band__c": "green"},  # well-formed, never created
            {"id": deleted, "Health_Band__c": "green"},
            {"id": locked, "SystemModstamp": "2024-01-01T00:00:00Z"},
            {"id": locked, "Health_Scor__c": 1},
            {"id": locked, "Health_Band__c": "x" * 41},
        ],
    )
    assert response.status_code == 200
    results = response.json()
    assert [r["success"] for r in results] == [True, False, False, False, False, False]
    codes = [r["errors"][0]["statusCode"] for r in results[1:]]
    assert codes == [
        "INVALID_CROSS_REFERENCE_KEY",
        "ENTITY_IS_DELETED",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_FIELD",
        "STRING_TOO_LONG",
    ]
    assert results[3]["errors"][0]["fields"] == ["SystemModstamp"]
    assert sf_sandbox.get("Account", locked)["Health_Band__c"] is None


def test_more_than_two_hundred_records_is_refused_whole(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme"})
    response = patch_accounts(sf_http, sf_auth, [{"id": account_id, "Health_Band__c": "x"}] * 201)
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert sf_sandbox.calls[-1].record_count == 201


def test_all_or_none_rolls_back_every_record_when_one_fails(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    good, bad = (sf_sandbox.insert("Account", {"Name": n}) for n in ("good", "bad"))
    response = patch_accounts(
        sf_http, sf_auth, [{"id": good, "Health_Band__c": "green"}, {"id": bad, "IsDeleted": True}], all_or_none=True
    )
    results = response.json()
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert sf_sandbox.get("Account", good)["Health_Band__c"] is None


def test_value_of_the_wrong_json_type_fails_the_whole_request(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    first, second = (sf_sandbox.insert("Account", {"Name": n}) for n in ("a", "b"))
    response = patch_accounts(
        sf_http, sf_auth, [{"id": first, "Health_Band__c": "green"}, {"id": second, "Health_Score__c": "seventy"}]
    )
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    assert sf_sandbox.get("Account", first)["Health_Band__c"] is None


def test_injected_record_failure_hits_only_that_record_and_only_once(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    locked, free = (sf_sandbox.insert("Account", {"Name": n}) for n in ("locked", "free"))
    sf_sandbox.fail_records_next_update([locked])
    records = [{"id": locked, "Health_Band__c": "red"}, {"id": free, "Health_Band__c": "red"}]
    first = patch_accounts(sf_http, sf_auth, records).json()
    second = patch_accounts(sf_http, sf_auth, records).json()
    assert [r["success"] for r in first] == [False, True]
    assert first[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert [r["success"] for r in second] == [True, True]


def test_calls_log_method_path_query_status_and_composite_record_count(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme"})
    sf_sandbox.reset_calls()
    soql(sf_http, sf_auth, "SELECT Id FROM Account")
    patch_accounts(sf_http, sf_auth, [{"id": account_id, "Health_Band__c": "green"}])
    query_call, update_call = sf_sandbox.calls
    assert (query_call.method, query_call.path, query_call.status, query_call.record_count) == (
        "GET",
        f"{V}/query",
        200,
        None,
    )
    assert "q=SELECT" in query_call.query
    assert (update_call.method, update_call.path, update_call.record_count) == ("PATCH", f"{V}/composite/sobjects", 1)


# --- fault injection ---------------------------------------------------------------------------


def test_fail_next_answers_matching_requests_with_the_error_then_stops(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    sf_sandbox.fail_next(503, "SERVER_UNAVAILABLE", "try later", path_contains="/query", times=2)
    assert sf_http.get(f"{V}/limits", headers=sf_auth).status_code == 200
    statuses = [soql(sf_http, sf_auth, "SELECT Id FROM Account").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_fail_next_on_the_token_endpoint_uses_the_oauth_error_shape(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox
) -> None:
    sf_sandbox.fail_next(503, "temporarily_unavailable", "maintenance", path_contains="oauth2")
    response = sf_http.post("/services/oauth2/token", data={"grant_type": "client_credentials"})
    assert (response.status_code, response.json()) == (
        503,
        {"error": "temporarily_unavailable", "error_description": "maintenance"},
    )


def test_dropped_connection_is_a_transport_error_for_the_client(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    sf_sandbox.drop_next(path_contains="/limits")
    with pytest.raises(httpx.TransportError):
        sf_http.get(f"{V}/limits", headers=sf_auth)
    assert sf_sandbox.calls[-1].status == 0


# --- data API ---------------------------------------------------------------------------------


def test_insert_assigns_18_character_ids_with_each_object_key_prefix(sf_sandbox: SalesforceSandbox) -> None:
    user_id = sf_sandbox.insert("User", {"Name": "Ann", "Email": "ann@example.com"})
    event_id = sf_sandbox.insert("Event", {"Subject": "QBR"})
    case_id = sf_sandbox.insert("Case", {"Subject": "Broken"})
    assert [(i[:3], len(i)) for i in (user_id, event_id, case_id)] == [("005", 18), ("00U", 18), ("500", 18)]
    assert sf_sandbox.get("Case", case_id)["CaseNumber"] == "00001001"
    assert sf_sandbox.get("User", user_id)["IsActive"] is True


def test_insert_with_an_unknown_field_names_it(sf_sandbox: SalesforceSandbox) -> None:
    with pytest.raises(KeyError, match="Helth_Score__c"):
        sf_sandbox.insert("Account", {"Name": "Acme", "Helth_Score__c": 1})


def test_back_dated_insert_keeps_the_given_stamps(sf_sandbox: SalesforceSandbox) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Old", "LastModifiedDate": datetime(2023, 1, 2, tzinfo=UTC)})
    record = sf_sandbox.get("Account", account_id)
    assert (
        record["LastModifiedDate"]
        == record["SystemModstamp"]
        == record["CreatedDate"]
        == ("2023-01-02T00:00:00.000+0000")
    )


def test_update_through_the_data_api_bumps_the_stamps_to_the_clock(
    sf_sandbox: SalesforceSandbox, sf_clock: SfClock
) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme"})
    sf_clock.advance(hours=1)
    sf_sandbox.update("Account", account_id[:15], {"Industry": "Retail"})
    assert sf_sandbox.get("Account", account_id)["SystemModstamp"] == "2024-06-01T13:00:00.000+0000"


def test_users_cannot_be_deleted(sf_sandbox: SalesforceSandbox) -> None:
    user_id = sf_sandbox.insert("User", {"Name": "Ann", "Email": "ann@example.com"})
    with pytest.raises(ValueError, match="cannot be deleted"):
        sf_sandbox.delete("User", user_id)


def test_records_lists_live_rows_unless_deleted_are_asked_for(sf_sandbox: SalesforceSandbox) -> None:
    kept, gone = (sf_sandbox.insert("Task", {"Subject": s}) for s in ("kept", "gone"))
    sf_sandbox.delete("Task", gone)
    assert [r["Id"] for r in sf_sandbox.records("Task")] == [kept]
    assert [r["Id"] for r in sf_sandbox.records("Task", include_deleted=True)] == [kept, gone]


def test_ids_are_deterministic_for_the_same_inserts(make_sf_sandbox: Callable[..., SalesforceSandbox]) -> None:
    first, second = make_sf_sandbox(), make_sf_sandbox()
    assert [first.insert("Account", {"Name": str(i)}) for i in range(3)] == [
        second.insert("Account", {"Name": str(i)}) for i in range(3)
    ]


# --- lifecycle ---------------------------------------------------------------------------------


def test_stop_releases_the_port_and_removes_the_ca_file() -> None:
    sandbox = SalesforceSandbox()
    with sandbox:
        port = int(sandbox.url.rsplit(":", 1)[1])
        ca_path = sandbox.ca_cert_path
        # stop while a keep-alive connection is still open: stop() must close it, not wait for it
        with httpx.Client(verify=ssl.create_default_context(cafile=ca_path)) as http:
            assert http.get(f"{sandbox.url}/services/data/").status_code == 200
            sandbox.stop()
            handlers = [t for t in threading.enumerate() if "process_request" in t.name]
            for thread in handlers:
                thread.join(timeout=1)
            assert not [t for t in handlers if t.is_alive()]
    assert not os.path.exists(ca_path)
    with socket.socket() as probe:  # TIME_WAIT remnants are fine; a listener would make bind fail
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_query_options_header_sets_the_batch_size_within_salesforce_bounds(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    for i in range(450):
        sf_sandbox.insert("Account", {"Name": str(i)})
    asked_small = {**sf_auth, "Sforce-Query-Options": "batchSize=50"}
    asked_300 = {**sf_auth, "Sforce-Query-Options": "batchSize=300"}
    small = sf_http.get(f"{V}/query", params={"q": "SELECT Id FROM Account"}, headers=asked_small).json()
    mid = sf_http.get(f"{V}/query", params={"q": "SELECT Id FROM Account"}, headers=asked_300).json()
    assert (len(small["records"]), len(mid["records"])) == (200, 300)


# --- how a real org answers big queries, deletes for good, and fills computed fields ------------


def _emails(sandbox: SalesforceSandbox, count: int, *, day: int) -> None:
    """`count` emails stamped through 1 June 2024 plus `day` days, an hour apart."""
    for n in range(count):
        stamp = f"2024-06-{day:02d}T{n:02d}:00:00.000+0000"
        sandbox.insert("EmailMessage", {"Subject": f"S{n}", "SystemModstamp": stamp})


def test_a_query_that_would_scan_more_records_than_salesforce_reads_in_time_answers_query_timeout(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp
) -> None:
    """Salesforce stops a query that does not execute within about two minutes with QUERY_TIMEOUT ("If the
    query doesn't execute within the standard 2-minute timeout limit, the job fails and a QUERY_TIMEOUT error is
    returned": https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/asynch_api_bulk_query_processing.htm).
    The sandbox plays the two minutes as a number of records scanned."""
    sandbox = make_sf_sandbox(query_timeout_rows=10)
    _emails(sandbox, 12, day=3)
    http, auth = make_sf_http(sandbox)

    whole = soql(http, auth, "SELECT Id FROM EmailMessage ORDER BY SystemModstamp, Id", endpoint="queryAll")
    since = soql(http, auth, "SELECT Id FROM EmailMessage WHERE SystemModstamp >= 2024-06-03T00:00:00Z")

    assert (whole.status_code, since.status_code) == (400, 400)
    assert whole.json() == [{"message": "Your query request was running for too long.", "errorCode": "QUERY_TIMEOUT"}]


def test_a_window_of_system_modstamp_scans_only_that_window_so_it_answers_where_the_whole_times_out(
    make_sf_sandbox: Callable[..., SalesforceSandbox], make_sf_http: MakeHttp
) -> None:
    sandbox = make_sf_sandbox(query_timeout_rows=10)
    _emails(sandbox, 12, day=3)
    http, auth = make_sf_http(sandbox)

    window = soql(http, auth, "SELECT Id FROM EmailMessage WHERE SystemModstamp >= 2024-06-03T02:00:00Z "
                              "AND SystemModstamp < 2024-06-03T08:00:00Z ORDER BY SystemModstamp, Id")
    before = soql(http, auth, "SELECT Id FROM EmailMessage WHERE SystemModstamp < 2024-06-03T05:00:00Z")

    assert (window.status_code, window.json()["totalSize"]) == (200, 6)
    assert (before.status_code, before.json()["totalSize"]) == (200, 5)


def test_no_query_times_out_unless_the_sandbox_is_told_how_much_salesforce_reads_in_time(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    _emails(sf_sandbox, 24, day=3)

    assert soql(sf_http, sf_auth, "SELECT Id FROM EmailMessage").json()["totalSize"] == 24


def test_a_deleted_record_stays_in_the_recycle_bin_fifteen_days_then_query_all_no_longer_finds_it(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str], sf_clock: SfClock
) -> None:
    """"The Recycle Bin lets you view and restore recently deleted records for 15 days before they are
    permanently deleted" (https://developer.salesforce.com/docs/atlas.en-us.254.0.api.meta/api/sforce_api_calls_emptyrecyclebin.htm)."""
    kept, gone = (sf_sandbox.insert("Account", {"Name": n}) for n in ("kept", "gone"))
    sf_sandbox.delete("Account", gone)
    query = "SELECT Id FROM Account ORDER BY Id"

    sf_clock.advance(days=14, hours=23)
    in_the_bin = soql(sf_http, sf_auth, query, endpoint="queryAll").json()["records"]
    sf_clock.advance(hours=1)
    after = soql(sf_http, sf_auth, query, endpoint="queryAll").json()["records"]

    assert [r["Id"] for r in in_the_bin] == [kept, gone]
    assert [r["Id"] for r in after] == [kept]


def test_a_purged_record_is_gone_from_query_all_and_from_a_range_query_on_system_modstamp(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    kept, gone = (sf_sandbox.insert("Account", {"Name": n}) for n in ("kept", "gone"))

    sf_sandbox.purge("Account", gone)

    for query in ("SELECT Id FROM Account", "SELECT Id FROM Account WHERE SystemModstamp >= 2000-01-01T00:00:00Z"):
        assert [r["Id"] for r in soql(sf_http, sf_auth, query, endpoint="queryAll").json()["records"]] == [kept]


def test_a_task_is_closed_when_its_status_is_a_closed_one(
    sf_http: httpx.Client, sf_sandbox: SalesforceSandbox, sf_auth: dict[str, str]
) -> None:
    """Task's IsClosed ("Closed") is read-only, set from the task's status
    (https://developer.salesforce.com/docs/atlas.en-us.196.0.sfFieldRef.meta/sfFieldRef/salesforce_field_reference_Task.htm);
    in a new org "Completed" is the closed status."""
    planned = sf_sandbox.insert("Task", {"Subject": "Call back", "Status": "Not Started"})
    done = sf_sandbox.insert("Task", {"Subject": "Called", "Status": "Completed"})
    sf_sandbox.update("Task", planned, {"Status": "Completed"})
    sf_sandbox.update("Task", done, {"Status": "In Progress"})

    rows = soql(sf_http, sf_auth, "SELECT Id, IsClosed FROM Task ORDER BY Subject").json()["records"]

    assert [(r["Id"], r["IsClosed"]) for r in rows] == [(planned, True), (done, False)]


def test_event_and_task_describe_the_fields_dialers_and_invitations_set(
    sf_http: httpx.Client, sf_auth: dict[str, str]
) -> None:
    def fields(sobject: str) -> dict[str, str]:
        body = sf_http.get(f"{V}/sobjects/{sobject}/describe", headers=sf_auth).json()
        return {f["name"]: f["type"] for f in body["fields"]}

    assert {k: v for k, v in fields("Event").items() if k in ("IsChild", "IsRecurrence")} == {
        "IsChild": "boolean", "IsRecurrence": "boolean"}
    assert {k: v for k, v in fields("Task").items() if k in ("Type", "CallType", "CallDurationInSeconds", "IsClosed")
            } == {"Type": "picklist", "CallType": "picklist", "CallDurationInSeconds": "int", "IsClosed": "boolean"}
