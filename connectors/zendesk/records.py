"""Plain records the Zendesk client yields, and the functions that build them from API JSON.

The store and the scorer never see Zendesk JSON: they see these frozen dataclasses, so a
change in Zendesk's payloads is absorbed here and nowhere else.

Parsing is strict about what Healthbeat relies on (ids, timestamps, flags) and lenient about
the rest (an unknown ``status`` string is kept as is; a lone UTF-16 surrogate, which a JSON
``\\ud800`` escape can carry but no database or UTF-8 file can hold, becomes U+FFFD). A record
that fails the strict part raises :class:`ZendeskRecordError`; streaming callers turn that into
a :class:`BadRecord` so one broken record is quarantined with its reason instead of stopping a
whole sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "BadRecord",
    "ZendeskComment",
    "ZendeskOrganization",
    "ZendeskRecordError",
    "ZendeskTicket",
    "ZendeskUser",
    "optional_timestamp",
    "parse_comment",
    "parse_organization",
    "parse_ticket",
    "parse_user",
]


class ZendeskRecordError(ValueError):
    """A Zendesk JSON object lacks a field Healthbeat needs, or holds it in an unusable form.

    Deliberately outside the client's ``ZendeskError`` tree: it says nothing about the
    connection, only about one record, and the client never lets it escape an iteration.
    """


@dataclass(frozen=True)
class BadRecord:
    """A record that failed to parse, kept with its raw JSON so the store can quarantine it.

    ``kind`` is the record type ("ticket", "organization"); ``raw`` is the object exactly as
    Zendesk sent it; ``reason`` is the parse error in words.
    """

    kind: str
    raw: Mapping[str, Any]
    reason: str


@dataclass(frozen=True)
class ZendeskTicket:
    """One ticket as of its ``updated_at``; a deleted ticket still arrives, flagged by status."""

    id: int
    subject: str
    status: str
    priority: str | None
    requester_id: int | None
    organization_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_deleted(self) -> bool:
        """Deleted tickets stay in the incremental export so the store can drop them."""
        return self.status == "deleted"


@dataclass(frozen=True)
class ZendeskComment:
    """One comment on a ticket; ``public`` is False for internal notes between agents."""

    id: int
    ticket_id: int
    author_id: int
    body: str
    public: bool
    created_at: datetime


@dataclass(frozen=True)
class ZendeskUser:
    """A Zendesk user; the role tells a customer's words from an agent's."""

    id: int
    name: str
    email: str | None
    role: str
    organization_id: int | None

    @property
    def is_customer(self) -> bool:
        """End users are the customer side of a conversation; agents and admins are ours."""
        return self.role == "end-user"


@dataclass(frozen=True)
class ZendeskOrganization:
    """A Zendesk organization; ``external_id`` or a domain maps it to a Salesforce Account."""

    id: int
    name: str
    external_id: str | None
    domain_names: tuple[str, ...]


def parse_ticket(raw: Mapping[str, Any]) -> ZendeskTicket:
    """Build a ticket from incremental-export JSON; raise ZendeskRecordError if it is unusable."""
    return ZendeskTicket(
        id=_id(raw, "id"),
        subject=_text(raw, "subject", default=""),
        status=_text(raw, "status"),
        priority=_optional_text(raw, "priority"),
        requester_id=_optional_id(raw, "requester_id"),
        organization_id=_optional_id(raw, "organization_id"),
        created_at=_timestamp(raw, "created_at"),
        updated_at=_timestamp(raw, "updated_at"),
    )


def parse_comment(raw: Mapping[str, Any], ticket_id: int) -> ZendeskComment:
    """Build a comment; the ticket id comes from the URL, as Zendesk does not repeat it."""
    public = raw.get("public")
    if not isinstance(public, bool):
        raise ZendeskRecordError(f"comment field 'public' must be true or false, got {public!r}")
    return ZendeskComment(
        id=_id(raw, "id"),
        ticket_id=ticket_id,
        author_id=_id(raw, "author_id"),
        body=_text(raw, "body", default=""),
        public=public,
        created_at=_timestamp(raw, "created_at"),
    )


def parse_user(raw: Mapping[str, Any]) -> ZendeskUser:
    """Build a user from users/show_many or users/me JSON."""
    return ZendeskUser(
        id=_id(raw, "id"),
        name=_text(raw, "name", default=""),
        email=_optional_text(raw, "email"),
        role=_text(raw, "role"),
        organization_id=_optional_id(raw, "organization_id"),
    )


def parse_organization(raw: Mapping[str, Any]) -> ZendeskOrganization:
    """Build an organization; domain names are lower-cased since matching ignores case."""
    domains = raw.get("domain_names") or []
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise ZendeskRecordError(f"field 'domain_names' must be a list of strings, got {_shown(domains)}")
    external_id = raw.get("external_id")
    if external_id is not None and not isinstance(external_id, str | int):
        raise ZendeskRecordError(f"field 'external_id' must be text, got {_shown(external_id)}")
    return ZendeskOrganization(
        id=_id(raw, "id"),
        name=_text(raw, "name", default=""),
        external_id=None if external_id in (None, "") else _unicode(str(external_id)),
        domain_names=tuple(_unicode(d.strip().lower()) for d in domains if d.strip()),
    )


_MAX_ID = 2**63 - 1  # Zendesk's ids are 64-bit integers; a larger one is corrupt, and SQLite could not hold it


def _shown(value: Any) -> str:
    """A value in an error message: as Python writes it (escapes and all), cut short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _unicode(text: str) -> str:
    """The text with any lone surrogate replaced by U+FFFD, so it can be stored and printed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _id(raw: Mapping[str, Any], field: str) -> int:
    value = raw.get(field)
    # bool is an int subclass; True as an id is a corrupt record, not id 1.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_ID:
        raise ZendeskRecordError(f"field {field!r} must be a positive integer id, got {_shown(value)}")
    return value


def _optional_id(raw: Mapping[str, Any], field: str) -> int | None:
    return None if raw.get(field) is None else _id(raw, field)


def _text(raw: Mapping[str, Any], field: str, *, default: str | None = None) -> str:
    value = raw.get(field, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or (default is None and not value):
        raise ZendeskRecordError(f"field {field!r} must be text, got {_shown(value)}")
    return _unicode(value)


def _optional_text(raw: Mapping[str, Any], field: str) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ZendeskRecordError(f"field {field!r} must be text or null, got {_shown(value)}")
    return _unicode(value)


def optional_timestamp(raw: Mapping[str, Any], field: str) -> datetime | None:
    """A timestamp field that may be null (a metric's `solved_at` before the ticket is solved)."""
    return None if raw.get(field) is None else _timestamp(raw, field)


def _timestamp(raw: Mapping[str, Any], field: str) -> datetime:
    """Parse Zendesk's ISO 8601 UTC form (``2024-01-01T00:00:00Z``) into an aware datetime.

    Its year in UTC must have four digits: the store writes times as text that sorts as time only then
    (and a time on the edge of year 1 or 9999 has no UTC form at all)."""
    value = raw.get(field)
    if not isinstance(value, str):
        raise ZendeskRecordError(f"field {field!r} must be an ISO 8601 timestamp, got {_shown(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ZendeskRecordError(f"field {field!r} is not an ISO 8601 timestamp: {_shown(value)}") from None
    if parsed.tzinfo is None:
        raise ZendeskRecordError(f"field {field!r} has no time zone: {_shown(value)}")
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or utc.year < 1000:
        raise ZendeskRecordError(f"field {field!r} is outside the years 1000 to 9999: {_shown(value)}")
    return utc
