"""luna_contract.crds names every CRD of crds/ with the fingerprint of its schema as the file has it."""

from __future__ import annotations

from pathlib import Path

import yaml

from luna_contract.crds import EXPECTED, ExpectedCrd, fingerprint_of, schema_fingerprint

CRDS = Path(__file__).resolve().parents[2] / "crds"


def from_files() -> tuple[ExpectedCrd, ...]:
    found = []
    for path in sorted(CRDS.glob("lunaplugin*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (stored,) = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
        fingerprint = fingerprint_of(crd, stored)
        assert fingerprint is not None, f"{path.name}: version {stored} has no schema"
        found.append(ExpectedCrd(crd["metadata"]["name"], crd["spec"]["names"]["kind"], stored, fingerprint))
    return tuple(found)


def test_the_contract_names_the_crds_of_the_files() -> None:
    found = from_files()
    assert len(found) == 2
    assert sorted(EXPECTED, key=lambda crd: crd.name) == sorted(found, key=lambda crd: crd.name), (
        "crds/ changed: set EXPECTED in contract/luna_contract/crds.py to\n"
        + "\n".join(repr(crd) for crd in found)
    )


def test_the_fingerprint_ignores_key_order_and_sees_any_change() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    reordered = {"properties": {"b": {"type": "integer"}, "a": {"type": "string"}}, "type": "object"}
    assert schema_fingerprint(schema) == schema_fingerprint(reordered)
    changed = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 5}, "b": {"type": "integer"}},
    }
    assert schema_fingerprint(changed) != schema_fingerprint(schema)
