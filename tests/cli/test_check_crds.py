"""How `luna-plugins check` judges a CRD as the API server returns it (pure)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from luna_cli.check.crds import judge
from luna_contract.crds import EXPECTED

PLUGINS = next(crd for crd in EXPECTED if crd.kind == "LunaPlugin")
FILE = Path(__file__).resolve().parents[2] / "crds" / "lunaplugins.yaml"


def served(**status: Any) -> dict[str, Any]:
    """The CRD file as the API server shows it once Established."""
    crd: dict[str, Any] = yaml.safe_load(FILE.read_text())
    crd["status"] = {
        "conditions": [{"type": "Established", "status": "True"}],
        "storedVersions": ["v1alpha1"],
    } | status
    return crd


def test_the_crd_of_the_files_passes() -> None:
    result = judge("crd x", served(), PLUGINS)
    assert result.ok and "v1alpha1 served and stored" in result.detail and not result.fix


def test_a_crd_not_established_yet_fails_with_the_api_servers_words() -> None:
    crd = served(conditions=[{"type": "Established", "status": "False", "message": "the names are taken"}])
    result = judge("crd x", crd, PLUGINS)
    assert not result.ok and "not Established: the names are taken" in result.detail
    assert "--wait" in result.fix


def test_another_version_is_named_and_fails() -> None:
    crd = served()
    crd["spec"]["versions"][0]["name"] = "v1beta1"
    result = judge("crd x", crd, PLUGINS)
    assert not result.ok and "does not serve v1alpha1 (serves v1beta1)" in result.detail
    not_served = served()
    not_served["spec"]["versions"][0]["served"] = False
    assert "serves nothing" in judge("crd x", not_served, PLUGINS).detail
    elsewhere = served()
    newer = copy.deepcopy(elsewhere["spec"]["versions"][0]) | {"name": "v1beta1"}
    elsewhere["spec"]["versions"][0]["storage"] = False
    elsewhere["spec"]["versions"].append(newer)
    assert "stores objects at another version" in judge("crd x", elsewhere, PLUGINS).detail


def test_any_schema_change_fails_and_older_stored_versions_are_mentioned() -> None:
    changed = served()
    changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] += " "
    result = judge("crd x", changed, PLUGINS)
    assert not result.ok and "another schema" in result.detail and "crds/" in result.fix
    older = judge("crd x", served(storedVersions=["v1alpha0", "v1alpha1"]), PLUGINS)
    assert older.ok and "objects also stored at v1alpha0" in older.detail


def test_hostile_shapes_never_raise() -> None:
    established = {"conditions": [{"type": "Established", "status": "True"}, None]}
    for crd in (
        {},
        {"spec": None, "status": None},
        {"spec": {"versions": [None, 3]}, "status": established},
        {"spec": {"versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": None}]}}
        | {"status": established | {"storedVersions": None}},
    ):
        assert not judge("crd x", crd, PLUGINS).ok
