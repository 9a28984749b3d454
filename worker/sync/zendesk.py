"""Zendesk: tickets and their comments from the incremental export, organizations mapped to accounts."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from urllib.parse import urlparse

from connectors.salesforce.ids import to_18
from connectors.zendesk.client import ZendeskAuthError, ZendeskClient, ZendeskError, ZendeskNotFound
from connectors.zendesk.records import BadRecord, ZendeskComment, ZendeskOrganization, ZendeskTicket
from worker.store import Quarantined, Store, iso, parse_iso
from worker.sync.report import Row, SyncReport

log = logging.getLogger(__name__)

def sync_zendesk(store: Store, client: ZendeskClient, now: datetime, report: SyncReport, *,
                 backfill: timedelta = timedelta(days=365)) -> None:
    try:
        client.verify()
        _sync_tickets(store, client, now, report, backfill)
        if _organizations_due(store, now):
            _sync_organizations(store, client, now, report)
        map_organizations(store, report, now)
    except ZendeskAuthError as exc:
        report.failed_streams["zendesk"] = str(exc)
        log.error("sync zendesk: %s", exc)
    except ZendeskError as exc:
        report.failed_streams["zendesk.tickets"] = str(exc)
        log.error("sync zendesk failed: %s; next cycle resumes from the cursor", exc)
    report.api_calls["zendesk"] = client.calls


ORGANIZATIONS_REFRESH = timedelta(hours=6)


def _organizations_due(store: Store, now: datetime) -> bool:
    """Organizations change rarely and are listed whole (no incremental export for them here): read them
    every few hours (so a new Account can claim an organization by domain within that time), and at once
    when a ticket names an organization the store does not know."""
    last = store.cursor("zendesk.organizations")
    if last is None or parse_iso(last) + ORGANIZATIONS_REFRESH <= now:
        return True
    return bool(store.scalar(
        "SELECT 1 FROM activities WHERE source = 'zendesk' AND kind = 'ticket' AND related_id IS NOT NULL "
        "AND related_id NOT IN (SELECT 'org:' || id FROM zendesk_organizations) LIMIT 1"))


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
    with store.transaction():
        store.upsert("zendesk_organizations", rows, ("id",))
        store.quarantine(bad, now)
        store.save_cursor("zendesk.organizations", iso(now), len(rows), now)
    report.add("zendesk.organizations", len(rows))
    report.quarantined += len(bad)


_MAPPED_FROM = "zendesk.mapped_from"


def _mapping_inputs(store: Store) -> str:
    """What the mapping depends on, in a few numbers: the accounts (any change moves their modstamp) and the
    organizations (stored only by `_sync_organizations`)."""
    accounts = store.conn.execute("SELECT count(*), max(modstamp) FROM accounts").fetchone()
    organizations = store.conn.execute(
        "SELECT count(*), total(id), group_concat(coalesce(external_id, '') || coalesce(domains, ''), '|') "
        "FROM zendesk_organizations").fetchone()
    return hashlib.sha256(json.dumps([*accounts, *organizations]).encode()).hexdigest()


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
            conn.execute("""
                UPDATE activities SET account_id = (SELECT z.account_id FROM zendesk_organizations z
                                                    WHERE 'org:' || z.id = activities.related_id)
                WHERE source = 'zendesk' AND account_id IS NOT (
                    SELECT z.account_id FROM zendesk_organizations z WHERE 'org:' || z.id = activities.related_id)""")
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


def _sync_tickets(store: Store, client: ZendeskClient, now: datetime, report: SyncReport,
                  backfill: timedelta) -> None:
    name = "zendesk.tickets"
    cursor = store.cursor(name)
    known_roles = {r["source_id"]: r["role"] for r in
                   store.query("SELECT source_id, role FROM users WHERE source = 'zendesk'")}
    for page in client.ticket_pages(cursor=cursor, start_time=now - backfill):
        tickets = [t for t in page.tickets if isinstance(t, ZendeskTicket)]
        bad = [Quarantined("zendesk", "tickets", None, t.reason, t.raw)
               for t in page.tickets if isinstance(t, BadRecord)]
        comments = {t.id: _comments(client, t.id) for t in tickets if not t.is_deleted}
        authors = {c.author_id for cs in comments.values() for c in cs if str(c.author_id) not in known_roles}
        users = client.users(authors) if authors else []
        for user in users:
            known_roles[str(user.id)] = user.role
        with store.transaction() as conn:
            store.upsert("users", [{"source": "zendesk", "source_id": str(u.id), "name": u.name,
                                    "email": u.email, "role": u.role, "timezone": None, "is_active": 1,
                                    "modstamp": iso(now)} for u in users], ("source", "source_id"))
            store.upsert("activities", [_ticket_row(t) for t in tickets], ("source", "source_id"))
            rows = [_comment_row(t, c, known_roles) for t in tickets for c in comments.get(t.id, [])]
            store.upsert("activities", rows, ("source", "source_id"))
            deleted = [str(t.id) for t in tickets if t.is_deleted]
            conn.executemany("UPDATE activities SET is_deleted = 1 WHERE source = 'zendesk' AND parent_id = ?",
                             [(d,) for d in deleted])
            conn.execute("""
                UPDATE activities SET account_id = (SELECT z.account_id FROM zendesk_organizations z
                                                    WHERE 'org:' || z.id = activities.related_id)
                WHERE source = 'zendesk' AND account_id IS NULL AND related_id IS NOT NULL""")
            store.quarantine(bad, now)
            store.save_cursor(name, page.after_cursor or cursor, len(page.tickets), now)
        cursor = page.after_cursor or cursor
        report.add(name, len(tickets))
        report.add("zendesk.comments", len(rows))
        report.quarantined += len(bad)


def _comments(client: ZendeskClient, ticket_id: int) -> list[ZendeskComment]:
    """A ticket deleted between the export and this call has no comments left to count."""
    try:
        return client.ticket_comments(ticket_id)
    except ZendeskNotFound:
        return []


def _ticket_row(t: ZendeskTicket) -> Row:
    return {"source": "zendesk", "source_id": f"ticket:{t.id}", "kind": "ticket", "account_id": None,
            "related_id": f"org:{t.organization_id}" if t.organization_id else None, "parent_id": None,
            "occurred_at": iso(t.created_at), "direction": "in", "subject": t.subject, "text": None,
            "text_hash": None, "sentiment": None, "status": t.status, "priority": t.priority,
            "closed_at": iso(t.updated_at) if t.status in ("solved", "closed") else None,
            "is_deleted": 1 if t.is_deleted else 0, "modstamp": iso(t.updated_at)}


def _comment_row(t: ZendeskTicket, c: ZendeskComment, roles: dict[str, str]) -> Row:
    """Inbound means the customer wrote it: the author's role decides, not who opened the ticket."""
    role = roles.get(str(c.author_id))
    return {"source": "zendesk", "source_id": f"comment:{c.id}", "kind": "ticket_comment",
            "account_id": None, "related_id": f"org:{t.organization_id}" if t.organization_id else None,
            "parent_id": str(t.id), "occurred_at": iso(c.created_at),
            "direction": "in" if role == "end-user" else "out", "subject": None, "text": c.body,
            "text_hash": None, "sentiment": None, "status": None, "priority": None, "closed_at": None,
            "is_deleted": 0, "modstamp": iso(t.updated_at)}
