"""Deletes that incremental reads cannot see: Accounts and Opportunities gone from Salesforce for good.

A stream sees a delete through `queryAll` while the record sits in the recycle bin: 15 days, or less when
the bin is full (a mass delete) and Salesforce empties its oldest records early. A worker stopped for longer,
or one that missed a mass delete, would keep counting those accounts and their renewals forever. So once a
day the ids Salesforce still has are read (`SELECT Id FROM Account`: the cheapest query there is, 2,000 ids a
call) and every id the store has that Salesforce no longer has is marked deleted. Activities are left to
the streams: an account marked deleted is no longer scored, whatever its activities say.

When it last ran is kept in the store like a cursor (`sync_state`, stream `salesforce.reconcile`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from connectors.salesforce.client import SalesforceClient, SalesforceError
from worker.store import Store, iso, parse_iso

log = logging.getLogger(__name__)

STREAM = "reconcile"
EVERY = timedelta(days=1)
OBJECTS = (("Account", "accounts"), ("Opportunity", "opportunities"))
"""The sObjects reconciled and the table each fills: few records, and renewal history needs them right."""
_STATE = f"salesforce.{STREAM}"


def due(store: Store, now: datetime) -> bool:
    """Whether a day has passed since the last reconciliation (or there never was one, or the clock went back)."""
    last = store.cursor(_STATE)
    if last is None:
        return True
    then = parse_iso(last)
    return now - then >= EVERY or now < then


def record(store: Store, now: datetime) -> None:
    with store.transaction():
        store.save_cursor(_STATE, iso(now), 0, now)


def reconcile_deletes(store: Store, client: SalesforceClient, now: datetime, *, budget: Callable[[], None]) -> int:
    """Mark deleted every stored Account and Opportunity Salesforce no longer has; returns how many.

    `budget` runs after every response, before the next is asked for (the cycle's share of the API limit).
    Nothing is marked unless every id of the object was read: a read cut short would take the records not
    read yet for deleted ones."""
    marked = 0
    for sobject, table in OBJECTS:
        live: set[str] = set()
        for records in client.query_pages(f"SELECT Id FROM {sobject}"):
            live.update(str(record.get("Id")) for record in records)
            budget()
        stored = {row["id"] for row in store.query(f"SELECT id FROM {table} WHERE is_deleted = 0")}
        gone = sorted(stored - live)
        if gone and not live:
            raise SalesforceError(f"Salesforce answered no {sobject} ids at all while the store has {len(stored)}: "
                                  "not marking them deleted (has the integration user lost access to them?)")
        if gone:
            with store.transaction() as conn:
                conn.executemany(f"UPDATE {table} SET is_deleted = 1 WHERE id = ?", ((gone_id,) for gone_id in gone))
            log.info("reconcile: %d %s records are no longer in Salesforce; marked deleted", len(gone), sobject)
        marked += len(gone)
    record(store, now)
    return marked
