"""The `healthbeat` command. Names and options are a contract with users and deployments (DESIGN §9).

Each module here registers one family of commands on the shared `app`.
"""

from __future__ import annotations

from worker.cli import alerts, cycle, ops, rules, scores
from worker.cli.common import app
from worker.cli.scores import read_scores, scores_table

__all__ = ["alerts", "app", "cycle", "main", "ops", "read_scores", "rules", "scores", "scores_table"]


def main() -> None:
    app(prog_name="healthbeat")
