"""A local certificate authority and a server certificate, so clients can reach the emulator
over HTTPS and verify it (the credentials library calls STS over https only).

``ca.pem`` is what clients trust (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``Config(ca=...)``);
the server certificate (kept in memory) is valid for 127.0.0.1, ::1, localhost and the bind host. A CA already in the
directory is reused, so one trust file serves many emulators (and clients that cache their TLS
sessions per host and port keep trusting a new emulator on a reused port).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_FILE, CA_KEY_FILE = "ca.pem", "ca-key.pem"
SERVER_FILE = "server.pem"
CA_NAME = "ECI DataCache emulator local CA"


@dataclass(frozen=True)
class TlsFiles:
    directory: Path
    ca_file: Path
    context: ssl.SSLContext  # the server's, with its certificate and key loaded


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _unique(directory: Path, name: str) -> Path:
    return directory / f".{name}.{os.getpid()}.{secrets.token_hex(6)}"


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _load_or_create_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA key and certificate live together in ca-key.pem, created at most once (a hard
    link either creates it or finds it), so emulators sharing a directory share one CA."""
    bundle = directory / CA_KEY_FILE
    if not bundle.exists():
        certificate, key = _new_ca()
        temporary = _unique(directory, CA_KEY_FILE)
        _write_private(temporary, _key_bytes(key) + certificate.public_bytes(serialization.Encoding.PEM))
        try:
            os.link(temporary, bundle)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    data = bundle.read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{bundle} does not hold this emulator's CA key")
    certificate = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE-----") :])
    ca_file = directory / CA_FILE
    public = certificate.public_bytes(serialization.Encoding.PEM)
    if not ca_file.exists() or ca_file.read_bytes() != public:
        temporary = _unique(directory, CA_FILE)
        temporary.write_bytes(public)
        os.replace(temporary, ca_file)
    return certificate, key


def _alternative_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if host and host not in ("0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def prepare(directory: Path, host: str) -> TlsFiles:
    """The CA (reused when present) and a fresh server certificate, loaded into a context."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _load_or_create_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(_alternative_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # The server's own key and certificate only pass through a file (load_cert_chain wants one).
    chain = _unique(directory, SERVER_FILE)
    _write_private(chain, _key_bytes(key) + certificate.public_bytes(serialization.Encoding.PEM))
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(chain)
    finally:
        chain.unlink()
    return TlsFiles(directory, directory / CA_FILE, context)
