"""Every error Healthbeat raises on purpose, in one tree, so callers catch by meaning and the CLI turns each
branch into a message and an exit status in one place (`worker.cli.common.Commands`). Anything else
exits 1.

    HealthbeatError                  anything Healthbeat refuses or cannot do, in words for the operator
     ├── ConfigError                 a setting is missing or malformed (exit 2)
     ├── StoreLocked                 another worker holds the database's lock (exit 3)
     ├── StoreBusy                   the worker held the database's write lock for longer than a command waits
     ├── StoreUnusable               the database file cannot be used as it is: names it and the way out (exit 2)
     │    ├── NoDatabase             a command that reads was given a database that does not exist
     │    ├── SchemaTooNew           a newer Healthbeat wrote it: upgrade before writing to it
     │    └── StoreDamaged           not a SQLite database, or damaged: restore a backup
     ├── RuleFileError               a rule file cannot be used; every problem has file, line and field
     │                               (defined in `worker.rulefile`, beside the problems it carries)
     ├── NoGoodRules                 no rules have loaded cleanly yet, so the cycle cannot score or alert
     ├── SyncAborted                 a source refused the worker's credentials: the cycle cannot go on
     ├── FeedbackError               a feedback operation that cannot be done (no such proposal, expired)
     │    └── NotANudgeKey           text that is not a nudge's dedup key (a forged or truncated button)
     ├── AccountNotFound             an account named on the command line is not in the store
     ├── OutcomeConfigError          the churn outcomes cannot be read as configured (exit 2)
     └── HealthServerError           the worker's HTTP port cannot be opened (exit 2)

The connectors raise their own trees (`SalesforceError`, `ZendeskError`, `SlackError`): they are libraries
of their own and know nothing of the worker. Control flow that never leaves a module (a spent API budget,
a stop inside a delivery loop) stays private to that module.
"""

from __future__ import annotations


class HealthbeatError(Exception):
    """Anything Healthbeat refuses or cannot do, said in words an operator can act on."""

    exit_status = 1


class ConfigError(HealthbeatError):
    """A setting is missing or malformed: names the setting and what is wrong with it."""

    exit_status = 2


class StoreLocked(HealthbeatError):
    """Another worker holds the database: two workers never share one store."""

    exit_status = 3


class StoreBusy(HealthbeatError):
    """A command beside the running worker waited for the database's write lock and gave up: try again."""


class StoreUnusable(HealthbeatError):
    """The database file cannot be opened or created as configured (a missing or read-only folder...)."""

    exit_status = 2


class NoDatabase(StoreUnusable):
    """A command that only reads was pointed at a database that does not exist (a typo in --db, most likely)."""


class SchemaTooNew(StoreUnusable):
    """The database's schema is newer than this Healthbeat's: writing to it could lose what the newer one keeps."""


class StoreDamaged(StoreUnusable):
    """The file at HEALTHBEAT_DB is not a SQLite database, or SQLite found it damaged."""


class NoGoodRules(HealthbeatError):
    """No scorecard or alert rules have loaded cleanly yet, so scoring and alerting cannot run."""


class SyncAborted(HealthbeatError):
    """The cycle cannot go on (bad credentials): names the system and what to check."""


class FeedbackError(HealthbeatError):
    """A feedback operation that cannot be done (unknown nudge key, no such proposal, expired...)."""


class NotANudgeKey(FeedbackError, ValueError):
    """Text that is not a nudge's dedup key: a forged, truncated or foreign button value."""


class AccountNotFound(HealthbeatError):
    """An account named by Id or exact name that the store does not hold."""


class OutcomeConfigError(HealthbeatError):
    """The churn outcomes cannot be read as configured (a missing field, an unknown opportunity type)."""

    exit_status = 2


class HealthServerError(HealthbeatError):
    """The worker's HTTP port cannot be opened (in use, or not permitted)."""

    exit_status = 2
