"""The Zendesk account a connector test talks to: a sandbox and clients on one fake clock, and the names the
tests use for them. Registered as fixtures in `tests/connectors/conftest.py`; each test module chooses its
own `sandbox` (its page size and clock), which `api` and `customer` then use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from connectors.zendesk.client import ZendeskClient
from connectors.zendesk.sandbox import ZendeskSandbox
from tests.fake_time import FakeTime

EMAIL = "agent@example.com"
TOKEN = "s3cret-zendesk-token"  # distinctive, so a test can prove it never reaches a message or a log

SandboxFactory = Callable[..., ZendeskSandbox]
ClientFactory = Callable[..., ZendeskClient]


@dataclass(frozen=True)
class Customer:
    org_id: int
    user_id: int


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_sandbox(fake_time: FakeTime) -> Iterator[SandboxFactory]:
    started: list[ZendeskSandbox] = []

    def make(**options: Any) -> ZendeskSandbox:
        sandbox = ZendeskSandbox(email=EMAIL, api_token=TOKEN, clock=fake_time.datetime, **options)
        sandbox.start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def make_client(fake_time: FakeTime) -> Iterator[ClientFactory]:
    clients: list[ZendeskClient] = []

    def make(sandbox: ZendeskSandbox, *, token: str = TOKEN, **options: Any) -> ZendeskClient:
        client = ZendeskClient(sandbox.url, EMAIL, token, sleep=fake_time.sleep, clock=fake_time.time,
                               **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def api(sandbox: ZendeskSandbox) -> Iterator[httpx.Client]:
    """Raw HTTP to the module's sandbox, authenticated as Zendesk API tokens are (`{email}/token:{token}`)."""
    with httpx.Client(base_url=sandbox.url, auth=(f"{EMAIL}/token", TOKEN)) as client:
        yield client


@pytest.fixture
def customer(sandbox: ZendeskSandbox) -> Customer:
    org_id = sandbox.add_organization("Acme", external_id="001000000000001AAA", domain_names=["acme.com"])
    return Customer(org_id, sandbox.add_user("Jo Customer", "jo@acme.com", organization_id=org_id))
