"""TLS material for the HTTPS-only Entra emulator, and client certificates for certificate-auth tests.

msal refuses non-https authorities (PROTOCOL_NOTES §4), so the Entra emulator serves TLS with a throwaway
trustme CA. msal's ``verify=`` is overridden by ``REQUESTS_CA_BUNDLE`` whenever that variable is set, so tests
point ``REQUESTS_CA_BUNDLE`` at a *combined* bundle (system roots + this CA) rather than at the CA alone.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DEFAULT_HOSTNAMES = ("127.0.0.1", "localhost", "::1")
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian/Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL/Fedora
    "/etc/ssl/cert.pem",  # macOS/Alpine
)


def system_ca_bundle() -> Path | None:
    """The OS root bundle, else certifi's (what requests would use without REQUESTS_CA_BUNDLE)."""
    for candidate in _SYSTEM_BUNDLES:
        if Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi
    except ImportError:
        return None
    return Path(certifi.where())


class LocalCA:
    """A private CA plus one server certificate for the loopback names."""

    def __init__(self, hostnames: tuple[str, ...] = DEFAULT_HOSTNAMES) -> None:
        self._ca = trustme.CA(organization_name="breakglass emulator CA")
        self._server_cert = self._ca.issue_cert(*hostnames)

    @property
    def ca_pem(self) -> bytes:
        return self._ca.cert_pem.bytes()

    def server_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(context)
        return context

    def client_ssl_context(self) -> ssl.SSLContext:
        """For aiohttp/urllib clients inside tests that should trust only this CA."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def write_ca_pem(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.ca_pem)
        return target

    def write_combined_bundle(self, path: str | Path, base_bundle: str | Path | None = None) -> Path:
        """System roots + this CA: safe to export as REQUESTS_CA_BUNDLE for a whole test process."""
        return write_combined_bundle(path, [self.ca_pem], base_bundle=base_bundle)


def write_combined_bundle(
    path: str | Path, extra_pems: list[bytes], base_bundle: str | Path | None = None
) -> Path:
    base = Path(base_bundle) if base_bundle else system_ca_bundle()
    parts = [base.read_bytes()] if base and base.is_file() else []
    parts.extend(extra_pems)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\n".join(p.rstrip(b"\n") for p in parts) + b"\n")
    return target


@dataclass(frozen=True)
class ClientCertificate:
    """A self-signed app credential as an Entra app registration would hold it (public half uploaded)."""

    private_key_pem: str
    certificate_pem: str
    sha1_thumbprint_hex: str  # what msal wants as client_credential["thumbprint"]
    sha256_thumbprint_hex: str

    @property
    def x5t(self) -> str:
        return _b64url(bytes.fromhex(self.sha1_thumbprint_hex))

    @property
    def x5t_s256(self) -> str:
        return _b64url(bytes.fromhex(self.sha256_thumbprint_hex))


def make_client_certificate(common_name: str = "breakglass-graph-client") -> ClientCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return ClientCertificate(
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        sha1_thumbprint_hex=hashlib.sha1(der).hexdigest(),  # noqa: S324 - x5t is SHA-1 by definition
        sha256_thumbprint_hex=hashlib.sha256(der).hexdigest(),
    )


def certificate_thumbprints(certificate_pem: str) -> tuple[str, str]:
    """(x5t, x5t#S256) base64url values for a PEM certificate."""
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    return _b64url(hashlib.sha1(der).digest()), _b64url(hashlib.sha256(der).digest())  # noqa: S324


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
