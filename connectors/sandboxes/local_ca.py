"""A throw-away certificate authority for a sandbox that serves HTTPS on loopback.

Real deployments often trust a private CA (a TLS-inspecting proxy, an on-premises Zendesk): the worker's
clients must then verify against the bundle named by ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE`` rather
than their own default trust store. A sandbox serving HTTPS with a certificate from this CA proves it:
a client given :attr:`LocalCA.cert_path` connects, a client without it is refused.
"""

from __future__ import annotations

import shutil
import ssl
import sys
import tempfile
from pathlib import Path
from socketserver import TCPServer
from typing import Any

import trustme

__all__ = ["LocalCA"]


class LocalCA:
    """A CA made for one sandbox run; its PEM file lives until :meth:`close`."""

    def __init__(self) -> None:
        self._ca = trustme.CA()
        self._folder = tempfile.mkdtemp(prefix="sandbox-ca-")
        self.cert_path = str(Path(self._folder) / "ca.pem")
        """The CA certificate (PEM) for clients to trust."""
        self._ca.cert_pem.write_to_path(self.cert_path)

    def serve_tls(self, server: TCPServer) -> None:
        """Make ``server`` (bound, not yet serving) answer only TLS, with a certificate for 127.0.0.1 and
        localhost. The handshake happens in the request's own thread, so a slow client holds up no other."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        report = server.handle_error

        def handle_error(request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError):  # a client that refused us
                report(request, client_address)

        server.handle_error = handle_error  # type: ignore[method-assign]

    def close(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)
