"""What a CSM asks of one account: why this score, from which data, and how it moved.

`explain` lists every measure with its raw value, the points it earned, its weight and its contribution
(weight × points, which add up to the score), and how old the newest data behind the score is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from connectors.salesforce.ids import is_salesforce_id, to_18
from worker.errors import AccountNotFound
from worker.scoring.measures import LIBRARY
from worker.scoring.scorecard import Scorecard
from worker.store import Store, parse_iso
from worker.terminal import Column, FittedTable, clean, counted, plain

SPARK = "▁▂▃▄▅▆▇█"


def resolve_account(store: Store, text: str) -> str:
    """An ACCOUNT argument: a Salesforce Account Id (15 or 18 characters) or an exact name."""
    candidate = text.strip()
    if len(candidate) in (15, 18) and is_salesforce_id(candidate):
        account_id = to_18(candidate)
        if store.scalar("SELECT 1 FROM accounts WHERE id = ?", (account_id,)):
            return account_id
    rows = store.query("SELECT id FROM accounts WHERE name = ? AND is_deleted = 0", (candidate,))
    if len(rows) == 1:
        return str(rows[0]["id"])
    if len(rows) > 1:
        raise AccountNotFound(f"{len(rows)} accounts are named {candidate!r}: give one of their Ids "
                              f"({', '.join(r['id'] for r in rows)})")
    raise AccountNotFound(f"no account with the Id or exact name {candidate!r}")


@dataclass(frozen=True)
class MeasureLine:
    group: str
    key: str
    raw: float | None
    points: float | None
    weight: float
    says: str

    @property
    def contribution(self) -> float:
        return self.weight * (self.points or 0.0)


@dataclass(frozen=True)
class Explanation:
    account: dict[str, Any]
    measures: list[MeasureLine]
    newest: dict[str, str | None]   # kind of data -> newest date seen

    def as_json(self) -> dict[str, Any]:
        return {"account": self.account, "newest_data": self.newest,
                "measures": [{"group": m.group, "measure": m.key, "raw": m.raw, "points": m.points,
                              "weight": round(m.weight, 4), "contribution": round(m.contribution, 2),
                              "says": m.says} for m in self.measures]}


def explain_account(store: Store, scorecard: Scorecard, account_id: str) -> Explanation:
    rows = store.query("SELECT h.*, s.computed_score, s.confidence, s.overridden, s.measures, s.segment, "
                       "s.scored_at, s.trend_delta FROM account_health h JOIN scores s USING (account_id) "
                       "WHERE account_id = ?", (account_id,))
    if not rows:
        raise AccountNotFound(f"{account_id} has no score yet: run a cycle first")
    account = rows[0]
    stored = json.loads(account.pop("measures") or "{}")
    lines = []
    for group_name, group in scorecard.groups.items():
        for key, spec in group.measures.items():
            item = stored.get(key, {})
            raw = item.get("raw")
            says = LIBRARY[spec.measure or key].describe(raw, spec.params()) if raw is not None else "no data"
            lines.append(MeasureLine(group_name, key, raw, item.get("points"), float(item.get("weight", 0.0)), says))
    newest = {
        kind: store.scalar("SELECT max(occurred_at) FROM activities WHERE account_id = ? AND kind = ? "
                           "AND is_deleted = 0", (account_id, kind))
        for kind in ("meeting", "email", "ticket", "ticket_comment")}
    newest["usage"] = store.scalar("SELECT max(day) FROM usage_daily WHERE account_id = ?", (account_id,))
    return Explanation(account, lines, newest)


def _age(value: str | None, now: datetime) -> str:
    if not value:
        return "none"
    moment = parse_iso(value if "T" in value else f"{value}T00:00:00Z")
    days = (now - moment) / timedelta(days=1)
    return f"{value[:10]} ({counted(round(days), 'day')} ago)" if days >= 1 else f"{value[:10]} (today)"


def format_explanation(explanation: Explanation, now: datetime | None = None) -> RenderableType:
    now = now or datetime.now(UTC)
    a = explanation.account
    head = Text()
    head.append(clean(a["name"]), style="bold")
    head.append(clean(f"  ({a['account_id']}, owner {a['owner'] or 'unknown'}"
                      f"{', segment ' + a['segment'] if a['segment'] else ''})") + "\n")
    head.append(clean(f"Health {a['score']:.0f} {a['band']}  ·  trend {a['trend']}  ·  confidence "
                      f"{a['confidence']} (coverage {round(100 * (a['coverage'] or 0))}%)  ·  churn risk "
                      f"{_num(a['churn_risk'])}  ·  expansion readiness {_num(a['expansion_readiness'])}") + "\n")
    if a["overridden"]:
        head.append(f"Pinned by a CSM (computed score {a['computed_score']:.0f}).\n", style="yellow")
    head.append(clean(f"Why: {a['reason']}") + "\n")
    table = FittedTable("Measures (contribution = weight × points; they add up to the computed score)",
                        MEASURE_TABLE, [(m.group, m.key, _num(m.raw, 2), _num(m.points), f"{100 * m.weight:.1f}%",
                                         f"{m.contribution:.1f}", m.says) for m in explanation.measures],
                        hint="--format json shows them")
    ages = Table(title="Newest data behind the score")
    ages.add_column("Data")
    ages.add_column("Newest")
    for kind, value in explanation.newest.items():
        ages.add_row(kind.replace("_", " "), plain(_age(value, now)))
    return Group(head, table, ages)


MEASURE_TABLE = (Column("Group", hide=2), Column("Measure", max_width=26), Column("Raw", justify="right"),
                 Column("Points", justify="right", hide=1), Column("Weight", justify="right", hide=1),
                 Column("Contribution", justify="right"), Column("What it says", grows=True, min_room=24))


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def history(store: Store, account_id: str, days: int, today: date) -> list[dict[str, Any]]:
    return store.query("SELECT day, score, band, churn_risk, coverage FROM score_history "
                       "WHERE account_id = ? AND day > ? ORDER BY day",
                       (account_id, (today - timedelta(days=days)).isoformat()))


def sparkline(values: list[float]) -> str:
    """Scores 0..100 as one line of block characters, so a trend reads at a glance in a terminal."""
    return "".join(SPARK[min(len(SPARK) - 1, int(v / 100 * len(SPARK)))] for v in values)


def plot_history(rows: list[dict[str, Any]], title: str, path: str, *, red: float, yellow: float) -> None:
    """A PNG of the score over time with the band thresholds; needs matplotlib (the `charts` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("charts need matplotlib: pip install 'healthbeat[charts]'") from None
    days = [date.fromisoformat(r["day"]) for r in rows]
    figure, axis = plt.subplots(figsize=(8, 3.2))
    axis.axhspan(0, red, color="#fde2e1")
    axis.axhspan(red, yellow, color="#fff4d6")
    axis.axhspan(yellow, 100, color="#e3f6e5")
    axis.plot(days, [r["score"] for r in rows], marker="o", color="#1f3b57")  # type: ignore[arg-type]
    axis.set_ylim(0, 100)
    axis.set_title(title.replace("$", r"\$"))  # a name is data: "$x$" in it is not mathtext
    axis.set_ylabel("health score")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
