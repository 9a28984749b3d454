"""P1: a full Salesforce backfill through the real clients into the store, against its floors.

Three loops fetch the same pages (the worker's own SOQL, built by `worker.sync.salesforce.build_soql` from the same
describe, over `query`/`queryAll` and `nextRecordsUrl`), each in a fresh process with the sandboxes in
another (`bench.server`), so wall time, CPU seconds and peak memory are the loop's own:

- `worker_backfill`: `worker.sync.salesforce.sync_salesforce` with `SalesforceClient` (simple-salesforce, requests)
  into a new store: what `healthbeat sync` does on its first run;
- `bare_loop(parse=True)`: the parse floor, a bare httpx loop that only runs `json.loads` on each page;
- `bare_loop(parse=False)`: the bytes floor, the same loop reading the bytes, finding `nextRecordsUrl`
  with a byte search.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.measure import peak_rss_mb, timed
from bench.server import Endpoints, environment

_NEXT = b'"nextRecordsUrl": "'
BACKFILL = timedelta(days=730)
"""How far back the first sync reads activity (`HEALTHBEAT_SALESFORCE_BACKFILL`'s default): the world's is newer."""


def worker_backfill(endpoints: Endpoints, db: Path, rules_dir: Path, bulk_threshold: int = 0) -> dict[str, Any]:
    """The worker's Salesforce sync, from an empty store, as `healthbeat sync` runs it; objects of more than
    `bulk_threshold` records (0: none) as Bulk API 2.0 query jobs."""
    from worker.clock import system_clock
    from worker.config import load_settings
    from worker.cycle import build_clients
    from worker.store import Store
    from worker.sync.report import SyncReport
    from worker.sync.salesforce import sync_salesforce

    settings = load_settings(**environment(endpoints, db, rules_dir, zendesk=False, slack=False, usage=False))
    clients = build_clients(settings)
    base = peak_rss_mb()
    report = SyncReport()
    with Store(db) as store, timed() as timing:
        sync_salesforce(store, clients.salesforce, system_clock(), report, overlap=settings.salesforce_overlap,
                        api_share=settings.salesforce_api_share, backfill=BACKFILL, bulk_threshold=bulk_threshold)
    with Store(db) as store:
        stored = int(store.scalar("SELECT count(*) FROM activities"))
    clients.close()
    return {"wall": timing.wall, "cpu": timing.cpu, "peak_rss_mb": timing.peak_rss_mb, "base_rss_mb": base,
            "records": report.total, "activities_stored": stored, "api_calls": clients.salesforce.calls,
            "bulk_jobs": clients.salesforce.bulk_jobs, "bulk_mb": round(clients.salesforce.bulk_bytes / 1e6, 1),
            "failed_streams": dict(report.failed_streams), "by_stream": dict(report.records),
            "windows": {name: s.windows for name, s in report.streams.items() if s.windows},
            "streams": {name.removeprefix("salesforce."): {"seconds": s.seconds, "storing": s.storing}
                        for name, s in report.streams.items() if s.read},
            "narrowed": sum(s.narrowed for s in report.streams.values())}


def _queries(http: httpx.Client, base: str) -> list[tuple[str, str]]:
    """The worker's first-run queries (sObject, URL), from the same describe the worker reads: each stream's first
    window, from the backfill floor (`HEALTHBEAT_SALESFORCE_BACKFILL`'s default) for activity, whole for the rest."""
    from worker.clock import system_clock
    from worker.sync.salesforce import SALESFORCE_STREAMS, build_soql, first_window

    now = system_clock()
    floor = (now - BACKFILL).replace(microsecond=0)
    urls = []
    for stream in SALESFORCE_STREAMS:
        described = http.get(f"{base}/sobjects/{stream.sobject}/describe")
        described.raise_for_status()
        fields = stream.fields_in({f["name"] for f in described.json()["fields"]})
        endpoint = "queryAll" if stream.has_is_deleted else "query"
        window = first_window(None, now, timedelta(0), floor if stream.activity else None)
        urls.append((stream.sobject, f"{base}/{endpoint}/?q={quote(build_soql(stream, fields, window))}"))
    return urls


def bare_loop(endpoints: Endpoints, parse: bool, api_version: str = "59.0") -> dict[str, Any]:
    """Fetch every page of the worker's backfill queries over one connection; `json.loads` them or not.

    Each object's time is kept with its first page's: a sandbox (as Salesforce) does most of a query's work
    before its first page, so where a backfill waits shows only object by object."""
    from worker.demo.harness import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

    base_rss = peak_rss_mb()
    records = pages = size = 0
    by_object: dict[str, dict[str, float]] = {}
    with httpx.Client(verify=endpoints.ca_cert_path, timeout=120.0) as http:
        token = http.post(f"{endpoints.salesforce_url}/services/oauth2/token",
                          data={"grant_type": "client_credentials", "client_id": SANDBOX_CLIENT_ID,
                                "client_secret": SANDBOX_CLIENT_SECRET}).json()
        http.headers["Authorization"] = f"Bearer {token['access_token']}"
        instance = token["instance_url"]
        with timed() as timing:  # the describes too: the worker's time includes its own
            for sobject, first in _queries(http, f"{instance}/services/data/v{api_version}"):
                url: str | None = first
                started = time.perf_counter()
                while url:
                    response = http.get(url)
                    response.raise_for_status()
                    body = response.content
                    pages += 1
                    size += len(body)
                    if parse:
                        page = json.loads(body)
                        records += len(page["records"])
                        url = f"{instance}{page['nextRecordsUrl']}" if not page["done"] else None
                    else:
                        url = _next_url(body, instance)
                    timing_of = by_object.setdefault(sobject, {"first_page": time.perf_counter() - started})
                    timing_of["seconds"] = time.perf_counter() - started
    return {"wall": timing.wall, "cpu": timing.cpu, "peak_rss_mb": timing.peak_rss_mb, "base_rss_mb": base_rss,
            "records": records if parse else None, "pages": pages, "bytes": size, "by_object": by_object}


def _next_url(body: bytes, instance: str) -> str | None:
    """`nextRecordsUrl` without parsing the page: the sandbox writes it before the records."""
    at = body.find(_NEXT, 0, 400)
    if at < 0:
        return None
    start = at + len(_NEXT)
    return instance + body[start:body.index(b'"', start)].decode()
