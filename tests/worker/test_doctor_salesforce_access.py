"""`healthbeat doctor` on what an org lets the integration user do and see: fields it may read but not edit
(field-level security), and emails that never reach Salesforce records (Einstein Activity Capture)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.salesforce.schema import format_datetime
from worker.config import Settings, load_settings
from worker.cycle import Cycle
from worker.demo.harness import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Sandboxes, sandbox_environment
from worker.ops.doctor import Check, format_checks, run_doctor
from worker.store import Store

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


def _checks(settings: Settings) -> dict[str, Check]:
    return {check.name: check for check in run_doctor(settings)}


# -- field-level security -----------------------------------------------------------------------------------

@pytest.fixture
def salesforce_with_read_only_fields(request: pytest.FixtureRequest) -> Iterator[SalesforceSandbox]:
    missing, read_only = request.param
    with SalesforceSandbox(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET,
                           missing_fields={"Account": set(missing)},
                           read_only_fields={"Account": set(read_only)}) as server:
        yield server


def _pointed_at(sandboxes: Sandboxes, salesforce: SalesforceSandbox, usage_dir: Path, tmp_path: Path) -> Settings:
    env = sandbox_environment(sandboxes, tmp_path / "healthbeat.db", usage_dir, RULES_DIR)
    return load_settings(**{**env, "SALESFORCE_LOGIN_URL": salesforce.url,
                            "REQUESTS_CA_BUNDLE": salesforce.ca_cert_path,
                            "SLACK_FALLBACK_CHANNEL": None})  # no world here, so no channel to find


@pytest.mark.parametrize("salesforce_with_read_only_fields", [((), ("Churn_Risk__c", "Health_Band__c"))],
                         indirect=True)
def test_written_fields_the_integration_user_cannot_edit_fail_naming_each_and_the_fix(
        sandboxes: Sandboxes, salesforce_with_read_only_fields: SalesforceSandbox, usage_dir: Path,
        tmp_path: Path) -> None:
    checks = _checks(_pointed_at(sandboxes, salesforce_with_read_only_fields, usage_dir, tmp_path))

    assert [name for name, check in checks.items() if not check.ok] == ["Salesforce field access"]
    access = checks["Salesforce field access"]
    assert "cannot edit Health_Band__c, Churn_Risk__c on Account" in access.detail
    assert "grant Edit access on Health_Band__c, Churn_Risk__c in the integration user's permission set" \
        in access.fix


@pytest.mark.parametrize("salesforce_with_read_only_fields", [(("Health_Score__c",), ("Churn_Risk__c",))],
                         indirect=True)
def test_a_missing_field_is_reported_as_missing_not_as_read_only(
        sandboxes: Sandboxes, salesforce_with_read_only_fields: SalesforceSandbox, usage_dir: Path,
        tmp_path: Path) -> None:
    checks = _checks(_pointed_at(sandboxes, salesforce_with_read_only_fields, usage_dir, tmp_path))

    assert "Account lacks Health_Score__c" in checks["Salesforce fields (written)"].detail
    assert "Health_Score__c" not in checks["Salesforce field access"].detail
    assert "cannot edit Churn_Risk__c on Account" in checks["Salesforce field access"].detail


def test_every_written_field_editable_passes_and_lists_them(settings: Settings) -> None:
    access = _checks(settings)["Salesforce field access"]

    assert access.ok and not access.skipped
    assert "may edit Health_Score__c, Health_Band__c" in access.detail


# -- Einstein Activity Capture ------------------------------------------------------------------------------

def _activity(salesforce: SalesforceSandbox, now: datetime, *, meetings: int, calls: int, emails: int) -> None:
    """One account's last weeks in Salesforce: meetings (Events), calls and emails (Tasks)."""
    owner = salesforce.insert("User", {"Name": "Dana Owner", "Email": "dana@vendor.example", "IsActive": True})
    account = salesforce.insert("Account", {"Name": "Acme", "OwnerId": owner})
    for day in range(meetings):
        at = format_datetime(now - timedelta(days=day + 1))
        salesforce.insert("Event", {"AccountId": account, "WhatId": account, "OwnerId": owner, "Subject": "Check-in",
                                    "StartDateTime": at, "ActivityDateTime": at, "DurationInMinutes": 30})
    for day, subtype in [*((d, "Call") for d in range(calls)), *((d, "Email") for d in range(emails))]:
        at = now - timedelta(days=day + 2)
        salesforce.insert("Task", {"AccountId": account, "WhatId": account, "OwnerId": owner, "Subject": subtype,
                                   "TaskSubtype": subtype, "Status": "Completed",
                                   "ActivityDate": at.date().isoformat(), "CompletedDateTime": format_datetime(at)})


def test_meetings_and_calls_without_a_single_email_warn_of_einstein_activity_capture(
        sandboxes: Sandboxes, settings: Settings, cycle: Cycle, store: Store) -> None:
    _activity(sandboxes.salesforce, datetime.now(UTC), meetings=8, calls=4, emails=0)
    cycle.run(("sync",))

    checks = run_doctor(settings)

    emails = {c.name: c for c in checks}["Salesforce emails"]
    assert emails.ok and emails.warning
    assert "0 emails, 8 meetings and 4 calls from Salesforce in the last 30 days" in emails.detail
    assert "Einstein Activity Capture" in emails.detail and "log emails to Salesforce records" in emails.fix
    assert "! Salesforce emails: " in format_checks(checks) and "    fix: if the org uses Einstein" \
        in format_checks(checks)


def test_emails_flowing_beside_meetings_and_calls_raise_no_warning(sandboxes: Sandboxes, settings: Settings,
                                                                  cycle: Cycle, store: Store) -> None:
    _activity(sandboxes.salesforce, datetime.now(UTC), meetings=8, calls=4, emails=1)
    cycle.run(("sync",))

    emails = _checks(settings)["Salesforce emails"]

    assert emails.ok and not emails.warning and not emails.skipped
    assert emails.detail == "1 email, 8 meetings and 4 calls from Salesforce in the last 30 days"


def test_too_little_activity_to_judge_raises_no_warning(sandboxes: Sandboxes, settings: Settings, cycle: Cycle,
                                                        store: Store) -> None:
    _activity(sandboxes.salesforce, datetime.now(UTC), meetings=3, calls=1, emails=0)
    cycle.run(("sync",))

    emails = _checks(settings)["Salesforce emails"]

    assert emails.ok and not emails.warning


def test_a_warning_does_not_fail_doctor_and_the_summary_counts_it() -> None:
    text = format_checks([Check("database", True, "fine"),
                          Check("Salesforce emails", True, "no emails", "log them", warning=True)])

    assert text.splitlines() == ["✓ database: fine", "! Salesforce emails: no emails", "    fix: log them",
                                 "All 2 checks passed (1 warning: Salesforce emails)."]
