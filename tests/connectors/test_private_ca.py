"""Zendesk and Slack behind a private CA: the clients trust the CA bundle they are given (the worker passes
REQUESTS_CA_BUNDLE / SSL_CERT_FILE), as the Salesforce client always has. httpx and urllib each keep their own
default trust store and read neither variable, so without this a deployment behind a TLS-inspecting proxy
reached Salesforce and failed on Zendesk and Slack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.slack.client import SlackClient, SlackError
from connectors.slack.sandbox import SlackSandbox
from connectors.zendesk.client import ZendeskClient, ZendeskError
from connectors.zendesk.sandbox import ZendeskSandbox


@pytest.fixture
def zendesk_tls() -> Iterator[ZendeskSandbox]:
    with ZendeskSandbox(tls=True) as sandbox:
        yield sandbox


@pytest.fixture
def slack_tls() -> Iterator[SlackSandbox]:
    with SlackSandbox(tls=True) as sandbox:
        yield sandbox


def test_zendesk_client_trusts_the_ca_bundle_it_is_given(zendesk_tls: ZendeskSandbox) -> None:
    assert zendesk_tls.url.startswith("https://")
    with ZendeskClient(zendesk_tls.url, "agent@example.com", "sandbox-token", ca_bundle=zendesk_tls.ca_cert_path,
                       max_attempts=1) as client:
        assert client.verify().email == "agent@example.com"


def test_zendesk_client_without_the_bundle_refuses_the_private_certificate(zendesk_tls: ZendeskSandbox) -> None:
    with ZendeskClient(zendesk_tls.url, "agent@example.com", "sandbox-token", max_attempts=3,
                       sleep=lambda _: None) as client:
        with pytest.raises(ZendeskError, match=r"failed TLS verification .*REQUESTS_CA_BUNDLE"):
            client.verify()
        assert client.calls == 1  # a certificate refusal is not retried


def test_slack_client_trusts_the_ca_bundle_it_is_given(slack_tls: SlackSandbox) -> None:
    assert slack_tls.url.startswith("https://")
    client = SlackClient(slack_tls.token, base_url=slack_tls.url, ca_bundle=slack_tls.ca_cert_path, max_retries=0)
    description, scopes = client.check()
    assert "chat:write" in scopes and description


def test_slack_client_without_the_bundle_refuses_the_private_certificate(slack_tls: SlackSandbox) -> None:
    client = SlackClient(slack_tls.token, base_url=slack_tls.url, max_retries=0)
    with pytest.raises(SlackError, match="CERTIFICATE_VERIFY_FAILED"):
        client.check()
