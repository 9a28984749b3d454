"""The rules in force: the last scorecard and alert rules that loaded cleanly.

Ops edit the files while the worker runs. A broken edit must never stop scoring or alerting: the worker
keeps its last good rules, logs every problem with file, line and field, and says so on `/healthz`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from worker.alert_rules import LoadedRules, load_alert_rules
from worker.rulefile import RuleFileError
from worker.scorecard import LoadedScorecard, load_scorecard

log = logging.getLogger(__name__)


class NoGoodRules(Exception):
    """The rule files are broken and no earlier good version is loaded: nothing to score with."""


@dataclass
class RuleBook:
    rules_dir: Path
    scorecard: LoadedScorecard | None = None
    alerts: LoadedRules | None = None
    problems: list[str] = field(default_factory=list)

    def reload(self) -> list[str]:
        """Load both files; keep the previous good version of any that fails. Returns the problems."""
        self.problems = []
        try:
            self.scorecard = load_scorecard(self.rules_dir)
        except RuleFileError as exc:
            self.problems += [str(p) for p in exc.problems]
        try:
            self.alerts = load_alert_rules(self.rules_dir)
        except RuleFileError as exc:
            self.problems += [str(p) for p in exc.problems]
        for problem in self.problems:
            log.error("rules: %s%s", problem,
                      " (keeping the last good rules)" if self.scorecard and self.alerts else "")
        return self.problems

    def require(self) -> tuple[LoadedScorecard, LoadedRules]:
        if self.scorecard is None or self.alerts is None:
            raise NoGoodRules("no valid rules to work with:\n  " + "\n  ".join(self.problems))
        return self.scorecard, self.alerts

    @property
    def healthy(self) -> bool:
        return not self.problems
