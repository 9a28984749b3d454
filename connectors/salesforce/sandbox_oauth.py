"""The sandbox org's OAuth 2.0 token endpoint (``/services/oauth2/token``): who may log in, and how.

Kept apart from the REST API (:mod:`connectors.salesforce.sandbox`) because login is its own contract
with Salesforce: which flows a connected app allows, on which hosts, and what each refusal says. The
sandbox calls :func:`answer_token_request` for every request to the token path and turns the
``(status, body)`` it returns into the HTTP answer; an access token is valid once the sandbox has
recorded it through ``issue``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qs

from connectors.salesforce.ids import make_id

__all__ = ["INTEGRATION_USER_ID", "ORG_ID", "ConnectedApp", "answer_token_request"]

ORG_ID: Final = make_id("00D", 1)
INTEGRATION_USER_ID: Final = make_id("005", 0, pod="0I")


@dataclass
class ConnectedApp:
    """The connected (or External Client) app the worker logs in with, as the org has it set up."""

    client_id: str = "sandbox-client"
    client_secret: str = field(default="sandbox-secret", repr=False)  # the sandbox's own test credential


def answer_token_request(app: ConnectedApp, method: str, body: bytes, *, instance_url: str,
                         now: Callable[[], datetime], issue: Callable[[str], None]) -> tuple[int, dict[str, Any]]:
    """Salesforce's answer to one request to the token endpoint, as ``(HTTP status, JSON body)``."""
    if method != "POST":
        return 405, {"error": "invalid_request", "error_description": "must use HTTP POST"}
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    grant_type = form.get("grant_type")
    if grant_type is None:
        return 400, {"error": "invalid_request", "error_description": "grant_type is required"}
    if grant_type != "client_credentials":
        return 400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
    if form.get("client_id") != app.client_id:
        return 400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}
    if not hmac.compare_digest(form.get("client_secret", ""), app.client_secret):
        return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}
    return 200, _token(app, instance_url, now(), issue)


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
