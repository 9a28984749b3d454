"""What sync keeps in the store, through the real clients and the sandboxes: each record once, deletions seen,
bad input quarantined with its reason while the rest goes on."""

from __future__ import annotations

import gc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.sandboxes.world import sf_datetime
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Clients
from worker.demo.harness import Sandboxes
from worker.store import Store
from worker.sync import sync_all
from worker.sync.cursor import ORIGIN, Cursor
from worker.sync.report import BudgetSpent, SyncReport
from worker.sync.salesforce import SALESFORCE_STREAMS, Window, _FirstPageAhead, sync_salesforce_stream


def _sync(store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> SyncReport:
    return sync_all(store, clock(), salesforce=clients.salesforce, zendesk=clients.zendesk, **_sources(settings))


def _sources(settings: Settings) -> dict[str, Any]:
    """The settings `sync_all` takes, by name, as the cycle passes them."""
    return {"usage_dir": settings.usage_dir, "salesforce_overlap": settings.salesforce_overlap,
            "salesforce_api_share": settings.salesforce_api_share, "zendesk_backfill": settings.zendesk_backfill}


def _account(sandboxes: Sandboxes, name: str = "Acme", website: str = "https://www.acme.example") -> str:
    owner = sandboxes.salesforce.insert("User", {"Name": "Dana", "Email": "dana@example.com"})
    return sandboxes.salesforce.insert("Account", {"Name": name, "OwnerId": owner, "Website": website})


def _meeting(sandboxes: Sandboxes, account: str, clock: ShiftedClock, subject: str, *, days_ago: int = 0) -> str:
    return sandboxes.salesforce.insert("Event", {"AccountId": account, "Subject": subject,
                                                 "ActivityDateTime": sf_datetime(clock() - timedelta(days=days_ago))})


def _activities(store: Store, account_id: str, kind: str) -> list[dict[str, object]]:
    return store.query("SELECT * FROM activities WHERE account_id = ? AND kind = ? AND is_deleted = 0",
                       (account_id, kind))


def test_an_email_logged_as_task_and_as_email_message_counts_once(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    at = sf_datetime(clock() - timedelta(days=1))
    task = sandboxes.salesforce.insert("Task", {"AccountId": account, "WhatId": account, "TaskSubtype": "Email",
                                                "Subject": "Email: renewal", "CompletedDateTime": at})
    sandboxes.salesforce.insert("EmailMessage", {"RelatedToId": account, "ActivityId": task, "Incoming": False,
                                                 "Subject": "renewal", "TextBody": "See you Tuesday",
                                                 "MessageDate": at})

    _sync(store, settings, clients, clock)

    emails = _activities(store, account, "email")
    assert len(emails) == 1
    assert emails[0]["text"] == "See you Tuesday"


def test_a_second_sync_re_reads_the_overlap_without_duplicating_anything(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    for day in range(3):
        _meeting(sandboxes, account, clock, "Sync", days_ago=day)
    _sync(store, settings, clients, clock)
    before = store.scalar("SELECT count(*) FROM activities")

    _sync(store, settings, clients, clock)

    assert store.scalar("SELECT count(*) FROM activities") == before
    assert len(_activities(store, account, "meeting")) == 3


def test_a_record_deleted_in_salesforce_stops_counting(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    meeting = _meeting(sandboxes, account, clock, "QBR")
    _sync(store, settings, clients, clock)
    sandboxes.salesforce.delete("Event", meeting)

    _sync(store, settings, clients, clock)

    assert _activities(store, account, "meeting") == []


def test_the_cursor_never_passes_the_start_of_the_run(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    sandboxes.salesforce.insert("Event", {"AccountId": account, "ActivityDateTime": sf_datetime(clock()),
                                          "SystemModstamp": sf_datetime(clock() + timedelta(hours=2))})
    started = clock()

    _sync(store, settings, clients, clock)

    cursor = Cursor.load(store.cursor("salesforce.Event"))
    assert cursor is not None and cursor.stamp <= started


def test_a_bad_usage_row_is_quarantined_with_file_and_line_and_the_rest_is_kept(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        usage_dir: Path) -> None:
    account = _account(sandboxes)
    (usage_dir / "usage.csv").write_text(
        "account_id,date,active_users,events,features_used,seats\n"
        f"{account},2026-01-01,5,50,api;sso,10\n"
        f"{account},2026-01-02,five,50,api,10\n"
        f"{account[:15]},2026-01-03,7,70,,10\n")

    report = _sync(store, settings, clients, clock)

    days = [r["day"] for r in store.query("SELECT day FROM usage_daily WHERE account_id = ? ORDER BY day",
                                          (account,))]
    assert days == ["2026-01-01", "2026-01-03"]
    reasons = [r["reason"] for r in store.query("SELECT reason FROM quarantine WHERE source = 'usage'")]
    assert reasons == ["usage.csv line 3: active_users: expected a whole number, got 'five'"]
    assert report.quarantined == 1


def test_a_later_usage_row_for_the_same_account_and_day_replaces_the_earlier(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        usage_dir: Path) -> None:
    account = _account(sandboxes)
    (usage_dir / "a.csv").write_text(f"account_id,date,active_users,events\n{account},2026-01-01,5,50\n")
    (usage_dir / "b.jsonl").write_text(
        f'{{"account_id": "{account}", "date": "2026-01-01", "active_users": 9, "events": 90, '
        f'"features_used": ["api"], "extra": "ignored"}}\n')

    _sync(store, settings, clients, clock)

    rows = store.query("SELECT active_users, features_used FROM usage_daily WHERE account_id = ?", (account,))
    assert rows == [{"active_users": 9, "features_used": '["api"]'}]


def test_a_zendesk_organization_maps_by_external_id_then_domain_and_the_rest_is_reported(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    by_id = _account(sandboxes, "Acme", "https://www.acme.example")
    by_domain = _account(sandboxes, "Globex", "globex.example")
    zd = sandboxes.zendesk
    zd.add_organization("Acme Inc", external_id=by_id)
    zd.add_organization("Globex", domain_names=["globex.example"])
    stranger = zd.add_organization("Initech", domain_names=["initech.example"])

    report = _sync(store, settings, clients, clock)

    mapped = {r["name"]: (r["account_id"], r["mapped_by"]) for r in
              store.query("SELECT name, account_id, mapped_by FROM zendesk_organizations")}
    assert mapped == {"Acme Inc": (by_id, "external_id"), "Globex": (by_domain, "domain"), "Initech": (None, None)}
    assert report.unmapped_organizations == [stranger]


def test_ticket_comments_are_inbound_only_when_the_customer_wrote_them(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    zd = sandboxes.zendesk
    org = zd.add_organization("Acme", external_id=account)
    customer = zd.add_user("Cy Customer", "cy@acme.example", organization_id=org)
    agent = zd.add_user("Al Agent", "al@support.example", role="agent")
    ticket = zd.add_ticket(subject="Broken", requester_id=customer, organization_id=org, priority="urgent",
                           created_at=clock() - timedelta(hours=5), description="It is broken again")
    zd.add_comment(ticket, author_id=agent, body="Looking into it", created_at=clock() - timedelta(hours=4))

    _sync(store, settings, clients, clock)

    comments = {r["text"]: r["direction"] for r in _activities(store, account, "ticket_comment")}
    assert comments == {"It is broken again": "in", "Looking into it": "out"}
    tickets = _activities(store, account, "ticket")
    assert [(t["priority"], t["status"]) for t in tickets] == [("urgent", "open")]


def test_an_activity_that_names_no_account_is_quarantined_and_the_rest_goes_on(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    orphan = sandboxes.salesforce.insert("Event", {"Subject": "Internal sync",
                                                   "ActivityDateTime": sf_datetime(clock())})
    _meeting(sandboxes, account, clock, "QBR")

    report = _sync(store, settings, clients, clock)

    assert len(_activities(store, account, "meeting")) == 1
    [bad] = store.query("SELECT source, stream, source_id, reason FROM quarantine")
    assert (bad["source"], bad["stream"], bad["source_id"]) == ("salesforce", "Event", orphan)
    assert "names no account" in bad["reason"]
    assert report.streams["salesforce.Event"].quarantined == 1


def test_sync_stops_salesforce_at_its_share_of_the_daily_api_limit_and_says_so(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    _account(sandboxes)
    sandboxes.salesforce.api_calls_used = int(sandboxes.salesforce.daily_api_limit * 0.6)

    report = _sync(store, settings, clients, clock)

    assert report.salesforce_limited
    assert report.api_share is not None and report.api_share >= 0.5
    assert "HEALTHBEAT_SALESFORCE_API_SHARE=50%" in " ".join(report.failed_streams.values())
    assert sum(s.api_calls for s in report.streams.values()) <= 2


def test_when_the_budget_runs_out_mid_stream_the_batches_read_are_stored_and_no_batch_more_is_asked_for(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    events = [sandboxes.salesforce.insert("Event", {"AccountId": account, "Subject": f"Call {i}",
                                                    "ActivityDateTime": sf_datetime(clock())}) for i in range(12)]
    salesforce = sandboxes.salesforce
    salesforce.batch_size = 5
    clients.salesforce.describe_fields("Event")  # described up front: the stream's first call is its query
    salesforce.daily_api_limit = 2 * (salesforce.api_calls_used + 1)  # the share is spent with the first batch
    stream = next(s for s in SALESFORCE_STREAMS if s.sobject == "Event")
    clock.offset += timedelta(minutes=1)  # the run starts after the events were written

    with pytest.raises(BudgetSpent):
        sync_salesforce_stream(store, clients.salesforce, stream, clock(), SyncReport(),
                               overlap=settings.salesforce_overlap, api_share=settings.salesforce_api_share)

    assert salesforce.api_calls_used == salesforce.daily_api_limit // 2  # the query, and no call after it
    assert {r["source_id"] for r in store.query("SELECT source_id FROM activities")} == set(events[:5])
    cursor = Cursor.load(store.cursor("salesforce.Event"))
    assert cursor is not None and cursor.id == events[4]


def test_a_usage_file_touched_without_change_is_not_read_again(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock,
        usage_dir: Path) -> None:
    account = _account(sandboxes)
    usage = usage_dir / "a.csv"
    usage.write_text(f"account_id,date,active_users,events\n{account},2026-01-01,5,50\n")
    _sync(store, settings, clients, clock)
    usage.write_text(usage.read_text())  # same bytes, new mtime

    report = _sync(store, settings, clients, clock)

    assert report.records.get("usage.files", 0) == 0


def test_retention_clears_old_text_but_keeps_the_sentiment_so_scores_do_not_move(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    from worker.scoring.sentiment import VaderModel, score_pending_texts
    from worker.store.retention import prune

    account = _account(sandboxes)
    for days in (400, 3):
        sandboxes.salesforce.insert("EmailMessage", {
            "RelatedToId": account, "Incoming": True, "TextBody": "Great work",
            "MessageDate": sf_datetime(clock() - timedelta(days=days))})
    _sync(store, settings, clients, clock)
    score_pending_texts(store, VaderModel())

    removed = prune(store, clock(), text_retention=settings.retention_text,
                    history_retention=settings.retention_history)

    rows = store.query("SELECT text, sentiment FROM activities WHERE kind = 'email' ORDER BY occurred_at")
    assert removed == {"texts": 1}
    assert rows[0]["text"] is None and rows[0]["sentiment"] is not None
    assert rows[1]["text"] == "Great work"


def test_records_sharing_one_stamp_are_read_once_not_again_every_cycle(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    stamp = sf_datetime(clock() - timedelta(days=3))  # a bulk update, long before this run
    for n in range(5):
        sandboxes.salesforce.insert("Account", {"Name": f"Bulk {n}", "SystemModstamp": stamp})
    first = _sync(store, settings, clients, clock)
    clock.offset += timedelta(minutes=15)

    second = _sync(store, settings, clients, clock)

    assert first.records["salesforce.Account"] == 5
    assert second.records.get("salesforce.Account", 0) == 0
    assert store.scalar("SELECT count(*) FROM accounts") == 5


def test_an_email_filed_under_an_opportunity_that_arrives_a_cycle_later_is_resolved_then(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    at = sf_datetime(clock() - timedelta(days=1))
    _sync(store, settings, clients, clock)
    assert store.cursor("salesforce.related_pending") is None  # nothing left to resolve: quiet cycles skip it
    opportunity = sandboxes.salesforce.insert("Opportunity", {"AccountId": account, "Name": "Renewal",
                                                              "StageName": "Prospecting", "CloseDate": "2030-01-01"})
    sandboxes.salesforce.insert("EmailMessage", {"RelatedToId": opportunity, "Incoming": True, "Subject": "Re",
                                                 "TextBody": "Hello", "MessageDate": at})

    _sync(store, settings, clients, clock)

    assert len(_activities(store, account, "email")) == 1
    assert store.cursor("salesforce.related_pending") is None


def test_an_account_that_arrives_later_claims_its_organization_though_no_organization_changed(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    sandboxes.zendesk.add_organization("Umbrella", domain_names=["umbrella.example"])
    first = _sync(store, settings, clients, clock)
    assert len(first.unmapped_organizations) == 1
    quiet = _sync(store, settings, clients, clock)  # nothing changed: the mapping is not worked out again
    assert quiet.unmapped_organizations == first.unmapped_organizations

    account = _account(sandboxes, "Umbrella", "https://umbrella.example")
    later = _sync(store, settings, clients, clock)

    assert later.unmapped_organizations == []
    assert store.scalar("SELECT account_id FROM zendesk_organizations WHERE name = 'Umbrella'") == account


def test_first_pages_asked_for_ahead_on_a_second_session_leave_one_call_per_stream_each_counted_by_its_stream(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _meeting(sandboxes, account, clock, "Kickoff", days_ago=2)
    _sync(store, settings, clients, clock)
    clock.offset += timedelta(minutes=15)
    before, calls_before = len(sandboxes.salesforce.calls), clients.salesforce.calls
    own_before = clients.salesforce.session_calls

    quiet = _sync(store, settings, clients, clock)

    made = [c for c in sandboxes.salesforce.calls[before:] if "/services/data/" in c.path]
    logins = [c for c in sandboxes.salesforce.calls[before:] if c.path.endswith("/oauth2/token")]
    per_stream = {name: s.api_calls for name, s in quiet.streams.items() if name.startswith("salesforce.")}
    assert per_stream == {f"salesforce.{s.sobject}": 1 for s in SALESFORCE_STREAMS}
    assert len(made) == clients.salesforce.calls - calls_before == len(SALESFORCE_STREAMS)
    assert clients.salesforce.session_calls - own_before == 1  # the first stream's; the others' came ahead
    assert len(logins) == 1  # this cycle's; the second session is kept between cycles


def test_a_first_page_asked_for_ahead_for_a_stream_then_skipped_fails_no_other_stream(
        sandboxes: Sandboxes, settings: Settings, clients: Clients) -> None:
    sandboxes.salesforce.fail_next(400, "MALFORMED_QUERY", "unexpected token", path_contains="/query")
    ahead = _FirstPageAhead(clients.salesforce.sibling(), api_share=settings.salesforce_api_share)
    event = next(s for s in SALESFORCE_STREAMS if s.sobject == "Event")

    ahead.start(event, Window(None, ORIGIN), None)

    assert ahead.take("Case", "SELECT Id FROM Case") is None  # Event's refusal is not Case's
    assert ahead.close() == {"Event": 2}  # its describe and its refused query, still counted


def _account_index_exists(store: Store) -> bool:
    return bool(store.scalar("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'activities_account'"))


def _index_seen_by_stream(store: Store, seen: dict[str, bool]) -> Callable[[str, int], None]:
    """A progress callback noting, at each stream's first stored page, whether the account index was there."""
    def progress(stream: str, _read: int) -> None:
        seen.setdefault(stream, _account_index_exists(store))
    return progress


def test_a_first_backfill_stores_activities_without_the_account_index_and_builds_it_at_the_end(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _meeting(sandboxes, account, clock, "Kickoff", days_ago=2)
    seen: dict[str, bool] = {}

    sync_all(store, clock(), salesforce=clients.salesforce, zendesk=None, **_sources(settings),
             progress=_index_seen_by_stream(store, seen))

    assert seen["salesforce.Event"] is False
    assert _account_index_exists(store)
    assert [a["subject"] for a in _activities(store, account, "meeting")] == ["Kickoff"]


def test_a_later_sync_stores_activities_with_the_account_index_in_place(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    account = _account(sandboxes)
    _meeting(sandboxes, account, clock, "Kickoff", days_ago=2)
    _sync(store, settings, clients, clock)
    _meeting(sandboxes, account, clock, "Review", days_ago=1)
    clock.offset += timedelta(minutes=15)
    seen: dict[str, bool] = {}

    sync_all(store, clock(), salesforce=clients.salesforce, zendesk=None, **_sources(settings),
             progress=_index_seen_by_stream(store, seen))

    assert seen["salesforce.Event"] is True


def test_python_s_cyclic_collector_is_off_while_salesforce_pages_are_stored_and_on_again_after(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    _account(sandboxes)
    seen: list[bool] = []

    sync_all(store, clock(), salesforce=clients.salesforce, zendesk=None, **_sources(settings),
             progress=lambda _stream, _read: seen.append(gc.isenabled()))

    assert seen and not any(seen)
    assert gc.isenabled()


def test_a_sync_leaves_the_cyclic_collector_off_when_it_was_off_before(
        sandboxes: Sandboxes, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock) -> None:
    _account(sandboxes)
    gc.disable()
    try:
        _sync(store, settings, clients, clock)
        still_off = not gc.isenabled()
    finally:
        gc.enable()
    assert still_off
