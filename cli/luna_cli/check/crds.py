"""Are the LunaPlugin and LunaPluginRuntime CRDs installed as this release defines them?

A CRD passes when it exists, is Established, serves the version this release stores objects at,
stores at it, and that version's schema has the fingerprint of :mod:`luna_contract.crds` (any
difference in the schema, older or newer, fails: the CRD and this CLI come from different
releases).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from luna_cli.check.kube import Kube
from luna_cli.check.results import Result, failed, passed
from luna_contract.crds import EXPECTED, ExpectedCrd, fingerprint_of, version_of

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
APPLY = (
    "apply the CRDs of the release you run: kubectl apply --server-side -f crds/ (the chart's crds/ folder)"
)


def release() -> str:
    """This CLI's version, as the installed distribution names it."""
    try:
        return metadata.version("luna-plugins")
    except metadata.PackageNotFoundError:
        return "unknown"


async def check_crds(kube: Kube) -> list[Result]:
    """One result per CRD of :data:`~luna_contract.crds.EXPECTED`."""
    return [await check_crd(kube, expected) for expected in EXPECTED]


async def check_crd(kube: Kube, expected: ExpectedCrd) -> Result:
    name = f"crd {expected.name}"
    reply = await kube.get(CRD_PATH + expected.name)
    if reply.status == 404:
        return failed(name, f"not installed ({expected.kind} is unknown to the API server)", APPLY)
    if not reply.ok:
        return failed(
            name,
            f"cannot be read: {reply.message}",
            "run with credentials that may get customresourcedefinitions",
        )
    return judge(name, reply.body, expected)


def judge(name: str, crd: dict[str, Any], expected: ExpectedCrd) -> Result:
    """The result for ``crd`` (as the API server returned it) against ``expected``."""
    status = crd.get("status") or {}
    established = next(
        (c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Established"),
        {},
    )
    if established.get("status") != "True":
        why = established.get("message") or "no Established condition yet"
        return failed(
            name, f"not Established: {why}", f"wait (--wait 60s) or see kubectl describe crd {expected.name}"
        )
    version = version_of(crd, expected.version)
    versions = [v for v in (crd.get("spec") or {}).get("versions") or [] if isinstance(v, dict)]
    served = [v.get("name") for v in versions if v.get("served")]
    if version is None or not version.get("served"):
        return failed(
            name,
            f"does not serve {expected.version} (serves {', '.join(map(str, served)) or 'nothing'}), "
            f"which luna-plugins {release()} uses",
            APPLY,
        )
    if not version.get("storage"):
        return failed(name, f"stores objects at another version than {expected.version}", APPLY)
    found = fingerprint_of(crd, expected.version)
    if found != expected.schema_sha256:
        return failed(
            name,
            f"serves {expected.version} with another schema than luna-plugins {release()} expects "
            f"(schema sha256 {str(found)[:12]}, expected {expected.schema_sha256[:12]}): the CRD and "
            "this CLI come from different releases",
            APPLY + ", or use the luna-plugins CLI of the installed release",
        )
    stored = [str(v) for v in status.get("storedVersions") or []]
    others = [v for v in stored if v != expected.version]
    also = f"; objects also stored at {', '.join(others)}" if others else ""
    return passed(
        name, f"{expected.version} served and stored, schema as luna-plugins {release()} expects{also}"
    )
