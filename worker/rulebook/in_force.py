"""The rules in force: the last scorecard and alert rules that loaded cleanly.

Ops edit the files while the worker runs. A broken edit must never stop scoring or alerting: the worker
keeps its last good rules, logs every problem with file, line and field, and says so on `/healthz`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from worker.alerting.rules import LoadedRules, load_alert_rules
from worker.errors import NoGoodRules
from worker.rulefile import RuleFileError, read_rule_bytes
from worker.scoring.scorecard import LoadedScorecard, load_scorecard

log = logging.getLogger(__name__)


def load_rules(rules_dir: Path) -> tuple[LoadedScorecard | None, LoadedRules | None, list[str]]:
    """Both rule files, each None if it failed, and every problem found in either."""
    problems: list[str] = []
    scorecard = alerts = None
    try:
        scorecard = load_scorecard(rules_dir)
    except RuleFileError as exc:
        problems += [str(p) for p in exc.problems]
    try:
        alerts = load_alert_rules(rules_dir)
    except RuleFileError as exc:
        problems += [str(p) for p in exc.problems]
    return scorecard, alerts, problems


RULE_FILES = ("scorecard.yaml", "alerts.yaml")


def rules_fingerprint(rules_dir: Path) -> str:
    """The rule files' contents in one digest (a file that cannot be read counts by the reason it cannot). Read as
    the loaders read them, so a FIFO or a huge file costs no more here than there."""
    digest = hashlib.sha256()
    for name in RULE_FILES:
        try:
            digest.update(read_rule_bytes(rules_dir / name))
        except RuleFileError as exc:
            digest.update(f"<{name}: {exc}>".encode("utf-8", "backslashreplace"))
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass
class RuleBook:
    rules_dir: Path
    scorecard: LoadedScorecard | None = None
    alerts: LoadedRules | None = None
    problems: list[str] = field(default_factory=list)
    _fingerprint: str | None = field(default=None, repr=False)

    def reload(self) -> list[str]:
        """Load both files; keep the previous good version of any that fails. Returns the problems.

        Unchanged files are not parsed and checked again (a cycle every few minutes would spend a quarter
        of a quiet cycle on it); their problems, if any, are logged again so a broken file stays visible."""
        fingerprint = rules_fingerprint(self.rules_dir)
        if fingerprint == self._fingerprint:
            self._log_problems()
            return self.problems
        scorecard, alerts, self.problems = load_rules(self.rules_dir)
        self._fingerprint = fingerprint
        self.scorecard = scorecard or self.scorecard
        self.alerts = alerts or self.alerts
        self._log_problems()
        return self.problems

    def _log_problems(self) -> None:
        for problem in self.problems:
            log.error("rules: %s%s", problem,
                      " (keeping the last good rules)" if self.scorecard and self.alerts else "")

    def require(self) -> tuple[LoadedScorecard, LoadedRules]:
        if self.scorecard is None or self.alerts is None:
            raise NoGoodRules("no valid rules to work with:\n  " + "\n  ".join(self.problems))
        return self.scorecard, self.alerts

    @property
    def healthy(self) -> bool:
        return not self.problems
