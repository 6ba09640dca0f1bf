"""The webhook's serving certificate: made once by the operator (a CA and a certificate signed
by it, kept in a Secret every replica reads) or by cert-manager (the operator only reads it).

One CA per installation, not per replica: every replica serves the same certificate, and the
CA in the webhook configuration is written once (replicas that each made their own would
overwrite each other's caBundle).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
PRIVATE_KEY = "tls.key"
VALIDITY = timedelta(days=3650)  # no rotation yet: delete the Secret to make a new pair


@dataclass(frozen=True)
class ServingCertificate:
    ca: bytes  # PEM of the CA (what the apiserver trusts)
    cert: bytes  # PEM of the serving certificate
    key: bytes  # PEM of its private key

    def as_secret_data(self) -> dict[str, bytes]:
        return {CA_KEY: self.ca, CERT_KEY: self.cert, PRIVATE_KEY: self.key}

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> ServingCertificate | None:
        """None while the Secret is incomplete (cert-manager has not issued yet)."""
        if not data.get(CERT_KEY) or not data.get(PRIVATE_KEY):
            return None
        return cls(ca=data.get(CA_KEY) or data[CERT_KEY], cert=data[CERT_KEY], key=data[PRIVATE_KEY])

    def covers(self, hosts: list[str]) -> bool:
        """Whether the certificate names every host (DNS name or IP) the apiserver may call."""
        cert = x509.load_pem_x509_certificate(self.cert)
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        dns = set(names.get_values_for_type(x509.DNSName))
        ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
        return all((host in ips) if _is_ip(host) else (host in dns) for host in hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate(hosts: list[str], now: datetime | None = None) -> ServingCertificate:
    """A new CA and a serving certificate for `hosts` (the first one is the common name)."""
    now = now or datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eci-datacache-operator webhook CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts
    ]
    cert = (
        x509.CertificateBuilder()
        # Clients match the alternative names; a common name is at most 64 characters (RFC 5280),
        # fewer than a Service's DNS name can have.
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eci-datacache-operator webhook")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ServingCertificate(ca=ca.public_bytes(pem), cert=cert.public_bytes(pem), key=_pem_key(key))
