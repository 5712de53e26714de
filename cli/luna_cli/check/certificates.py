"""A webhook's caBundle, and whether the certificate its server presents verifies against it.

:func:`read_bundle` turns a ``clientConfig.caBundle`` into an SSL context that trusts only it (or
says what is wrong with it); :func:`handshake` connects to a ``clientConfig.url`` as the API
server would (that host name, that bundle) and reports the verification outcome. A Service
address is usually unreachable from outside the cluster: for those the admission probe (the API
server calling the webhook) is the proof.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

#: seconds a handshake may take
HANDSHAKE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Bundle:
    """A usable caBundle."""

    context: ssl.SSLContext
    earliest_expiry: float | None
    """the earliest ``notAfter`` of its CA certificates (epoch seconds); None: none listed"""


class BundleError(Exception):
    """The caBundle is empty or holds no certificate; the message says which."""


def read_bundle(ca_bundle: str | None) -> Bundle:
    """A client context trusting exactly ``ca_bundle`` (base64 PEM, as in a webhook configuration)."""
    if not ca_bundle:
        raise BundleError(
            "the caBundle is empty (is cert-manager's CA injector or the operator yet to fill it?)"
        )
    try:
        pem = base64.b64decode(ca_bundle, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise BundleError("the caBundle is not base64 of PEM text") from None
    # verifies the peer and its host name, and trusts nothing but the bundle (no system roots)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=pem)
    except ssl.SSLError as exc:
        raise BundleError(f"the caBundle holds no valid PEM certificate ({exc.reason or exc})") from None
    expiries = [
        ssl.cert_time_to_seconds(str(cert["notAfter"]))
        for cert in context.get_ca_certs()
        if "notAfter" in cert
    ]
    return Bundle(context, min(expiries) if expiries else None)


def expiry_note(bundle: Bundle, now: float | None = None) -> str:
    """``CA valid N more days``, ``CA EXPIRED``, or empty when the bundle lists no CA."""
    if bundle.earliest_expiry is None:
        return ""
    days = (bundle.earliest_expiry - (time.time() if now is None else now)) / 86400
    return "CA EXPIRED" if days < 0 else f"CA valid {int(days)} more days"


@dataclass(frozen=True)
class Handshake:
    """What connecting to the webhook's URL with its caBundle gave."""

    verified: bool | None
    """True: the served certificate verifies for the URL's host; False: it does not; None: no
    TLS answer (unreachable), so nothing is known"""
    detail: str


async def handshake(url: str, bundle: Bundle) -> Handshake:
    """Connect to ``url`` (https) trusting only ``bundle``, checking the host name as the API server does."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=bundle.context, server_hostname=host),
            HANDSHAKE_TIMEOUT,
        )
    except ssl.SSLCertVerificationError as exc:
        return Handshake(
            False, f"{host}:{port} serves a certificate the caBundle does not verify: {exc.verify_message}"
        )
    except ssl.SSLError as exc:
        return Handshake(False, f"TLS with {host}:{port} failed: {exc.reason or exc}")
    except (OSError, TimeoutError) as exc:
        return Handshake(None, f"{host}:{port} is not reachable from here ({type(exc).__name__}: {exc})")
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass
    return Handshake(True, f"{host}:{port} serves a certificate the caBundle verifies")
