"""The webhook server's TLS: the certificate files' current content, without a restart.

The kubelet updates a mounted Secret some time after it changed (a minute and more), and a
server that restarts its listener to pick up new files drops the admission calls in flight and
refuses new ones meanwhile. :class:`ReloadingTLS` keeps one listener: the context handed to the
server only selects, during each handshake (OpenSSL's server-name callback, which runs whether
or not the client sends SNI), the context made from the files' latest readable content. The
files are looked at no more than once per ``check_interval`` seconds, so a renewed certificate
is served within that time of the kubelet writing it (there is no other delay); :meth:`watch`
looks at them on the same schedule while no handshake comes. A pair that
cannot be loaded (the certificate written but not yet its key, a key that does not match) is
skipped and looked at again; the last good pair keeps being served, and the failure is logged
once per content. Connections already open keep the certificate of their handshake.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from luna_operator.pki import certificate_expiry

__all__ = ["ReloadingTLS", "ServedCertificate", "TLSFilesError"]

logger = logging.getLogger(__name__)


class TLSFilesError(ValueError):
    """The certificate and key files cannot make a server context; the message says why."""


@dataclass(frozen=True)
class ServedCertificate:
    """What the server hands out: the leaf's expiry (Unix seconds) and the files' digest."""

    not_after: float
    digest: str


class ReloadingTLS:
    """A server :class:`ssl.SSLContext` that always serves the newest loadable certificate files.

    Raises :class:`TLSFilesError` when the files cannot be served at all. ``on_change`` is
    called with the certificate now served after every change (from the handshake that noticed
    it, so it must be quick).
    """

    def __init__(
        self,
        certfile: Path,
        keyfile: Path,
        *,
        check_interval: float = 1.0,
        on_change: Callable[[ServedCertificate], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._certfile, self._keyfile = certfile, keyfile
        self._interval = check_interval
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._refused: str | None = None
        digest, current, served = self._load()  # raises TLSFilesError: nothing to serve at all
        self._digest, self._current, self._served = digest, current, served
        self._checked = clock()
        #: the context the listener is built with; each handshake is moved to ``current``
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(str(certfile), str(keyfile))
        self.context.sni_callback = self._select

    @property
    def certfile(self) -> Path:
        """The certificate file looked at."""
        return self._certfile

    @property
    def keyfile(self) -> Path:
        """The key file looked at."""
        return self._keyfile

    @property
    def served(self) -> ServedCertificate:
        """The certificate new handshakes get."""
        return self._served

    def refresh(self) -> bool:
        """Look at the files now; True when a different, loadable pair is served from now on."""
        with self._lock:
            self._checked = self._clock()
            try:
                digest = _digest(self._certfile, self._keyfile)
            except OSError as exc:
                self._refuse(f"cannot read the webhook certificate files: {exc}", str(exc))
                return False
            if digest == self._digest or digest == self._refused:
                return False
            try:
                digest, current, served = self._load()
            except TLSFilesError as exc:
                self._refuse(f"not serving the changed webhook certificate files yet: {exc}", digest)
                return False
            self._digest, self._current, self._served, self._refused = digest, current, served, None
        logger.info("serving the renewed webhook certificate (valid until %s)", _when(served.not_after))
        if self._on_change is not None:
            self._on_change(served)
        return True

    async def watch(self) -> None:
        """Look at the files every ``check_interval`` seconds until cancelled, so a renewal is
        noticed (and ``on_change`` called) even while no new connection comes."""
        while True:
            await asyncio.sleep(self._interval)
            if self._clock() - self._checked >= self._interval:
                try:
                    self.refresh()
                except Exception:
                    logger.exception("checking the webhook certificate files failed")

    def _select(self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
        if self._clock() - self._checked >= self._interval:
            try:
                self.refresh()
            except Exception:  # a handshake must never fail because of the check
                logger.exception("checking the webhook certificate files failed")
        connection.context = self._current

    def _refuse(self, message: str, key: str) -> None:
        if key != self._refused:
            until = _when(self._served.not_after)
            logger.warning("%s; still serving the certificate valid until %s", message, until)
            self._refused = key

    def _load(self) -> tuple[str, ssl.SSLContext, ServedCertificate]:
        try:
            cert_pem = self._certfile.read_bytes()
            digest = _digest(self._certfile, self._keyfile)
        except OSError as exc:
            raise TLSFilesError(f"cannot read {exc.filename}: {exc.strerror}") from exc
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(self._certfile), str(self._keyfile))
            not_after = certificate_expiry(cert_pem).timestamp()
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise TLSFilesError(
                f"{self._certfile} and {self._keyfile} are not a certificate and its key: {exc}"
            ) from exc
        # read again: the files may have changed between the digest and the load
        if _digest(self._certfile, self._keyfile) != digest:
            raise TLSFilesError("the files changed while they were read")
        return digest, context, ServedCertificate(not_after, digest)


def _digest(certfile: Path, keyfile: Path) -> str:
    hasher = hashlib.sha256()
    for path in (certfile, keyfile):
        data = path.read_bytes()
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.hexdigest()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
