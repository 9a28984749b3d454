"""`healthbeat doctor`: every precondition of a working deployment, checked in plain words with a fix.

Each check stands alone (a refused Salesforce login does not hide a wrong Slack token) and talks to each
system through the same clients the worker uses, once, without retrying: a diagnosis should be quick and
say what is wrong now. A check fails (exit status 1), passes, is skipped, or passes with a warning: something
that works but probably not as the deployment intends (an org whose emails never reach Salesforce). Doctor
changes nothing: it opens the database without migrating it (read-only to look at the data) and writes no
record anywhere. Secrets are never printed: the clients keep them out of their messages, and every detail
also passes through the log redactor with the configured secrets.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

from connectors.salesforce.client import (
    MY_DOMAIN_FORM,
    SalesforceAuthError,
    SalesforceClient,
    SalesforceCredentials,
    SalesforceError,
)
from connectors.slack.client import SlackAuthError, SlackClient, SlackError, SocketModeLink
from connectors.usage.reader import list_usage_files
from connectors.zendesk.client import ZendeskAuthError, ZendeskClient, ZendeskError
from worker.clock import Clock, system_clock
from worker.config import Settings, load_settings
from worker.delivery.writeback import DEFAULT_FIELDS
from worker.errors import ConfigError
from worker.logs import RedactingFilter
from worker.ops.salesforce_fields import (
    ACCOUNT_FIELDS,
    PERMISSION_SET,
    SNAPSHOT_FIELDS,
    SNAPSHOT_OBJECT,
    CustomField,
)
from worker.rulebook.in_force import load_rules
from worker.store import MIGRATIONS, iso

__all__ = ["SLACK_SCOPES", "Check", "checks_from_environment", "field_problems", "format_checks", "run_doctor"]

log = logging.getLogger(__name__)

TIMEOUT: Final = 15.0
API_USAGE_LIMIT_SHARE: Final = 0.9
"""Above this share of the org's daily API limit, doctor fails: the worker is about to be stopped by it."""

SLACK_SCOPES: Final[Mapping[str, str]] = {
    "chat:write": "post nudges",
    "users:read": "read the owner's Slack profile",
    "users:read.email": "find the owner's Slack user by email",
    "im:write": "open a DM with the owner",
    "im:history": "find a DM nudge already posted before a crash, so it is never sent twice",
    "channels:history": "find a channel nudge already posted before a crash, so it is never sent twice",
    "groups:history": "the same in a private fallback channel (without it, such nudges stay unconfirmed)",
}
"""Bot token scopes the worker needs, and what for."""
CHANNEL_NAME_SCOPE: Final = ("channels:read", "find the fallback channel's id from its name")
_CHANNEL_ID: Final = re.compile(r"^[CGD][A-Z0-9]{2,}$")  # given as an id, the channel needs no lookup

EMAIL_CAPTURE_WINDOW: Final = timedelta(days=30)
EMAIL_CAPTURE_MIN_ACTIVITY: Final = 10
"""Meetings and calls from Salesforce in the window, with not one email, before doctor suspects Einstein Activity
Capture: fewer say too little (a new or quiet org)."""

FIELDS_HINT: Final = ("create them in Setup → Object Manager → Account → Fields & Relationships "
                      "(`healthbeat salesforce fields` prints the steps; `--package DIR` writes a Metadata API "
                      "package), and make each visible to the integration user (field-level security)")


@dataclass(frozen=True)
class Check:
    """One precondition: its name, whether it holds, what was found, and how to fix it if not. A warning holds
    (the worker runs) but is shown with its fix, since the data is probably not what the deployment expects."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False
    warning: bool = False


def _skipped(name: str, detail: str) -> Check:
    return Check(name, True, detail, skipped=True)


# -- entry points -----------------------------------------------------------------------------------------

def checks_from_environment(**overrides: Any) -> list[Check]:
    """Doctor for the CLI: settings that fail to load are the first (and only) failed check."""
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        return [Check("settings", False, str(exc),
                      "set or correct each setting named above, in the environment or .env (see .env.example)")]
    return run_doctor(settings)


def run_doctor(settings: Settings, *, clock: Clock = system_clock) -> list[Check]:
    """Every check, in the order an operator would fix things: settings, database, rules, then each system.
    `clock` says what "recent" means to the checks that look at the data."""
    redact = RedactingFilter(settings.secret_values()).redact
    steps: list[tuple[str, Callable[[Settings], list[Check]]]] = [
        ("settings", _settings), ("database", _database), ("rule files", _rules),
        ("Salesforce login", _salesforce), ("Salesforce emails", partial(_email_capture, clock=clock)),
        ("Zendesk", _zendesk), ("Slack", _slack), ("Slack Socket Mode", _socket_mode), ("usage files", _usage),
    ]
    checks: list[Check] = []
    for name, step in steps:
        try:
            found = step(settings)
        except Exception as exc:  # a diagnosis must finish: an unexpected failure is one more finding
            log.debug("doctor: %s failed", name, exc_info=True)
            found = [Check(name, False, f"the check itself failed: {type(exc).__name__}: {exc}",
                           "run with --verbose and report this as a bug")]
        checks += [replace(c, detail=redact(c.detail), fix=redact(c.fix)) for c in found]
    return checks


def format_checks(checks: Sequence[Check]) -> str:
    """One line per check (✓ holds, ✗ fails, - skipped, ! holds with a warning), the fix under each failure and
    warning, and a summary line."""
    lines = []
    for check in checks:
        mark = "-" if check.skipped else "✗" if not check.ok else "!" if check.warning else "✓"
        detail = check.detail.replace("\n", "\n    ")
        lines.append(f"{mark} {check.name}: {detail}")
        if (not check.ok or check.warning) and check.fix:
            lines.append(f"    fix: {check.fix}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        lines.append(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")
    else:
        notes = [f"{sum(c.skipped for c in checks)} skipped"] if any(c.skipped for c in checks) else []
        warned = sum(c.warning for c in checks)
        notes += [f"{_count(warned, 'warning')}: {', '.join(c.name for c in checks if c.warning)}"] if warned else []
        lines.append(f"All {len(checks)} checks passed" + (f" ({'; '.join(notes)})" if notes else "") + ".")
    return "\n".join(lines)


# -- settings, database, rules ----------------------------------------------------------------------------

def _settings(settings: Settings) -> list[Check]:
    problems = settings.partial_sources()
    try:
        settings.require_salesforce()
    except ConfigError as exc:
        problems.insert(0, str(exc))
    if problems:
        return [Check("settings", False, "\n".join(problems),
                      "set, correct or remove the settings named, in the environment or .env (see .env.example)")]
    optional = [f"Zendesk {'on' if settings.zendesk_configured else 'off'}",
                f"Slack {'on' if settings.slack_configured else 'off'}",
                f"usage files {'from ' + str(settings.usage_dir) if settings.usage_dir else 'off'}"]
    return [Check("settings", True, f"Salesforce at {settings.salesforce_login_url} with {_flow(settings)} "
                                    f"(API {settings.salesforce_api_version}); {', '.join(optional)}; "
                                    f"a cycle every {_duration(settings.interval)}; {_ca_bundle_in_use(settings)}")]


def _flow(settings: Settings) -> str:
    """The login flow in use, in words, and (the JWT bearer flow) whom it logs in as."""
    if settings.salesforce_flow == "jwt_bearer":
        return f"the JWT bearer flow as {settings.salesforce_username or '(no SALESFORCE_USERNAME)'}"
    return "the client-credentials flow"


def _ca_bundle_in_use(settings: Settings) -> str:
    """Which CA certificates the Salesforce login trusts, and which setting chose them: the first question when
    a private CA (or a TLS-inspecting proxy) makes a login fail verification."""
    if settings.ca_bundle:
        named = [name for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
                 if os.environ.get(name) == settings.ca_bundle]
        source = named[0] if named else "REQUESTS_CA_BUNDLE or SSL_CERT_FILE in .env"
        return f"CA bundle {settings.ca_bundle} (from {source})"
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    return f"CA bundle {DEFAULT_CA_BUNDLE_PATH} (the default: REQUESTS_CA_BUNDLE and SSL_CERT_FILE are not set)"


def _duration(span: timedelta) -> str:
    """The settings' own notation (15m, 2h, 1d), not Python's 0:15:00."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _database(settings: Settings) -> list[Check]:
    path = Path(settings.db)
    fix = f"set HEALTHBEAT_DB to a file in a folder the worker's user can write (now {path})"
    if path.is_dir():
        return [Check("database", False, f"{path} is a folder, not a database file", fix)]
    if not path.exists():
        folder = _nearest_existing(path.parent)
        if not folder.is_dir():
            return [Check("database", False, f"{path} cannot be created: {folder} is not a folder", fix)]
        if not os.access(folder, os.W_OK | os.X_OK):
            return [Check("database", False, f"{path} cannot be created: {folder} is not writable", fix)]
        return [Check("database", True, f"{path} does not exist yet; the worker creates it on its first run "
                                        f"({folder} is writable)")]
    return [_existing_database(path, fix)]


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _existing_database(path: Path, fix: str) -> Check:
    """Open without migrating, prove a write lock can be taken (then release it), read the schema version."""
    known = len(MIGRATIONS)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=2.0)
    except sqlite3.Error as exc:
        return Check("database", False, f"{path} cannot be opened for writing: {exc}", fix)
    try:
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock without changing anything
        conn.execute("ROLLBACK")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = (int(conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0)
                   if "schema_migrations" in tables else 0)
    except sqlite3.Error as exc:
        message = str(exc)
        damaged = isinstance(exc, sqlite3.DatabaseError) and (exc.sqlite_errorcode & 0xFF) in (
            sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
        hint = ("another process holds a write lock on it right now; try again" if "locked" in message
                else "restore the latest backup (made with `healthbeat db backup FILE`) in its place, or point "
                     "HEALTHBEAT_DB at a new file" if damaged else fix)
        return Check("database", False, f"{path} is not writable as a SQLite database: {message}", hint)
    finally:
        conn.close()
    if "schema_migrations" not in tables and tables:
        return Check("database", False, f"{path} is a SQLite database but not Healthbeat's "
                                        f"(tables: {', '.join(sorted(tables)[:5])})", fix)
    if version > known:
        return Check("database", False, f"{path} has schema version {version}, newer than this Healthbeat knows "
                                        f"({known})", "upgrade Healthbeat, or point HEALTHBEAT_DB at another file")
    pending = f"; the worker applies {known - version} migration(s) on start" if version < known else ""
    return Check("database", True, f"{path} is writable; schema version {version} of {known}{pending}")


def _rules(settings: Settings) -> list[Check]:
    scorecard, alerts, problems = load_rules(settings.rules_dir)
    fix = f"run `healthbeat rules check --rules-dir {settings.rules_dir}` and correct each problem it lists"
    if problems or scorecard is None or alerts is None:
        return [Check("rule files", False, "\n".join(problems) or "the rule files did not load", fix)]
    return [Check("rule files", True, f"{settings.rules_dir}: scorecard.yaml ({len(scorecard.scorecard.groups)} "
                                      f"groups) and alerts.yaml ({_count(len(alerts.rules.rules), 'rule')}) are valid")]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# -- Salesforce --------------------------------------------------------------------------------------------

def field_problems(expected: Iterable[CustomField], available: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(missing names, wrong types in words) of `expected` against describe's name → type, names case-blind."""
    by_lower = {name.lower(): kind for name, kind in available.items()}
    missing, wrong = [], []
    for item in expected:
        found = by_lower.get(item.name.lower())
        if found is None:
            missing.append(item.name)
        elif found != item.describe_type:
            wrong.append(f"{item.name} is {found}, should be {item.short_type} ({item.describe_type})")
    return missing, wrong


def _salesforce(settings: Settings) -> list[Check]:
    names = ("Salesforce login", "Salesforce API usage", "Salesforce fields (written)",
             "Salesforce fields (CSM overrides)", "Salesforce field access")
    try:
        credentials = settings.salesforce_credentials()
    except ConfigError as exc:
        return [Check(names[0], False, f"not attempted with {_flow(settings)}: {exc}",
                      "set, correct or remove the settings named (see .env.example and the README's Salesforce "
                      "section)"),
                *(_skipped(name, "not checked: no Salesforce login") for name in names[1:])]
    client = SalesforceClient(credentials, timeout=TIMEOUT, max_attempts=1)
    try:
        try:
            client.connect()
        except SalesforceAuthError as exc:
            return [Check(names[0], False, str(exc), _login_fix(credentials, exc.error_code)),
                    *(_skipped(name, "not checked: the login failed") for name in names[1:])]
        except SalesforceError as exc:
            return [Check(names[0], False, str(exc),
                          "check SALESFORCE_LOGIN_URL (your My Domain URL), the network, and "
                          "REQUESTS_CA_BUNDLE if a private CA signs the certificate (in use: "
                          f"{_ca_bundle_in_use(settings)})"),
                    *(_skipped(name, "not checked: the login failed") for name in names[1:])]
        who = (f"as {credentials.username} (JWT bearer flow, client {credentials.client_id})"
               if credentials.flow == "jwt_bearer" else f"as client {credentials.client_id} (client-credentials flow)")
        checks = [Check(names[0], True, f"logged in to {client.instance_url} {who}")]
        try:
            available = client.describe_fields("Account")
        except SalesforceError as exc:
            fields_failed = Check(names[2], False, f"describe of Account failed: {exc}",
                                  "give the integration user read access to Account")
            return [*checks, _api_usage(client, settings.salesforce_bulk_threshold), fields_failed,
                    *(_skipped(name, "not checked: describe failed") for name in names[3:])]
        return [*checks, _api_usage(client, settings.salesforce_bulk_threshold),
                _fields_check(names[2], [f for f in ACCOUNT_FIELDS if f.written], available,
                              "nothing is written back without Health_Score__c; other missing fields are skipped"),
                _fields_check(names[3], [f for f in ACCOUNT_FIELDS if not f.written], available,
                              "CSM overrides are ignored while these are missing"),
                _field_access(names[4], available, client.updateable_fields("Account")),
                *_snapshot_object(settings, client)]
    finally:
        client.close()


def _login_fix(credentials: SalesforceCredentials, error_code: str | None) -> str:
    """What to change when Salesforce refuses the login, by flow and by its error (the message already says
    what Salesforce answered)."""
    if credentials.flow == "jwt_bearer":
        return ("check SALESFORCE_CLIENT_ID (the consumer key), SALESFORCE_USERNAME (pre-authorized for the app "
                "through its profile or a permission set) and SALESFORCE_PRIVATE_KEY_FILE (the key of the "
                "certificate uploaded to the app); a sandbox org logs in at https://test.salesforce.com or its "
                "My Domain URL")
    if error_code in (None, "invalid_grant"):  # None: refused before any connection (a shared login host)
        return f"set SALESFORCE_LOGIN_URL to your org's My Domain URL, {MY_DOMAIN_FORM}"
    return ("check SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET, and that the External Client "
            "App enables the client-credentials flow with a Run As user")


def _field_access(name: str, available: Mapping[str, str], updateable: Iterable[str]) -> Check:
    """The written fields that exist but that field-level security makes read-only for the integration user:
    describe lists them, yet Salesforce refuses any update that sets one."""
    present = {field.lower() for field in available}
    existing = [field for field in DEFAULT_FIELDS.values() if field.lower() in present]
    editable = {field.lower() for field in updateable}
    read_only = [field for field in existing if field.lower() not in editable]
    if not existing:
        return _skipped(name, "not checked: Account has none of the fields Healthbeat writes")
    if read_only:
        return Check(name, False,
                     f"the integration user cannot edit {', '.join(read_only)} on Account (field-level security "
                     "makes them read-only for it), so Salesforce refuses the scores' updates that set them",
                     f"grant Edit access on {', '.join(read_only)} in the integration user's permission set (Setup → "
                     f"Permission Sets → {PERMISSION_SET} or yours → Object Settings → Accounts → Field "
                     "Permissions), or deploy the one `healthbeat salesforce fields --package DIR` writes")
    return Check(name, True, f"the integration user may edit {', '.join(existing)}")


def _snapshot_object(settings: Settings, client: SalesforceClient) -> list[Check]:
    """With HEALTHBEAT_SALESFORCE_SNAPSHOTS on, whether Health_Snapshot__c exists with its fields and the
    integration user may write them; nothing to say when it is off."""
    name = "Salesforce snapshots"
    if not settings.salesforce_snapshots:
        return []
    deploy = (f"deploy it with `healthbeat salesforce fields --package DIR` (objects/{SNAPSHOT_OBJECT}.object and "
              f"the permission set {PERMISSION_SET}), or set HEALTHBEAT_SALESFORCE_SNAPSHOTS=off")
    try:
        available = client.describe_fields(SNAPSHOT_OBJECT)
    except SalesforceError:
        return [Check(name, False, f"HEALTHBEAT_SALESFORCE_SNAPSHOTS is on but {SNAPSHOT_OBJECT} does not exist "
                                   "in Salesforce (or the integration user cannot see it): no snapshot is written",
                      deploy)]
    missing, wrong = field_problems(SNAPSHOT_FIELDS, available)
    editable = {field.lower() for field in client.updateable_fields(SNAPSHOT_OBJECT)}
    read_only = [f.name for f in SNAPSHOT_FIELDS if f.name not in missing and f.name.lower() not in editable]
    found = [f"lacks {', '.join(missing)}"] if missing else []
    found += ["wrong type: " + "; ".join(wrong)] if wrong else []
    found += [f"the integration user cannot edit {', '.join(read_only)}"] if read_only else []
    if found:
        return [Check(name, False, f"{SNAPSHOT_OBJECT} {'; '.join(found)}: snapshots are refused", deploy)]
    return [Check(name, True, f"{SNAPSHOT_OBJECT} exists with its fields; a snapshot per account is written "
                              "once a day")]


def _api_usage(client: SalesforceClient, bulk_threshold: int = 0) -> Check:
    usage = client.api_usage
    share = usage.share if usage is not None else None
    if usage is None or share is None:
        return Check("Salesforce API usage", True, "Salesforce did not report usage (no Sforce-Limit-Info header)")
    detail = f"{usage.used:,} of {usage.limit:,} daily API requests used ({share:.1%})"
    if share >= API_USAGE_LIMIT_SHARE:
        return Check("Salesforce API usage", False, detail,
                     "other integrations use most of the org's daily limit; the worker stops at "
                     "REQUEST_LIMIT_EXCEEDED: lengthen HEALTHBEAT_INTERVAL or raise the org's limit")
    bulk = client.bulk_allocation() if bulk_threshold > 0 else None
    if bulk is None:
        return Check("Salesforce API usage", True, detail)
    detail = f"{detail}; {bulk.sentence()}"
    if bulk.spent:
        return Check("Salesforce API usage", True, detail,
                     "large backfills read over REST until the allocation frees up (a rolling 24 hours): slower, "
                     "and more API requests", warning=True)
    return Check("Salesforce API usage", True, detail)


def _fields_check(name: str, expected: list[CustomField], available: Mapping[str, str], effect: str) -> Check:
    missing, wrong = field_problems(expected, available)
    if not missing and not wrong:
        return Check(name, True, "Account has " + ", ".join(f.name for f in expected))
    found = []
    if missing:
        found.append(f"Account lacks {', '.join(missing)}")
    if wrong:
        found.append("wrong type: " + "; ".join(wrong))
    return Check(name, False, f"{'; '.join(found)} ({effect})", FIELDS_HINT)


def _email_capture(settings: Settings, *, clock: Clock) -> list[Check]:
    """Einstein Activity Capture keeps the emails it captures outside Salesforce records, where the API never
    returns them: the sign is meetings and calls flowing in from Salesforce while not one email does."""
    name = "Salesforce emails"
    path = Path(settings.db)
    if not path.is_file():
        return [_skipped(name, "not checked: no database yet (the first cycle creates it)")]
    now = clock()
    since = now - EMAIL_CAPTURE_WINDOW
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=2.0)
        try:
            counts = dict(conn.execute(
                "SELECT kind, count(*) FROM activities WHERE source = 'salesforce' AND is_deleted = 0 "
                "AND kind IN ('meeting', 'call', 'email') AND occurred_at > ? AND occurred_at <= ? GROUP BY kind",
                (iso(since), iso(now))).fetchall())
        finally:
            conn.close()
    except sqlite3.Error as exc:  # the database check says what is wrong with the file
        return [_skipped(name, f"not checked: the database cannot be read ({exc})")]
    meetings, calls, emails = (int(counts.get(kind, 0)) for kind in ("meeting", "call", "email"))
    window = f"in the last {EMAIL_CAPTURE_WINDOW.days} days"
    if meetings + calls == 0 and emails == 0:
        return [_skipped(name, f"not checked: no meetings, calls or emails from Salesforce {window}")]
    found = f"{_count(emails, 'email')}, {_count(meetings, 'meeting')} and {_count(calls, 'call')} from Salesforce"
    if emails or meetings + calls < EMAIL_CAPTURE_MIN_ACTIVITY:
        return [Check(name, True, f"{found} {window}")]
    return [Check(name, True,
                  f"{found} {window}: meetings and calls arrive but not one email. Orgs that use Einstein Activity "
                  "Capture keep captured emails outside Salesforce records, where the API does not return them, so "
                  "the email measures (two-way touch, answered share, sentiment) see none",
                  "if the org uses Einstein Activity Capture, log emails to Salesforce records (Email to "
                  "Salesforce's BCC address, or the Outlook or Gmail integration with email logging), or connect "
                  "the mailboxes to Healthbeat another way; otherwise check that the integration user can read "
                  "EmailMessage and email Tasks",
                  warning=True)]


# -- Zendesk, Slack, usage ---------------------------------------------------------------------------------

def _zendesk(settings: Settings) -> list[Check]:
    if not settings.zendesk_configured:
        return [_skipped("Zendesk", "skipped: ZENDESK_URL, ZENDESK_EMAIL and ZENDESK_API_TOKEN are not set "
                                    "(tickets are not read; support measures count as missing data)")]
    assert settings.zendesk_url and settings.zendesk_email and settings.zendesk_api_token
    fix = "check ZENDESK_EMAIL and ZENDESK_API_TOKEN (Admin Center → Apps and integrations → Zendesk API)"
    try:
        with ZendeskClient(settings.zendesk_url, settings.zendesk_email,
                           settings.zendesk_api_token.get_secret_value(), timeout=TIMEOUT, max_attempts=1,
                           requests_per_minute=settings.zendesk_requests_per_minute,
                           ca_bundle=settings.ca_bundle) as client:
            user = client.verify()
    except ZendeskAuthError as exc:
        return [Check("Zendesk", False, str(exc), fix)]
    except ZendeskError as exc:
        return [Check("Zendesk", False, str(exc), "check ZENDESK_URL (https://<subdomain>.zendesk.com) and the "
                                                   "network")]
    detail = f"signed in to {settings.zendesk_url} as {user.name} <{user.email}> (role {user.role})"
    if user.role != "admin":
        return [Check("Zendesk", False, detail + "; the incremental ticket export needs an admin",
                      "use an admin's email with the API token")]
    return [Check("Zendesk", True, detail)]


def _slack(settings: Settings) -> list[Check]:
    if not settings.slack_configured:
        return [_skipped("Slack", "skipped: SLACK_BOT_TOKEN is not set (nudges wait in the outbox until it is)")]
    assert settings.slack_bot_token is not None
    client = SlackClient(settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                         timeout=int(TIMEOUT), max_retries=0, ca_bundle=settings.ca_bundle)
    fix = "check SLACK_BOT_TOKEN (a bot token, xoxb-...) and SLACK_API_URL"
    try:
        who, scopes = client.check()
    except SlackError as exc:
        return [Check("Slack token and scopes", False, str(exc), fix),
                _skipped("Slack fallback channel", "not checked: the token was refused")]
    needed = dict(SLACK_SCOPES)
    fallback = settings.slack_fallback_channel
    if fallback and not _CHANNEL_ID.match(fallback.strip()):
        needed[CHANNEL_NAME_SCOPE[0]] = CHANNEL_NAME_SCOPE[1]
    missing = [scope for scope in needed if scope not in scopes]
    if not scopes:
        token = Check("Slack token and scopes", True, f"token of {who}; Slack did not list its scopes, "
                                                      "so they were not checked")
    elif missing:
        token = Check("Slack token and scopes", False,
                      f"token of {who} lacks " + "; ".join(f"{s} (to {needed[s]})" for s in missing),
                      "add the scopes under the Slack app's OAuth & Permissions → Bot Token Scopes, reinstall "
                      "the app, and put the new token in SLACK_BOT_TOKEN")
    else:
        token = Check("Slack token and scopes", True, f"token of {who} has {', '.join(sorted(needed))}")
    return [token, _fallback_channel(client, fallback)]


def _socket_mode(settings: Settings) -> list[Check]:
    """With SLACK_APP_TOKEN set, Slack must hand out a WebSocket URL for it (the URL is left unused; Slack lets
    its ticket lapse). Without it there is nothing to check: buttons arrive on /slack/actions."""
    if settings.slack_app_token is None:
        return []
    link = SocketModeLink(settings.slack_app_token.get_secret_value(), base_url=settings.slack_api_url,
                          timeout=int(TIMEOUT), max_retries=0, ca_bundle=settings.ca_bundle)
    name = "Slack Socket Mode"
    try:
        link.open_url()
    except SlackAuthError as exc:
        return [Check(name, False, str(exc), "put an app-level token (xapp-...) with connections:write in "
                                             "SLACK_APP_TOKEN, and turn Socket Mode on in the app's settings")]
    except SlackError as exc:
        return [Check(name, True, str(exc), "the worker retries every 30 s; check SLACK_API_URL and the network",
                      warning=True)]
    return [Check(name, True, "Slack accepts SLACK_APP_TOKEN: buttons, modals and the Home tab arrive over a "
                              "WebSocket the worker opens (no public port)")]


def _fallback_channel(client: SlackClient, fallback: str | None) -> Check:
    name = "Slack fallback channel"
    if not fallback:
        return _skipped(name, "skipped: SLACK_FALLBACK_CHANNEL is not set (a nudge for an owner without a "
                              "Slack user cannot be delivered)")
    try:
        channel = client.channel_id(fallback)
    except SlackAuthError as exc:
        return Check(name, False, str(exc), f"add the {CHANNEL_NAME_SCOPE[0]} scope, or give the channel's id")
    except SlackError as exc:
        return Check(name, False, str(exc), "create the channel and invite the bot, or correct "
                                            "SLACK_FALLBACK_CHANNEL (a public channel's name, or any channel's id)")
    return Check(name, True, f"{fallback} is channel {channel}")


def _usage(settings: Settings) -> list[Check]:
    folder = settings.usage_dir
    if folder is None:
        return [_skipped("usage files", "skipped: USAGE_DIR is not set (usage measures count as missing data)")]
    fix = "set USAGE_DIR to a folder the worker's user can read"
    if not folder.exists():
        return [Check("usage files", False, f"USAGE_DIR {folder} does not exist", fix)]
    if not folder.is_dir():
        return [Check("usage files", False, f"USAGE_DIR {folder} is not a folder", fix)]
    if not os.access(folder, os.R_OK | os.X_OK):
        return [Check("usage files", False, f"USAGE_DIR {folder} is not readable", fix)]
    files = list_usage_files(folder)
    if not files:
        return [Check("usage files", True, f"{folder} is readable but holds no *.csv or *.jsonl files yet")]
    return [Check("usage files", True, f"{folder} holds {_count(len(files), 'usage file')}")]
