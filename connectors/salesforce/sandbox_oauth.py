"""The sandbox org's OAuth 2.0 token endpoint (``/services/oauth2/token``): who may log in, and how.

Kept apart from the REST API (:mod:`connectors.salesforce.sandbox`) because login is its own contract
with Salesforce: which flows a connected app allows, on which hosts, and what each refusal says. The
sandbox calls :func:`answer_token_request` for every request to the token path and turns the
``(status, body)`` it returns into the HTTP answer; an access token is valid once the sandbox has
recorded it through ``issue``.

Two flows, as Salesforce answers them:

- client credentials: the consumer key and secret; refused on the shared login hosts
  (``ConnectedApp(generic_host=True)``) with ``invalid_grant`` "request not supported on this domain";
- JWT bearer: an RS256 assertion verified against the certificate uploaded to the app, with
  ``iss`` the consumer key, ``aud`` the org's login audience, ``sub`` a pre-authorized username and ``exp``
  in the future but within three minutes; each failure is refused with Salesforce's error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from connectors.salesforce.ids import make_id

__all__ = ["INTEGRATION_USER_ID", "JWT_BEARER_GRANT", "ORG_ID", "ConnectedApp", "answer_token_request"]

ORG_ID: Final = make_id("00D", 1)
INTEGRATION_USER_ID: Final = make_id("005", 0, pod="0I")
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME: Final = 180
"""Salesforce wants an assertion's ``exp`` within three minutes: one further ahead is refused (the stricter
reading of a limit the documentation states without naming its error)."""


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class ConnectedApp:
    """The connected (or External Client) app the worker logs in with, as the org has it set up."""

    client_id: str = "sandbox-client"
    client_secret: str = field(default="sandbox-secret", repr=False)  # the sandbox's own test credential
    certificate: str | None = None
    """The PEM certificate uploaded with "Use digital signatures"; without one the JWT bearer flow is refused."""
    preauthorized_users: frozenset[str] = frozenset()
    """Usernames the app is admin-approved for (through their profile or a permission set): whom the JWT bearer
    flow may log in as. Salesforce usernames are compared without regard to case."""
    audience: str = "https://login.salesforce.com"
    """The ``aud`` the org accepts: ``https://login.salesforce.com``, or ``https://test.salesforce.com`` for a
    sandbox org."""
    generic_host: bool = False
    """The sandbox's address plays a shared login host (``login.salesforce.com``, ``test.salesforce.com``)
    instead of the org's My Domain, where Salesforce refuses the client-credentials flow."""
    clock: Callable[[], datetime] = _wall_clock
    """Salesforce's time, against which an assertion expires: the wall clock the worker signs with, not the
    data clock a test or the demo shifts."""


def answer_token_request(app: ConnectedApp, method: str, body: bytes, *, instance_url: str,
                         now: Callable[[], datetime], issue: Callable[[str], None]) -> tuple[int, dict[str, Any]]:
    """Salesforce's answer to one request to the token endpoint, as ``(HTTP status, JSON body)``."""
    if method != "POST":
        return 405, {"error": "invalid_request", "error_description": "must use HTTP POST"}
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    grant_type = form.get("grant_type")
    if grant_type is None:
        return 400, {"error": "invalid_request", "error_description": "grant_type is required"}
    if grant_type == JWT_BEARER_GRANT:
        refusal = _jwt_refusal(app, form.get("assertion", ""))
    elif grant_type == "client_credentials":
        refusal = _client_credentials_refusal(app, form)
    else:
        refusal = ("unsupported_grant_type", "grant type not supported")
    if refusal is not None:
        return 400, {"error": refusal[0], "error_description": refusal[1]}
    return 200, _token(app, instance_url, now(), issue)


def _client_credentials_refusal(app: ConnectedApp, form: dict[str, str]) -> tuple[str, str] | None:
    if app.generic_host:
        return "invalid_grant", "request not supported on this domain"
    if form.get("client_id") != app.client_id:
        return "invalid_client_id", "client identifier invalid"
    if not hmac.compare_digest(form.get("client_secret", "").encode(), app.client_secret.encode()):
        return "invalid_client", "invalid client credentials"
    return None


def _jwt_refusal(app: ConnectedApp, assertion: str) -> tuple[str, str] | None:
    """Salesforce's checks of an assertion, in its order: the app (by ``iss``), then the signature against that
    app's certificate, then the claims."""
    invalid = ("invalid_grant", "invalid assertion")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        return invalid
    if unverified.get("iss") != app.client_id:
        return "invalid_client_id", "client identifier invalid"
    if app.certificate is None or header.get("alg") != "RS256":
        return invalid
    public_key = x509.load_pem_x509_certificate(app.certificate.encode()).public_key()
    if not isinstance(public_key, RSAPublicKey):
        return invalid
    try:
        claims = jwt.decode(assertion, public_key, algorithms=["RS256"],
                            options={"verify_exp": False, "verify_aud": False, "verify_iss": False})
    except jwt.PyJWTError:
        return invalid
    audiences = claims.get("aud")
    if app.audience not in (audiences if isinstance(audiences, list) else [audiences]):
        return "invalid_grant", "audience is invalid"
    expires = claims.get("exp")
    now = app.clock().timestamp()
    if not isinstance(expires, int | float) or isinstance(expires, bool) or expires > now + ASSERTION_LIFETIME:
        return invalid
    if expires <= now:
        return "invalid_grant", "expired authorization code"
    subject = claims.get("sub")
    if not isinstance(subject, str) or subject.casefold() not in {u.casefold() for u in app.preauthorized_users}:
        return "invalid_grant", "user hasn't approved this consumer"
    return None


def _token(app: ConnectedApp, instance_url: str, now: datetime, issue: Callable[[str], None]) -> dict[str, Any]:
    access_token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
    issued_at = str(int(now.timestamp() * 1000))
    identity = f"{instance_url}/id/{ORG_ID}/{INTEGRATION_USER_ID}"
    digest = hmac.new(app.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256)
    issue(access_token)
    return {
        "access_token": access_token,
        "instance_url": instance_url,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": base64.b64encode(digest.digest()).decode(),
        "scope": "api",
    }
