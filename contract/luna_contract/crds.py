"""The CustomResourceDefinitions this release is built for, as a fingerprint of their schemas.

The CRD files (``crds/``, copied into the chart) are not part of the installed package, so what a
cluster must serve for this release is written here: per CRD, the version objects are stored at
and a SHA-256 over that version's ``openAPIV3Schema``. ``luna-plugins check`` compares a cluster's
CRDs with it; ``tests/contract/test_crd_contract.py`` fails (printing the new values) whenever a file
under ``crds/`` changes without this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExpectedCrd:
    """One CRD as this release defines it."""

    name: str
    """metadata.name, e.g. lunaplugins.luna.dev"""
    kind: str
    version: str
    """the version served and used for storage"""
    schema_sha256: str
    """:func:`schema_fingerprint` of that version's schema"""


EXPECTED: tuple[ExpectedCrd, ...] = (
    ExpectedCrd(
        "lunaplugins.luna.dev",
        "LunaPlugin",
        "v1alpha1",
        "bdf770d5189fef7b3656e3b393d6e1f0b0752f3039e098535197ba09fc1ce4f2",
    ),
    ExpectedCrd(
        "lunapluginruntimes.luna.dev",
        "LunaPluginRuntime",
        "v1alpha1",
        "731d877cb3274929c22a3530c8df204faa269adf1e8fcd024895bb457b4aab6e",
    ),
)


def schema_fingerprint(schema: Any) -> str:
    """SHA-256 (hex) of ``schema`` as canonical JSON (keys sorted, no spaces): the same for a
    schema read from a CRD file and for that schema as the API server returns it."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def version_of(crd: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The entry of ``crd``'s ``spec.versions`` called ``name``, or None."""
    for version in (crd.get("spec") or {}).get("versions") or []:
        if isinstance(version, dict) and version.get("name") == name:
            return version
    return None


def fingerprint_of(crd: dict[str, Any], name: str) -> str | None:
    """:func:`schema_fingerprint` of version ``name`` of ``crd``; None when it has no schema."""
    version = version_of(crd, name)
    schema = ((version or {}).get("schema") or {}).get("openAPIV3Schema")
    return None if schema is None else schema_fingerprint(schema)
