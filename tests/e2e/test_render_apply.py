"""`luna-plugins render FILE | kubectl apply -f -` against the real API server and operator: the
plugin becomes Ready and a sidecar serves it, with the code inline and from a ConfigMap; its
requirements and settingsFrom are stored as rendered; and render's checks of settingsFrom agree
with the CRD's schema and CEL rules (whatever the API server refuses, render refuses too)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from luna_contract.requirements import RequirementsError, check_requirements
from luna_operator.secret_settings import check_shape
from tests.support.operator_harness import Cluster
from tests.support.sidecar_harness import Sidecar, wait_for

pytestmark = pytest.mark.kube

PLUGINS = Path(__file__).resolve().parents[2] / "examples" / "plugins"


def render(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "luna_cli.main", "render", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_rendered_manifests_apply_and_serve(
    cluster: Cluster, operator: Any, cluster_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    settings = tmp_path / "kettle.json"
    settings.write_text(json.dumps({"tickSeconds": 0.05}))
    inline = render(str(PLUGINS / "kettle.py"), "--settings", str(settings), "--namespace", cluster.namespace)
    cluster.apply(inline)
    status = cluster.wait_phase("kettle", "Ready", timeout=60)
    assert status["module"] == "kettle"

    from_config_map = render(
        str(PLUGINS / "route_digest.py"), "--code-from", "route-digest-code", "--order", "1"
    )
    cluster.apply(from_config_map)  # the ConfigMap and the LunaPlugin, in that order
    status = cluster.wait_phase("route-digest", "Ready", timeout=60)
    assert status["codeHash"] == cluster.get("lunaplugin", "route-digest")["spec"]["sha256"]  # type: ignore[index]
    assert cluster.wait_active(["kettle", "route_digest"], timeout=30)["kettle"]["settings"] == {
        "tickSeconds": 0.05
    }

    sidecar = cluster_sidecar("pod-render")
    wait_for(lambda: sidecar.get("/kettle/version").text == "kettle 1.0", timeout=30, what="the kettle route")
    assert sidecar.get("/digest").status == 200

    # the pin holds: other code in the ConfigMap is refused, the pinned version keeps serving
    cluster.kube.kubectl(
        "patch",
        "configmap",
        "route-digest-code",
        "-n",
        cluster.namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"route_digest.py": "# changed\n"}}),
    )
    status = cluster.wait_phase("route-digest", "Invalid", timeout=60)
    assert "does not match spec.sha256" in status["message"] and "keeps serving" in status["message"]


SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "bucket-credentials", "labels": {"luna.dev/plugin-settings": "true"}},
    "stringData": {"token": "s3cret", "user": "luna"},
}


def test_rendered_requirements_and_settings_from_are_stored_as_rendered(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    plugin = tmp_path / "kettle.py"
    plugin.write_text((PLUGINS / "kettle.py").read_text())
    (tmp_path / "kettle.requirements.txt").write_text(
        "# packages\nRedis >= 5 , < 6\naio_pika[connect]==9.4.1\n"
    )
    settings_from = tmp_path / "from.yaml"
    settings_from.write_text(
        "- setting: apiToken\n  secretKeyRef: {name: bucket-credentials, key: token}\n"
        "- secretRef: {name: bucket-credentials}\n  prefix: bucket_\n"
    )
    cluster.apply(json.dumps(SECRET))
    manifest = render(str(plugin), "--settings-from", str(settings_from))
    cluster.apply(manifest)  # plain client-side kubectl apply, strict field validation
    spec = cluster.get("lunaplugin", "kettle")["spec"]  # type: ignore[index]
    assert spec["requirements"] == ["Redis<6,>=5", "aio_pika[connect]==9.4.1"]
    assert spec["settingsFrom"] == [  # nothing pruned, nothing defaulted away
        {"setting": "apiToken", "secretKeyRef": {"name": "bucket-credentials", "key": "token"}},
        {"secretRef": {"name": "bucket-credentials"}, "prefix": "bucket_"},
    ]
    cluster.wait_phase("kettle", "Ready", timeout=60)
    entry = cluster.wait_active(["kettle"], timeout=30)["kettle"]
    assert entry["requirements"] == spec["requirements"]
    assert "s3cret" not in json.dumps(entry)


def _secret_key(setting: Any = "apiToken", name: Any = "creds", key: Any = "token") -> dict[str, Any]:
    return {"setting": setting, "secretKeyRef": {"name": name, "key": key}}


#: (case, spec.settingsFrom, spec.settings, the API server accepts it, check_shape accepts it)
SETTINGS_FROM_CASES: list[tuple[str, Any, Any, bool, bool]] = [
    ("a key", [_secret_key()], None, True, True),
    ("a whole secret with a prefix", [{"secretRef": {"name": "creds"}, "prefix": "p_"}], None, True, True),
    ("a whole secret", [{"secretRef": {"name": "creds"}}], None, True, True),
    ("none", [], None, True, True),
    ("twenty", [_secret_key(f"s{n}") for n in range(20)], None, True, True),
    ("longest names", [_secret_key("s" * 128, "n" * 253, "k" * 253)], None, True, True),
    ("longest prefix", [{"secretRef": {"name": "creds"}, "prefix": "p" * 64}], None, True, True),
    ("both refs", [{**_secret_key(), "secretRef": {"name": "creds"}}], None, False, False),
    ("no ref", [{"setting": "apiToken"}], None, False, False),
    ("a key without setting", [{"secretKeyRef": {"name": "creds", "key": "token"}}], None, False, False),
    ("a key without key", [{"setting": "t", "secretKeyRef": {"name": "creds"}}], None, False, False),
    ("a secret without name", [{"secretRef": {}}], None, False, False),
    ("twenty-one", [_secret_key(f"s{n}") for n in range(21)], None, False, False),
    ("setting too long", [_secret_key("s" * 129)], None, False, False),
    ("name too long", [_secret_key(name="n" * 254)], None, False, False),
    ("key too long", [_secret_key(key="k" * 254)], None, False, False),
    ("prefix too long", [{"secretRef": {"name": "creds"}, "prefix": "p" * 65}], None, False, False),
    ("setting not a string", [_secret_key(5)], None, False, False),
    ("prefix not a string", [{"secretRef": {"name": "creds"}, "prefix": 5}], None, False, False),
    (
        "a typo in a field",
        [{"setting": "t", "secretKeyref": {"name": "creds", "key": "k"}}],
        None,
        False,
        False,
    ),
    ("a key in a secretRef", [{"secretRef": {"name": "creds", "key": "token"}}], None, False, False),
    ("an item that is a string", ["creds"], None, False, False),
    ("not a list", {"secretRef": {"name": "creds"}}, None, False, False),
    # the API server accepts these; the operator would mark the plugin Invalid, so render refuses
    ("a name that is no Secret's", [_secret_key(name="Bad_Name")], None, True, False),
    ("an empty setting", [_secret_key("")], None, True, False),
    ("an empty key", [_secret_key(key="")], None, True, False),
    ("a setting twice", [_secret_key("t"), _secret_key("t", key="other")], None, True, False),
    ("a setting also in settings", [_secret_key("t")], {"t": "x"}, True, False),
]

#: (case, spec.requirements, the API server accepts it, check_requirements accepts it)
REQUIREMENTS_CASES: list[tuple[str, Any, bool, bool]] = [
    ("pinned with a hash", ["redis==5.0.8 --hash=sha256:" + "a" * 64], True, True),
    ("fifty", [f"package-{n}" for n in range(50)], True, True),
    ("fifty-one", [f"package-{n}" for n in range(51)], False, False),
    ("an entry too long", ["x" * 401], False, False),
    ("an empty entry", [""], False, False),
    # accepted by the API server (the chart's webhook refuses them), Invalid for the operator
    ("a pip option", ["--index-url https://evil.example/simple"], True, False),
    ("a URL", ["pkg @ https://evil.example/pkg.whl"], True, False),
    ("blank", ["   "], True, False),
]


def _accepted_by_kubectl_apply(cluster: Cluster, specs: dict[str, dict[str, Any]]) -> set[str]:
    """The names of the LunaPlugins (one per case) that ``kubectl apply --dry-run=server`` accepts:
    kubectl's validation against the published schema, then the API server's (the CRD's schema,
    its CEL rules, strict field validation); nothing is stored. One call per case: kubectl
    refuses a whole list when one item fails its own validation."""
    accepted = set()
    for name, spec in specs.items():
        manifest = {
            "apiVersion": "luna.dev/v1alpha1",
            "kind": "LunaPlugin",
            "metadata": {"name": name, "namespace": cluster.namespace},
            "spec": {"code": "x = 1\n"} | spec,
        }
        result = cluster.apply(json.dumps(manifest), "--dry-run=server", check=False)
        if result.returncode == 0:
            assert "created (server dry run)" in result.stdout, result.stdout
            accepted.add(name)
        else:
            assert "invalid" in result.stderr.lower() or "unknown field" in result.stderr, result.stderr
    return accepted


def test_what_the_api_server_refuses_in_settings_from_and_requirements_render_refuses_too(
    cluster: Cluster,
) -> None:
    specs: dict[str, dict[str, Any]] = {}
    expected: dict[str, tuple[bool, bool]] = {}
    for number, (case, settings_from, settings, api, shape) in enumerate(SETTINGS_FROM_CASES):
        name = f"settings-from-{number}"
        specs[name] = {"settingsFrom": settings_from} | ({"settings": settings} if settings else {})
        assert (check_shape(settings_from, settings) == []) == shape, (
            case,
            check_shape(settings_from, settings),
        )
        expected[name] = (api, shape)
    for number, (case, requirements, api, checked) in enumerate(REQUIREMENTS_CASES):
        name = f"requirements-{number}"
        specs[name] = {"requirements": requirements}
        try:
            check_requirements(requirements, "spec.requirements")
            assert checked, case
        except RequirementsError as exc:
            assert not checked, (case, str(exc))
        expected[name] = (api, checked)
    accepted = _accepted_by_kubectl_apply(cluster, specs)
    cases = [case[0] for case in SETTINGS_FROM_CASES] + [case[0] for case in REQUIREMENTS_CASES]
    disagree = [
        (case, name)
        for case, name in zip(cases, specs, strict=True)
        if (name in accepted) != expected[name][0]
    ]
    assert not disagree, disagree
    # the property render relies on: nothing the API server refuses passes the pure checks
    assert all(api or not ours for api, ours in expected.values())
