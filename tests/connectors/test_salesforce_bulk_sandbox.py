"""The sandbox serves Bulk API 2.0 query jobs as Salesforce documents them, and the client reads them.

Salesforce's Bulk API 2.0 and Bulk API Developer Guide, the pages each test relies on:

- Create a Query Job: https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/query_create_job.htm
  (``operation`` query or queryAll; no GROUP BY, OFFSET or TYPEOF, no aggregate functions such as COUNT(), no
  compound fields, no parent-to-child relationship queries; the job starts in ``UploadComplete``)
- Get Information About a Query Job:
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/query_get_one_job.htm
  (states UploadComplete, InProgress, Aborted, JobComplete, Failed; ``errorMessage`` when it failed)
- Get Results for a Query Job:
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/query_get_job_results.htm
  (CSV, columns in the order asked for since v50.0; ``Sforce-NumberOfRecords``; ``Sforce-Locator``, an opaque
  string such as ``MTAwMDA``, the string ``null`` after the last set; the locator stays valid while the job
  exists; ``maxRecords``; the same API version as the job's or 409; a job not complete: 412 JOB_NOT_COMPLETE)
- Abort / Delete a Query Job: ``PATCH {"state": "Aborted"}``, ``DELETE`` (same guide)
- Limits: https://developer.salesforce.com/docs/atlas.en-us.228.0.api_bulk_v2.meta/api_bulk_v2/bulk_api_2_limits.htm
  (10,000 query jobs per rolling 24 hours, ``DailyBulkV2QueryJobs`` in /limits; 1 TB of results,
  ``DailyBulkV2QueryFileStorageMB``; jobs deleted 7 days after they end)

The error codes of a refused query (API_ERROR) and of the job allocation spent (LIMIT_EXCEEDED) are the sandbox's
choice: the guide says what is refused, not with which code.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

import httpx
import pytest

from connectors.salesforce.client import SalesforceClient, SalesforceCredentials, SalesforceError
from connectors.salesforce.sandbox import SalesforceSandbox


@pytest.fixture(scope="module")
def org() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(bulk_polls_in_progress=2) as sandbox:
        owner = sandbox.insert("User", {"Name": "Dana", "Email": "dana@example.com"})
        account = sandbox.insert("Account", {"Name": 'Acme, "the" company\nof coyotes', "OwnerId": owner,
                                             "AnnualRevenue": 1500000})
        sandbox.insert("Account", {"Name": "Initech", "OwnerId": owner})
        gone = sandbox.insert("Account", {"Name": "Gone", "OwnerId": owner})
        sandbox.delete("Account", gone)
        for n in range(5):
            sandbox.insert("Event", {"AccountId": account, "Subject": f"Call {n}",
                                     "ActivityDateTime": "2024-01-02T03:04:05.000+0000"})
        yield sandbox


@pytest.fixture(scope="module")
def http(org: SalesforceSandbox) -> Iterator[httpx.Client]:
    trust = ssl.create_default_context(cafile=org.ca_cert_path)
    with httpx.Client(verify=trust, base_url=f"{org.url}/services/data/v59.0/jobs/query") as client:
        token = client.post(f"{org.url}/services/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": org.client_id, "client_secret": org.client_secret})
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


@pytest.fixture(scope="module")
def client(org: SalesforceSandbox) -> Iterator[SalesforceClient]:
    with SalesforceClient(SalesforceCredentials(org.url, org.client_id, org.client_secret,
                                                ca_bundle=org.ca_cert_path)) as made:
        made.poll_sleep = lambda _seconds: None
        yield made


def _create(http: httpx.Client, soql: str, operation: str = "query") -> httpx.Response:
    return http.post("", json={"operation": operation, "query": soql})


def _complete(http: httpx.Client, soql: str, operation: str = "query") -> str:
    job = _create(http, soql, operation).json()["id"]
    while http.get(f"/{job}").json()["state"] != "JobComplete":
        pass
    return str(job)


def test_a_new_job_is_upload_complete_then_in_progress_while_it_runs_then_complete(http: httpx.Client) -> None:
    created = _create(http, "SELECT Id FROM Event")
    job = created.json()["id"]

    states = [http.get(f"/{job}").json()["state"] for _ in range(3)]

    assert created.status_code == 200 and created.json()["state"] == "UploadComplete"
    assert job.startswith("750") and created.json()["operation"] == "query"
    assert states == ["InProgress", "InProgress", "JobComplete"]


def test_results_before_the_job_is_complete_are_refused_with_412(http: httpx.Client) -> None:
    job = _create(http, "SELECT Id FROM Event").json()["id"]

    refused = http.get(f"/{job}/results")

    assert refused.status_code == 412 and refused.json()[0]["errorCode"] == "JOB_NOT_COMPLETE"


def test_results_are_csv_in_the_columns_asked_for_with_salesforce_s_value_forms(http: httpx.Client) -> None:
    job = _complete(http, "SELECT Name, Id, AnnualRevenue, IsDeleted, SystemModstamp, Website FROM Account "
                          "WHERE Name = 'Initech'")

    answer = http.get(f"/{job}/results")

    assert answer.headers["content-type"].startswith("text/csv")
    header, row = answer.text.splitlines()
    assert header == '"Name","Id","AnnualRevenue","IsDeleted","SystemModstamp","Website"'
    values = row.split(",")
    assert values[0] == '"Initech"' and values[2] == '""' and values[3] == '"false"' and values[5] == '""'
    assert re.fullmatch(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"', values[4])  # 2024-01-01T00:00:00.000Z
    assert answer.headers["Sforce-NumberOfRecords"] == "1" and answer.headers["Sforce-Locator"] == "null"


def test_results_come_by_locator_in_sets_of_max_records_and_a_locator_reads_the_same_set_again(
        http: httpx.Client) -> None:
    job = _complete(http, "SELECT Id FROM Event")

    first = http.get(f"/{job}/results", params={"maxRecords": 2})
    locator = first.headers["Sforce-Locator"]
    second = http.get(f"/{job}/results", params={"maxRecords": 2, "locator": locator})
    again = http.get(f"/{job}/results", params={"maxRecords": 2, "locator": locator})
    last = http.get(f"/{job}/results", params={"maxRecords": 2, "locator": second.headers["Sforce-Locator"]})

    assert [r.headers["Sforce-NumberOfRecords"] for r in (first, second, last)] == ["2", "2", "1"]
    assert locator not in ("", "null") and not locator.isdigit()  # opaque, as from API version 49.0
    assert again.text == second.text
    assert last.headers["Sforce-Locator"] == "null"


def test_query_all_finds_deleted_records_and_query_does_not(http: httpx.Client) -> None:
    everything = http.get(f"/{_complete(http, 'SELECT Id FROM Account', 'queryAll')}/results").text
    live = http.get(f"/{_complete(http, 'SELECT Id FROM Account')}/results").text

    assert len(everything.splitlines()) == 4 and len(live.splitlines()) == 3


@pytest.mark.parametrize("soql", ["SELECT COUNT() FROM Event", "SELECT Id FROM Event LIMIT 2 OFFSET 1"])
def test_a_query_bulk_api_2_does_not_support_is_refused_when_the_job_is_created(http: httpx.Client, soql: str) -> None:
    refused = _create(http, soql)

    assert refused.status_code == 400 and "Bulk API 2.0 doesn't support" in refused.json()[0]["message"]


def test_an_aborted_job_says_aborted_and_keeps_no_results(http: httpx.Client) -> None:
    job = _create(http, "SELECT Id FROM Event").json()["id"]

    aborted = http.patch(f"/{job}", json={"state": "Aborted"})

    assert aborted.json()["state"] == "Aborted" and http.get(f"/{job}").json()["state"] == "Aborted"
    assert http.get(f"/{job}/results").status_code == 412


def test_a_deleted_job_is_gone(http: httpx.Client) -> None:
    job = _complete(http, "SELECT Id FROM Event")

    assert http.delete(f"/{job}").status_code == 204
    assert http.get(f"/{job}").status_code == 404 and http.get(f"/{job}/results").status_code == 404


def test_results_asked_for_in_another_api_version_are_refused_with_409(
        org: SalesforceSandbox, http: httpx.Client) -> None:
    job = _complete(http, "SELECT Id FROM Event")

    refused = http.get(f"{org.url}/services/data/v58.0/jobs/query/{job}/results")

    assert refused.status_code == 409


def test_limits_show_the_query_jobs_and_results_left_today(org: SalesforceSandbox, http: httpx.Client) -> None:
    before = org.bulk.jobs_created
    _create(http, "SELECT Id FROM Event")

    limits = http.get(f"{org.url}/services/data/v59.0/limits").json()

    assert limits["DailyBulkV2QueryJobs"] == {"Max": 10_000, "Remaining": 10_000 - before - 1}
    assert limits["DailyBulkV2QueryFileStorageMB"]["Max"] == 1_048_576


def test_a_failure_injected_ends_the_next_job_failed_with_its_error_message(
        org: SalesforceSandbox, client: SalesforceClient) -> None:
    org.bulk.fail_next("Failed", "InternalServerError : retried more than 15 times")
    job = client.create_query_job("SELECT Id FROM Event")

    ended = client.wait_for_query_job(job.id)

    assert ended.state == "Failed" and "retried more than 15 times" in ended.error_message


def test_the_client_polls_with_doubling_waits_and_reads_typed_records_as_rest_sends_them(
        org: SalesforceSandbox, client: SalesforceClient) -> None:
    waits: list[float] = []
    client.poll_sleep = waits.append
    job = client.create_query_job("SELECT Id, Name, AnnualRevenue, IsDeleted, SystemModstamp FROM Account",
                                  include_deleted=True)

    client.wait_for_query_job(job.id)
    results = client.query_job_results(job.id, client.describe_fields("Account"))

    assert waits == [1.0, 2.0]  # two polls found it in progress
    acme = next(r for r in results.records if r["Name"].startswith("Acme"))
    assert acme["Name"] == 'Acme, "the" company\nof coyotes' and acme["AnnualRevenue"] == 1500000.0
    assert acme["IsDeleted"] is False and acme["SystemModstamp"].endswith("+0000")
    rest = next(r for r in client.query("SELECT Id, Name, AnnualRevenue, IsDeleted, SystemModstamp FROM Account",
                                        include_deleted=True) if r["Id"] == acme["Id"])
    assert acme == rest
    assert results.next_locator is None and any(r["IsDeleted"] for r in results.records)


def test_the_client_says_salesforce_refused_a_job(client: SalesforceClient) -> None:
    with pytest.raises(SalesforceError, match="COUNT"):
        client.create_query_job("SELECT COUNT() FROM Event")


def test_the_doctor_reports_the_query_jobs_and_results_left_and_warns_when_none_are(
        org: SalesforceSandbox, client: SalesforceClient) -> None:
    from worker.ops.doctor import _api_usage

    client.connect()
    client.count("SELECT COUNT() FROM Event")  # a call, so that Salesforce reports the day's usage
    told = _api_usage(client, bulk_threshold=1_000_000)
    org.bulk.daily_jobs = org.bulk.jobs_created
    spent = _api_usage(client, bulk_threshold=1_000_000)
    org.bulk.daily_jobs = 10_000

    assert told.ok and not told.warning and "query jobs and 1,048,5" in told.detail
    assert spent.ok and spent.warning and "0 of" in spent.detail and "REST" in spent.fix
    assert "Bulk" not in _api_usage(client, bulk_threshold=0).detail  # never Bulk: no call, nothing to say
