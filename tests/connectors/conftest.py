"""Shared fixtures for connector tests. Salesforce fixtures are prefixed ``sf_``; Zendesk's come from
`tests.connectors.zendesk_fixtures`."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.salesforce.client import SalesforceClient, SalesforceCredentials
from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.salesforce.sandbox_oauth import ConnectedApp
from tests.connectors.salesforce_keys import SigningIdentity, make_signing_identity
from tests.connectors.zendesk_fixtures import api, customer, fake_time, make_client, make_sandbox

# The Zendesk fixtures, registered for every connector test.
__all__ = ["api", "customer", "fake_time", "make_client", "make_sandbox"]


class SfClock:
    """A clock the test moves by hand, so SystemModstamp values are known in advance."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def sf_clock() -> SfClock:
    return SfClock(datetime(2024, 6, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def make_sf_sandbox(sf_clock: SfClock) -> Iterator[Callable[..., SalesforceSandbox]]:
    """Start sandboxes with custom settings (batch_size, limits, missing_fields...); all stop at teardown."""
    started: list[SalesforceSandbox] = []

    def make(**kwargs: Any) -> SalesforceSandbox:
        kwargs.setdefault("clock", sf_clock)
        sandbox = SalesforceSandbox(**kwargs)
        sandbox.start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sf_sandbox(make_sf_sandbox: Callable[..., SalesforceSandbox]) -> SalesforceSandbox:
    """A running sandbox with default settings and the test clock."""
    return make_sf_sandbox()


def sf_credentials_for(sandbox: SalesforceSandbox, **overrides: Any) -> SalesforceCredentials:
    values: dict[str, Any] = {
        "login_url": sandbox.url,
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "ca_bundle": sandbox.ca_cert_path,
    }
    values.update(overrides)
    return SalesforceCredentials(**values)


@pytest.fixture
def sf_credentials(sf_sandbox: SalesforceSandbox) -> SalesforceCredentials:
    return sf_credentials_for(sf_sandbox)


SF_USERNAME = "healthbeat-integration@acme.example"
"""The integration user the JWT bearer tests log in as (pre-authorized in `sf_jwt_app`)."""


@pytest.fixture(scope="session")
def sf_signing_identity() -> SigningIdentity:
    """The connected app's key and certificate, made once a session (an RSA key takes a moment)."""
    return make_signing_identity()


@pytest.fixture
def sf_jwt_app(sf_signing_identity: SigningIdentity) -> ConnectedApp:
    """A connected app set up for the JWT bearer flow: the certificate uploaded, the integration user
    pre-authorized. Tests change its fields to play a misconfigured org."""
    return ConnectedApp(certificate=sf_signing_identity.certificate, preauthorized_users=frozenset({SF_USERNAME}))


def sf_jwt_credentials_for(sandbox: SalesforceSandbox, identity: SigningIdentity,
                           **overrides: Any) -> SalesforceCredentials:
    """JWT bearer credentials for ``sandbox``: its consumer key, `SF_USERNAME` and the identity's private key."""
    values: dict[str, Any] = {"login_url": sandbox.url, "client_id": sandbox.client_id, "username": SF_USERNAME,
                              "private_key": identity.private_key, "ca_bundle": sandbox.ca_cert_path}
    values.update(overrides)
    return SalesforceCredentials(**values)


@pytest.fixture
def sf_sleeps() -> list[float]:
    """The back-off delays a client asked for (it never really sleeps in tests)."""
    return []


@pytest.fixture
def make_sf_client(sf_sleeps: list[float]) -> Iterator[Callable[..., SalesforceClient]]:
    """Clients for a sandbox (or explicit credentials) whose retry sleeps land in ``sf_sleeps``."""
    clients: list[SalesforceClient] = []

    def make(target: SalesforceSandbox | SalesforceCredentials, **kwargs: Any) -> SalesforceClient:
        credentials = sf_credentials_for(target) if isinstance(target, SalesforceSandbox) else target
        kwargs.setdefault("retry_sleep", sf_sleeps.append)
        kwargs.setdefault("timeout", 5.0)
        client = SalesforceClient(credentials, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sf_client(make_sf_client: Callable[..., SalesforceClient], sf_sandbox: SalesforceSandbox) -> SalesforceClient:
    return make_sf_client(sf_sandbox)


@pytest.fixture
def sf_http(sf_sandbox: SalesforceSandbox) -> Iterator[httpx.Client]:
    """A raw HTTPS client for wire-format tests, trusting the sandbox's CA."""
    with httpx.Client(base_url=sf_sandbox.url, verify=sf_trust(sf_sandbox), timeout=5.0) as client:
        yield client


def sf_trust(sandbox: SalesforceSandbox) -> ssl.SSLContext:
    """An SSL context trusting only the sandbox's throw-away CA."""
    return ssl.create_default_context(cafile=sandbox.ca_cert_path)


def sf_token(http: httpx.Client, sandbox: SalesforceSandbox) -> str:
    response = http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


@pytest.fixture
def sf_auth(sf_http: httpx.Client, sf_sandbox: SalesforceSandbox) -> dict[str, str]:
    """Headers with a valid bearer token for ``sf_http``."""
    return {"Authorization": f"Bearer {sf_token(sf_http, sf_sandbox)}"}


@pytest.fixture
def make_sf_http() -> Iterator[Callable[[SalesforceSandbox], tuple[httpx.Client, dict[str, str]]]]:
    """A raw HTTPS client and bearer headers for a custom sandbox (see ``make_sf_sandbox``)."""
    clients: list[httpx.Client] = []

    def make(sandbox: SalesforceSandbox) -> tuple[httpx.Client, dict[str, str]]:
        client = httpx.Client(base_url=sandbox.url, verify=sf_trust(sandbox), timeout=5.0)
        clients.append(client)
        return client, {"Authorization": f"Bearer {sf_token(client, sandbox)}"}

    yield make
    for client in clients:
        client.close()
