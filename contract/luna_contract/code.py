"""The identity of a plugin version: the SHA-256 of its code."""

from __future__ import annotations

import hashlib
import re

__all__ = ["code_hash", "is_sha256"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def code_hash(code: str | bytes) -> str:
    """SHA-256 (lower-case hex) of ``code`` (text as UTF-8): the identity of a plugin version
    in the spec's pin, the plugin ConfigMap's annotation, the active list and every report."""
    return hashlib.sha256(code.encode() if isinstance(code, str) else code).hexdigest()


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a SHA-256 as :func:`code_hash` writes it (64 lower-case hex digits)."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None
