"""A connected app's signing identity for the JWT bearer flow, made fresh for each test session: an RSA key and
the self-signed certificate an admin would upload to the app. Never a key committed to the repository: a key
in a repository is a key anyone may use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class SigningIdentity:
    """The private key (PEM, kept by the worker) and its certificate (PEM, uploaded to the connected app)."""

    private_key: str
    certificate: str

    def key_body_lines(self) -> list[str]:
        """The key's base64 lines: any one of them in a log or a database is a leak."""
        return [line for line in self.private_key.splitlines() if not line.startswith("-----")]

    def write_key(self, folder: Path, name: str = "healthbeat.key") -> Path:
        """The key as a deployment keeps it: a file only its owner may read."""
        path = folder / name
        path.write_text(self.private_key)
        path.chmod(0o600)
        return path


def make_signing_identity(common_name: str = "healthbeat-test") -> SigningIdentity:
    """What `openssl req -x509 -newkey rsa:2048 -nodes` makes, in memory."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))
    return SigningIdentity(
        private_key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode(),
        certificate=certificate.public_bytes(serialization.Encoding.PEM).decode(),
    )
