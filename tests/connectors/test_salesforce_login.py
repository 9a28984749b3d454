"""Logging in to Salesforce as real orgs allow it: the client-credentials flow only at the org's My Domain URL,
and the JWT bearer flow (an RS256 assertion for a pre-authorized user), each refusal explained in terms of the
setting to change. The real client talks HTTPS to the sandbox, whose token endpoint answers as Salesforce does.

Salesforce's documentation behind the sandbox's answers:

- the client-credentials flow "doesn't support calls to login.salesforce.com or test.salesforce.com"; use the
  My Domain URL: https://help.salesforce.com/s/articleView?id=000886201&type=1 (the refusal's body,
  ``invalid_grant`` "request not supported on this domain", is Salesforce's answer as integrators report it,
  e.g. https://github.com/pozil/pub-sub-api-node-client/issues/58; the help article names no error);
- the JWT bearer flow: ``iss`` the consumer key, ``sub`` the username, ``aud`` https://login.salesforce.com (or
  https://test.salesforce.com for a sandbox org), ``exp`` within three minutes, RS256 signed with the key of the
  certificate uploaded to the app, and the app pre-authorized for the user:
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm&type=5, with errors in the
  standard OAuth form: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm&type=5;
  a user not pre-authorized gets ``invalid_grant`` "user hasn't approved this consumer":
  https://help.salesforce.com/s/articleView?id=001121341&type=1. Where the documentation states a limit without
  its error (an ``exp`` more than three minutes ahead), the sandbox takes the stricter reading and refuses it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from connectors.salesforce.client import (
    MY_DOMAIN_FORM,
    SalesforceAuthError,
    SalesforceClient,
    SalesforceCredentials,
    jwt_audience,
)
from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.salesforce.sandbox_oauth import JWT_BEARER_GRANT, ConnectedApp
from tests.connectors.conftest import SF_USERNAME, sf_credentials_for, sf_jwt_credentials_for, sf_trust
from tests.connectors.salesforce_keys import SigningIdentity, make_signing_identity

MakeSandbox = Callable[..., SalesforceSandbox]
MakeClient = Callable[..., SalesforceClient]


def token_calls(sandbox: SalesforceSandbox) -> list[int]:
    return [call.status for call in sandbox.calls if call.path == "/services/oauth2/token"]


def post_token(sandbox: SalesforceSandbox, form: dict[str, str]) -> httpx.Response:
    with httpx.Client(verify=sf_trust(sandbox), timeout=5.0) as http:
        return http.post(f"{sandbox.url}/services/oauth2/token", data=form)


def assertion(identity: SigningIdentity, **claims: Any) -> str:
    """An assertion as a client would sign it, with ``claims`` changed (None removes one)."""
    values: dict[str, Any] = {"iss": "sandbox-client", "sub": SF_USERNAME, "aud": "https://login.salesforce.com",
                              "exp": int(time.time()) + 120}
    values.update(claims)
    return jwt.encode({k: v for k, v in values.items() if v is not None}, identity.private_key, algorithm="RS256")


def refusal(client: SalesforceClient) -> SalesforceAuthError:
    with pytest.raises(SalesforceAuthError) as caught:
        client.connect()
    return caught.value


# --- the client-credentials flow needs My Domain ----------------------------------------------------------


@pytest.mark.parametrize("login_url", ["https://login.salesforce.com", "https://test.salesforce.com/",
                                       "https://LOGIN.salesforce.com:443"])
def test_client_credentials_at_a_shared_login_host_are_refused_before_any_connection(
        login_url: str, make_sf_client: MakeClient, sf_sleeps: list[float]) -> None:
    client = make_sf_client(SalesforceCredentials(login_url, "sandbox-client", "sandbox-secret"))

    started = time.monotonic()
    message = str(refusal(client))

    assert "My Domain" in message and MY_DOMAIN_FORM in message and "SALESFORCE_LOGIN_URL" in message
    assert time.monotonic() - started < 1 and sf_sleeps == []  # refused here, not by a network timeout


def test_the_sandbox_playing_a_shared_login_host_refuses_client_credentials_as_salesforce_does(
        make_sf_sandbox: MakeSandbox) -> None:
    """https://help.salesforce.com/s/articleView?id=000886201&type=1: the client-credentials flow "doesn't
    support calls to login.salesforce.com or test.salesforce.com"."""
    sandbox = make_sf_sandbox(app=ConnectedApp(generic_host=True))

    answer = post_token(sandbox, {"grant_type": "client_credentials", "client_id": sandbox.client_id,
                                  "client_secret": sandbox.client_secret})

    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_grant", "error_description": "request not supported on this domain"}


def test_invalid_grant_for_client_credentials_points_at_the_login_url_not_the_secret(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient) -> None:
    sandbox = make_sf_sandbox(app=ConnectedApp(generic_host=True))

    error = refusal(make_sf_client(sandbox))

    message = str(error)
    assert error.error_code == "invalid_grant"
    assert "SALESFORCE_LOGIN_URL" in message and "My Domain" in message and MY_DOMAIN_FORM in message
    assert "SALESFORCE_CLIENT_SECRET" not in message


def test_client_credentials_still_log_in_at_a_my_domain_url(sf_sandbox: SalesforceSandbox,
                                                             sf_client: SalesforceClient) -> None:
    sf_client.connect()

    assert sf_client.instance_url == sf_sandbox.url
    assert token_calls(sf_sandbox) == [200]


# --- the JWT bearer flow ----------------------------------------------------------------------------------


def test_jwt_bearer_login_opens_a_session_on_the_data_api(make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient,
                                                         sf_jwt_app: ConnectedApp,
                                                         sf_signing_identity: SigningIdentity) -> None:
    sandbox = make_sf_sandbox(app=sf_jwt_app)
    sandbox.insert("Account", {"Name": "Acme"})
    client = make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity))

    names = [record["Name"] for record in client.query("SELECT Name FROM Account")]

    assert names == ["Acme"]
    assert client.credentials.flow == "jwt_bearer" and client.instance_url == sandbox.url


def test_jwt_bearer_login_works_at_a_shared_login_host(make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient,
                                                       sf_jwt_app: ConnectedApp,
                                                       sf_signing_identity: SigningIdentity) -> None:
    sf_jwt_app.generic_host = True
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity)).connect()

    assert token_calls(sandbox) == [200]


def test_an_expired_session_logs_in_again_with_a_fresh_assertion(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_jwt_app: ConnectedApp,
        sf_signing_identity: SigningIdentity) -> None:
    """An assertion lives minutes, a session hours: the re-login signs a new one rather than replaying the first."""
    sandbox = make_sf_sandbox(app=sf_jwt_app)
    client = make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity))
    client.connect()
    sandbox.expire_sessions()
    sent: list[str] = []
    original = client._assertion
    client._assertion = lambda: sent.append(original()) or sent[-1]  # type: ignore[method-assign]

    assert list(client.query("SELECT Id FROM Account")) == []

    assert token_calls(sandbox) == [200, 200] and len(sent) == 1
    assert jwt.decode(sent[0], options={"verify_signature": False})["exp"] > time.time()


@pytest.mark.parametrize(("login_url", "audience"), [
    ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
    ("https://login.salesforce.com", "https://login.salesforce.com"),
    ("https://test.salesforce.com", "https://test.salesforce.com"),
    ("https://acme--uat.sandbox.my.salesforce.com", "https://test.salesforce.com"),
])
def test_the_assertion_audience_is_the_login_host_salesforce_documents(login_url: str, audience: str) -> None:
    assert jwt_audience(login_url) == audience


def test_the_assertion_carries_the_documented_claims_and_expires_within_three_minutes(
        sf_signing_identity: SigningIdentity) -> None:
    client = SalesforceClient(SalesforceCredentials("https://acme.my.salesforce.com", "consumer-key",
                                                    username=SF_USERNAME, private_key=sf_signing_identity.private_key))
    now = time.time()

    token = client._assertion()

    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {k: claims[k] for k in ("iss", "sub", "aud")} == {
        "iss": "consumer-key", "sub": SF_USERNAME, "aud": "https://login.salesforce.com"}
    assert now < claims["exp"] <= now + 180


# --- each refusal, as Salesforce answers it and as the client explains it ---------------------------------


def test_an_assertion_signed_with_another_key_is_refused_naming_the_key_setting(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_jwt_app: ConnectedApp) -> None:
    sandbox = make_sf_sandbox(app=sf_jwt_app)
    stranger = make_signing_identity("someone-else")

    error = refusal(make_sf_client(sf_jwt_credentials_for(sandbox, stranger)))

    assert error.error_code == "invalid_grant"
    assert "invalid assertion" in str(error) and "SALESFORCE_PRIVATE_KEY_FILE" in str(error)


def test_a_user_the_app_is_not_pre_authorized_for_is_refused_with_how_to_pre_authorize(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_jwt_app: ConnectedApp,
        sf_signing_identity: SigningIdentity) -> None:
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    error = refusal(make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity,
                                                          username="someone@acme.example")))

    message = str(error)
    assert error.error_code == "invalid_grant" and "user hasn't approved this consumer" in message
    assert "someone@acme.example" in message and "pre-authorize" in message and "permission set" in message


def test_usernames_are_matched_without_regard_to_case_as_salesforce_does(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_jwt_app: ConnectedApp,
        sf_signing_identity: SigningIdentity) -> None:
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity, username=SF_USERNAME.upper())).connect()


def test_an_unknown_consumer_key_is_refused_naming_the_client_id_setting(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_jwt_app: ConnectedApp,
        sf_signing_identity: SigningIdentity) -> None:
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    error = refusal(make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity, client_id="not-our-app")))

    assert error.error_code == "invalid_client_id" and "SALESFORCE_CLIENT_ID" in str(error)


def test_a_sandbox_org_refuses_the_production_audience_and_the_client_says_where_sandboxes_log_in(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_jwt_app: ConnectedApp,
        sf_signing_identity: SigningIdentity) -> None:
    sf_jwt_app.audience = "https://test.salesforce.com"
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    error = refusal(make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity)))

    assert error.error_code == "invalid_grant" and "audience is invalid" in str(error)
    assert "https://test.salesforce.com" in str(error) and "SALESFORCE_LOGIN_URL" in str(error)


def test_an_assertion_that_expired_on_the_way_is_refused_pointing_at_the_clock(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_jwt_app: ConnectedApp,
        sf_signing_identity: SigningIdentity) -> None:
    sf_jwt_app.clock = lambda: datetime.now(UTC) + timedelta(minutes=10)  # Salesforce's clock, ten minutes on
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    error = refusal(make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity)))

    assert error.error_code == "invalid_grant" and "expired authorization code" in str(error)
    assert "clock" in str(error)


def test_an_app_without_an_uploaded_certificate_refuses_every_assertion(
        make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient, sf_jwt_app: ConnectedApp,
        sf_signing_identity: SigningIdentity) -> None:
    sf_jwt_app.certificate = None
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    error = refusal(make_sf_client(sf_jwt_credentials_for(sandbox, sf_signing_identity)))

    assert error.error_code == "invalid_grant" and "invalid assertion" in str(error)


@pytest.mark.parametrize(("claims", "description"), [
    ({"exp": None}, "invalid assertion"),
    ({"exp": "soon"}, "invalid assertion"),
    ({"exp": int(time.time()) + 3600}, "invalid assertion"),  # beyond the documented three minutes
    ({"exp": int(time.time()) - 1}, "expired authorization code"),
    ({"aud": "https://acme.my.salesforce.com"}, "audience is invalid"),
    ({"aud": ["https://elsewhere.example", "https://login.salesforce.com"]}, None),
    ({"sub": None}, "user hasn't approved this consumer"),
])
def test_the_sandbox_checks_each_claim_of_a_signed_assertion(
        make_sf_sandbox: MakeSandbox, sf_jwt_app: ConnectedApp, sf_signing_identity: SigningIdentity,
        claims: dict[str, Any], description: str | None) -> None:
    """https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm&type=5 (the claims);
    a list ``aud`` is RFC 7519's form, accepted when one of them is the org's."""
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    answer = post_token(sandbox, {"grant_type": JWT_BEARER_GRANT,
                                  "assertion": assertion(sf_signing_identity, **claims)})

    if description is None:
        assert answer.status_code == 200 and answer.json()["instance_url"] == sandbox.url
    else:
        assert answer.status_code == 400
        assert answer.json()["error_description"] == description


@pytest.mark.parametrize("token", ["not-a-jwt", ""])
def test_the_sandbox_refuses_an_assertion_that_is_not_a_jwt(make_sf_sandbox: MakeSandbox, sf_jwt_app: ConnectedApp,
                                                            token: str) -> None:
    sandbox = make_sf_sandbox(app=sf_jwt_app)

    answer = post_token(sandbox, {"grant_type": JWT_BEARER_GRANT, "assertion": token})

    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def test_the_sandbox_refuses_an_assertion_not_signed_with_rs256(make_sf_sandbox: MakeSandbox,
                                                                sf_jwt_app: ConnectedApp) -> None:
    """Salesforce verifies RS256 against the uploaded certificate; an HS256 token keyed with the certificate's
    text (the classic algorithm confusion) must not pass."""
    assert sf_jwt_app.certificate is not None
    sandbox = make_sf_sandbox(app=sf_jwt_app)
    claims = {"iss": "sandbox-client", "sub": SF_USERNAME, "aud": "https://login.salesforce.com",
              "exp": int(time.time()) + 60}
    forged = jwt.encode(claims, "a shared secret long enough for HMAC-SHA256", algorithm="HS256")

    answer = post_token(sandbox, {"grant_type": JWT_BEARER_GRANT, "assertion": forged})

    assert answer.status_code == 400 and answer.json()["error_description"] == "invalid assertion"


# --- the key is a secret ----------------------------------------------------------------------------------


def test_the_private_key_reaches_no_repr_error_or_log(make_sf_sandbox: MakeSandbox, make_sf_client: MakeClient,
                                                      sf_jwt_app: ConnectedApp, sf_signing_identity: SigningIdentity,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sf_jwt_app.preauthorized_users = frozenset()
    sandbox = make_sf_sandbox(app=sf_jwt_app)
    credentials = sf_jwt_credentials_for(sandbox, sf_signing_identity)

    error = refusal(make_sf_client(credentials))

    shown = repr(credentials) + str(error) + caplog.text
    assert not [line for line in sf_signing_identity.key_body_lines() if line in shown]


def test_a_private_key_that_is_not_an_rsa_pem_key_is_an_auth_error_that_does_not_quote_it(
        make_sf_client: MakeClient) -> None:
    text = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    client = make_sf_client(SalesforceCredentials("https://acme.my.salesforce.com", "consumer-key",
                                                  username=SF_USERNAME, private_key=text))

    error = refusal(client)

    assert "not an unencrypted PEM RSA private key" in str(error) and "bm90IGEga2V5" not in str(error)


def test_credentials_with_both_a_secret_and_a_private_key_are_refused(sf_signing_identity: SigningIdentity) -> None:
    with pytest.raises(ValueError, match="not both"):
        SalesforceCredentials("https://acme.my.salesforce.com", "consumer-key", "secret", username=SF_USERNAME,
                              private_key=sf_signing_identity.private_key)


def test_credentials_made_the_old_way_still_use_client_credentials(sf_sandbox: SalesforceSandbox) -> None:
    credentials = SalesforceCredentials(sf_sandbox.url, sf_sandbox.client_id, sf_sandbox.client_secret)

    assert credentials.flow == "client_credentials"
    assert sf_credentials_for(sf_sandbox).flow == "client_credentials"
