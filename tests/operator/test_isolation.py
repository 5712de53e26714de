"""One hostile plugin among ten never stops its service: the real operator, the real API server.

Each case puts nine good plugins and one hostile one in the service ``handlers``; the nine must be
Ready and in the active list, the hostile one Invalid with its reason. Hostile means: code the
parser cannot take (MemoryError, RecursionError), code whose syntax tree is larger than the
check's memory, a ConfigMap write the API server refuses, a ConfigMap name taken by someone else.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.operator.test_squatted_names import blocked
from tests.support.operator_harness import Cluster, plugin_manifest, route_code
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.kube

GOOD_NAMES = [f"good-{index}" for index in range(9)]
#: case -> (the hostile plugin's code, what its status message says)
HOSTILE_CODE = {
    "memory-error": ("x = " + "-" * 10_000 + "1\n", "(MemoryError)"),
    "recursion-error": ("x = " + "1+" * 100_000 + "1\n", "(RecursionError)"),
    "huge-syntax-tree": (route_code("/h") + "x = [" + "1," * 400_000 + "]\n", "(MemoryError)"),
}


def refusing_policy(namespace: str, config_map: str) -> str:
    """A ValidatingAdmissionPolicy (and binding) with which the API server refuses to create or
    update the ConfigMap ``config_map`` in ``namespace`` (HTTP 422), as it refused long names."""
    name = f"refuse-{namespace}"[:63]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"object.metadata.name != '{config_map}'",
                    "message": "refused by the test's admission policy",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    return json.dumps(policy) + "\n" + json.dumps(binding)


@contextlib.contextmanager
def api_server_refuses(cluster: Cluster, config_map: str) -> Iterator[None]:
    """While in the block, the API server refuses to create or update ``config_map`` (HTTP 422)."""
    manifest = refusing_policy(cluster.namespace, config_map)
    cluster.kube.kubectl("apply", "-f", "-", input=manifest)
    kubectl, ns = cluster.kube.kubectl, cluster.namespace
    probes: list[int] = []

    def refused() -> bool:  # the policy reaches the API server's admission a moment after it is stored
        probes.append(1)
        if cluster.get("configmap", config_map) is None:
            result = kubectl("create", "configmap", config_map, "-n", ns, check=False)
            if result.returncode == 0:
                kubectl("delete", "configmap", config_map, "-n", ns)
        else:  # an update that changes something, so that it reaches admission
            result = kubectl(
                "annotate",
                "--overwrite",
                "configmap",
                config_map,
                "-n",
                ns,
                f"probe={len(probes)}",
                check=False,
            )
        return "refused by the test's admission policy" in result.stderr

    try:
        wait_for(refused, timeout=30, what="the test's admission policy to be in force")
        yield
    finally:
        cluster.kube.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest, check=False)


def apply_ten(cluster: Cluster, hostile_name: str, hostile_code: str) -> None:
    """Nine good plugins and the hostile one, in one server-side apply (large code needs it)."""
    ns = cluster.namespace
    manifests = [plugin_manifest(name, ns, route_code(f"/{name}", name)) for name in GOOD_NAMES[:4]]
    manifests.append(plugin_manifest(hostile_name, ns, hostile_code))  # in the middle of the service
    manifests += [plugin_manifest(name, ns, route_code(f"/{name}", name)) for name in GOOD_NAMES[4:]]
    cluster.apply("\n".join(manifests), "--server-side")


def assert_the_nine_are_served(cluster: Cluster, hostile_name: str, reason: str) -> None:
    status = cluster.wait_phase(hostile_name, "Invalid", timeout=60)
    assert reason in status["message"], status
    for name in GOOD_NAMES:
        cluster.wait_phase(name, "Ready", timeout=60)
    modules = [name.replace("-", "_") for name in GOOD_NAMES]
    details = cluster.wait_active(modules, timeout=60)
    assert sorted(entry["plugin"] for entry in details.values()) == GOOD_NAMES


@pytest.mark.parametrize("case", sorted(HOSTILE_CODE))
def test_a_plugin_whose_code_breaks_the_parser_costs_only_itself(
    cluster: Cluster, operator: Any, case: str
) -> None:
    code, reason = HOSTILE_CODE[case]
    apply_ten(cluster, "hostile", code)
    assert_the_nine_are_served(cluster, "hostile", reason)
    assert cluster.get("configmap", "lunaplugin-hostile") is None
    assert operator.process.poll() is None  # alive


def test_a_plugin_whose_configmap_the_api_server_refuses_costs_only_itself(
    cluster: Cluster, operator: Any
) -> None:
    with api_server_refuses(cluster, "lunaplugin-refused"):
        apply_ten(cluster, "refused", route_code("/refused"))
        assert_the_nine_are_served(
            cluster, "refused", "ConfigMap 'lunaplugin-refused' could not be written: HTTP 422"
        )
        assert "refused by the test's admission policy" in cluster.status("refused")["message"]


def test_a_refused_update_keeps_the_last_good_version_serving(cluster: Cluster, operator: Any) -> None:
    ns = cluster.namespace
    cluster.apply(plugin_manifest("later", ns, route_code("/later", "v1")))
    first = cluster.wait_phase("later", "Ready")
    with api_server_refuses(cluster, "lunaplugin-later"):
        cluster.apply(plugin_manifest("later", ns, route_code("/later", "v2")))
        status = cluster.wait_phase("later", "Invalid", timeout=30)
        assert "could not be written: HTTP 422" in status["message"], status
        assert "keeps serving" in status["message"] and status["codeHash"] == first["codeHash"]
        assert cluster.active()[1]["later"]["codeHash"] == first["codeHash"]
    # once the API server accepts it again, the next pass writes it
    cluster.apply(plugin_manifest("later", ns, route_code("/later", "v3")))
    assert cluster.wait_phase("later", "Ready", timeout=30)["codeHash"] != first["codeHash"]


def test_a_plugin_whose_configmap_name_is_taken_costs_only_itself(cluster: Cluster, operator: Any) -> None:
    squatter = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "lunaplugin-squatted"},
        "data": {"precious": "a user's data"},
    }
    cluster.apply(json.dumps(squatter))
    apply_ten(cluster, "squatted", route_code("/squatted"))
    assert_the_nine_are_served(
        cluster, "squatted", "ConfigMap 'lunaplugin-squatted' exists and was not written by the operator"
    )
    kept = cluster.get("configmap", "lunaplugin-squatted")
    assert kept is not None and kept["data"] == {"precious": "a user's data"}
    wait_for(lambda: blocked(operator, cluster.namespace) == 1, what="luna_operator_blocked_names at 1")
    # once its owner removes it, the plugin gets its ConfigMap
    cluster.kube.kubectl("delete", "configmap", "lunaplugin-squatted", "-n", cluster.namespace)
    cluster.wait_phase("squatted", "Ready", timeout=60)
    wait_for(lambda: blocked(operator, cluster.namespace) == 0, what="luna_operator_blocked_names at 0")


@pytest.mark.compat
def test_a_name_too_long_for_a_label_is_refused_at_apply(cluster: Cluster) -> None:
    long_name = "p" * 64
    result = cluster.apply(
        plugin_manifest(long_name, cluster.namespace, route_code(), module="p"), check=False
    )
    assert result.returncode != 0
    assert "metadata.name must be at most 63 characters" in result.stderr, result.stderr
    cluster.apply(plugin_manifest("p" * 63, cluster.namespace, route_code(), module="p"))


def test_a_plugin_with_settings_too_large_for_the_active_list_costs_only_itself(
    cluster: Cluster, operator: Any
) -> None:
    ns = cluster.namespace
    manifests = [plugin_manifest(name, ns, route_code(f"/{name}", name)) for name in GOOD_NAMES]
    manifests.insert(4, plugin_manifest("bulky", ns, route_code("/bulky"), settings={"blob": "x" * 300_000}))
    cluster.apply("\n".join(manifests), "--server-side")
    assert_the_nine_are_served(cluster, "bulky", "spec.settings is 300011 bytes as JSON; the limit is 65536")
