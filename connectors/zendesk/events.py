"""Ticket events and ticket metrics from Zendesk's incremental exports, as plain records.

Comments come in bulk from the incremental ticket event export (``include=comment_events``): each event
is one update of a ticket, and a comment made in it is a child event of ``event_type: Comment`` carrying
what the comments endpoint would say of it (``id``, ``author_id``, ``body``, ``public``, ``created_at``).
The ticket id is the event's, not the comment's. A ticket's true solve time is its metric set's
``solved_at`` (sideloaded by ``include=metric_sets`` on the ticket export): ``updated_at`` moves again
when an automation closes the ticket days later.

As in :mod:`connectors.zendesk.records`, a record that fails the strict part raises
``ZendeskRecordError``; the client turns that into a ``BadRecord`` and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.zendesk.records import (
    BadRecord,
    ZendeskComment,
    ZendeskRecordError,
    optional_timestamp,
    parse_comment,
)

__all__ = ["EventComments", "TicketMetrics", "comments_of_event", "parse_metric_set"]


@dataclass(frozen=True)
class TicketMetrics:
    """What Healthbeat reads of a ticket's metric set: when it was (last) solved, None if never."""

    ticket_id: int
    solved_at: datetime | None


def parse_metric_set(raw: Mapping[str, Any]) -> TicketMetrics:
    """Build the metrics of one ticket from a sideloaded metric set."""
    return TicketMetrics(ticket_id=_positive_id(raw, "ticket_id"), solved_at=optional_timestamp(raw, "solved_at"))


@dataclass(frozen=True)
class EventComments:
    """The comments one ticket event made. ``unread`` counts those the event names without their text
    (``comment_present`` alone, as Zendesk answers without ``include=comment_events``): the ticket's
    comments must then be read another way."""

    ticket_id: int
    comments: list[ZendeskComment | BadRecord]
    unread: int = 0


def comments_of_event(raw: Mapping[str, Any]) -> EventComments:
    """The comments one ticket event made, in its order; a malformed one comes as a BadRecord.

    Raises ZendeskRecordError when the event itself is unusable (no ticket id, no list of children).
    A comment child without its own ``created_at`` takes the event's: the comment was made in it.
    """
    ticket_id = _positive_id(raw, "ticket_id")
    children = raw.get("child_events")
    if not isinstance(children, list):
        raise ZendeskRecordError(f"ticket event field 'child_events' must be a list, got {_shown(children)}")
    comments: list[ZendeskComment | BadRecord] = []
    unread = 0
    for child in children:
        if not isinstance(child, Mapping) or child.get("event_type") != "Comment":
            continue
        if "body" not in child and child.get("comment_present") is True:
            unread += 1
            continue
        try:
            comments.append(parse_comment({"created_at": raw.get("created_at"), **child}, ticket_id))
        except ZendeskRecordError as exc:
            comments.append(BadRecord(kind="comment", raw=child, reason=f"ticket {ticket_id}: {exc}"))
    return EventComments(ticket_id, comments, unread)


_MAX_ID = 2**63 - 1


def _positive_id(raw: Mapping[str, Any], field: str) -> int:
    value = raw.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_ID:
        raise ZendeskRecordError(f"field {field!r} must be a positive integer id, got {_shown(value)}")
    return value




def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
