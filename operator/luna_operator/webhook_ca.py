"""The operator's own webhook CA: made, published and rotated by the operator, with overlap.

A GitOps tool must be able to render the chart the same way every time, so no template may make
keys or read the cluster (Helm's ``genCA``/``lookup``). With ``--webhook-ca-secret`` the operator
keeps the webhook's CA in that Secret (the chart creates it empty) and does what Kyverno and
istiod do for theirs:

- the CA (``--webhook-ca-validity``) is replaced when two thirds of its life have passed: the
  next CA is made and **trusted first** (the configurations' ``caBundle`` names both), and
  signs only ``--webhook-ca-overlap`` seconds later, so every API server trusts it before any
  certificate it signed is served; the CA it replaces stays trusted until it expires;
- every replica issues its own serving certificate (``--webhook-serving-validity``) for the
  Service's DNS names from the CA that signs, again when two thirds of its life have passed or
  the signer changed, and serves it at once (files in ``--webhook-certs-dir``, swapped as one,
  read by :class:`~luna_operator.webhook_tls.ReloadingTLS`);
- each configuration named by ``--webhook-configurations`` (``validating/NAME`` or
  ``mutating/NAME``: RBAC grants the two kinds by name separately) gets the bundle in every webhook's
  ``caBundle``; a ``helm upgrade`` or a sync that empties it is put right at the next check
  (every ``--webhook-ca-check-interval`` seconds).

Replicas share nothing but the Secret; they write it with its ``resourceVersion``, so when two
replicas rotate at once one write wins and the other reads it at its next check.
:func:`plan` holds every decision and is pure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from luna_operator.pki import SKEW, KeyPair, issue_serving, make_ca, pem_certificates

__all__ = [
    "CAKeeper",
    "CAPolicy",
    "CAState",
    "CAStateError",
    "ServingFiles",
    "plan",
    "serving_due",
]

logger = logging.getLogger(__name__)

RENEW_AT = 2 / 3
"""the fraction of a certificate's life after which it is replaced"""
CA_NAME = "luna-plugins webhook CA"


class CAStateError(ValueError):
    """The CA Secret holds something that is not a CA state written by the operator."""


@dataclass(frozen=True)
class CAPolicy:
    """How long things live (see the module doc)."""

    ca_validity: datetime.timedelta = datetime.timedelta(days=365)
    serving_validity: datetime.timedelta = datetime.timedelta(days=30)
    overlap: datetime.timedelta = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class CAState:
    """What the Secret holds: the CA that signs, the next one (trusted, not signing yet) and
    the certificates of CAs it replaced (trusted until they expire)."""

    signer: KeyPair | None = None
    next: KeyPair | None = None
    retired: tuple[bytes, ...] = field(default=())

    def bundle(self) -> bytes:
        """The PEM certificates every API server must trust: signer, next, retired."""
        parts = [pair.cert for pair in (self.signer, self.next) if pair is not None]
        return b"".join(parts + list(self.retired))

    @classmethod
    def from_secret(cls, data: dict[str, str] | None) -> CAState:
        """Read the Secret's ``data`` (base64 values); empty or missing data is the empty state.
        Raises :class:`CAStateError` for anything else that cannot be read."""
        if not data:
            return cls()
        try:
            raw = {key: base64.b64decode(value, validate=True) for key, value in data.items()}
        except (ValueError, TypeError) as exc:
            raise CAStateError(f"a value is not base64: {exc}") from None
        unknown = set(raw) - {"ca.crt", "ca.key", "next.crt", "next.key", "retired.crt"}
        if unknown:
            raise CAStateError(f"unexpected keys {sorted(unknown)}")
        try:
            return cls(
                signer=_pair(raw, "ca"),
                next=_pair(raw, "next"),
                retired=tuple(
                    _pem(cert)
                    for cert in (pem_certificates(raw["retired.crt"]) if raw.get("retired.crt") else [])
                ),
            )
        except ValueError as exc:
            raise CAStateError(str(exc)) from None

    def to_secret(self) -> dict[str, str]:
        """The Secret's ``data`` for this state."""
        raw: dict[str, bytes] = {}
        for prefix, pair in (("ca", self.signer), ("next", self.next)):
            if pair is not None:
                raw[f"{prefix}.crt"], raw[f"{prefix}.key"] = pair.cert, pair.key
        if self.retired:
            raw["retired.crt"] = b"".join(self.retired)
        return {key: base64.b64encode(value).decode() for key, value in raw.items()}


def plan(state: CAState, now: datetime.datetime, policy: CAPolicy) -> CAState:
    """The state the Secret must hold at ``now``: ``state`` itself when nothing is due."""
    retired = tuple(cert for cert in state.retired if _not_after(cert) > now)
    signer, following = state.signer, state.next
    if signer is None or signer.not_after <= now:
        # nothing valid signs: start afresh (a next CA already trusted is the best choice)
        if following is not None and following.not_after > now:
            signer, following = following, None
        else:
            signer, following = make_ca(CA_NAME, policy.ca_validity, now=now), None
    elif following is None and now >= _renew_at(signer):
        following = make_ca(CA_NAME, policy.ca_validity, now=now)
    elif following is not None and now >= _made(following) + policy.overlap:
        retired = (*retired, signer.cert)
        signer, following = following, None
    new = CAState(signer, following, retired)
    return state if new == state else new


def serving_due(served: KeyPair | None, state: CAState, now: datetime.datetime) -> bool:
    """Whether a replica serving ``served`` must issue a new serving certificate now."""
    if served is None or state.signer is None:
        return served is None
    leaf = x509.load_pem_x509_certificate(served.cert)
    signer = x509.load_pem_x509_certificate(state.signer.cert)
    if leaf.issuer != signer.subject or _key_id(leaf) != _subject_key_id(signer):
        return True
    return now >= _renew_at(served)


class ServingFiles:
    """The replica's serving certificate as ``tls.crt``/``tls.key`` in ``directory``, replaced
    as one (both files are links into a directory that a single rename swaps)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.certfile, self.keyfile = directory / "tls.crt", directory / "tls.key"

    def read(self) -> KeyPair | None:
        """The pair served now, None when there is none (or it cannot be read)."""
        try:
            return KeyPair(self.certfile.read_bytes(), self.keyfile.read_bytes())
        except OSError:
            return None

    def write(self, pair: KeyPair) -> None:
        """Serve ``pair`` from now on; the previous generation is removed."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        current = self.directory / "..data"
        previous = os.readlink(current) if current.is_symlink() else None
        generation = self.directory / f"..{os.getpid()}_{datetime.datetime.now(datetime.UTC):%Y%m%d%H%M%S%f}"
        generation.mkdir(mode=0o700)
        for name, data in (("tls.crt", pair.cert), ("tls.key", pair.key)):
            path = generation / name
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                out.write(data)
        staging = self.directory / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        staging.symlink_to(generation.name)
        staging.rename(current)
        for name in ("tls.crt", "tls.key"):
            link = self.directory / name
            if not link.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                link.symlink_to(f"..data/{name}")
        if previous and previous != generation.name:
            for name in ("tls.crt", "tls.key"):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / previous / name).unlink()
            with contextlib.suppress(OSError):
                (self.directory / previous).rmdir()


KINDS = ("validating", "mutating")
"""the kinds of webhook configuration a ``--webhook-configurations`` entry names (KIND/NAME)"""


class CAApi:
    """The API calls the keeper needs (a seam for the unit tests)."""

    def __init__(self, api: Any) -> None:
        from kubernetes_asyncio import client

        self._api = api
        self._core = client.CoreV1Api(api)
        self._admission = client.AdmissionregistrationV1Api(api)

    async def close(self) -> None:
        await self._api.close()

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str] | None, str]:
        secret = await self._core.read_namespaced_secret(name, namespace)
        return secret.data, secret.metadata.resource_version

    async def write_secret(self, namespace: str, name: str, data: dict[str, str], version: str) -> None:
        # a JSON patch that tests the version: only the state that was read is replaced
        body = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "add", "path": "/data", "value": data},
        ]
        await self._core.patch_namespaced_secret(
            name, namespace, body, _content_type="application/json-patch+json"
        )

    async def configuration(self, kind: str, name: str) -> Any | None:
        """The ``kind`` (validating, mutating) webhook configuration ``name``; None when absent."""
        from kubernetes_asyncio.client.exceptions import ApiException

        read = (
            self._admission.read_validating_webhook_configuration
            if kind == "validating"
            else self._admission.read_mutating_webhook_configuration
        )
        try:
            return await read(name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def patch_bundle(self, kind: str, name: str, patch: list[dict[str, Any]]) -> None:
        call = (
            self._admission.patch_validating_webhook_configuration
            if kind == "validating"
            else self._admission.patch_mutating_webhook_configuration
        )
        await call(name, patch, _content_type="application/json-patch+json")


@dataclass
class CAKeeper:
    """Keeps the CA Secret, the configurations' ``caBundle`` and this replica's serving
    certificate as :func:`plan` and :func:`serving_due` say (see the module doc)."""

    api: CAApi
    namespace: str
    secret: str
    configurations: tuple[tuple[str, str], ...]
    """(kind, name) of the webhook configurations whose caBundle the keeper fills"""
    names: list[str]
    files: ServingFiles
    policy: CAPolicy = field(default_factory=CAPolicy)
    interval: float = 30.0
    served: Callable[[], object] = lambda: None
    """called after a new serving certificate was written (to serve it at once)"""
    on_ca: Callable[[CAState], None] = lambda _: None
    """called with the state after every check that read it"""
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)
    _warned: set[str] = field(default_factory=set)

    async def check(self) -> None:
        """One round: the Secret, the bundles, the serving certificate. Raises on API errors
        (the caller retries); a Secret that cannot be read as a CA state raises
        :class:`CAStateError` and changes nothing."""
        data, version = await self.api.read_secret(self.namespace, self.secret)
        state = CAState.from_secret(data)
        now = self.clock()
        wanted = plan(state, now, self.policy)
        if wanted is not state:
            await self.api.write_secret(self.namespace, self.secret, wanted.to_secret(), version)
            logger.info("webhook CA: %s", _change(state, wanted))
            state = wanted
        self.on_ca(state)
        await self._publish(state.bundle())
        if serving_due(self.files.read(), state, now):
            assert state.signer is not None
            self.files.write(issue_serving(state.signer, self.names, self.policy.serving_validity, now=now))
            logger.info("webhook serving certificate issued by the current CA")
            self.served()

    async def run(self) -> None:
        """:meth:`check` every ``interval`` seconds until cancelled; failures are logged (once
        per message) and retried at the next round."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # the next round retries; the log says why
                self._warn(f"keeping the webhook CA failed: {reason(exc)}")

    async def bootstrap(self, attempts: int = 30) -> None:
        """:meth:`check` until it succeeds: there is nothing to serve before."""
        for attempt in range(1, attempts + 1):
            try:
                await self.check()
                return
            except Exception as exc:
                if attempt == attempts:
                    raise
                self._warn(f"making the webhook certificate failed (retrying): {reason(exc)}")
                await asyncio.sleep(min(2.0 * attempt, 10.0))

    async def _publish(self, bundle: bytes) -> None:
        encoded = base64.b64encode(bundle).decode()
        for kind, name in self.configurations:
            configuration = await self.api.configuration(kind, name)
            if configuration is None:
                self._warn(f"no {kind} webhook configuration {name!r} to give the CA bundle to")
                continue
            patch = [
                {"op": "replace", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded}
                for index, webhook in enumerate(configuration.webhooks or [])
                if webhook.client_config.ca_bundle != encoded
            ]
            if patch:
                # test the version: a configuration changed meanwhile is patched next round
                version = configuration.metadata.resource_version
                patch.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
                await self.api.patch_bundle(kind, name, patch)
                logger.info("webhook CA bundle given to the %s configuration %s", kind, name)

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)


def reason(exc: BaseException) -> str:
    """One line saying why ``exc`` happened (an API error: its status and the server's message)."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    if status is not None and body is not None:
        try:
            message = json.loads(body).get("message") or body
        except (ValueError, TypeError, AttributeError):
            message = body
        return f"HTTP {status}: {message}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _pair(raw: dict[str, bytes], prefix: str) -> KeyPair | None:
    cert, key = raw.get(f"{prefix}.crt"), raw.get(f"{prefix}.key")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise CAStateError(f"{prefix}.crt and {prefix}.key go together")
    (found,) = pem_certificates(cert)[:1]
    return KeyPair(_pem(found), key)


def _pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _not_after(pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def _made(pair: KeyPair) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pair.cert).not_valid_before_utc + SKEW


def _renew_at(pair: KeyPair) -> datetime.datetime:
    made = _made(pair)
    return made + (pair.not_after - made) * RENEW_AT


def _key_id(leaf: x509.Certificate) -> bytes | None:
    try:
        return leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _subject_key_id(ca: x509.Certificate) -> bytes | None:
    try:
        return ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _change(before: CAState, after: CAState) -> str:
    if before.signer is None:
        return "made a new CA"
    if after.signer is not None and after.signer != before.signer and after.signer == before.next:
        return "the next CA signs from now on; the one it replaces stays trusted until it expires"
    if after.signer != before.signer:
        return "made a new CA (the one signing had expired)"
    if after.next is not None and before.next is None:
        return "made the next CA; it is trusted now and signs once every API server trusts it"
    return "dropped expired CAs from the bundle"
