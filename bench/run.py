"""`python -m bench.run [--scale small|medium|full]`: every benchmark of issue 8, written to BENCHMARKS.md.

`full` is the issue's scale (20,000 accounts / ~1M activities for sync, 100,000 / ~5M for scoring, a year of
100,000 Zendesk tickets against a real account's rate limits; about 25 minutes on 2 cores), `medium` a quarter
of it (a few minutes), `small` what the test suite runs (seconds) so the suite never rots. Every goal is judged
against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.backfill import bare_loop, worker_backfill
from bench.cycles import run_cycles
from bench.generate import WorldSpec
from bench.measure import isolated, machine
from bench.report import write_report
from bench.rescoring import pandas_baseline, rescore, scoring_store, sentiment
from bench.server import SandboxServer
from bench.zendesk import ZendeskSpec, zendesk_backfill

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scale:
    name: str
    sync_accounts: tuple[int, int]  # P1 at two sizes; P2, P3, P6 at the larger
    score_accounts: int
    texts: int
    naive_cap: int  # accounts the naive one-call-per-account write-back loop goes through
    activities_per_account: float = 50.0
    zendesk_share: float = 0.05  # of tickets, for the sync world (Zendesk at scale is Z1's)
    changed_share: float = 0.01  # accounts that move before the incremental re-score
    repeats: int = 1  # P1 loops run this many times, interleaved; the fastest of each counts (noisy machines)
    zendesk_tickets: int = 2000  # Z1: a year of tickets, backfilled against the account's rate limits


SCALES = {
    "small": Scale("small", (40, 80), 400, 1500, 40),
    "medium": Scale("medium", (2500, 5000), 25_000, 20_000, 1000, repeats=2, zendesk_tickets=25_000),
    "full": Scale("full", (10_000, 20_000), 100_000, 100_000, 2000, repeats=2, zendesk_tickets=100_000),
}


def run(scale: Scale, workdir: Path, rules_dir: Path, *, with_pandas: bool = True) -> dict[str, Any]:
    """Run P1-P6 and Z1 at `scale`; returns every figure (see `bench.report` for how they are judged)."""
    results: dict[str, Any] = {"scale": asdict(scale), "machine": machine(), "p1": []}
    load_start = os.getloadavg()
    started = time.perf_counter()
    for size in scale.sync_accounts:
        spec = WorldSpec(size, scale.activities_per_account, zendesk_share=scale.zendesk_share)
        log.info("sync world: %d accounts: loading the sandboxes", size)
        with SandboxServer(spec) as server:
            world = server.endpoints.world
            log.info("loaded %d Salesforce records (%d activities); P1 loops", world.salesforce_records,
                     world.activities)
            p1: dict[str, Any] = {"accounts": size, "salesforce_records": world.salesforce_records,
                                  "activities": world.activities}
            for attempt in range(scale.repeats):
                db = workdir / f"p1-{size}-{attempt}.db"
                runs = {"bytes_floor": server.isolated(bare_loop, server.endpoints, False),
                        "parse_floor": server.isolated(bare_loop, server.endpoints, True),
                        "worker": server.isolated(worker_backfill, server.endpoints, db, rules_dir)}
                for loop, figures in runs.items():
                    figures["walls"] = [*p1.get(loop, {}).get("walls", []), figures["wall"]]
                    if loop not in p1 or figures["wall"] < p1[loop]["wall"]:
                        p1[loop] = figures
                    else:
                        p1[loop]["walls"] = figures["walls"]
                db.unlink(missing_ok=True)
            results["p1"].append(p1)
            if size == max(scale.sync_accounts):
                log.info("cycles at %d accounts (P2, P6, P3)", size)
                cycles = run_cycles(server, workdir, rules_dir, naive_cap=scale.naive_cap)
                results["cycles"] = [asdict(c) for c in cycles.cycles]
                results["p6"], results["p3"] = cycles.p6, cycles.p3
                results["world"] = {k: v for k, v in asdict(world).items()
                                    if k not in ("accounts", "owner_emails", "slack_users")}
    log.info("zendesk backfill: %d tickets against the account's rate limits", scale.zendesk_tickets)
    results["zendesk"] = isolated(zendesk_backfill, ZendeskSpec(scale.zendesk_tickets), workdir)
    log.info("scoring store: %d accounts", scale.score_accounts)
    spec = WorldSpec(scale.score_accounts, scale.activities_per_account)
    db, counts = scoring_store(spec, workdir)
    results["p4"] = {"store": counts, "worker": isolated(rescore, db, rules_dir, scale.changed_share)}
    if with_pandas and importlib.util.find_spec("pandas") is not None:
        from bench.pandas_measures import agreement

        log.info("pandas baseline")
        results["p4"]["pandas"] = isolated(pandas_baseline, db, rules_dir)
        sql, frames = results["p4"]["worker"]["values"], results["p4"]["pandas"]["values"]
        results["p4"]["agreement"] = {name: agreement(sql[name], frames[name]) for name in sql if name in frames}
    _without_values(results)
    db.unlink(missing_ok=True)
    log.info("sentiment: %d texts", scale.texts)
    results["p5"] = isolated(sentiment, workdir, scale.texts)
    results["seconds"] = time.perf_counter() - started
    results["load_average"] = {"start": load_start, "end": os.getloadavg()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="medium")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="where the report goes")
    parser.add_argument("--json", type=Path, help="also keep every figure as JSON here")
    parser.add_argument("--rules-dir", type=Path, default=ROOT / "rules")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline of P4")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the report from a --json file")
    parser.add_argument("--notes", type=Path, default=None,
                        help="a hand-written analysis to append (profiles, causes, fixes), e.g. bench/analysis.md")
    args = parser.parse_args(argv)
    if args.render:
        write_report(json.loads(args.render.read_text()), args.output, args.notes)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("worker").setLevel(logging.WARNING)
    logging.getLogger("connectors").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    command = "python -m bench.run --scale " + args.scale
    with tempfile.TemporaryDirectory(prefix="healthbeat-bench-") as work:
        results = run(SCALES[args.scale], Path(work), args.rules_dir, with_pandas=not args.no_pandas)
    results["command"] = command
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    write_report(results, args.output, args.notes)
    log.info("wrote %s in %.0f s", args.output, results["seconds"])
    return 0


def _without_values(results: dict[str, Any]) -> dict[str, Any]:
    """Per-account measure values stay out of the JSON (they are only for the agreement check)."""
    p4 = results.get("p4", {})
    for part in ("worker", "pandas"):
        if isinstance(p4.get(part), dict):
            p4[part] = {k: v for k, v in p4[part].items() if k != "values"}
    return results


if __name__ == "__main__":
    raise SystemExit(main())
