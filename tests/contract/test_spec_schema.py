"""The LunaPlugin spec has one source, the typed structures of :mod:`luna_contract.spec`: the
CRD's schema is what they generate, and what users write decodes into them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from luna_contract.crd_schema import spec_schema
from luna_contract.spec import LunaPluginSpec, SpecError, read_spec

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "lunaplugins.yaml"


def crd_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_the_crd_holds_exactly_the_schema_the_contract_generates() -> None:
    generated = spec_schema()
    if crd_spec_schema() != generated:
        pytest.fail(
            "crds/lunaplugins.yaml's spec schema differs from luna_contract.spec; paste this under "
            "properties.spec (python -m luna_contract.crd_schema prints it):\n"
            + yaml.safe_dump(generated, sort_keys=False, width=100)
        )


def test_every_field_of_the_crd_is_a_field_of_the_contract_and_back() -> None:
    fields = {f.encode_name for f in msgspec.structs.fields(LunaPluginSpec)}
    assert set(crd_spec_schema()["properties"]) == fields


def test_drift_is_caught_a_field_the_crd_lacks() -> None:
    class Wider(LunaPluginSpec, frozen=True):
        retries: int = 0

    import luna_contract.crd_schema as generator

    original = generator.LunaPluginSpec
    generator.LunaPluginSpec = Wider  # type: ignore[misc]
    try:
        assert "retries" in generator.spec_schema()["properties"]
        assert generator.spec_schema() != crd_spec_schema()
    finally:
        generator.LunaPluginSpec = original  # type: ignore[misc]


def test_the_schema_is_structural_no_refs_or_unions() -> None:
    text = json.dumps(spec_schema())
    assert "$ref" not in text and "anyOf" not in text and "oneOf" not in text


def example_specs() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "LunaPlugin":
                found.append((f"{path.name}:{document['metadata']['name']}", document["spec"]))
    return found


@pytest.mark.parametrize(("where", "spec"), example_specs() or [("none", {"code": "x"})])
def test_every_example_manifest_decodes_into_the_contract(where: str, spec: dict[str, Any]) -> None:
    decoded = read_spec(spec)
    assert (decoded.code is None) != (decoded.code_from is None), where


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"code": 7}, "got `int` - at `spec.code`"),
        ({"code": "x", "order": "1"}, "at `spec.order`"),
        ({"code": "x", "service": "Handlers"}, "at `spec.service`"),
        ({"code": "x", "service": "h" * 41}, "at `spec.service`"),
        (
            {"codeFrom": {"configMapKeyRef": {"name": "../etc", "key": "a.py"}}},
            "spec.codeFrom.configMapKeyRef.name",
        ),
        ({"code": "x", "settingsFrom": [{"secretRef": {}}]}, "missing required field `name`"),
        ({"code": "x", "requirements": [""]}, "at `spec.requirements[0]`"),
        ({"code": "x", "requirements": ["r"] * 51}, "at `spec.requirements`"),
        ({"code": "x", "sha256": "A" * 64}, "at `spec.sha256`"),
        ({"code": "x", "enabled": "false"}, "at `spec.enabled`"),
        ("not an object", "Expected `object`, got `str`"),
    ],
)
def test_a_spec_of_the_wrong_shape_is_refused_naming_the_field(spec: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        read_spec(spec)
    assert message in str(caught.value)


def test_fields_of_a_newer_crd_are_ignored_and_defaults_filled() -> None:
    decoded = read_spec({"code": "x", "fromTheFuture": {"a": 1}})
    assert (decoded.service, decoded.enabled, decoded.order, decoded.settings) == ("handlers", True, 0, {})


def test_the_operators_view_has_a_property_for_every_field_of_the_spec() -> None:
    from luna_contract.spec import SpecView

    for spec_field in msgspec.structs.fields(LunaPluginSpec):
        assert isinstance(getattr(SpecView, spec_field.name, None), property), spec_field.name


def test_the_view_reads_a_stored_spec_with_the_contracts_defaults_and_never_raises() -> None:
    from luna_contract.spec import ConfigMapKeyRef, SpecView

    empty = SpecView({})
    assert (empty.service, empty.enabled, empty.order, empty.module, empty.code_from) == (
        "handlers",
        True,
        0,
        None,
        None,
    )
    stored = SpecView({"codeFrom": {"configMapKeyRef": {"name": "cm", "key": "p.py"}}, "order": 2})
    assert stored.code_from == ConfigMapKeyRef("cm", "p.py") and stored.order == 2
    hostile = SpecView({"codeFrom": ["x"], "settings": [1], "settingsFrom": "x", "enabled": 0})
    assert hostile.code_from is None and hostile.settings == [1] and hostile.enabled is False
    assert SpecView({"codeFrom": {"configMapKeyRef": {"name": "cm"}}}).code_from is None
