"""The rules in force: the last scorecard, alert rules and churn model that loaded cleanly.

Ops edit the files while the worker runs. A broken edit must never stop scoring or alerting: the worker
keeps its last good rules, logs every problem with file, line and field, and says so on `/healthz`. The churn
model (`churn_model.yaml`) is optional: without it churn risk is the scorecard's rule; a broken one keeps the
last good model while that still fits the scorecard in force.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from worker.alerting.rules import LoadedRules, load_alert_rules
from worker.errors import NoGoodRules
from worker.rulefile import RuleFileError, read_rule_bytes
from worker.scoring.churn_model import (
    MODEL_FILE,
    LoadedChurnModel,
    load_churn_model,
    read_churn_model,
    semantic_problems,
)
from worker.scoring.scorecard import LoadedScorecard, load_scorecard

log = logging.getLogger(__name__)


def load_rules(rules_dir: Path) -> tuple[LoadedScorecard | None, LoadedRules | None, list[str]]:
    """Both rule files, each None if it failed, and every problem found in either or in the churn model."""
    scorecard, alerts, _, problems = load_all_rules(rules_dir)
    return scorecard, alerts, problems


def load_all_rules(rules_dir: Path) -> tuple[LoadedScorecard | None, LoadedRules | None, LoadedChurnModel | None,
                                             list[str]]:
    """The scorecard, the alert rules and the churn model (None when absent or broken), and every problem."""
    problems: list[str] = []
    scorecard = alerts = model = None
    try:
        scorecard = load_scorecard(rules_dir)
    except RuleFileError as exc:
        problems += [str(p) for p in exc.problems]
    try:
        alerts = load_alert_rules(rules_dir)
    except RuleFileError as exc:
        problems += [str(p) for p in exc.problems]
    try:
        model = load_churn_model(rules_dir, scorecard.scorecard if scorecard else None)
    except RuleFileError as exc:
        problems += [str(p) for p in exc.problems]
    return scorecard, alerts, model, problems


RULE_FILES = ("scorecard.yaml", "alerts.yaml", MODEL_FILE)


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
    churn_model: LoadedChurnModel | None = None
    problems: list[str] = field(default_factory=list)
    _fingerprint: str | None = field(default=None, repr=False)

    def reload(self) -> list[str]:
        """Load the rule files (and the churn model); keep the previous good version of any that fails. Returns
        the problems.

        Unchanged files are not parsed and checked again (a cycle every few minutes would spend a quarter
        of a quiet cycle on it); their problems, if any, are logged again so a broken file stays visible."""
        fingerprint = rules_fingerprint(self.rules_dir)
        if fingerprint == self._fingerprint:
            self._log_problems()
            return self.problems
        scorecard, alerts, model, self.problems = load_all_rules(self.rules_dir)
        self._fingerprint = fingerprint
        self.scorecard = scorecard or self.scorecard
        self.alerts = alerts or self.alerts
        self.churn_model = self._churn_model(model, checked=scorecard is not None)
        self._log_problems()
        return self.problems

    def _churn_model(self, loaded: LoadedChurnModel | None, *, checked: bool) -> LoadedChurnModel | None:
        """The model just loaded, once it fits the scorecard in force (`checked`: it was loaded against it; a
        broken scorecard.yaml leaves the last good one in force, and the model is checked against that one);
        else, when its file is there, the last good model as long as it fits the scorecard in force; none when
        the file is gone (churn risk goes back to the scorecard's rule)."""
        if loaded is not None and not checked and self.scorecard is not None:
            try:
                loaded = read_churn_model(loaded.path, self.scorecard.scorecard)
            except RuleFileError as exc:
                self.problems += [f"{p} (checked against the last good scorecard, still in force)"
                                  for p in exc.problems]
                loaded = None
        if loaded is not None or self.churn_model is None:
            return loaded
        path = self.rules_dir / MODEL_FILE
        if not path.exists() and not path.is_symlink():
            return None
        last = self.churn_model
        if self.scorecard is not None:
            stale = semantic_problems(last.model, self.scorecard.scorecard)
            if stale:
                self.problems += [f"{last.path}: {message} (the last good churn model no longer fits the scorecard: "
                                  f"churn risk is the scorecard's rule until it does)" for _, message in stale]
                return None
        self.problems.append(f"{path}: keeping the last good churn model (fitted {last.model.fitted_at.date()}, "
                             f"digest {last.digest}) until the file loads again")
        return last

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
