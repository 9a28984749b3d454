"""Zendesk: tickets from the incremental ticket export, their comments from the ticket event export,
organizations mapped to accounts.

What it costs, in Zendesk calls (the account's per-minute limit is shared with the customer's other
integrations): a backfill is about tickets/1,000 export pages, events/1,000 event pages, organizations/100
pages and comment authors/100 user lookups, plus `users/me`; a quiet cycle is one page of each export.
Comments come in bulk from the ticket events (a thousand a call), never one call per ticket; the per-ticket
comments endpoint is kept for one repair (`_repair_comments`).

Two streams, two positions, each stored with the page it belongs to: `zendesk.tickets` (Zendesk's export
cursor) and `zendesk.ticket_events` (the next `start_time`, and the `origin` the event stream started from).
A ticket's `closed_at` is its true solve time, the metric set's `solved_at`: Zendesk closes a solved ticket
days later (by default "Close ticket 4 days after status is set to solved"), and that moves `updated_at`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlparse

from connectors.salesforce.ids import to_18
from connectors.zendesk.client import ZendeskAuthError, ZendeskClient, ZendeskError, ZendeskNotFound
from connectors.zendesk.events import TicketMetrics
from connectors.zendesk.records import BadRecord, ZendeskComment, ZendeskOrganization, ZendeskTicket
from worker.store import Quarantined, Store, changes, iso, parse_iso
from worker.sync.report import Row, SyncReport

log = logging.getLogger(__name__)

TICKETS = "zendesk.tickets"
EVENTS = "zendesk.ticket_events"
COMMENTS = "zendesk.comments"
# How far before the newest ticket stored a refused cursor's export restarts, and an event stream first
# starts on a store an older Healthbeat filled: tickets stamped in the same second, clocks a little apart.
RESTART_OVERLAP = timedelta(hours=1)
REPAIRS_PER_CYCLE = 100  # per-ticket comment reads at most, each a call: a repair must not become a backfill
_REPAIR_MARGIN = timedelta(minutes=1)  # a ticket created this close to the events' position may not be read yet


def sync_zendesk(store: Store, client: ZendeskClient, now: datetime, report: SyncReport, *,
                 backfill: timedelta = timedelta(days=365)) -> None:
    stream = TICKETS
    try:
        client.verify()
        events = _EventStream.load(store, now, backfill)  # before this cycle stores any ticket
        exported = _sync_tickets(store, client, now, report, backfill)
        stream = COMMENTS
        _sync_comments(store, client, now, report, events, exported)
        stream = "zendesk.organizations"
        if _organizations_due(store, now):
            _sync_organizations(store, client, now, report)
        map_organizations(store, report, now)
    except ZendeskAuthError as exc:
        report.failed_streams["zendesk"] = str(exc)
        log.error("sync zendesk: %s", exc)
    except ZendeskError as exc:
        report.failed_streams[stream] = str(exc)
        log.error("sync %s failed: %s; next cycle resumes from its stored position", stream, exc)
    report.api_calls["zendesk"] = client.calls


ORGANIZATIONS_REFRESH = timedelta(hours=6)


def _organizations_due(store: Store, now: datetime) -> bool:
    """Organizations change rarely and are listed whole (no incremental export for them here): read them
    every few hours (so a new Account can claim an organization by domain within that time), and at once
    when a ticket names an organization the store does not know.

    Such a ticket has no account (an account comes only from a known organization), so the check reads the
    activities without one, through an index, rather than every Zendesk activity each cycle: a quiet cycle's
    cost must not grow with the tickets stored."""
    last = store.cursor("zendesk.organizations")
    if last is None or parse_iso(last) + ORGANIZATIONS_REFRESH <= now:
        return True
    return bool(store.scalar(
        "SELECT 1 FROM activities WHERE account_id IS NULL AND related_id IS NOT NULL AND +source = 'zendesk' "
        "AND +kind = 'ticket' AND related_id NOT IN (SELECT 'org:' || id FROM zendesk_organizations) LIMIT 1"))


def _domain(website: str | None) -> str | None:
    if not website:
        return None
    host = urlparse(website if "://" in website else f"https://{website}").hostname or ""
    return host.removeprefix("www.").lower() or None


def _sync_organizations(store: Store, client: ZendeskClient, now: datetime, report: SyncReport) -> None:
    """Read every organization (when due) and keep it as Zendesk has it; mapping is a separate, local step."""
    rows: list[Row] = []
    bad: list[Quarantined] = []
    for item in client.organizations():
        if isinstance(item, BadRecord):
            bad.append(Quarantined("zendesk", "organizations", None, item.reason, item.raw))
            continue
        rows.append({"id": item.id, "name": item.name, "external_id": item.external_id,
                     "domains": json.dumps(list(item.domain_names))})
    listed = hashlib.sha256(json.dumps(sorted((r["id"], r["external_id"], r["domains"]) for r in rows)).encode())
    with report.storing("zendesk.organizations"), store.transaction():
        store.upsert("zendesk_organizations", rows, ("id",))
        store.quarantine(bad, now)
        store.save_cursor("zendesk.organizations", iso(now), len(rows), now)
        store.save_cursor(_ORGANIZATIONS_LISTED, listed.hexdigest(), len(rows), now)
    report.add("zendesk.organizations", len(rows))
    report.quarantined += len(bad)


_MAPPED_FROM = "zendesk.mapped_from"
_ORGANIZATIONS_LISTED = "zendesk.organizations_listed"  # a digest of what the last listing stored


def _mapping_inputs(store: Store) -> str:
    """What the mapping depends on, in a few numbers read from indexes and cursors, never from every row (it is
    asked each cycle): the accounts (any change moves their modstamp) and the organizations (stored only by
    `_sync_organizations`, which keeps a digest of what it stored)."""
    inputs = [*changes.accounts_moved(store), store.cursor(_ORGANIZATIONS_LISTED)]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def map_organizations(store: Store, report: SyncReport, now: datetime) -> None:
    """Map each stored organization to an Account by external id, else by domain; never guess beyond that.

    Local (no API call), so it runs in any cycle where an account or an organization changed: an Account
    that arrives later claims its organization and that organization's tickets at once."""
    inputs = _mapping_inputs(store)
    if store.cursor(_MAPPED_FROM) == inputs:
        report.unmapped_organizations = [int(r["id"]) for r in store.query(
            "SELECT id FROM zendesk_organizations WHERE account_id IS NULL ORDER BY id")]
        return
    accounts = {r["id"]: _domain(r["website"]) for r in
                store.query("SELECT id, website FROM accounts WHERE is_deleted = 0")}
    by_domain: dict[str, str] = {}
    for account_id, domain in accounts.items():
        if domain:
            by_domain.setdefault(domain, account_id)
    mapped = []
    for org in store.query("SELECT id, name, external_id, domains, account_id, mapped_by FROM zendesk_organizations"):
        found = ZendeskOrganization(int(org["id"]), org["name"] or "", org["external_id"],
                                    tuple(json.loads(org["domains"] or "[]")))
        account_id, mapped_by = _map_organization(found, accounts, by_domain)
        if (account_id, mapped_by) != (org["account_id"], org["mapped_by"]):
            mapped.append((account_id, mapped_by, org["id"]))
    with store.transaction() as conn:
        conn.executemany("UPDATE zendesk_organizations SET account_id = ?, mapped_by = ? WHERE id = ?", mapped)
        if mapped:
            # The organization by its key (`'org:' || z.id = related_id` compared every organization with every
            # activity: minutes for a year of a large account's tickets).
            conn.execute("""
                UPDATE activities SET account_id = (
                    SELECT z.account_id FROM zendesk_organizations z
                    WHERE z.id = CAST(substr(activities.related_id, 5) AS INTEGER))
                WHERE source = 'zendesk' AND account_id IS NOT (
                    SELECT z.account_id FROM zendesk_organizations z
                    WHERE z.id = CAST(substr(activities.related_id, 5) AS INTEGER))""")
        store.save_cursor(_MAPPED_FROM, inputs, 0, now)
    report.unmapped_organizations = [int(r["id"]) for r in store.query(
        "SELECT id FROM zendesk_organizations WHERE account_id IS NULL ORDER BY id")]
    if mapped and report.unmapped_organizations:
        log.warning("zendesk: %d organizations have no Salesforce account (ids %s); their tickets are "
                    "not scored until mapped", len(report.unmapped_organizations),
                    ", ".join(map(str, report.unmapped_organizations[:20])))


def _map_organization(org: ZendeskOrganization, accounts: dict[str, str | None],
                      by_domain: dict[str, str]) -> tuple[str | None, str | None]:
    if org.external_id:
        candidate = org.external_id.strip()
        if len(candidate) in (15, 18):
            full = to_18(candidate) if len(candidate) == 15 else candidate
            if full in accounts:
                return full, "external_id"
    for domain in org.domain_names:
        match = by_domain.get(domain.lower().removeprefix("www."))
        if match:
            return match, "domain"
    return None, None


def _newest_ticket_update(store: Store) -> datetime | None:
    """The latest `updated_at` of a Zendesk ticket in the store (a range of the primary key: tickets only)."""
    newest = store.scalar("SELECT max(modstamp) FROM activities WHERE source = 'zendesk' "
                          "AND source_id >= 'ticket:' AND source_id < 'ticket;'")
    return parse_iso(newest) if newest else None


@dataclass
class _Exported:
    """What the ticket export of this cycle saw: each live ticket's creation time (for `_missed`), and the
    requesters (the authors of most comments, looked up a hundred at a time before the events come)."""

    created: dict[int, datetime] = field(default_factory=dict)
    requesters: set[int] = field(default_factory=set)


def _sync_tickets(store: Store, client: ZendeskClient, now: datetime, report: SyncReport,
                  backfill: timedelta) -> _Exported:
    """Store each page of changed tickets with the export cursor.

    Without a cursor the export starts `backfill` ago. With one, Zendesk may refuse it (expired or invalid):
    the client then restarts once from the time given here, the newest ticket already stored less an overlap,
    so a refused cursor costs a few pages, not a year's export again."""
    cursor = store.cursor(TICKETS)
    start = now - backfill
    newest = _newest_ticket_update(store) if cursor is not None else None
    if newest is not None:
        start = max(start, newest - RESTART_OVERLAP)
    exported = _Exported()
    for page in client.ticket_pages(cursor=cursor, start_time=start):
        with report.storing(TICKETS):
            tickets = [t for t in page.tickets if isinstance(t, ZendeskTicket)]
            bad = [Quarantined("zendesk", "tickets", None, t.reason, t.raw)
                   for t in page.tickets if isinstance(t, BadRecord)]
            solved = _solve_times(store, tickets, page.metrics)
            rows = [_ticket_row(t, solved.get(t.id)) for t in tickets]
            with store.transaction() as conn:
                store.upsert("activities", rows, ("source", "source_id"))
                # A ticket's comments follow it: to the organization (and account) it now has, and out when deleted.
                conn.executemany(
                    "UPDATE activities SET related_id = ?, account_id = NULL WHERE source = 'zendesk' "
                    "AND parent_id = ? AND kind = 'ticket_comment' AND related_id IS NOT ?",
                    [(row["related_id"], str(t.id), row["related_id"]) for t, row in zip(tickets, rows, strict=True)])
                conn.executemany("UPDATE activities SET is_deleted = 1 WHERE source = 'zendesk' AND parent_id = ? "
                                 "AND is_deleted = 0", [(str(t.id),) for t in tickets if t.is_deleted])
                _map_new_activities(conn, (row["related_id"] for row in rows))
                store.quarantine(bad, now)
                store.save_cursor(TICKETS, page.after_cursor or cursor, len(page.tickets), now)
        cursor = page.after_cursor or cursor
        exported.created.update((t.id, t.created_at) for t in tickets if not t.is_deleted)
        exported.requesters.update(t.requester_id for t in tickets if t.requester_id is not None)
        report.add(TICKETS, len(tickets))
        report.quarantined += len(bad)
    return exported


def _solve_times(store: Store, tickets: list[ZendeskTicket], metrics: Mapping[int, TicketMetrics]) -> dict[int, str]:
    """When each solved or closed ticket was solved: its metric set's `solved_at`; without one, the time
    already stored (it was solved then: a close later moves only `updated_at`), else `updated_at`."""
    solved: dict[int, str] = {}
    missing: list[ZendeskTicket] = []
    for t in tickets:
        if t.status not in ("solved", "closed"):
            continue
        found = metrics.get(t.id)
        if found is not None and found.solved_at is not None:
            solved[t.id] = iso(found.solved_at)
        else:
            missing.append(t)
    if missing:
        keys = [f"ticket:{t.id}" for t in missing]
        stored = {r["source_id"]: r["closed_at"] for r in store.query(
            f"SELECT source_id, closed_at FROM activities WHERE source = 'zendesk' "
            f"AND source_id IN ({', '.join('?' * len(keys))})", keys)}
        for t, key in zip(missing, keys, strict=True):
            solved[t.id] = stored.get(key) or iso(t.updated_at)
    return solved


def _map_new_activities(conn: sqlite3.Connection, related_ids: Iterable[str | None]) -> None:
    """Give the Zendesk activities of these organizations that have no account the account their organization
    is mapped to. Only these: on a first backfill no organization is known yet (they are read after the
    tickets) and every activity waits without an account, so a scan of all of them per page grew with the
    square of the backfill; `map_organizations` maps them all at the end, once."""
    orgs = sorted({int(r.removeprefix("org:")) for r in related_ids if r})
    pairs: list[tuple[str, str]] = []
    for start in range(0, len(orgs), 500):
        chunk = orgs[start:start + 500]
        pairs += [(account, f"org:{org}") for org, account in conn.execute(
            f"SELECT id, account_id FROM zendesk_organizations WHERE account_id IS NOT NULL "
            f"AND id IN ({', '.join('?' * len(chunk))})", chunk)]
    conn.executemany("UPDATE activities SET account_id = ? WHERE source = 'zendesk' AND account_id IS NULL "
                     "AND related_id = ?", pairs)


@dataclass(frozen=True)
class _EventStream:
    """Where the ticket event export goes on from (`start`), and where it first started (`origin`)."""

    start: datetime
    origin: datetime

    def dump(self) -> str:
        return json.dumps({"start": iso(self.start), "origin": iso(self.origin)}, sort_keys=True)

    @classmethod
    def load(cls, store: Store, now: datetime, backfill: timedelta) -> _EventStream:
        """The stored position; else, on a first backfill, `backfill` ago (comments reach as far back as
        tickets); else (the store holds tickets whose comments an older Healthbeat read one ticket at a time)
        from the newest ticket stored less an overlap, so that upgrading costs no second backfill."""
        text = store.cursor(EVENTS)
        if text:
            try:
                data = json.loads(text)
                return cls(parse_iso(data["start"]), parse_iso(data["origin"]))
            except (ValueError, TypeError, KeyError, AttributeError):
                log.warning("zendesk: the stored position of the ticket events (%r) is unreadable; going on from "
                            "the newest ticket stored", text[:100])
        newest = _newest_ticket_update(store)
        origin = now - backfill if newest is None else max(now - backfill, newest - RESTART_OVERLAP)
        return cls(origin, origin)


def _sync_comments(store: Store, client: ZendeskClient, now: datetime, report: SyncReport, stream: _EventStream,
                   exported: _Exported) -> None:
    """Store the comments of each page of ticket events with the position after it; then repair."""
    roles = {r["source_id"]: r["role"] for r in
             store.query("SELECT source_id, role FROM users WHERE source = 'zendesk'")}
    _learn_roles(store, client, now, roles, exported.requesters)
    position = stream.start
    unread: set[int] = set()
    for page in client.ticket_event_pages(start_time=stream.start):
        comments = [c for c in page.comments if isinstance(c, ZendeskComment)]
        bad = [Quarantined("zendesk", "ticket_events", None, b.reason, b.raw)
               for b in page.comments if isinstance(b, BadRecord)]
        stored = _store_comments(store, client, now, report, comments, roles, bad=bad,
                                 position=_EventStream(page.next_start, stream.origin))
        unread |= page.unread_tickets
        position = page.next_start
        report.add(COMMENTS, stored)
        report.quarantined += len(bad)
    _repair_comments(store, client, now, report, roles,
                     _missed(store, exported.created, stream.origin, position) | unread)


def _store_comments(store: Store, client: ZendeskClient, now: datetime, report: SyncReport,
                    comments: list[ZendeskComment], roles: dict[str, str], *, bad: Iterable[Quarantined] = (),
                    position: _EventStream | None = None) -> int:
    """Store the new comments (their authors looked up once) under their tickets, in one transaction with the
    event stream's new `position` when given; return how many were new. A ticket not stored yet leaves its
    comments without an organization until it comes: `_sync_tickets` then points them at it.

    A comment stored already is left as it is: a comment does not change once made, and the event export
    repeats the events at each page's edge, so writing it again would only clear its sentiment and mark its
    account for scoring, every cycle."""
    with report.storing(COMMENTS):
        comments = _new_comments(store, comments)
    _learn_roles(store, client, now, roles, {c.author_id for c in comments})  # Zendesk's time, not the store's
    with report.storing(COMMENTS):
        tickets = _stored_tickets(store, {c.ticket_id for c in comments})
        rows = [_comment_row(c, *tickets.get(c.ticket_id, (None, 0)), roles) for c in comments]
        with store.transaction():
            store.insert_missing("activities", rows)
            _map_new_activities(store.conn, (row["related_id"] for row in rows))
            store.quarantine(bad, now)
            if position is not None:
                store.save_cursor(EVENTS, position.dump(), len(rows), now)
    return len(rows)


def _new_comments(store: Store, comments: list[ZendeskComment]) -> list[ZendeskComment]:
    """The comments not stored yet (a lookup by key each)."""
    stored: set[str] = set()
    keys = [f"comment:{c.id}" for c in comments]
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        stored.update(r["source_id"] for r in store.query(
            "SELECT source_id FROM activities WHERE source = 'zendesk' "
            f"AND source_id IN ({', '.join('?' * len(chunk))})", chunk))
    return [c for c, key in zip(comments, keys, strict=True) if key not in stored]


def _learn_roles(store: Store, client: ZendeskClient, now: datetime, roles: dict[str, str], ids: set[int]) -> None:
    """Look up the users among `ids` whose role is not known yet (a hundred a call) and keep them."""
    users = client.users(i for i in ids if str(i) not in roles)
    if not users:
        return
    for user in users:
        roles[str(user.id)] = user.role
    with store.transaction():
        store.upsert("users", [{"source": "zendesk", "source_id": str(u.id), "name": u.name, "email": u.email,
                                "role": u.role, "timezone": None, "is_active": 1, "modstamp": iso(now)}
                               for u in users], ("source", "source_id"))


def _stored_tickets(store: Store, ids: set[int]) -> dict[int, tuple[str | None, int]]:
    """The stored tickets among `ids`: each one's organization (`related_id`) and whether it is deleted."""
    found: dict[int, tuple[str | None, int]] = {}
    keys = [f"ticket:{i}" for i in sorted(ids)]
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        for row in store.query("SELECT source_id, related_id, is_deleted FROM activities "
                               f"WHERE source = 'zendesk' AND source_id IN ({', '.join('?' * len(chunk))})", chunk):
            found[int(row["source_id"].removeprefix("ticket:"))] = (row["related_id"], int(row["is_deleted"]))
    return found


def _missed(store: Store, exported: Mapping[int, datetime], origin: datetime, position: datetime) -> set[int]:
    """Tickets this cycle exported whose events the event stream should have brought, and did not: created
    since the stream's origin and before its position, without a single comment stored. Every Zendesk ticket
    opens with a comment (its description), made in the event that created it."""
    candidates = [str(i) for i, created in exported.items() if origin <= created < position - _REPAIR_MARGIN]
    having: set[str] = set()
    for start in range(0, len(candidates), 500):
        chunk = candidates[start:start + 500]
        having.update(r["parent_id"] for r in store.query(
            "SELECT DISTINCT parent_id FROM activities WHERE source = 'zendesk' "
            f"AND kind = 'ticket_comment' AND parent_id IN ({', '.join('?' * len(chunk))})", chunk))
    return {int(i) for i in candidates if i not in having}


def _repair_comments(store: Store, client: ZendeskClient, now: datetime, report: SyncReport,
                     roles: dict[str, str], tickets: set[int]) -> None:
    """Read the comments of tickets whose events were missed, one ticket a call (the per-ticket endpoint).

    When: a ticket this cycle exported, created after the event stream began and before its position, has
    no comment stored (the event that created it never came); or an event named a comment without giving its
    text. At most `REPAIRS_PER_CYCLE` a cycle; the others are named in the log and wait until they change."""
    if not tickets:
        return
    chosen = sorted(tickets)[:REPAIRS_PER_CYCLE]
    later = len(tickets) - len(chosen)
    log.warning("zendesk: reading the comments of %d tickets one by one, as their events were missed (%s)%s",
                len(chosen), ", ".join(map(str, chosen[:20])),
                f"; {later} more wait until they next change" if later else "")
    comments: list[ZendeskComment] = []
    for ticket_id in chosen:
        try:
            comments += client.ticket_comments(ticket_id)
        except ZendeskNotFound:  # deleted since the export: no comments left to count
            continue
    report.add(COMMENTS, _store_comments(store, client, now, report, comments, roles))


def _ticket_row(t: ZendeskTicket, solved_at: str | None) -> Row:
    """`closed_at` is when the ticket stopped waiting on the support team: its solve time, not its close."""
    return {"source": "zendesk", "source_id": f"ticket:{t.id}", "kind": "ticket", "account_id": None,
            "related_id": f"org:{t.organization_id}" if t.organization_id else None, "parent_id": None,
            "occurred_at": iso(t.created_at), "direction": "in", "subject": t.subject, "text": None,
            "text_hash": None, "sentiment": None, "status": t.status, "priority": t.priority,
            "closed_at": solved_at if t.status in ("solved", "closed") else None,
            "is_deleted": 1 if t.is_deleted else 0, "modstamp": iso(t.updated_at)}


def _comment_row(c: ZendeskComment, related_id: str | None, deleted: int, roles: dict[str, str]) -> Row:
    """Inbound means the customer wrote it: the author's role decides, not who opened the ticket. The row takes
    its ticket's organization and deletion as stored (`_sync_tickets` keeps them in step afterwards)."""
    role = roles.get(str(c.author_id))
    return {"source": "zendesk", "source_id": f"comment:{c.id}", "kind": "ticket_comment",
            "account_id": None, "related_id": related_id, "parent_id": str(c.ticket_id),
            "occurred_at": iso(c.created_at), "direction": "in" if role == "end-user" else "out", "subject": None,
            "text": c.body, "text_hash": None, "sentiment": None, "status": None, "priority": None,
            "closed_at": None, "is_deleted": deleted, "modstamp": iso(c.created_at)}
