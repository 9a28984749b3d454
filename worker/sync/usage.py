"""Product usage: daily files from USAGE_DIR, each read once per content."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path

from connectors.salesforce.ids import to_18
from connectors.usage.reader import BadUsageRow, list_usage_files, read_usage_file
from worker.store import Quarantined, Store
from worker.sync.report import Row, SyncReport

log = logging.getLogger(__name__)

def sync_usage(store: Store, folder: Path | None, now: datetime, report: SyncReport) -> None:
    """Read each file once per content (name and hash remembered); a later row for an account-day wins."""
    if folder is None:
        return
    if not folder.is_dir():
        report.failed_streams["usage"] = f"USAGE_DIR {folder} is not a folder"
        log.error("sync usage: USAGE_DIR %s is not a folder", folder)
        return
    name = "usage.files"
    seen: dict[str, dict[str, str]] = json.loads(store.cursor(name) or "{}")
    for usage_file in list_usage_files(folder):
        known = seen.get(usage_file.path.name)
        if isinstance(known, dict) and known.get("stat") == usage_file.fingerprint:
            continue  # unchanged on disk: not even read
        digest = hashlib.sha256(usage_file.path.read_bytes()).hexdigest()[:32]
        if isinstance(known, dict) and known.get("sha256") == digest:
            seen[usage_file.path.name] = {"stat": usage_file.fingerprint, "sha256": digest}
            continue  # the same content, touched or copied again: nothing to re-read
        rows: dict[tuple[str, str], Row] = {}
        bad: list[Quarantined] = []
        for item in read_usage_file(usage_file.path):
            if isinstance(item, BadUsageRow):
                bad.append(Quarantined("usage", "usage_daily", f"{item.file}:{item.line}",
                                       f"{item.file} line {item.line}: {item.reason}", item.raw))
                continue
            account_id = to_18(item.account_id) if len(item.account_id) == 15 else item.account_id
            rows[(account_id, item.day.isoformat())] = {
                "account_id": account_id, "day": item.day.isoformat(), "active_users": item.active_users,
                "events": item.events, "features_used": json.dumps(list(item.features_used)),
                "seats": item.seats, "source_file": f"{item.file}:{item.line}"}
        seen[usage_file.path.name] = {"stat": usage_file.fingerprint, "sha256": digest}
        with store.transaction():
            store.upsert("usage_daily", list(rows.values()), ("account_id", "day"))
            store.quarantine(bad, now)
            store.save_cursor(name, json.dumps(seen, sort_keys=True), len(rows), now)
        report.add(name, len(rows))
        report.quarantined += len(bad)
        for item_bad in bad:
            log.warning("quarantined usage row: %s", item_bad.reason)
