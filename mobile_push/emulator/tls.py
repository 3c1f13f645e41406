"""The emulator's own certificate authority and a server certificate for 127.0.0.1/localhost.

Generated with ``cryptography`` only (P-256 keys: fast to make and to handshake). Tests make
a throwaway pair per server; ``bgtasks emulator`` keeps one in its directory
(``load_or_make_tls_files``), so the CA file bgtasks is told to trust stays valid across restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    """PEM files written by ``make_tls_files``."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def server_context(self, alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.server_cert, self.server_key)
        ctx.set_alpn_protocols(alpn)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the emulator's CA (hostname checked)."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls_files(directory: Path, common_name: str = "bgtasks test CA", days: int = 7) -> TlsFiles:
    """Write ``ca.pem``, ``server.pem`` and ``server-key.pem`` into ``directory``, valid ``days``."""
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = _files(directory)
    write_private(files.server_key, _pem_key(key))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))  # last: marks the set complete
    return files


def _files(directory: Path) -> TlsFiles:
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")


def load_or_make_tls_files(directory: Path, common_name: str, days: int = 365) -> TlsFiles:
    """The files in ``directory`` if they are all there and the certificate is valid for at least
    another day; a new CA and certificate otherwise (a client must then trust the new ``ca.pem``)."""
    files = _files(directory)
    try:
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        if files.ca_cert.exists() and files.server_key.exists() and \
                cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
            return files
    except (OSError, ValueError):
        pass
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return make_tls_files(directory, common_name, days)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (mode 0600 from its creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT
