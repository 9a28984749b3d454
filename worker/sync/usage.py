"""Product usage: daily files from USAGE_DIR, each read once per content.

The folder is outside input, so nothing in it may stop a cycle: a bad row, a bad file (no header, not
readable) or a name that is refused (a link out of the folder, a pipe) is quarantined with the file, the
line and the reason, counted in the sync report, and the other rows and files are read. A file's problem is
quarantined once, when it is first seen or changes, not again every cycle while it stays. Only a folder
that cannot be listed fails the usage stream, and then alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path

from connectors.salesforce.ids import to_18
from connectors.usage.reader import (
    BadUsageRow,
    UsageFile,
    UsageFileReplaced,
    open_usage_file,
    read_usage,
    scan_usage_folder,
    shown_name,
)
from worker.store import Quarantined, Store
from worker.sync.report import Row, SyncReport

log = logging.getLogger(__name__)

_STREAM = "usage.files"


def sync_usage(store: Store, folder: Path | None, now: datetime, report: SyncReport) -> None:
    """Read each file once per content (name and hash remembered); a later row for an account-day wins."""
    if folder is None:
        return
    if not folder.is_dir():
        report.failed_streams["usage"] = f"USAGE_DIR {folder} is not a folder"
        log.error("sync usage: USAGE_DIR %s is not a folder", folder)
        return
    try:
        found = scan_usage_folder(folder)
    except OSError as exc:
        report.failed_streams["usage"] = f"USAGE_DIR {folder} cannot be listed: {exc.strerror or exc}"
        log.error("sync usage: USAGE_DIR %s cannot be listed: %s", folder, exc.strerror or exc)
        return
    seen: dict[str, dict[str, str]] = json.loads(store.cursor(_STREAM) or "{}")
    for refused in found.refused:
        _file_problem(store, seen, refused.path, refused.reason, now, report)
    for usage_file in found.files:
        _sync_file(store, seen, usage_file, now, report)


def _sync_file(store: Store, seen: dict[str, dict[str, str]], usage_file: UsageFile, now: datetime,
               report: SyncReport) -> None:
    key = usage_file.path.name
    known = seen.get(key)
    if isinstance(known, dict) and known.get("stat") == usage_file.fingerprint:
        return  # unchanged on disk: not even read
    rows: dict[tuple[str, str], Row] = {}
    bad: list[Quarantined] = []
    try:
        with open_usage_file(usage_file) as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()[:32]
            if isinstance(known, dict) and known.get("sha256") == digest:
                seen[key] = {"stat": usage_file.fingerprint, "sha256": digest}
                return  # the same content, touched or copied again: nothing to re-read
            handle.seek(0)
            for item in read_usage(handle, usage_file.name, usage_file.kind, now=now):
                if isinstance(item, BadUsageRow):
                    bad.append(_quarantined(item))
                    continue
                account_id = to_18(item.account_id) if len(item.account_id) == 15 else item.account_id
                rows[(account_id, item.day.isoformat())] = {
                    "account_id": account_id, "day": item.day.isoformat(), "active_users": item.active_users,
                    "events": item.events, "features_used": json.dumps(list(item.features_used)),
                    "seats": item.seats, "source_file": f"{item.file}:{item.line}"}
    except UsageFileReplaced as exc:
        log.info("sync usage: %s; it is read at the next cycle", exc)
        return
    except OSError as exc:
        _file_problem(store, seen, usage_file.path, f"cannot be read: {exc.strerror or exc}", now, report)
        return
    seen[key] = {"stat": usage_file.fingerprint, "sha256": digest}
    with report.storing(_STREAM), store.transaction():
        store.upsert("usage_daily", list(rows.values()), ("account_id", "day"))
        store.quarantine(bad, now)
        store.save_cursor(_STREAM, json.dumps(seen, sort_keys=True), len(rows), now)
    report.add(_STREAM, len(rows), quarantined=len(bad))
    report.quarantined += len(bad)
    for item_bad in bad:
        log.warning("quarantined usage row: %s", item_bad.reason)


def _file_problem(store: Store, seen: dict[str, dict[str, str]], path: Path, reason: str, now: datetime,
                  report: SyncReport) -> None:
    """A whole file refused or unreadable: quarantined when first seen so, not again while it stays so."""
    key, name = path.name, shown_name(path)
    if seen.get(key) == {"problem": reason}:
        return
    seen[key] = {"problem": reason}
    item = Quarantined("usage", "usage_daily", name, f"{name}: {reason}", {"file": name})
    with store.transaction():
        store.quarantine([item], now)
        store.save_cursor(_STREAM, json.dumps(seen, sort_keys=True), 0, now)
    report.add(_STREAM, 0, quarantined=1)
    report.quarantined += 1
    log.warning("quarantined usage file: %s", item.reason)


def _quarantined(item: BadUsageRow) -> Quarantined:
    where = f"{item.file}:{item.line}" if item.line is not None else item.file
    said = f"{item.file} line {item.line}" if item.line is not None else item.file
    return Quarantined("usage", "usage_daily", where, f"{said}: {item.reason}", item.raw)
