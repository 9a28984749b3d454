"""P4 at several sizes: a whole re-score, and the scoring stage of a quiet cycle, per account (issue 22).

For each size the cached scoring store (`bench.rescoring.scoring_store`, built once per size) is copied and
scored once to warm it (the first score of a store has no earlier scores); then each tree's code runs a whole
re-score (`score_accounts`, one process per core, as the first cycle of a day) and the next cycle's
`score_changed_accounts` with nothing changed, each run in a fresh process. With `--baseline DIR` (an unpacked
earlier commit: `git archive BASE | tar -x -C DIR`) the baseline's code and this tree's alternate `--repeats`
times on the same store (they write the same scores), and the report gives medians and the spread of each.

    python -m bench.scoring_scale --sizes 20000 100000 [--baseline DIR] [--repeats 3] [--history-days 420]
                                  [--in-place-from 1000000]

prints JSON: per size, per tree, every run's wall and CPU seconds (the pool's included) and the medians, the
cost per 1,000 accounts, and peak memory (the scoring process's and its largest helper's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter with the tree's code first on the path; prints one JSON line.
_RUN = """
import json, resource, sys, time
from datetime import timedelta
from pathlib import Path
from bench.generate import FIXED_NOW
from worker.scoring.engine import score_accounts, score_changed_accounts
from worker.scoring.scorecard import load_scorecard
from worker.store import Store

def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

loaded = load_scorecard(Path(sys.argv[2]))
out = {}
with Store(sys.argv[1]) as store:
    c, w = cpu(), time.perf_counter()
    report = score_accounts(store, loaded, FIXED_NOW)
    out["full"] = {"wall": time.perf_counter() - w, "cpu": cpu() - c, "scored": report.scored}
    c, w = cpu(), time.perf_counter()
    report = score_changed_accounts(store, loaded, FIXED_NOW + timedelta(minutes=15))
    out["quiet"] = {"wall": time.perf_counter() - w, "cpu": cpu() - c, "scored": report.scored}
# Peak resident memory in MB: this process's, and the largest of its pool's processes.
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["helper_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(out))
"""


def _one_run(tree: Path, db: Path, rules_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", _RUN, str(db), str(rules_dir)], cwd=tree, env=env,  # noqa: S603
                          capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"scoring with {tree} failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _summary(runs: list[dict[str, Any]], accounts: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in ("full", "quiet"):
        for key in ("wall", "cpu"):
            values = [r[part][key] for r in runs]
            out[f"{part}_{key}"] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        out[f"{part}_cpu_ms_per_1000"] = out[f"{part}_cpu"]["median"] / accounts * 1e6
    for key in ("peak_mb", "helper_peak_mb"):
        out[key] = max((r[key] for r in runs if key in r), default=None)  # an older tree's runs lack it
    return out


def run(sizes: list[int], rules_dir: Path, workdir: Path, *, baseline: Path | None, repeats: int,
        history_days: int | None = None, usage_days: int | None = None,
        in_place_from: int = 1_000_000_000) -> dict[str, Any]:
    from bench.generate import WorldSpec
    from bench.rescoring import scoring_store

    results: dict[str, Any] = {"sizes": []}
    trees = {"after": ROOT} | ({"baseline": baseline} if baseline is not None else {})
    for size in sizes:
        extra: dict[str, int] = {}
        if history_days is not None:
            extra["history_days"] = history_days
        if usage_days is not None:
            extra["usage_days"] = usage_days
        db, counts = scoring_store(WorldSpec(size, **extra), workdir, copy=size < in_place_from)
        _one_run(ROOT, db, rules_dir)  # warm: scores exist, as before any cycle but the first
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for _ in range(repeats):
            for name, tree in (reversed(trees.items()) if baseline is not None else trees.items()):
                runs[name].append(_one_run(tree, db, rules_dir))
        results["sizes"].append({"accounts": size, "store": counts, "runs": runs,
                                 "summary": {name: _summary(r, size) for name, r in runs.items()}})
        for suffix in ("", "-wal", "-shm") if size < in_place_from else ():
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--baseline", type=Path, help="an unpacked earlier tree to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rules-dir", type=Path, default=ROOT / "rules")
    parser.add_argument("--history-days", type=int, help="spread the activity over this many days")
    parser.add_argument("--usage-days", type=int, help="days of usage per account")
    parser.add_argument("--in-place-from", type=int, default=1_000_000_000, metavar="ACCOUNTS",
                        help="score the cached store itself, not a copy, from this size on (a store of 1,000,000 "
                             "accounts is 25 GB; a whole re-score of the same day writes the same values again)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="healthbeat-scale-", dir=os.environ.get("HEALTHBEAT_BENCH_TMP")) as work:
        print(json.dumps(run(args.sizes, args.rules_dir, Path(work), baseline=args.baseline, repeats=args.repeats,
                             history_days=args.history_days, usage_days=args.usage_days,
                             in_place_from=args.in_place_from), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
