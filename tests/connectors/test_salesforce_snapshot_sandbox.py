"""The Salesforce sandbox serves sObject Collections upsert on an external id as Salesforce documents it.

"Upsert Records Using sObject Collections" (REST API Developer Guide,
https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-upsert.html):
`PATCH /services/data/vXX.X/composite/sobjects/SobjectName/ExternalIdFieldName` creates or updates up to 200
records matched on that external id field; each record carries an `attributes` map with its `type` (only the type
the URI names) and no `id`; `allOrNone` (default false) says whether one failure rolls back the rest; a well-formed
request answers 200 with one UpsertResult per record, in order (`id`, `success`, `errors`, `created`: true when the
record was created, false when updated). A request that is not well formed answers 400. A record's refusal carries
errors with a `statusCode` and a `message`, as for the other collection calls (StatusCode values:
https://developer.salesforce.com/docs/platform/api/guide/sforce-api-calls-concepts-core-data-objects.html):
an unknown field is INVALID_FIELD; an external id matched more than once is DUPLICATE_EXTERNAL_ID.
Raw HTTPS with httpx, no client library.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.salesforce.sandbox import SalesforceSandbox

V = "/services/data/v59.0"
URL = f"{V}/composite/sobjects/Health_Snapshot__c/Snapshot_Key__c"


def _upsert(http: httpx.Client, auth: dict[str, str], records: list[dict[str, Any]], *,
            all_or_none: bool = False, url: str = URL) -> httpx.Response:
    body = {"allOrNone": all_or_none,
            "records": [{"attributes": {"type": "Health_Snapshot__c"}, **record} for record in records]}
    return http.patch(url, json=body, headers=auth)


def _snapshot(sandbox: SalesforceSandbox, key: str, **fields: Any) -> dict[str, Any]:
    account = sandbox.insert("Account", {"Name": f"Account of {key}"})
    return {"Snapshot_Key__c": key, "Account__c": account, "Date__c": "2024-06-01", "Score__c": 71.5,
            "Band__c": "green", **fields}


def test_an_upsert_creates_a_record_for_a_new_key_and_updates_it_for_a_known_one(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    record = _snapshot(sf_sandbox, "001A:2024-06-01")

    created = _upsert(sf_http, sf_auth, [record])
    updated = _upsert(sf_http, sf_auth, [{**record, "Score__c": 40.0, "Band__c": "red"}])

    assert created.status_code == updated.status_code == 200
    [first], [second] = created.json(), updated.json()
    assert (first["success"], first["created"], first["errors"]) == (True, True, [])
    assert (second["id"], second["success"], second["created"]) == (first["id"], True, False)
    [held] = sf_sandbox.records("Health_Snapshot__c")
    assert (held["Id"], held["Score__c"], held["Band__c"], held["Name"]) == (first["id"], 40.0, "red", "HS-000001")


def test_results_come_one_per_record_in_the_order_sent(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    records = [_snapshot(sf_sandbox, f"k{i}") for i in range(5)]
    _upsert(sf_http, sf_auth, records[2:3])

    results = _upsert(sf_http, sf_auth, records).json()

    assert [r["created"] for r in results] == [True, True, False, True, True]
    by_key = {r["Snapshot_Key__c"]: r["Id"] for r in sf_sandbox.records("Health_Snapshot__c")}
    assert [r["id"] for r in results] == [by_key[f"k{i}"] for i in range(5)]


def test_more_than_200_records_in_one_call_are_refused_whole(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    account = sf_sandbox.insert("Account", {"Name": "Acme"})

    response = _upsert(sf_http, sf_auth, [{"Snapshot_Key__c": f"k{i}", "Account__c": account} for i in range(201)])

    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert sf_sandbox.records("Health_Snapshot__c") == []


def test_a_record_without_the_external_id_is_refused_and_the_others_saved(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    keyless = _snapshot(sf_sandbox, "ignored")
    del keyless["Snapshot_Key__c"]

    results = _upsert(sf_http, sf_auth, [keyless, _snapshot(sf_sandbox, "k1")]).json()

    assert (results[0]["success"], results[0]["id"]) == (False, None)
    assert results[0]["errors"][0]["fields"] == ["Snapshot_Key__c"]
    assert results[1]["success"] is True
    assert [r["Snapshot_Key__c"] for r in sf_sandbox.records("Health_Snapshot__c")] == ["k1"]


def test_a_key_twice_in_one_request_refuses_both_records(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    twice = _snapshot(sf_sandbox, "same")

    results = _upsert(sf_http, sf_auth, [twice, {**twice, "Score__c": 10.0}, _snapshot(sf_sandbox, "other")]).json()

    assert [r["success"] for r in results] == [False, False, True]
    assert {r["errors"][0]["statusCode"] for r in results[:2]} == {"DUPLICATE_EXTERNAL_ID"}
    assert [r["Snapshot_Key__c"] for r in sf_sandbox.records("Health_Snapshot__c")] == ["other"]


def test_an_unknown_field_refuses_that_record_with_invalid_field(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    results = _upsert(sf_http, sf_auth, [_snapshot(sf_sandbox, "k1", Mood__c="grumpy"),
                                         _snapshot(sf_sandbox, "k2")]).json()

    assert results[0]["success"] is False
    assert results[0]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert "Mood__c" in results[0]["errors"][0]["message"]
    assert results[1]["success"] is True


def test_all_or_none_rolls_back_every_record_when_one_fails(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    results = _upsert(sf_http, sf_auth, [_snapshot(sf_sandbox, "k1", Mood__c="x"), _snapshot(sf_sandbox, "k2")],
                      all_or_none=True).json()

    assert [r["success"] for r in results] == [False, False]
    assert results[1]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert sf_sandbox.records("Health_Snapshot__c") == []


def test_a_field_that_is_not_an_external_id_cannot_be_upserted_on(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    response = _upsert(sf_http, sf_auth, [_snapshot(sf_sandbox, "k1")],
                       url=f"{V}/composite/sobjects/Health_Snapshot__c/Band__c")

    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_FIELD"


def test_a_lookup_to_a_deleted_account_is_refused(
        sf_http: httpx.Client, sf_auth: dict[str, str], sf_sandbox: SalesforceSandbox) -> None:
    record = _snapshot(sf_sandbox, "k1")
    sf_sandbox.delete("Account", record["Account__c"])

    [result] = _upsert(sf_http, sf_auth, [record]).json()

    assert result["success"] is False and result["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"


def test_the_snapshot_object_is_described_with_its_external_id(
        sf_http: httpx.Client, sf_auth: dict[str, str]) -> None:
    fields = {f["name"]: f for f in
              sf_http.get(f"{V}/sobjects/Health_Snapshot__c/describe", headers=sf_auth).json()["fields"]}

    assert (fields["Snapshot_Key__c"]["externalId"], fields["Snapshot_Key__c"]["unique"]) == (True, True)
    assert fields["Account__c"]["referenceTo"] == ["Account"]
    assert fields["Name"]["updateable"] is False  # an Auto Number


def test_an_org_without_the_package_has_no_snapshot_object(make_sf_sandbox: Any, make_sf_http: Any) -> None:
    sandbox = make_sf_sandbox(missing_fields={"Health_Snapshot__c": {"*"}})
    http, auth = make_sf_http(sandbox)

    response = http.patch(URL, json={"allOrNone": False, "records": []}, headers=auth)

    assert response.status_code == 404
