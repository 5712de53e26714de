"""The webhook PKI: what a CA and a serving certificate made by ``luna_operator.pki`` allow."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from luna_operator.pki import KeyPair, certificate_expiry, issue_serving, make_ca, pem_certificates

DAY = datetime.timedelta(days=1)


def test_a_ca_signs_and_is_nothing_else() -> None:
    ca = make_ca("test CA", 10 * DAY)
    cert = x509.load_pem_x509_certificate(ca.cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.ca and constraints.path_length == 0
    assert usage.key_cert_sign and not usage.digital_signature
    assert cert.issuer == cert.subject


def test_a_serving_certificate_names_exactly_what_it_was_given() -> None:
    ca = make_ca("test CA", 10 * DAY)
    leaf = x509.load_pem_x509_certificate(issue_serving(ca, ["svc.ns.svc", "127.0.0.1", "::1"], DAY).cert)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    )


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca = make_ca("test CA", DAY, now=now)
    leaf = issue_serving(ca, ["a"], 30 * DAY, now=now)
    assert leaf.not_after == ca.not_after
    assert certificate_expiry(leaf.cert) == leaf.not_after


def test_refusals() -> None:
    ca = make_ca("test CA", DAY)
    leaf = issue_serving(ca, ["a"], DAY)
    with pytest.raises(ValueError, match="at least one"):
        issue_serving(ca, [], DAY)
    with pytest.raises(ValueError, match="not a CA"):
        issue_serving(leaf, ["b"], DAY)
    with pytest.raises(ValueError):
        pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError):
        pem_certificates(b"")


def test_a_client_trusting_the_ca_accepts_the_served_certificate_and_rejects_another_ca(
    tmp_path: Path,
) -> None:
    ca, other = make_ca("test CA", DAY), make_ca("other CA", DAY)
    leaf = issue_serving(ca, ["127.0.0.1"], DAY)
    assert handshake(tmp_path, leaf, trusted=ca) == "ok"
    assert "certificate verify failed" in handshake(tmp_path, leaf, trusted=other)
    both = KeyPair(other.cert + ca.cert, b"")
    assert handshake(tmp_path, leaf, trusted=both) == "ok"  # a bundle of old and new CA


def handshake(tmp_path: Path, served: KeyPair, *, trusted: KeyPair) -> str:
    (tmp_path / "tls.crt").write_bytes(served.cert)
    (tmp_path / "tls.key").write_bytes(served.key)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_context = ssl.create_default_context(cadata=trusted.cert.decode())
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return "ok"
        except ssl.SSLError as exc:
            return str(exc)
        finally:
            thread.join(timeout=5)
