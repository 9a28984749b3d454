"""The latest score of every account, as people filter them: by band, owner and segment.

`healthbeat scores` and the demo read the same rows, in the same order (worst first), from the
`account_health` view, so what a CSM sees in the terminal is what Salesforce was sent.
"""

from __future__ import annotations

from typing import Any

from worker.scoring.scorecard import BANDS as BANDS
from worker.store import Store


def read_scores(store: Store, *, band: str | None = None, owner: str | None = None,
                segment: str | None = None) -> list[dict[str, Any]]:
    where, params = ["h.score IS NOT NULL"], []
    for column, value in (("h.band", band), ("h.owner", owner), ("s.segment", segment)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return store.query(
        "SELECT h.account_id, h.name, h.owner, s.segment, h.score, h.band, h.trend, h.churn_risk, "
        "h.expansion_readiness, h.coverage, s.confidence, h.reason FROM account_health h "
        f"JOIN scores s USING (account_id) WHERE {' AND '.join(where)} ORDER BY h.score, h.name", params)


def scored_owners(store: Store) -> list[str]:
    """The owners of scored accounts, by full name: what `--owner` can match."""
    return [str(r["owner"]) for r in store.query(
        "SELECT DISTINCT owner FROM account_health WHERE score IS NOT NULL AND owner IS NOT NULL ORDER BY owner")]


def scored_segments(store: Store) -> list[str]:
    """The segments the latest scores were computed in (a segment just removed from the scorecard included)."""
    return [str(r["segment"]) for r in store.query(
        "SELECT DISTINCT segment FROM scores WHERE segment IS NOT NULL ORDER BY segment")]
