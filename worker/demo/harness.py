"""The sandbox harness: the Salesforce (HTTPS), Zendesk and Slack sandboxes on loopback, the settings that
point the worker at them, and the accounts a demo changes. The demo, the tests and the benchmarks share it,
so they all run the real clients over real HTTP against the same emulators.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.slack.sandbox import SlackSandbox
from connectors.zendesk.sandbox import ZendeskSandbox
from worker.clock import ShiftedClock
from worker.store import Store

log = logging.getLogger(__name__)

DEMO_MARKER = "demo.world"
SANDBOX_CLIENT_ID = "healthbeat-demo"
SANDBOX_CLIENT_SECRET = "demo-client-secret"  # noqa: S105 - the local sandbox's own throw-away credential
SANDBOX_ZENDESK_TOKEN = "demo-zendesk-token"  # noqa: S105
SANDBOX_SLACK_TOKEN = "xoxb-demo-sandbox"  # noqa: S105


@dataclass
class Sandboxes:
    salesforce: SalesforceSandbox
    zendesk: ZendeskSandbox
    slack: SlackSandbox

    def stop(self) -> None:
        for server in (self.slack, self.zendesk, self.salesforce):
            server.stop()


def start_sandboxes(clock: ShiftedClock) -> Sandboxes:
    salesforce = SalesforceSandbox(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET, clock=clock)
    zendesk = ZendeskSandbox(email="healthbeat@support.example", api_token=SANDBOX_ZENDESK_TOKEN, clock=clock)
    slack = SlackSandbox(token=SANDBOX_SLACK_TOKEN)
    for server in (salesforce, zendesk, slack):
        server.start()
    return Sandboxes(salesforce, zendesk, slack)


def sandbox_environment(sandboxes: Sandboxes, db: Path, usage_dir: Path, rules_dir: Path) -> dict[str, object]:
    """The settings a deployment would put in its environment, pointed at the sandboxes."""
    return {
        "HEALTHBEAT_DB": db, "HEALTHBEAT_RULES_DIR": rules_dir,
        "SALESFORCE_LOGIN_URL": sandboxes.salesforce.url, "SALESFORCE_CLIENT_ID": SANDBOX_CLIENT_ID,
        "SALESFORCE_CLIENT_SECRET": SANDBOX_CLIENT_SECRET, "REQUESTS_CA_BUNDLE": sandboxes.salesforce.ca_cert_path,
        "ZENDESK_URL": sandboxes.zendesk.url, "ZENDESK_EMAIL": "healthbeat@support.example",
        "ZENDESK_API_TOKEN": SANDBOX_ZENDESK_TOKEN, "HEALTHBEAT_ZENDESK_REQUESTS_PER_MINUTE": 600,
        "SLACK_BOT_TOKEN": SANDBOX_SLACK_TOKEN, "SLACK_API_URL": sandboxes.slack.url,
        "SLACK_FALLBACK_CHANNEL": "#cs-alerts", "USAGE_DIR": usage_dir,
    }


def pick_changes(store: Store, *, include_owner: str | None = None) -> tuple[list[str], str]:
    """Three healthy-looking accounts get a bad week (one of them `include_owner`'s, when given, so the
    fallback route shows too); the healthiest other one goes silent."""
    rows = store.query("SELECT s.account_id, a.owner_id FROM scores s JOIN accounts a ON a.id = s.account_id "
                       "WHERE s.band != 'red' ORDER BY s.score DESC, s.account_id")
    ids = [r["account_id"] for r in rows]
    troubled = ids[1:4]
    theirs = [r["account_id"] for r in rows[1:] if r["owner_id"] == include_owner]
    if theirs and theirs[0] not in troubled:
        troubled = [*troubled[:2], theirs[0]]
    return troubled, ids[0]
