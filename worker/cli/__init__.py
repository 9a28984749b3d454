"""The `healthbeat` command. Names and options are a contract with users and deployments (README "Commands").

Each module here registers one family of commands on the shared `app`.
"""

from __future__ import annotations

from worker.cli import alerts, browse, cycle, ops, rules, scores, setup
from worker.cli.common import app

__all__ = ["alerts", "app", "browse", "cycle", "main", "ops", "rules", "scores", "setup"]


def main() -> None:
    app(prog_name="healthbeat")
