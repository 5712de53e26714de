"""Sidecar injection rules: which Pods, what is added, what is refused, the template file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from luna_operator.injection import (
    TOKEN_PATH,
    TOKEN_VOLUME,
    InjectionRefusedError,
    InjectionTemplate,
    TemplateError,
    asks_for_sidecar,
    load_template,
    parse_template,
    plan,
)

TEMPLATE: dict[str, Any] = {
    "container": {
        "name": "luna-sidecar",
        "image": "luna-plugins:test",
        "args": ["sidecar"],
        "env": [
            {"name": "LUNA_SIDECAR_SERVICE", "value": "handlers"},
            {
                "name": "LUNA_SIDECAR_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
        ],
        "volumeMounts": [{"name": "luna-sidecar-tmp", "mountPath": "/tmp"}],
    },
    "volumes": [{"name": "luna-sidecar-tmp", "emptyDir": {}}],
    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"},
    "labels": {"app.kubernetes.io/part-of": "luna-plugins"},
}

TOKEN_MOUNT = {"name": "kube-api-access-x1", "mountPath": TOKEN_PATH, "readOnly": True}


@pytest.fixture
def template() -> InjectionTemplate:
    return parse_template(copy.deepcopy(TEMPLATE))


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A Pod as the webhook sees it: the ServiceAccount plugin already mounted the token."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "app",
            "namespace": "ns",
            "annotations": {"luna.dev/inject": "true"} if annotations is None else annotations,
        },
        "spec": {
            "containers": [{"name": "app", "image": "app:1", "volumeMounts": [dict(TOKEN_MOUNT)]}],
            "volumes": [{"name": "kube-api-access-x1", "projected": {"sources": []}}],
        }
        | spec,
    }


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_injects_the_sidecar_at_the_end(template: InjectionTemplate) -> None:
    change = plan(pod(), template)
    assert change is not None
    assert [c["name"] for c in change.containers] == ["app", "luna-sidecar"]
    sidecar = change.containers[-1]
    assert sidecar["image"] == "luna-plugins:test" and env_of(sidecar)["LUNA_SIDECAR_SERVICE"] == "handlers"
    assert change.service == "handlers" and change.volumes_added
    assert [v["name"] for v in change.volumes] == ["kube-api-access-x1", "luna-sidecar-tmp"]
    assert change.annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9100",
        "luna.dev/injected": "luna-sidecar",
    }
    assert change.labels == {"app.kubernetes.io/part-of": "luna-plugins"}


@pytest.mark.parametrize("value", ["True", "TRUE", " true "])
def test_the_annotation_is_case_insensitive(template: InjectionTemplate, value: str) -> None:
    assert plan(pod({"luna.dev/inject": value}), template) is not None


@pytest.mark.parametrize("annotations", [{}, {"luna.dev/inject": "false"}, {"luna.dev/inject": "yes"}])
def test_pods_that_do_not_ask_are_untouched(template: InjectionTemplate, annotations: dict[str, str]) -> None:
    assert plan(pod(annotations), template) is None
    assert plan({"metadata": {}, "spec": {}}, template) is None


def test_injecting_twice_changes_nothing(template: InjectionTemplate) -> None:
    first = pod()
    change = plan(first, template)
    assert change is not None
    injected = copy.deepcopy(first)
    injected["spec"]["containers"] = change.containers
    injected["spec"]["volumes"] = change.volumes
    injected["metadata"]["annotations"].update(change.annotations)
    assert plan(injected, template) is None


def test_a_pod_with_the_container_or_the_marker_is_skipped(template: InjectionTemplate) -> None:
    own = pod(containers=[{"name": "app"}, {"name": "luna-sidecar", "image": "mine"}])
    assert plan(own, template) is None
    as_init = pod(initContainers=[{"name": "luna-sidecar", "image": "mine"}])
    assert plan(as_init, template) is None
    marked = pod({"luna.dev/inject": "true", "luna.dev/injected": "other"})
    assert plan(marked, template) is None


def test_the_service_annotation_replaces_the_env_value(template: InjectionTemplate) -> None:
    change = plan(pod({"luna.dev/inject": "true", "luna.dev/service": "billing"}), template)
    assert change is not None and change.service == "billing"
    sidecar = change.containers[-1]
    assert [e["name"] for e in sidecar["env"]] == ["LUNA_SIDECAR_SERVICE", "LUNA_SIDECAR_NAMESPACE"]
    assert env_of(sidecar)["LUNA_SIDECAR_SERVICE"] == "billing"


def test_the_service_annotation_adds_the_env_when_the_template_has_none() -> None:
    bare = parse_template({"container": {"name": "luna-sidecar", "image": "x"}})
    change = plan(pod({"luna.dev/inject": "true", "luna.dev/service": "orders-2"}), bare)
    assert change is not None and change.service == "orders-2"
    assert change.containers[-1]["env"] == [{"name": "LUNA_SIDECAR_SERVICE", "value": "orders-2"}]
    assert plan(pod(), bare).service is None  # type: ignore[union-attr]


def test_a_host_network_pod_is_refused(template: InjectionTemplate) -> None:
    """Its loopback intake would be the node's loopback."""
    with pytest.raises(InjectionRefusedError, match=r"hostNetwork: true.*node's loopback"):
        plan(pod(hostNetwork=True), template)
    assert plan(pod(hostNetwork=False), template) is not None
    assert plan(pod({"luna.dev/inject": "false"}, hostNetwork=True), template) is None, (
        "not asking: untouched"
    )


@pytest.mark.parametrize("service", ["Bad_Name", "UPPER", "-dash", "dash-", "", "a" * 64, "a.b"])
def test_a_bad_service_name_is_refused(template: InjectionTemplate, service: str) -> None:
    with pytest.raises(InjectionRefusedError, match=r"annotation luna\.dev/service=.*DNS-1123 label"):
        plan(pod({"luna.dev/inject": "true", "luna.dev/service": service}), template)


def test_a_matching_volume_is_kept_and_a_different_one_refused(template: InjectionTemplate) -> None:
    same = pod()
    same["spec"]["volumes"].append({"name": "luna-sidecar-tmp", "emptyDir": {"medium": ""}})
    change = plan(same, template)
    assert change is not None and [v["name"] for v in change.volumes] == [
        "kube-api-access-x1",
        "luna-sidecar-tmp",
    ]
    assert not change.volumes_added
    clash = pod()
    clash["spec"]["volumes"].append({"name": "luna-sidecar-tmp", "hostPath": {"path": "/tmp"}})
    with pytest.raises(InjectionRefusedError, match="volume 'luna-sidecar-tmp'"):
        plan(clash, template)


def test_user_annotations_and_labels_are_never_overwritten(template: InjectionTemplate) -> None:
    body = pod({"luna.dev/inject": "true", "prometheus.io/port": "8080"})
    body["metadata"]["labels"] = {"app.kubernetes.io/part-of": "shop"}
    change = plan(body, template)
    assert change is not None
    assert change.annotations == {"prometheus.io/scrape": "true", "luna.dev/injected": "luna-sidecar"}
    assert change.labels == {}


def test_the_token_mount_of_another_container_is_copied(template: InjectionTemplate) -> None:
    change = plan(pod(), template)
    assert change is not None and change.token == "copied" and not change.warnings
    assert change.containers[-1]["volumeMounts"] == [
        {"name": "luna-sidecar-tmp", "mountPath": "/tmp"},
        TOKEN_MOUNT,
    ]
    assert TOKEN_VOLUME not in [v["name"] for v in change.volumes]


def test_the_token_mount_of_an_init_container_is_copied(template: InjectionTemplate) -> None:
    body = pod(
        containers=[{"name": "app"}],
        initContainers=[{"name": "setup", "volumeMounts": [dict(TOKEN_MOUNT)]}],
    )
    change = plan(body, template)
    assert change is not None and change.token == "copied"
    assert change.containers[-1]["volumeMounts"][-1] == TOKEN_MOUNT


def test_without_a_token_mount_a_projected_token_is_added(template: InjectionTemplate) -> None:
    change = plan(pod(containers=[{"name": "app"}], volumes=[]), template)
    assert change is not None and change.token == "projected" and change.volumes_added
    token = next(v for v in change.volumes if v["name"] == TOKEN_VOLUME)
    sources = token["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}
    assert sources[1]["configMap"] == {
        "name": "kube-root-ca.crt",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert change.containers[-1]["volumeMounts"][-1] == {
        "name": TOKEN_VOLUME,
        "mountPath": TOKEN_PATH,
        "readOnly": True,
    }
    assert "volumeMounts" not in change.containers[0]  # only the sidecar


def test_automount_false_injects_without_a_token_and_says_so(template: InjectionTemplate) -> None:
    change = plan(pod(containers=[{"name": "app"}], automountServiceAccountToken=False), template)
    assert change is not None and change.token == "none"
    assert [m["mountPath"] for m in change.containers[-1]["volumeMounts"]] == ["/tmp"]
    assert TOKEN_VOLUME not in [v["name"] for v in change.volumes]
    (warning,) = change.warnings
    assert "without an API token" in warning


def test_a_template_that_mounts_the_token_itself_is_left_alone() -> None:
    own = parse_template(
        {
            "container": {"name": "s", "volumeMounts": [{"name": "t", "mountPath": TOKEN_PATH}]},
            "volumes": [{"name": "t", "secret": {"secretName": "t"}}],
        }
    )
    change = plan(pod(), own)
    assert change is not None and change.token == "template"
    assert change.containers[-1]["volumeMounts"] == [{"name": "t", "mountPath": TOKEN_PATH}]


def test_neither_the_pod_nor_the_template_is_modified(template: InjectionTemplate) -> None:
    body = pod({"luna.dev/inject": "true", "luna.dev/service": "billing"}, containers=[{"name": "app"}])
    before, template_before = copy.deepcopy(body), copy.deepcopy(template)
    first = plan(body, template)
    assert first is not None
    first.containers[-1]["env"].append({"name": "X"})
    first.volumes.append({"name": "y"})
    assert body == before and template == template_before
    second = plan(body, template)
    assert second is not None and {"name": "X"} not in second.containers[-1]["env"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return path


def test_load_template_reads_the_file(tmp_path: Path) -> None:
    loaded = load_template(write(tmp_path, yaml.safe_dump(TEMPLATE)))
    assert loaded.name == "luna-sidecar" and loaded.volumes[0]["name"] == "luna-sidecar-tmp"
    assert dict(loaded.annotations) == TEMPLATE["annotations"] and dict(loaded.labels) == TEMPLATE["labels"]
    minimal = load_template(write(tmp_path, "container: {name: luna-sidecar, image: x}\n"))
    assert minimal.volumes == () and dict(minimal.annotations) == {} and dict(minimal.labels) == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("container: [\n", "not valid YAML"),
        ("- a\n", "must be a mapping"),
        ("volumes: []\n", "`container` is required"),
        ("container: {image: x}\n", "`container.name` is required"),
        ("container: {name: Bad_Name}\n", "`container.name`"),
        ("container: {name: s, env: {A: b}}\n", "`container.env` must be a list"),
        ("container: {name: s}\nvolumes: {tmp: {}}\n", "`volumes` must be a list"),
        ("container: {name: s}\nvolumes: [{emptyDir: {}}]\n", "`volumes` must be a list"),
        ("container: {name: s}\nvolumes: [{name: a}, {name: a}]\n", "names a volume twice"),
        ("container: {name: s}\nannotations: {prometheus.io/port: 9100}\n", "`annotations` must map"),
        ("container: {name: s}\nlabels: [a]\n", "`labels` must map"),
        ("container: {name: s}\ncontainers: []\n", "unknown key(s) containers"),
    ],
)
def test_a_bad_template_names_the_file_and_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TemplateError) as raised:
        load_template(path)
    assert str(path) in str(raised.value) and problem in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_a_missing_template_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"missing\.yaml: cannot read it"):
        load_template(tmp_path / "missing.yaml")


def test_the_settings_secret_volume_follows_the_pods_service() -> None:
    settings = {"name": "luna-sidecar-settings", "secret": {"secretName": "x", "optional": True}}
    with_settings = parse_template(copy.deepcopy(TEMPLATE) | {"volumes": [settings]})
    billing = plan(pod({"luna.dev/inject": "true", "luna.dev/service": "billing"}), with_settings)
    default = plan(pod(), with_settings)
    assert billing is not None and default is not None
    secret_of = {"billing": billing.volumes[-1]["secret"], "default": default.volumes[-1]["secret"]}
    assert secret_of["billing"] == {"secretName": "luna-plugins-billing-settings", "optional": True}
    assert secret_of["default"]["secretName"] == "luna-plugins-handlers-settings"
    assert settings["secret"]["secretName"] == "x"  # the template is not changed


def labelled(
    labels: dict[str, str], annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A Pod that asks (or not) by label."""
    body = pod(annotations or {}, **spec)
    body["metadata"]["labels"] = labels
    return body


@pytest.mark.parametrize("value", ["true", "True", " TRUE "])
def test_the_label_asks_for_the_sidecar(template: InjectionTemplate, value: str) -> None:
    assert plan(labelled({"luna.dev/inject": value}), template) is not None


def test_a_pod_of_an_opted_in_namespace_gets_it_unless_it_refuses(template: InjectionTemplate) -> None:
    assert plan(labelled({"app": "x"}), template) is None  # not asked, namespace not opted in
    assert plan(labelled({"app": "x"}), template, namespace_opted_in=True) is not None
    refused = labelled({"luna.dev/inject": "disabled"})
    assert plan(refused, template, namespace_opted_in=True) is None
    # refusing wins over asking, whichever of label and annotation says which
    both = labelled({"luna.dev/inject": "true"}, {"luna.dev/inject": "disabled"})
    assert plan(both, template) is None and plan(both, template, namespace_opted_in=True) is None
    assert (
        asks_for_sidecar({"annotations": {"luna.dev/inject": "DISABLED"}}, namespace_opted_in=True) is False
    )


@pytest.mark.parametrize(
    ("spec", "account"),
    [({}, "default"), ({"serviceAccountName": "handlers"}, "handlers"), ({"serviceAccount": "old"}, "old")],
)
def test_the_sidecar_runs_as_the_pods_own_service_account(
    template: InjectionTemplate, spec: dict[str, Any], account: str
) -> None:
    change = plan(labelled({"luna.dev/inject": "true"}, **spec), template)
    assert change is not None and change.service_account == account


# --- the queue volume: the Pod may bring its own ------------------------------------------------

QUEUE_TEMPLATE: dict[str, Any] = TEMPLATE | {
    "volumes": [
        {"name": "luna-sidecar-tmp", "emptyDir": {}},
        {"name": "luna-sidecar-queues", "emptyDir": {"sizeLimit": "512Mi"}},
    ]
}


def test_without_a_queue_volume_of_its_own_the_pod_gets_the_templates_emptydir() -> None:
    change = plan(pod(), parse_template(copy.deepcopy(QUEUE_TEMPLATE)))
    assert change is not None and change.volumes_added
    volumes = {v["name"]: v for v in change.volumes}
    assert volumes["luna-sidecar-queues"] == {
        "name": "luna-sidecar-queues",
        "emptyDir": {"sizeLimit": "512Mi"},
    }


@pytest.mark.parametrize(
    "source",
    [
        # a StatefulSet's volumeClaimTemplate, as the Pod the controller creates has it
        {"persistentVolumeClaim": {"claimName": "luna-sidecar-queues-handlers-0"}},
        {"emptyDir": {"sizeLimit": "2Gi"}},
        {"ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}},
    ],
)
def test_the_pods_own_queue_volume_is_used_instead_of_the_templates(source: dict[str, Any]) -> None:
    own = pod()
    own["spec"]["volumes"].append({"name": "luna-sidecar-queues", **source})
    change = plan(own, parse_template(copy.deepcopy(QUEUE_TEMPLATE)))
    assert change is not None
    queues = [v for v in change.volumes if v["name"] == "luna-sidecar-queues"]
    assert queues == [{"name": "luna-sidecar-queues", **source}]  # once, the Pod's
    # the other template volumes are still added, and still refused when they differ
    assert "luna-sidecar-tmp" in [v["name"] for v in change.volumes]
    clash = copy.deepcopy(own)
    clash["spec"]["volumes"].append({"name": "luna-sidecar-tmp", "hostPath": {"path": "/tmp"}})
    with pytest.raises(InjectionRefusedError, match="volume 'luna-sidecar-tmp'"):
        plan(clash, parse_template(copy.deepcopy(QUEUE_TEMPLATE)))


@pytest.mark.parametrize("kind", ["configMap", "secret", "downwardAPI", "projected"])
def test_a_read_only_queue_volume_of_the_pod_is_refused_saying_why(kind: str) -> None:
    own = pod()
    own["spec"]["volumes"].append({"name": "luna-sidecar-queues", kind: {"name": "x"}})
    with pytest.raises(InjectionRefusedError, match=f"'luna-sidecar-queues' is a {kind} volume"):
        plan(own, parse_template(copy.deepcopy(QUEUE_TEMPLATE)))
