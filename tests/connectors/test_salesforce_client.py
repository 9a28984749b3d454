"""The Salesforce client adapter, through the real simple-salesforce, against the sandbox over HTTPS."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from connectors.salesforce.client import (
    ApiUsage,
    SalesforceAuthError,
    SalesforceBusy,
    SalesforceClient,
    SalesforceCredentials,
    SalesforceError,
    SalesforceLimitError,
    SalesforceQueryError,
    SalesforceQueryTimeout,
    SalesforceUnavailable,
    WriteResult,
    _plain,
)
from connectors.salesforce.sandbox import SalesforceSandbox
from tests.connectors.conftest import sf_credentials_for

MakeSandbox = Callable[..., SalesforceSandbox]
MakeClient = Callable[..., SalesforceClient]
V = "/services/data/v59.0"


def token_calls(sandbox: SalesforceSandbox) -> int:
    return sum(1 for call in sandbox.calls if call.path == "/services/oauth2/token")


def data_calls(sandbox: SalesforceSandbox, fragment: str = "") -> list[int]:
    return [c.status for c in sandbox.calls if c.path.startswith("/services/data/v") and fragment in c.path]


# --- connecting -----------------------------------------------------------------------------------


def test_connect_obtains_a_token_with_client_credentials(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    sf_client.connect()
    assert token_calls(sf_sandbox) == 1
    assert sf_client.calls == 0


def test_first_call_connects_by_itself(sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox) -> None:
    sf_sandbox.insert("Account", {"Name": "Acme"})
    assert [r["Name"] for r in sf_client.query("SELECT Name FROM Account")] == ["Acme"]
    assert token_calls(sf_sandbox) == 1


def test_wrong_secret_is_an_auth_error_naming_salesforce_and_the_login_url_but_not_the_secret(
    sf_sandbox: SalesforceSandbox, make_sf_client: MakeClient, sf_sleeps: list[float]
) -> None:
    secret = "s3cr3t-that-must-not-leak"
    client = make_sf_client(sf_credentials_for(sf_sandbox, client_secret=secret))
    with pytest.raises(SalesforceAuthError) as caught:
        client.connect()
    message = str(caught.value)
    assert "Salesforce" in message and sf_sandbox.url in message and "invalid_client" in message
    assert secret not in message and secret not in repr(client.credentials)
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # no library error chained
    assert sf_sleeps == []


def test_unknown_client_id_is_an_auth_error(sf_sandbox: SalesforceSandbox, make_sf_client: MakeClient) -> None:
    client = make_sf_client(sf_credentials_for(sf_sandbox, client_id="not-our-app"))
    with pytest.raises(SalesforceAuthError, match="invalid_client_id"):
        client.connect()


def test_untrusted_certificate_is_a_configuration_error_not_retried(
    sf_sandbox: SalesforceSandbox, make_sf_client: MakeClient, sf_sleeps: list[float]
) -> None:
    client = make_sf_client(sf_credentials_for(sf_sandbox, ca_bundle=None))
    with pytest.raises(SalesforceError, match="TLS verification") as caught:
        client.connect()
    assert not isinstance(caught.value, SalesforceUnavailable)
    assert sf_sleeps == []


def test_login_during_an_outage_is_retried(
    sf_sandbox: SalesforceSandbox, sf_client: SalesforceClient, sf_sleeps: list[float]
) -> None:
    sf_sandbox.fail_next(503, "temporarily_unavailable", "maintenance", path_contains="oauth2")
    sf_client.connect()
    assert len(sf_sleeps) == 1
    assert token_calls(sf_sandbox) == 2


# --- queries --------------------------------------------------------------------------------------


def test_query_yields_plain_records_without_attributes(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme", "Health_Score__c": 71})
    assert list(sf_client.query("SELECT Id, Name, Health_Score__c FROM Account")) == [
        {"Id": account_id, "Name": "Acme", "Health_Score__c": 71.0}
    ]
    assert type(next(sf_client.query("SELECT Id FROM Account"))) is dict


def test_query_follows_next_records_url_through_every_batch(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient
) -> None:
    sandbox = make_sf_sandbox(batch_size=3)
    inserted = [sandbox.insert("Account", {"Name": f"A{i:02d}"}) for i in range(10)]
    client = make_sf_client(sandbox)
    assert [r["Id"] for r in client.query("SELECT Id FROM Account ORDER BY Name")] == inserted
    assert data_calls(sandbox) == [200, 200, 200, 200]
    assert client.calls == 4


def test_query_is_lazy_and_fetches_a_page_only_when_needed(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient
) -> None:
    sandbox = make_sf_sandbox(batch_size=2)
    for i in range(6):
        sandbox.insert("Account", {"Name": str(i)})
    client = make_sf_client(sandbox)
    records = client.query("SELECT Id FROM Account")
    next(records)
    next(records)
    assert client.calls == 1
    next(records)
    assert client.calls == 2


def test_query_pages_yields_each_batch_as_one_list_and_asks_for_the_next_only_when_needed(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient
) -> None:
    sandbox = make_sf_sandbox(batch_size=3)
    inserted = [sandbox.insert("Account", {"Name": f"A{i}"}) for i in range(7)]
    client = make_sf_client(sandbox)
    pages = client.query_pages("SELECT Id FROM Account ORDER BY Name")
    first = next(pages)
    assert client.calls == 1
    rest = list(pages)
    assert [[r["Id"] for r in page] for page in [first, *rest]] == [inserted[0:3], inserted[3:6], inserted[6:]]
    assert client.calls == 3


def test_query_pages_of_an_empty_result_yields_no_page(sf_client: SalesforceClient) -> None:
    assert list(sf_client.query_pages("SELECT Id FROM Account")) == []


def test_plain_records_lose_the_attributes_of_nested_relationship_records_too() -> None:
    record = {
        "attributes": {"type": "Contact", "url": "/services/data/v59.0/sobjects/Contact/003"},
        "Id": "003",
        "Account": {"attributes": {"type": "Account"}, "Name": "Acme", "Owner": {"attributes": {}, "Name": "Dana"}},
        "MailingAddress": {"city": "Lyon"},
    }
    assert _plain(record) == {
        "Id": "003",
        "Account": {"Name": "Acme", "Owner": {"Name": "Dana"}},
        "MailingAddress": {"city": "Lyon"},
    }


def test_a_record_that_is_not_an_object_is_an_error() -> None:
    with pytest.raises(SalesforceError, match="not an object"):
        _plain(["003"])


def test_include_deleted_uses_query_all_and_sees_soft_deleted_records(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    kept, gone = (sf_sandbox.insert("Account", {"Name": n}) for n in ("kept", "gone"))
    sf_sandbox.delete("Account", gone)
    live = [r["Id"] for r in sf_client.query("SELECT Id FROM Account")]
    everything = {
        r["Id"]: r["IsDeleted"] for r in sf_client.query("SELECT Id, IsDeleted FROM Account", include_deleted=True)
    }
    assert live == [kept]
    assert everything == {kept: False, gone: True}
    assert data_calls(sf_sandbox, "/queryAll") == [200]


def test_session_expiring_mid_paging_reauthenticates_once_and_finishes(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient
) -> None:
    sandbox = make_sf_sandbox(batch_size=2)
    inserted = [sandbox.insert("Account", {"Name": str(i)}) for i in range(6)]
    client = make_sf_client(sandbox)
    records = client.query("SELECT Id FROM Account")
    seen = [next(records)["Id"], next(records)["Id"]]
    sandbox.expire_sessions()
    seen += [r["Id"] for r in records]
    assert seen == inserted
    assert token_calls(sandbox) == 2
    assert data_calls(sandbox) == [200, 401, 200, 200]


def test_session_refused_again_after_reauthentication_is_an_auth_error(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    sf_client.connect()
    sf_sandbox.fail_next(401, "INVALID_SESSION_ID", "Session expired or invalid", path_contains="/query", times=2)
    with pytest.raises(SalesforceAuthError, match="INVALID_SESSION_ID"):
        list(sf_client.query("SELECT Id FROM Account"))
    assert token_calls(sf_sandbox) == 2


def test_server_errors_are_retried_with_backoff_then_succeed(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox, sf_sleeps: list[float]
) -> None:
    sf_sandbox.insert("Account", {"Name": "Acme"})
    sf_sandbox.fail_next(503, "SERVER_UNAVAILABLE", "busy", path_contains="/query", times=2)
    assert [r["Name"] for r in sf_client.query("SELECT Name FROM Account")] == ["Acme"]
    assert data_calls(sf_sandbox, "/query") == [503, 503, 200]
    assert len(sf_sleeps) == 2 and all(0 < s <= 8.5 for s in sf_sleeps)
    assert sf_sleeps[1] >= 1.0  # exponential: the second wait starts from twice the first's base


def test_persistent_server_errors_end_in_unavailable_after_the_bounded_attempts(
    sf_sandbox: SalesforceSandbox, make_sf_client: MakeClient, sf_sleeps: list[float]
) -> None:
    client = make_sf_client(sf_sandbox, max_attempts=3)
    sf_sandbox.fail_next(500, "UNKNOWN_EXCEPTION", "boom", path_contains="/query", times=10)
    with pytest.raises(SalesforceUnavailable, match="after 3 attempts") as caught:
        list(client.query("SELECT Id FROM Account"))
    assert caught.value.status == 500
    assert data_calls(sf_sandbox, "/query") == [500, 500, 500]
    assert len(sf_sleeps) == 2


def test_a_later_page_that_times_out_is_retried(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_sleeps: list[float]
) -> None:
    sandbox = make_sf_sandbox(batch_size=1)
    client = make_sf_client(sandbox, timeout=0.3)
    sandbox.insert("Account", {"Name": "Acme"})
    sandbox.insert("Account", {"Name": "Globex"})
    sandbox.stall_next(1.0, path_contains="/query/01g")  # the locator's page, not the query itself
    assert [r["Name"] for r in client.query("SELECT Name FROM Account ORDER BY Name")] == ["Acme", "Globex"]
    assert len(sf_sleeps) == 1  # the stalled call is logged only once its late answer is written


def test_a_first_page_that_times_out_is_a_query_timeout_and_not_asked_again(
    sf_sandbox: SalesforceSandbox, make_sf_client: MakeClient, sf_sleeps: list[float]
) -> None:
    """Salesforce answers a query's first page once it has found and sorted every record: a query that
    takes longer than the read timeout would take as long again, so the caller asks for less instead."""
    client = make_sf_client(sf_sandbox, timeout=0.3)
    sf_sandbox.stall_next(1.0, path_contains="/query")
    with pytest.raises(SalesforceQueryTimeout, match=r"within 0\.3 s") as caught:
        list(client.query("SELECT Name FROM Account"))
    assert caught.value.error_code == "QUERY_TIMEOUT"
    assert sf_sleeps == []


def test_query_timeout_from_salesforce_is_a_query_timeout_and_not_retried(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox, sf_sleeps: list[float]
) -> None:
    sf_sandbox.fail_next(400, "QUERY_TIMEOUT", "Your query request was running for too long.", path_contains="/query")
    with pytest.raises(SalesforceQueryTimeout, match="running for too long"):
        list(sf_client.query("SELECT Id FROM Account"))
    assert data_calls(sf_sandbox) == [400]
    assert sf_sleeps == []


def test_dropped_connections_are_retried(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox, sf_sleeps: list[float]
) -> None:
    sf_sandbox.drop_next(path_contains="/query")
    assert list(sf_client.query("SELECT Id FROM Account")) == []
    assert len(sf_sleeps) == 1


def test_request_limit_exceeded_is_a_limit_error_and_never_retried(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_sleeps: list[float]
) -> None:
    sandbox = make_sf_sandbox(daily_api_limit=1)
    client = make_sf_client(sandbox)
    list(client.query("SELECT Id FROM Account"))
    with pytest.raises(SalesforceLimitError, match="daily API request limit") as caught:
        list(client.query("SELECT Id FROM Account"))
    assert caught.value.error_code == "REQUEST_LIMIT_EXCEEDED"
    assert data_calls(sandbox) == [200, 403]
    assert sf_sleeps == []
    assert client.api_usage == ApiUsage(used=1, limit=1)


@pytest.mark.parametrize("message", ["ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                                     "ConcurrentPerOrgLongTxn Limit exceeded."])
def test_request_limit_exceeded_for_concurrent_requests_is_retried_after_a_pause(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox, sf_sleeps: list[float], message: str
) -> None:
    """Salesforce answers REQUEST_LIMIT_EXCEEDED both for the daily limit ("TotalRequests Limit exceeded.") and
    for too many concurrent long requests; only the second passes within seconds."""
    sf_sandbox.fail_next(403, "REQUEST_LIMIT_EXCEEDED", message, path_contains="/query")
    assert list(sf_client.query("SELECT Id FROM Account")) == []
    assert data_calls(sf_sandbox) == [403, 200]
    assert len(sf_sleeps) == 1


def test_concurrent_limit_that_does_not_pass_is_busy_not_the_daily_limit(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox, sf_sleeps: list[float]
) -> None:
    sf_sandbox.fail_next(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.",
                         path_contains="/query", times=10)
    with pytest.raises(SalesforceBusy, match="concurrent requests") as caught:
        list(sf_client.query("SELECT Id FROM Account"))
    assert not isinstance(caught.value, SalesforceLimitError)
    assert len(sf_sleeps) == 3  # the retry policy's four attempts


def test_api_usage_follows_sforce_limit_info(sf_client: SalesforceClient) -> None:
    assert sf_client.api_usage is None
    list(sf_client.query("SELECT Id FROM Account"))
    sf_client.describe_fields("Account")
    assert sf_client.api_usage == ApiUsage(used=2, limit=15000)


def test_bad_soql_is_a_query_error_with_salesforce_code_and_position(sf_client: SalesforceClient) -> None:
    with pytest.raises(SalesforceQueryError) as caught:
        list(sf_client.query("SELECT Id, Nope FROM Account"))
    assert caught.value.error_code == "INVALID_FIELD"
    assert caught.value.status == 400
    assert "No such column 'Nope'" in str(caught.value) and "Row:1:Column:12" in str(caught.value)


def test_datetime_filter_with_plus_offset_is_encoded_and_accepted(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    sf_sandbox.insert("Account", {"Name": "Acme"})
    soql = "SELECT Name FROM Account WHERE SystemModstamp >= 2024-06-01T12:00:00.000+0000"
    assert [r["Name"] for r in sf_client.query(soql)] == ["Acme"]


# --- describe ---------------------------------------------------------------------------------


def test_describe_fields_maps_names_to_salesforce_types_and_is_cached(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    fields = sf_client.describe_fields("Account")
    again = sf_client.describe_fields("account")
    assert fields["Health_Score__c"] == "double" and fields["Health_Updated__c"] == "datetime"
    assert fields["Health_Override_Until__c"] == "date" and fields["Id"] == "id"
    assert again == fields
    assert data_calls(sf_sandbox, "/describe") == [200]


def test_updateable_fields_leave_out_what_field_security_makes_read_only(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient
) -> None:
    client = make_sf_client(make_sf_sandbox(read_only_fields={"Account": {"Churn_Risk__c"}}))
    updateable = client.updateable_fields("Account")
    assert "Health_Score__c" in updateable
    assert "Churn_Risk__c" not in updateable and "Churn_Risk__c" in client.describe_fields("Account")
    assert "SystemModstamp" not in updateable


def test_missing_custom_field_is_named_by_missing_fields(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient
) -> None:
    sandbox = make_sf_sandbox(missing_fields={"Account": {"Health_Trend__c", "Churn_Risk__c"}})
    client = make_sf_client(sandbox)
    wanted = ["health_score__c", "Health_Trend__c", "Churn_Risk__c", "Health_Band__c"]
    assert client.missing_fields("Account", wanted) == ["Health_Trend__c", "Churn_Risk__c"]


def test_describe_of_an_object_the_org_lacks_is_a_query_error(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient
) -> None:
    client = make_sf_client(make_sf_sandbox(missing_fields={"EmailMessage": {"*"}}))
    with pytest.raises(SalesforceQueryError, match="no sObject 'EmailMessage'") as caught:
        client.describe_fields("EmailMessage")
    assert caught.value.error_code == "NOT_FOUND"


# --- updates ------------------------------------------------------------------------------------


def test_update_of_201_records_takes_exactly_two_collection_calls(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    ids = [sf_sandbox.insert("Account", {"Name": str(i)}) for i in range(201)]
    sf_sandbox.reset_calls()
    results = sf_client.update_records("Account", [{"Id": i, "Health_Score__c": 50} for i in ids])
    composite = [c for c in sf_sandbox.calls if c.path == f"{V}/composite/sobjects"]
    assert [(c.method, c.record_count) for c in composite] == [("PATCH", 200), ("PATCH", 1)]
    assert [r.record_id for r in results] == ids and all(r.success for r in results)
    assert sf_sandbox.get("Account", ids[-1])["Health_Score__c"] == 50.0


def _snapshots(account_id: str, days: range) -> list[dict[str, object]]:
    return [{"Snapshot_Key__c": f"{account_id}-{day}", "Account__c": account_id, "Score__c": 50} for day in days]


def test_an_upsert_of_201_records_takes_two_calls_and_sent_again_creates_nothing(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    account = sf_sandbox.insert("Account", {"Name": "Acme"})
    path = f"{V}/composite/sobjects/Health_Snapshot__c/Snapshot_Key__c"
    sf_sandbox.reset_calls()

    first = sf_client.upsert_records("Health_Snapshot__c", "Snapshot_Key__c", _snapshots(account, range(201)))
    again = sf_client.upsert_records("Health_Snapshot__c", "Snapshot_Key__c", _snapshots(account, range(201)))

    calls = [(c.method, c.record_count) for c in sf_sandbox.calls if c.path == path]
    assert calls == [("PATCH", 200), ("PATCH", 1)] * 2
    assert all(r.success and r.created for r in first) and all(r.success and not r.created for r in again)
    assert [r.record_id for r in again] == [r.record_id for r in first]


@pytest.mark.parametrize("records", [[{"Score__c": 1}], [{"Snapshot_Key__c": "k"}, {"Snapshot_Key__c": "k"}]],
                         ids=["no key", "a key twice"])
def test_an_upsert_salesforce_would_refuse_whole_is_not_sent(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox, records: list[dict[str, object]]
) -> None:
    sf_sandbox.reset_calls()

    with pytest.raises(ValueError, match="Snapshot_Key__c"):
        sf_client.upsert_records("Health_Snapshot__c", "Snapshot_Key__c", records)
    assert sf_sandbox.calls == []


def test_per_record_failure_is_reported_and_the_other_records_are_saved(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    locked, free = (sf_sandbox.insert("Account", {"Name": n}) for n in ("locked", "free"))
    sf_sandbox.fail_records_next_update([locked], "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access")
    results = sf_client.update_records(
        "Account", [{"Id": locked, "Health_Band__c": "red"}, {"Id": free, "Health_Band__c": "red"}]
    )
    assert results == [
        WriteResult(locked, False, ("UNABLE_TO_LOCK_ROW: unable to obtain exclusive access",)),
        WriteResult(free, True, ()),
    ]
    assert sf_sandbox.get("Account", free)["Health_Band__c"] == "red"
    assert sf_sandbox.get("Account", locked)["Health_Band__c"] is None


def test_update_sends_datetimes_and_dates_in_salesforce_form(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme"})
    when = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    [result] = sf_client.update_records("Account", [{"Id": account_id, "Health_Updated__c": when}])
    assert result.success
    assert sf_sandbox.get("Account", account_id)["Health_Updated__c"] == "2024-06-01T09:30:00.000+0000"


def test_fifteen_character_ids_come_back_as_given(sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme"})
    [result] = sf_client.update_records("Account", [{"Id": account_id[:15], "Health_Band__c": "green"}])
    assert (result.record_id, result.success) == (account_id[:15], True)


def test_result_list_not_matching_the_request_fails_loudly(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    ids = [sf_sandbox.insert("Account", {"Name": n}) for n in ("a", "b")]
    sf_sandbox.fail_next(200, "ODD", "one result for two records", path_contains="/composite")
    with pytest.raises(SalesforceError, match="2 Account records with 1 results"):
        sf_client.update_records("Account", [{"Id": i, "Health_Band__c": "x"} for i in ids])


def test_record_without_id_is_refused_before_anything_is_sent(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    with pytest.raises(ValueError, match='record 1 has no "Id"'):
        sf_client.update_records("Account", [{"Id": "001000000000001"}, {"Name": "x"}])
    assert sf_sandbox.calls == []


def test_update_refused_whole_by_salesforce_is_a_salesforce_error(
    sf_client: SalesforceClient, sf_sandbox: SalesforceSandbox
) -> None:
    account_id = sf_sandbox.insert("Account", {"Name": "Acme"})
    with pytest.raises(SalesforceError, match="JSON_PARSER_ERROR") as caught:
        sf_client.update_records("Account", [{"Id": account_id, "Health_Score__c": "high"}])
    assert type(caught.value) is SalesforceError


# --- secrets --------------------------------------------------------------------------------------


def test_secret_and_token_never_reach_logs_or_errors(
    make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "very-secret-value-42"
    sandbox = make_sf_sandbox(client_secret=secret)
    client = make_sf_client(
        SalesforceCredentials(sandbox.url, sandbox.client_id, secret, ca_bundle=sandbox.ca_cert_path)
    )
    caplog.set_level(logging.DEBUG)
    sandbox.fail_next(503, "SERVER_UNAVAILABLE", "busy", path_contains="/query", times=5)
    messages: list[str] = []
    for _ in range(2):
        try:
            list(client.query("SELECT Id FROM Account"))
        except SalesforceError as exc:
            messages.append(str(exc))
    sandbox.expire_sessions()
    list(client.query("SELECT Id FROM Account"))
    token = client._sf.session_id if client._sf else ""
    assert token and messages
    text = caplog.text + "\n".join(messages)
    assert secret not in text and token not in text


def test_forgetting_the_described_fields_makes_the_sibling_forget_them_too(sf_client: SalesforceClient) -> None:
    sibling = sf_client.sibling()
    sibling.describe_fields("Account")
    calls = sibling.calls

    sf_client.forget_fields()
    sibling.describe_fields("Account")

    assert sibling.calls == calls + 1  # described again, as the first session will
