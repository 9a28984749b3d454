"""Setting up a deployment: `healthbeat init`, the rule files Healthbeat ships, copied for ops to edit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import app, err
from worker.config import copy_shipped_rules


@app.command()
def init(folder: Annotated[Path, typer.Argument(help="Where to write the rule files (created if missing; files "
                                                     "already there are never overwritten).")]) -> None:
    """Write the default rules (scorecard.yaml, alerts.yaml, and their tests in tests/) into FOLDER for ops to
    edit, then point HEALTHBEAT_RULES_DIR at it."""
    for path in copy_shipped_rules(folder):
        typer.echo(path)
    err.print(f"Next: set HEALTHBEAT_RULES_DIR={folder} (in .env or the environment), edit the files, and check "
              f"them with `healthbeat rules check --rules-dir {folder}`.", soft_wrap=True, markup=False)
