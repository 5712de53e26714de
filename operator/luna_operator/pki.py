"""X.509 for the admission webhook: a CA and the serving certificates it signs (ECDSA P-256).

PEM in, PEM out; nothing here touches the network or the API. Callers may rely on: a CA made
here can sign (``basicConstraints CA:TRUE, pathlen 0``, ``keyCertSign``) and nothing else; a
serving certificate is for TLS servers only (``serverAuth``), names exactly the DNS names and
IP addresses given, and is never valid before the moment it was made minus one minute (clock
skew) nor after its CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["KeyPair", "certificate_expiry", "issue_serving", "make_ca", "pem_certificates"]

SKEW = datetime.timedelta(minutes=1)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes

    @property
    def not_after(self) -> datetime.datetime:
        """The end of the certificate's validity (UTC)."""
        return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc


def make_ca(
    common_name: str, validity: datetime.timedelta, *, now: datetime.datetime | None = None
) -> KeyPair:
    """A self-signed CA valid for ``validity`` from ``now``."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    return KeyPair(_cert_pem(cert), _key_pem(key))


def issue_serving(
    ca: KeyPair,
    names: list[str],
    validity: datetime.timedelta,
    *,
    now: datetime.datetime | None = None,
) -> KeyPair:
    """A serving certificate for ``names`` (DNS names or IP addresses) signed by ``ca``; its
    validity is cut to the CA's. Raises ``ValueError`` for no names or a CA that cannot sign."""
    if not names:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    now = now or datetime.datetime.now(datetime.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key")
    constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise ValueError("the CA certificate is not a CA")
    key = ec.generate_private_key(ec.SECP256R1())
    alternative: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(cert), _key_pem(key))


def pem_certificates(bundle: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle, in order; raises ``ValueError`` when there are none or
    one cannot be read."""
    found = x509.load_pem_x509_certificates(bundle)
    if not found:
        raise ValueError("no certificate in the bundle")
    return found


def certificate_expiry(pem: bytes) -> datetime.datetime:
    """The end of validity of the first certificate in ``pem`` (UTC)."""
    return pem_certificates(pem)[0].not_valid_after_utc


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
