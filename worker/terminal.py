"""Tables for a terminal, shared by the commands and the demo: rows in, a rich `Table` out.

Only presentation lives here: the rows come from the module that owns their table (`scoring.latest`), so
the same facts print the same way wherever a person reads them.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table


def whole(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def scores_table(rows: list[dict[str, Any]], title: str = "Account health") -> Table:
    colours = {"red": "red", "yellow": "yellow", "green": "green"}
    table = Table(title=title, show_lines=False)
    for column in ("Account", "Owner", "Score", "Band", "Trend", "Churn", "Expansion", "Confidence", "Reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        colour = colours.get(row["band"], "white")
        coverage = f" {round(100 * row['coverage'])}%" if row.get("coverage") is not None else ""
        table.add_row(row["name"], row["owner"] or "", f"{row['score']:.0f}",
                      f"[{colour}]{row['band']}[/{colour}]", row["trend"] or "", whole(row["churn_risk"]),
                      whole(row.get("expansion_readiness")), f"{row.get('confidence') or ''}{coverage}",
                      row["reason"] or "")
    return table
