"""B1: a backfill of a large activity history as Bulk API 2.0 query jobs beside REST pages, in one run.

The same generated world (`bench.generate`, about 50 activities an account) is loaded once into the sandboxes'
child process (`bench.server`); then `worker.sync.salesforce.sync_salesforce` backfills it into an empty store
twice, each time in a fresh process (`bench.measure.isolated`), so wall time, CPU seconds and peak RSS are the
worker's own: with `bulk_threshold=0` (REST pages of 2,000, in windows when Salesforce stops a query) and with
`bulk_threshold=1` (every object as one `queryAll` job, its CSV results read 20,000 records a call). The job's
wait is real: the sandbox reports a job InProgress for one poll, and the worker's first wait is a second
(`connectors.salesforce.client.BULK_POLL`), so each object's job costs at least a second Salesforce's
would take anyway. Both runs must store the same activities.

    .venv/bin/python -m bench.bulk --accounts 20000 --output /tmp/bench_bulk.md
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from bench.backfill import worker_backfill
from bench.generate import WorldSpec
from bench.measure import machine
from bench.server import SandboxServer

log = logging.getLogger("bench.bulk")
RULES_DIR = Path(__file__).resolve().parents[1] / "rules"


def compare(accounts: int, workdir: Path, rules_dir: Path = RULES_DIR) -> dict[str, Any]:
    """Load the world, then one REST backfill and one Bulk backfill of it, each in its own process."""
    spec = WorldSpec(accounts)
    with SandboxServer(spec) as server:
        world = server.endpoints.world
        log.info("loaded %d Salesforce records (%d activities)", world.salesforce_records, world.activities)
        runs = {}
        for name, threshold in (("rest", 0), ("bulk", 1)):
            db = workdir / f"b1-{name}.db"
            runs[name] = server.isolated(worker_backfill, server.endpoints, db, rules_dir, threshold)
            db.unlink(missing_ok=True)
            log.info("%s: %.1f s wall", name, runs[name]["wall"])
    return {"accounts": accounts, "salesforce_records": world.salesforce_records, "activities": world.activities,
            "machine": machine(), **runs}


def report(results: dict[str, Any]) -> str:
    rows = ["| loop | wall s | CPU s | peak RSS MB (at start) | Salesforce calls | Bulk jobs | activities stored |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, label in (("rest", "REST pages (`bulk_threshold=0`)"), ("bulk", "Bulk API 2.0 (`bulk_threshold=1`)")):
        r = results[name]
        rows.append(f"| {label} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['peak_rss_mb']:.0f} ({r['base_rss_mb']:.0f}) "
                    f"| {r['api_calls']:,} | {r.get('bulk_jobs', 0)} | {r['activities_stored']:,} |")
    m = results["machine"]
    same = results["rest"]["activities_stored"] == results["bulk"]["activities_stored"]
    return "\n".join([
        f"## B1: backfill of {results['activities']:,} activities ({results['salesforce_records']:,} Salesforce "
        f"records, {results['accounts']:,} accounts), Bulk API 2.0 beside REST", "",
        f"Machine: {m.get('cpu', '?')}, nproc {m.get('nproc', '?')}; one run each, fresh processes "
        f"(`python -m bench.bulk --accounts {results['accounts']}`).", "", *rows, "",
        f"Both stored the same number of activities: {'yes' if same else 'NO'}. Bulk results: "
        f"{results['bulk'].get('bulk_mb', 0)} MB of CSV.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="healthbeat-b1-") as folder:
        results = compare(options.accounts, Path(folder))
    text = report(results)
    if options.output is not None:
        options.output.write_text(text)
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
