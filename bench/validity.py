"""`python -m bench.validity`: does the health score predict churn in orgs it was not tuned on?

`healthbeat backtest` on the sandbox's own history (`connectors.sandboxes.history`) is flattering: that
history was written with the scorecard in mind. This runs the same backtest on the independently designed
worlds of `connectors.sandboxes.other_worlds` (and on that history, for comparison), each exactly as a new
user would meet it: the world goes into the sandboxes, the worker's real sync reads it over HTTP (the
Salesforce and Zendesk backfills reach back over the whole history), and `run_backtest` replays it at the
command's defaults (a year of snapshots every 14 days, churn within 90 days) on the shipped rules. Then
`--tune` is tried as the command runs it, and the learned churn risk (`worker.analysis.churn_fit`) is fitted
as the backtest fits it: on the earlier part of the whole replayed history, judged on the later part it never
saw, beside the hand-set churn risk, the health score and the single signals on the same held-out snapshots.

For each world it prints the health score's and churn risk's AUC, the red band's lift and recall, each
single signal's AUC on the same snapshots, and the accounts and churn behind them; the learned churn risk's
held-out AUC, top-tenth lift, calibration and lead time beside the hand-set figures; then, from the world's
ground truth, the AUC of the score for each churn mechanism (that mechanism's churners against every
retained account), which says what the score misses. `--write` puts the tables into BENCHMARKS.md's
"Validity" section, between its markers, leaving the hand-written analysis around them alone.

Each world runs in a fresh process of its own (the sandboxes with it), two at a time by default.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.measure import isolated
from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.sandboxes.history import BASE_HEALTH, build_history
from connectors.sandboxes.history import Fate as HistoryFate
from connectors.sandboxes.other_worlds import build_other_world
from connectors.slack.sandbox import SlackSandbox
from connectors.zendesk.sandbox import ZendeskSandbox
from worker.alerting.rules import load_alert_rules
from worker.analysis.backtest import SIGNALS, Observation, Plan, auc, labelled, measure_keys, run_backtest
from worker.analysis.churn_fit import ChurnFit, fit_churn_model, judged_as_dict
from worker.analysis.outcomes import read_outcomes
from worker.analysis.tuning import tune
from worker.clock import ShiftedClock
from worker.config import load_settings
from worker.cycle import Cycle, build_clients
from worker.demo.harness import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_SLACK_TOKEN,
    SANDBOX_ZENDESK_TOKEN,
    Sandboxes,
    sandbox_environment,
)
from worker.rulebook.in_force import RuleBook
from worker.scoring.scorecard import load_scorecard
from worker.store import Store

log = logging.getLogger("bench.validity")
ROOT = Path(__file__).resolve().parents[1]
ENDS = datetime(2025, 6, 2, 12, tzinfo=UTC)  # every world's "now": the figures do not move with the calendar
SANDBOX = "sandbox"  # connectors.sandboxes.history as the tests use it: 60 accounts, 15 months, seed 3
WORLD_NAMES = (SANDBOX, "alder", "birch", "cedar")
BEGIN, END = "<!-- validity:begin -->", "<!-- validity:end -->"
FAST = 600  # Zendesk requests a minute, the sandbox's and the client's (see `start_sandboxes`)


def run_world(name: str, workdir: Path, rules_dir: Path, accounts: int | None = None) -> dict[str, Any]:
    """Generate one world into fresh sandboxes, sync it with the worker, backtest and tune it; every figure."""
    folder = workdir / name
    usage = folder / "usage"
    usage.mkdir(parents=True)
    clock = ShiftedClock(offset=ENDS - datetime.now(UTC))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    sandboxes = start_sandboxes(clock)
    try:
        truth: dict[str, dict[str, Any]]
        if name == SANDBOX:
            history = build_history(sandboxes.salesforce, sandboxes.zendesk, sandboxes.slack, usage,
                                    accounts=accounts or 60, months=15, seed=3, now=ENDS)
            truth = {f.account_id: {"churned_on": f.churned_on, "touch": f.temperament,
                                    "mechanism": None if f.churned_on is None else
                                    "decline" if f.decline_days else "silent",
                                    "dipped": f.rough_patch is not None,
                                    "trouble": _history_trouble(f)} for f in history.fates.values()}
            size, months, seed = accounts or 60, 15, 3
        else:
            world = build_other_world(name, sandboxes.salesforce, sandboxes.zendesk, usage, now=ENDS,
                                      accounts=accounts)
            truth = {f.account_id: {"churned_on": f.churned_on, "touch": f.touch, "mechanism": f.mechanism,
                                    "dipped": bool(f.dips), "trouble": f.trouble} for f in world.fates.values()}
            size, months, seed = world.mix.accounts, world.mix.months, world.mix.seed
        timings["generate"] = time.perf_counter() - started
        environment = sandbox_environment(sandboxes, folder / "healthbeat.db", usage, rules_dir)
        reach = timedelta(days=round(months * 30.44) + 400)  # the whole history, and the signing before it
        settings = load_settings(**environment | {
            "HEALTHBEAT_ZENDESK_REQUESTS_PER_MINUTE": FAST, "HEALTHBEAT_ZENDESK_API_REQUESTS_PER_MINUTE": FAST,
            "HEALTHBEAT_ZENDESK_BACKFILL": reach, "HEALTHBEAT_SALESFORCE_BACKFILL": reach})
        store = Store(settings.db)
        clients = build_clients(settings)
        report = Cycle(store, settings, RuleBook(rules_dir), clients, clock=clock).run(("sync",))
        clients.close()
        if not report.ok:
            raise RuntimeError(f"{name}: the sync failed: {report}")
        timings["sync"] = time.perf_counter() - started - timings["generate"]
    finally:
        sandboxes.stop()
    mark = time.perf_counter()
    outcomes = read_outcomes(store)
    plan = Plan(until=ENDS)
    loaded = load_scorecard(rules_dir)
    result, replayed = run_backtest(store, loaded, load_alert_rules(rules_dir), outcomes, plan, history=True)
    replayed_pairs = labelled(replayed.observations, outcomes, plan.horizon_days, plan.until.date())
    first = plan.days()[0]
    pairs = [(o, y) for o, y in replayed_pairs if o.day >= first]  # the backtest's year, as its figures are
    fit = tune(loaded.scorecard, replayed_pairs, plan.horizon_days)
    learned = fit_churn_model(replayed_pairs, outcomes, loaded.scorecard, plan.horizon_days, fitted_at=ENDS)
    timings["backtest"] = time.perf_counter() - mark
    activities = store.scalar("SELECT count(*) FROM activities")
    usage_rows = store.scalar("SELECT count(*) FROM usage_daily")
    store.close()
    made = {a: t["churned_on"] for a, t in truth.items() if t["churned_on"] is not None}
    d = result.discrimination
    return {
        "world": name, "seed": seed, "accounts": size, "months": months, "activities": activities,
        "usage_rows": usage_rows, "churned": len(made), "outcomes_match_truth": dict(outcomes.churned_on) == made,
        "observed_accounts": result.accounts, "observations": d.observations, "positives": d.positives,
        "churn_events": d.churn_events, "health_auc": d.auc, "health_auc_se": d.auc_se,
        "churn_risk_auc": d.churn_risk_auc, "red_lift": result.red_lift, "red_recall": result.red_recall,
        "churn_rate": result.churn_rate, "bands": {b.band: [b.churned, b.observations] for b in result.bands},
        "baselines": {b.key: b.auc for b in result.baselines},
        "red_before_churn": [result.lead.red_before, result.lead.churned_accounts],
        "by_mechanism": by_group(pairs, truth, "mechanism"), "by_touch": by_group(pairs, truth, "touch"),
        "false_alarms": false_alarms(pairs, truth), "near_renewal": near_renewal(pairs, plan.horizon_days, truth),
        "decline_oracle": _round(decline_oracle(pairs, truth)),
        "by_measure": by_measure(pairs, [f"{g}.{m}" for g, m in measure_keys(loaded.scorecard)]),
        "tune": {"proposed": fit.proposed, "reason": fit.reason, "train": str(fit.train), "holdout": str(fit.holdout),
                 "train_churned": fit.train.churned, "holdout_churned": fit.holdout.churned,
                 "holdout_auc": list(fit.holdout_auc)},
        "learned": learned_figures(learned),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


def learned_figures(fit: ChurnFit) -> dict[str, Any]:
    """The learned churn risk's held-out figures, or why there are none."""
    if fit.judged is None or fit.model is None:
        return {"fitted": False, "reason": fit.reason}
    weights = sorted(((f.label, f.weight) for f in fit.model.features), key=lambda w: -abs(w[1]))
    return {"fitted": True, "reason": fit.reason, "l2": fit.l2, "folds": fit.folds, **judged_as_dict(fit.judged),
            "top_weights": [[label, weight] for label, weight in weights[:6]]}


def start_sandboxes(clock: ShiftedClock) -> Sandboxes:
    """The demo's sandboxes, but a Zendesk that lets its exports run at 600 pages a minute: two years of
    tickets at the real 10 a minute would spend most of the run waiting, and the waits are not what is
    measured here (bench.zendesk measures them)."""
    salesforce = SalesforceSandbox(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET, clock=clock)
    zendesk = ZendeskSandbox(email="healthbeat@support.example", api_token=SANDBOX_ZENDESK_TOKEN, clock=clock,
                             incremental_requests_per_minute=FAST, api_requests_per_minute=FAST)
    slack = SlackSandbox(token=SANDBOX_SLACK_TOKEN)
    for server in (salesforce, zendesk, slack):
        server.start()
    return Sandboxes(salesforce, zendesk, slack)


def by_group(pairs: Sequence[tuple[Observation, bool]], truth: dict[str, dict[str, Any]], key: str
             ) -> dict[str, dict[str, Any]]:
    """The AUC of the score and of churn risk for the churners of each group (mechanism or touch) against
    every retained snapshot (for touch: the retained snapshots of the same touch)."""
    churners: dict[str, list[Observation]] = defaultdict(list)
    retained = [o for o, y in pairs if not y]
    for obs, churned in pairs:
        if churned:
            group = str(truth.get(obs.account_id, {}).get(key))
            churners[group].append(obs)
    out = {}
    for group, found in sorted(churners.items()):
        others = retained if key == "mechanism" else \
            [o for o in retained if str(truth.get(o.account_id, {}).get(key)) == group]
        health = auc([o.score for o in found], [o.score for o in others])
        risk = auc([-(o.churn_risk or 0) for o in found], [-(o.churn_risk or 0) for o in others])
        out[group] = {"accounts": len({o.account_id for o in found}), "snapshots": len(found),
                      "health_auc": _round(health), "churn_risk_auc": _round(risk),
                      "red": round(sum(1 for o in found if o.band == "red") / len(found), 3)}
    return out


def by_measure(pairs: Sequence[tuple[Observation, bool]], names: Sequence[str]) -> dict[str, float | None]:
    """The AUC of each measure's points alone (snapshots where it has none left out): which measures carry
    what the score knows in this world."""
    out = {}
    for index, name in enumerate(names):
        known = [(o.points[index], y) for o, y in pairs if o.points[index] is not None]
        out[name] = _round(auc([p for p, y in known if y and p is not None],
                               [p for p, y in known if not y and p is not None]))
    return out


def decline_oracle(pairs: Sequence[tuple[Observation, bool]], truth: dict[str, dict[str, Any]]) -> float | None:
    """The AUC of the world's own truth about each account's trouble on the snapshot day (`Fate.trouble`):
    a health score that read every account against its own baseline perfectly and knew nothing else (not the
    calendar, not which kind of account churns more). Silent churn and dips that recover keep it below 1; it
    is no ceiling where levels predict churn too (the sandbox's drifting accounts, birch's light users)."""
    def trouble(obs: Observation) -> float:
        return -float(truth[obs.account_id]["trouble"](obs.day))

    return auc([trouble(o) for o, y in pairs if y], [trouble(o) for o, y in pairs if not y])


def _history_trouble(fate: HistoryFate) -> Callable[[date], float]:
    """`Fate.trouble` for `connectors.sandboxes.history`: how far below its temperament's health it is."""
    base = BASE_HEALTH[fate.temperament]
    return lambda day: max(0.0, 1 - min(fate.health(day), fate.usage_health(day)) / base)


def near_renewal(pairs: Sequence[tuple[Observation, bool]], horizon_days: int,
                 truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures on the snapshots whose open renewal closes within the horizon: there the calendar says
    nothing more (every churn is a lost renewal), and what is left is whether the score tells a renewal that
    will be lost from one that will be won."""
    index = next(i for i, s in enumerate(SIGNALS) if s.key == "renewal_proximity")
    near = [(o, y) for o, y in pairs if len(o.signals) > index and (days := o.signals[index]) is not None
            and days <= horizon_days]
    churned, retained = [o for o, y in near if y], [o for o, y in near if not y]
    return {"snapshots": len(near), "positives": len(churned),
            "health_auc": _round(auc([o.score for o in churned], [o.score for o in retained])),
            "churn_risk_auc": _round(auc([-(o.churn_risk or 0) for o in churned],
                                         [-(o.churn_risk or 0) for o in retained])),
            "baselines": {s.key: _round(auc([s.risk(o.signals[i]) for o in churned],
                                            [s.risk(o.signals[i]) for o in retained]))
                          for i, s in enumerate(SIGNALS) if s.key != "renewal_proximity"},
            "decline_oracle": _round(decline_oracle(near, truth))}


def false_alarms(pairs: Sequence[tuple[Observation, bool]], truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Red snapshots of retained accounts, for those that had a dip that recovered and for the others."""
    out = {}
    for dipped in (True, False):
        retained = [o for o, y in pairs if not y and bool(truth.get(o.account_id, {}).get("dipped")) == dipped]
        red = sum(1 for o in retained if o.band == "red")
        out["dipped" if dipped else "steady"] = {"snapshots": len(retained),
                                                 "red": round(red / len(retained), 3) if retained else None}
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- the report ----------------------------------------------------------------------------------------

SIGNAL_NAMES = {"recency": "recency", "support_volume": "support volume", "renewal_proximity": "renewal proximity"}


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render(results: Sequence[dict[str, Any]], command: str, seconds: float) -> str:
    """The tables, in Markdown (what `--write` puts into BENCHMARKS.md and what the command prints)."""
    lines = [f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` ({seconds / 60:.1f} minutes), on the "
             "shipped `rules/`; every world ends on " + ENDS.date().isoformat() + " and is backtested at the "
             "command's defaults (365 days of snapshots every 14 days, churn within 90 days).", "",
             _row("world (seed)", "accounts / months", "churned (in the year)", "health AUC", "churn-risk AUC",
                  "red lift", "red recall", "recency", "support volume", "renewal proximity", "best single signal",
                  "decline oracle"),
             _row(*["---"] * 12)]
    for r in results:
        baselines = r["baselines"]
        best = max(((v, k) for k, v in baselines.items() if v is not None), default=None)
        lines.append(_row(
            f"{r['world']} ({r['seed']})", f"{r['accounts']} / {r['months']}", f"{r['churned']} ({r['churn_events']})",
            f"{_num(r['health_auc'])} ± {_num(r['health_auc_se'])}", _num(r["churn_risk_auc"]),
            "-" if r["red_lift"] is None else f"{r['red_lift']:.1f}×", _pct(r["red_recall"]),
            *(_num(baselines.get(k)) for k in SIGNAL_NAMES),
            "-" if best is None else f"{SIGNAL_NAMES[best[1]]} {best[0]:.2f}", _num(r["decline_oracle"])))
    lines += ["", "Churned: lost renewals in the whole history (in brackets, those the replayed year labels). AUC: the "
              "chance that a snapshot followed by churn within 90 days ranks riskier than one that is not (0.5 is a "
              "coin). Red lift: churn rate of red snapshots over the overall rate; red recall: the share of "
              "snapshots followed by churn that were red. Single signals: days since the last two-way touch and "
              "tickets in the last 90 days (more is riskier), days to the open renewal (fewer is riskier). Decline "
              "oracle: the AUC of the world's own truth about how far each account was from its own baseline that "
              "day (a health score that reads every account against itself perfectly and knows nothing else: "
              "silent churn and dips that recover keep it below 1, and it is no ceiling where levels predict "
              "churn too).", "",
              *learned_table(results), "",
              "Where the calendar says nothing more: the snapshots whose open renewal closes within 90 days (every "
              "churn is a lost renewal, so this asks whether a renewal that will be lost ranks riskier than one that "
              "will be won):", "",
              _row("world", "snapshots (before a churn)", "health AUC", "churn-risk AUC", "recency", "support volume",
                   "decline oracle"),
              _row(*["---"] * 7)]
    for r in results:
        near = r["near_renewal"]
        lines.append(_row(r["world"], f"{near['snapshots']} ({near['positives']})", _num(near["health_auc"]),
                          _num(near["churn_risk_auc"]),
                          *(_num(near["baselines"].get(k)) for k in ("recency", "support_volume")),
                          _num(near["decline_oracle"])))
    lines += ["", "By churn mechanism (the world's ground truth): each mechanism's snapshots followed by churn against "
              "every retained snapshot, and the share of them that were red:", "",
              _row("world", "mechanism", "accounts", "health AUC", "churn-risk AUC", "red"), _row(*["---"] * 6)]
    for r in results:
        for mechanism, m in r["by_mechanism"].items():
            lines.append(_row(r["world"], mechanism, m["accounts"], _num(m["health_auc"]), _num(m["churn_risk_auc"]),
                              _pct(m["red"])))
    measures = list(results[0]["by_measure"]) if results else []
    lines += ["", "By measure: the AUC of each measure's points alone on the same snapshots (what carries the score; "
              "0.5 is a coin, below it the measure points the wrong way in that world):", "",
              _row("measure", *(r["world"] for r in results)), _row(*["---"] * (len(results) + 1))]
    lines += [_row(f"`{m}`", *(_num(r["by_measure"].get(m)) for r in results)) for m in measures]
    lines += ["", "By touch (churned against retained snapshots of the same touch: is a quiet low-touch account "
              "told from a leaving one?), red snapshots among retained accounts that had a dip that recovered and "
              "among the others, and what `backtest --tune` answers at its defaults:", "",
              _row("world", "touch: health AUC (churned accounts)", "red among retained: dipped / steady",
                   "`--tune` at the defaults"), _row(*["---"] * 4)]
    for r in results:
        touches = ", ".join(f"{t} {_num(m['health_auc'])} ({m['accounts']})" for t, m in r["by_touch"].items())
        alarms, tuned = r["false_alarms"], r["tune"]
        said = "proposes weights" if tuned["proposed"] else tuned["reason"].split(":")[0]
        lines.append(_row(r["world"], touches, f"{_pct(alarms['dipped']['red'])} / {_pct(alarms['steady']['red'])}",
                          f"{said} (train {tuned['train_churned']}, holdout {tuned['holdout_churned']} snapshots "
                          "before a churn)"))
    lines += ["", "Seconds per world (generate / sync / backtest and tune): " + ", ".join(
        f"{r['world']} {r['seconds'].get('generate', 0):.0f} / {r['seconds'].get('sync', 0):.0f} / "
        f"{r['seconds'].get('backtest', 0):.0f}" for r in results) + "."]
    if not all(r["outcomes_match_truth"] for r in results):
        lines.append("WARNING: the outcomes the backtest read differ from a world's ground truth.")
    return "\n".join(lines)


def learned_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """The learned churn risk beside the hand-set scorecard, on the later period it never saw."""
    lines = ["The learned churn risk (`healthbeat churn-model fit`, as `backtest` fits it): a logistic regression "
             "on the scorecard's measures and the renewal as known then, fitted on the earlier part of the whole "
             "replayed history (the L2 strength chosen on time-ordered folds of it) and judged on the later part it "
             "never saw, beside what the hand-set scorecard and the renewal calendar reach on the same snapshots:",
             "",
             _row("world", "fitted on → judged on (lost / won renewals judged)", "learned AUC", "hand-set churn risk",
                  "health", "renewal proximity", "near renewal: learned / hand-set", "top tenth lift: learned / "
                  "hand-set", "red lift", "calibration, riskiest tenths: predicted → observed",
                  "flagged before churn (median days ahead): learned top tenth / red"),
             _row(*["---"] * 11)]
    for r in results:
        learned = r.get("learned") or {}
        if not learned.get("fitted"):
            lines.append(_row(r["world"], "not fitted: " + str(learned.get("reason", "-")).split(";")[0], *["-"] * 9))
            continue
        fitted, judged, b = learned["fitted_on"], learned["judged_on"], learned["baselines"]
        near = learned["near_renewal"]["auc"]
        top = learned["calibration"][-3:]
        lead = learned["lead_time"]
        lines.append(_row(
            r["world"], f"{fitted['from']} to {fitted['to']} → {judged['from']} to {judged['to']} "
                        f"({judged['lost_renewals']} / {judged['won_renewals']})",
            _num(learned["auc"]), _num(b.get("hand_set_churn_risk")), _num(b.get("health")),
            _num(b.get("renewal_proximity")), f"{_num(near.get('learned'))} / {_num(near.get('hand_set_churn_risk'))}",
            f"{_x(learned['top_decile_lift'])} / {_x(learned['hand_set_top_decile_lift'])}", _x(learned["red_lift"]),
            ", ".join(f"{c['predicted']:.1f}% → {c['observed']:.1f}%" for c in top),
            f"{_flagged(lead['learned'])} / {_flagged(lead['red'])}"))
    lines += ["", "Heaviest weights (per standardised unit; positive raises the risk): " + "; ".join(
        f"{r['world']} " + ", ".join(f"{label} {weight:+.2f}" for label, weight in r["learned"]["top_weights"])
        for r in results if (r.get("learned") or {}).get("fitted")) + "."]
    return lines


def _flagged(found: dict[str, Any]) -> str:
    days = "-" if found["median_days"] is None else f"{found['median_days']:.0f}"
    return f"{found['flagged_before_churn']}/{found['churned_accounts']} ({days})"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}×"


def write_section(path: Path, body: str) -> None:
    """Put `body` between the Validity markers of `path` (a "## Validity" section is added when missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n## Validity\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def run(names: Sequence[str], workdir: Path, rules_dir: Path, *, jobs: int = 2, accounts: int | None = None,
        runner: Callable[..., Any] = isolated) -> list[dict[str, Any]]:
    """Each world in a process of its own, `jobs` at a time; results in the order asked."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(runner, run_world, name, workdir, rules_dir, accounts) for name in names]
        return [f.result() for f in futures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.validity", description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", choices=WORLD_NAMES, default=list(WORLD_NAMES))
    parser.add_argument("--jobs", type=int, default=2, help="worlds run at once, each in its own process")
    parser.add_argument("--accounts", type=int, help="a smaller size for every world (a quick look, not the figures)")
    parser.add_argument("--rules-dir", type=Path, default=ROOT / "rules")
    parser.add_argument("--json", type=Path, help="also keep every figure as JSON here")
    parser.add_argument("--write", type=Path, nargs="?", const=ROOT / "BENCHMARKS.md", metavar="FILE",
                        help="put the tables into FILE's Validity section (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for chatty in ("worker", "connectors", "httpx"):  # the command's own lines only; not in a caller's process
        logging.getLogger(chatty).setLevel(logging.WARNING)
    command = "python -m bench.validity" + (f" --accounts {args.accounts}" if args.accounts else "") + \
        ("" if list(args.worlds) == list(WORLD_NAMES) else " --worlds " + " ".join(args.worlds))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="healthbeat-validity-") as work:
        results = run(args.worlds, Path(work), args.rules_dir, jobs=args.jobs, accounts=args.accounts)
    seconds = time.perf_counter() - started
    body = render(results, command, seconds)
    print(body)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    if args.write:
        write_section(args.write, body)
        log.info("wrote the Validity section of %s", args.write)
    log.info("%d worlds in %.0f s (median %.0f s each)", len(results), seconds,
             statistics.median(sum(r["seconds"].values()) for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
