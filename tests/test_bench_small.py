"""The benchmark suite in its smallest mode, so that `python -m bench.run` never rots.

Timings mean nothing at this size and on a shared CI machine; what is checked is the shape of a run: that
every benchmark ran, that the loops fetched the same pages, and the API calls that the goals count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import scoring_scale
from bench.report import judge, render, stream_calls, write_report
from bench.run import Scale, run

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
TINY = Scale("tiny", sync_accounts=(15, 30), score_accounts=150, texts=200, naive_cap=10, zendesk_tickets=3000)
STAGES = {"sync", "score", "evaluate", "writeback", "notify"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEALTHBEAT_BENCH_CACHE", str(tmp_path_factory.mktemp("bench-cache")))
        yield run(TINY, tmp_path_factory.mktemp("bench"), RULES_DIR, with_pandas=False)


def test_backfill_loops_fetch_the_same_pages_at_both_sizes(results: dict[str, Any]) -> None:
    assert [p["accounts"] for p in results["p1"]] == list(TINY.sync_accounts)
    for p1 in results["p1"]:
        assert p1["worker"]["records"] == p1["parse_floor"]["records"] == p1["salesforce_records"]
        assert p1["bytes_floor"]["pages"] == p1["parse_floor"]["pages"]
        assert p1["worker"]["failed_streams"] == {}


def test_the_backfill_report_puts_each_objects_first_page_beside_the_workers_storing(
        results: dict[str, Any]) -> None:
    big = results["p1"][-1]
    floor, worker = big["parse_floor"]["by_object"], big["worker"]["streams"]

    assert {"Event", "Task", "EmailMessage", "Case"} <= set(worker) <= set(floor)
    assert all(0 < f["first_page"] <= f["seconds"] for f in floor.values())
    assert all(0 < w["storing"] <= w["seconds"] for w in worker.values())
    text = render({**results, "command": "test"})
    assert "By object at 30 accounts" in text and "| EmailMessage |" in text


def test_every_cycle_runs_every_stage(results: dict[str, Any]) -> None:
    assert len(results["cycles"]) == 4
    for cycle in results["cycles"]:
        assert cycle["ok"], cycle["error"]
        assert set(cycle["stages"]) >= STAGES


def test_quiet_cycle_queries_each_salesforce_stream_once_and_writes_and_sends_nothing(
        results: dict[str, Any]) -> None:
    steady = next(c for c in results["cycles"] if c["label"].startswith("quiet cycle (steady"))
    salesforce = steady["calls"]["salesforce"]
    queries = {k: n for k, n in salesforce.items() if k.startswith("query ")}
    assert len(queries) == 7 and set(queries.values()) == {1}
    assert "query_more" not in salesforce and "composite" not in salesforce
    assert steady["calls"]["slack"] == {}
    assert steady["wrote_back"] == 0 and steady["nudges"] == 0
    assert all(n >= 1 for n in stream_calls(steady).values())


def test_write_back_of_every_changed_score_takes_ceil_n_over_200_calls(results: dict[str, Any]) -> None:
    p3 = results["p3"]
    assert p3["changed"] == TINY.sync_accounts[-1] == p3["sent"]
    assert p3["composite_calls"] == math.ceil(p3["changed"] / 200)
    assert p3["naive_calls"] == p3["naive_accounts"] == TINY.naive_cap


def test_a_bad_week_in_the_sandbox_reaches_slack_in_the_next_cycle(results: dict[str, Any]) -> None:
    p6 = results["p6"]
    assert p6["band_after"] == "red"
    assert p6["reached_slack"]


def test_scoring_scores_every_account_and_the_incremental_run_sees_the_moved_ones(
        results: dict[str, Any]) -> None:
    worker = results["p4"]["worker"]
    assert worker["full"]["scored"] == TINY.score_accounts == results["p4"]["store"]["accounts"]
    assert worker["incremental"]["moved"] >= 1
    assert worker["incremental"]["changed"] >= 1
    assert set(worker["measures"]) >= {"days_since_two_way_touch", "inbound_sentiment", "feature_adoption"}


def test_sentiment_scores_each_text_once(results: dict[str, Any]) -> None:
    p5 = results["p5"]
    assert p5["scored_first"] == p5["distinct"] == TINY.texts
    assert p5["scored_second"] == 0 and p5["left_unscored"] == 0


def test_a_zendesk_backfill_costs_pages_of_the_exports_not_a_call_per_ticket(results: dict[str, Any]) -> None:
    z1 = results["zendesk"]
    assert z1["calls_total"] == z1["expected_total"] and "ticket comments" not in z1["calls"]
    assert z1["rate_limited"] == 0 and z1["failed_streams"] == {}
    assert z1["tickets_stored"] == TINY.zendesk_tickets and z1["comments_stored"] == 2 * TINY.zendesk_tickets
    assert z1["simulated_seconds"] >= 60 and z1["waits"] >= 1  # 15 export requests: more than 10 a minute


def test_report_judges_every_goal(results: dict[str, Any]) -> None:
    goals = {v.goal for v in judge({**results, "command": "test"})}
    assert goals == {"P1", "P2", "P3", "P4", "P5", "P6", "Z1"}
    text = render({**results, "command": "test"})
    assert "## Goals" in text and "P6" in text


def test_a_performance_report_keeps_the_validity_section_another_run_wrote(results: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    validity = "## Validity\n\n<!-- validity:begin -->\n| world | health AUC |\n<!-- validity:end -->\n"
    report.write_text("# Benchmarks\n\nan older run\n\n" + validity, encoding="utf-8")

    write_report({**results, "command": "test"}, report)

    text = report.read_text(encoding="utf-8")
    assert "an older run" not in text and text.count("## Validity") == 1 and "| world | health AUC |" in text


def test_the_scale_benchmark_scores_a_store_in_place_and_reports_its_peak_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHBEAT_BENCH_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()

    out = scoring_scale.run([120], RULES_DIR, work, baseline=None, repeats=1, in_place_from=120)

    [size] = out["sizes"]
    [measured] = size["runs"]["after"]
    assert measured["full"]["scored"] == size["store"]["accounts"] == 120
    assert size["summary"]["after"]["peak_mb"] > 0
    assert (tmp_path / "cache" / "score-120-50-8.db").exists() and list(work.iterdir()) == []  # nothing copied
