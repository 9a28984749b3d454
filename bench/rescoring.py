"""P4 and P5: scoring and sentiment over a store filled straight from the generator (no HTTP).

The scoring store is built once per size and seed and kept in a cache folder (`HEALTHBEAT_BENCH_CACHE`,
default `~/.cache/healthbeat-bench`), since filling 5 million rows takes minutes; every measurement works
on a fresh copy of it. Each function runs in its own process (`bench.measure.isolated`).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.generate import FIXED_NOW, WorldSpec, distinct_texts, fill_store
from bench.measure import timed

_SENTIMENT_QUERY = "SELECT text FROM activities WHERE text IS NOT NULL AND text != ''"


def cache_dir() -> Path:
    return Path(os.environ.get("HEALTHBEAT_BENCH_CACHE", Path.home() / ".cache" / "healthbeat-bench"))


def scoring_store(spec: WorldSpec, workdir: Path, *, copy: bool = True) -> tuple[Path, dict[str, Any]]:
    """A fresh copy of the cached scoring store for `spec` (built first if missing), and its counts; without
    `copy`, the cached store itself (for a size whose copy the disk cannot hold: scoring it changes it)."""
    from worker.store import Store

    cached = cache_dir() / f"score-{spec.accounts}-{spec.activities_per_account:g}-{spec.seed}{_variant(spec)}.db"
    meta = cached.with_suffix(".json")
    if not cached.exists() or not meta.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        with Store(partial) as store, timed() as timing:
            report = fill_store(store, spec)
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        meta.write_text(json.dumps({"accounts": report.accounts, "activities": report.activities,
                                    "usage_rows": report.usage_rows, "texts": report.texts,
                                    "fill_seconds": timing.wall}))
        partial.rename(cached)
    _migrate_cached(cached)
    if not copy:
        return cached, json.loads(meta.read_text())
    fresh = workdir / cached.name
    shutil.copyfile(cached, fresh)
    return fresh, json.loads(meta.read_text())


def _variant(spec: WorldSpec) -> str:
    """What sets a world apart from the default one in its cache file's name (the default's name is unchanged)."""
    default = WorldSpec(spec.accounts)
    parts = [f"-h{spec.history_days}" if spec.history_days != default.history_days else "",
             f"-u{spec.usage_days}" if spec.usage_days != default.usage_days else ""]
    return "".join(parts)


def _migrate_cached(cached: Path) -> None:
    """A cache built under an earlier schema is migrated once, not in every copy, and analyzed again as
    `fill_store` left it (a migration that rebuilds an index drops its statistics)."""
    import sqlite3

    from worker.store import MIGRATIONS, Store

    conn = sqlite3.connect(cached)
    try:
        version = int(conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0)
    finally:
        conn.close()
    if version < len(MIGRATIONS):
        with Store(cached) as store:
            store.conn.execute("ANALYZE")
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _signatures(rules_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """Each distinct (measure, parameters) the scorecard uses, as `worker.scoring.engine._measure_raw` runs them."""
    from worker.scoring.measures import LIBRARY
    from worker.scoring.scorecard import load_scorecard

    scorecard = load_scorecard(rules_dir).scorecard
    specs = [(k, s) for g in scorecard.groups.values() for k, s in g.measures.items()]
    specs += [(k, s) for d in scorecard.derived.values() for k, s in d.measures.items()]
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, spec in specs:
        name = spec.measure or key
        if name not in LIBRARY:
            continue
        params = spec.params()
        if "features" in LIBRARY[name].needs:
            params["features"] = tuple(scorecard.features)
        seen.setdefault(json.dumps([name, sorted((k, str(v)) for k, v in params.items())]), (name, params))
    return list(seen.values())


def rescore(db: Path, rules_dir: Path, changed_share: float) -> dict[str, Any]:
    """Cold score, full re-score, each measure alone, then a re-score after `changed_share` of accounts moved."""
    from worker.scoring.engine import score_accounts, score_changed_accounts, scoring_processes
    from worker.scoring.measures import LIBRARY
    from worker.scoring.scorecard import load_scorecard
    from worker.store import Store

    loaded = load_scorecard(rules_dir)
    result: dict[str, Any] = {}
    with Store(db) as store:
        with timed() as cold:
            score_accounts(store, loaded, FIXED_NOW)
        with timed() as full:
            report = score_accounts(store, loaded, FIXED_NOW)
        result["cold"] = {"wall": cold.wall, "cpu": cold.cpu}
        result["processes"] = scoring_processes()
        result["full"] = {"wall": full.wall, "cpu": full.cpu, "scored": report.scored, "bands": report.bands,
                          "peak_rss_mb": full.peak_rss_mb}
        measures: dict[str, float] = {}
        values: dict[str, dict[str, float]] = {}
        for name, params in _signatures(rules_dir):
            started = time.perf_counter()
            values[name] = LIBRARY[name].query(store, params, FIXED_NOW)
            measures[name] = measures.get(name, 0.0) + time.perf_counter() - started
        result["measures"] = measures
        result["sql_seconds"] = sum(measures.values())
        accounts = [r[0] for r in store.conn.execute("SELECT id FROM accounts ORDER BY id")]
        moved = accounts[:: max(1, round(1 / changed_share))]
        at = FIXED_NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
        later = FIXED_NOW + timedelta(minutes=15)  # the next cycle, the same day: only changed accounts
        with timed() as quiet:
            report = score_changed_accounts(store, loaded, later)
        result["quiet"] = {"wall": quiet.wall, "cpu": quiet.cpu, "scored": report.scored, "full": report.full}
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO activities (source, source_id, kind, account_id, related_id, occurred_at, direction, "
                "subject, text, sentiment, is_deleted, modstamp) VALUES ('salesforce', ?, 'email', ?, ?, ?, 'in', "
                "'Issue', 'Everything is broken again.', -0.7, 0, ?)",
                [(f"02s5bZ{n:09d}AAA", a, a, at, at) for n, a in enumerate(moved)])
        with timed() as incremental:
            report = score_changed_accounts(store, loaded, later + timedelta(minutes=15))
        result["incremental"] = {"wall": incremental.wall, "cpu": incremental.cpu, "moved": len(moved),
                                 "changed": report.changed, "scored": report.scored, "full": report.full}
    result["values"] = values
    return result


def pandas_baseline(db: Path, rules_dir: Path) -> dict[str, Any]:
    """The same measures as pandas group-bys: load time and compute time apart."""
    import sqlite3

    from bench.pandas_measures import load, run_measure

    conn = sqlite3.connect(str(db))
    with timed() as loading:
        frames = load(conn)
    conn.close()
    measures: dict[str, float] = {}
    values: dict[str, dict[str, float]] = {}
    with timed() as compute:
        for name, params in _signatures(rules_dir):
            started = time.perf_counter()
            values[name] = run_measure(frames, name, params, FIXED_NOW)
            measures[name] = measures.get(name, 0.0) + time.perf_counter() - started
    return {"load": {"wall": loading.wall, "cpu": loading.cpu}, "compute": {"wall": compute.wall, "cpu": compute.cpu},
            "measures": measures, "peak_rss_mb": compute.peak_rss_mb, "values": values}



def insert_inbound_emails(conn: sqlite3.Connection, texts: Iterable[str], *, tag: str) -> None:
    """Each text as an inbound email of one account, not yet scored: what the sentiment stage takes up."""
    conn.executemany(
        "INSERT INTO activities (source, source_id, kind, account_id, occurred_at, direction, text, "
        "is_deleted) VALUES ('salesforce', ?, 'email', '0015b000000001AAAA', '2025-06-01T00:00:00Z', "
        "'in', ?, 0)", [(f"02s5b{tag}{n:09d}AAA", text) for n, text in enumerate(texts)])

def sentiment(workdir: Path, texts: int) -> dict[str, Any]:
    """P5: `score_pending_texts` over `texts` distinct texts, twice, against bare VADER on the same texts."""
    from worker.scoring.sentiment import VaderModel, clean_text, score_pending_texts
    from worker.store import Store

    corpus = distinct_texts(texts)
    model = VaderModel()
    for text in distinct_texts(200, seed=98):  # warm up, so neither side pays for first calls
        model.compound(text)
    db = workdir / "sentiment.db"
    db.unlink(missing_ok=True)
    with Store(db) as store:
        with store.transaction() as conn:
            insert_inbound_emails(conn, corpus, tag="S")
        children = _children_cpu()
        with timed() as first:
            scored = score_pending_texts(store, model)
        first_children = _children_cpu() - children  # worker processes, if it used any (reaped by then)
        with timed() as second:
            again = score_pending_texts(store, model)
        missing = int(store.scalar("SELECT count(*) FROM activities WHERE sentiment IS NULL"))
    cleaned = [clean_text(t) for t in corpus]
    for text in distinct_texts(200, seed=99):  # both sides start warm: the worker's run warmed the model
        model.compound(text)
    with timed() as bare:
        for text in cleaned:
            model.compound(text)
    distinct = len(set(cleaned))
    return {"texts": texts, "distinct": distinct, "scored_first": scored, "scored_second": again,
            "left_unscored": missing, "worker_seconds": first.wall, "second_seconds": second.wall,
            "worker_cpu": first.cpu + first_children, "worker_children_cpu": first_children,
            "bare_seconds": bare.wall, "bare_cpu": bare.cpu, "worker_rate": scored / first.wall if first.wall else 0.0,
            "bare_rate": len(cleaned) / bare.wall if bare.wall else 0.0}


def _children_cpu() -> float:
    """CPU seconds of this process's finished children: a process pool's share of the work counts too."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
