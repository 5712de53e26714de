"""Sidecar injection: the template file, and what to change in a Pod being created.

Pure logic (no kopf, no API client): :func:`load_template` reads the template once at start-up,
:func:`plan` decides, for one Pod body as the mutating webhook receives it, what to add. The
caller writes the result into its patch; the input body is never modified.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from luna_contract.names import LABEL_SERVICE
from luna_contract.secret_settings import settings_secret_name

INJECT_LABEL = "luna.dev/inject"
"""on a Pod: ``"true"`` asks for the sidecar, ``"disabled"`` refuses it; on a Namespace:
``enabled`` gives it to every Pod created there that does not refuse it"""
INJECT_ANNOTATION = INJECT_LABEL
"""still honoured on a Pod the webhook sees, but a label is what makes the API server call it"""
INJECTED_ANNOTATION = "luna.dev/injected"
SERVICE_ANNOTATION = LABEL_SERVICE
SERVICE_ENV = "LUNA_SIDECAR_SERVICE"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME = "luna-sidecar-token"
SETTINGS_VOLUME = "luna-sidecar-settings"
"""the template's volume of the service's settings Secret: it follows the Pod's service"""
DEFAULT_SERVICE = "handlers"
QUEUE_VOLUME = "luna-sidecar-queues"
"""the template's volume of the durable delivery queues: a Pod that brings its own volume of this
name (a StatefulSet's volumeClaimTemplate, a PersistentVolumeClaim) keeps it, and the sidecar's
queues live there instead of in the template's emptyDir"""
READ_ONLY_SOURCES = ("configMap", "secret", "downwardAPI", "projected", "image")
"""volume sources the kubelet mounts read-only: no queue can be written there"""

_TEMPLATE_KEYS = ("container", "volumes", "annotations", "labels")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

TokenSource = Literal["copied", "projected", "template", "none"]


class TemplateError(ValueError):
    """The template file is missing, unreadable, not YAML, or not shaped as documented.
    The message names the file and the problem."""


class InjectionRefusedError(ValueError):
    """The Pod asks for injection but cannot get it as written; the message says why (the
    webhook denies the Pod's creation with it)."""


@dataclass(frozen=True)
class InjectionTemplate:
    """What gets injected: one container, the volumes it needs, pod annotations and labels
    added where absent. The mappings are never handed out; :func:`plan` deep-copies them."""

    container: Mapping[str, Any]
    volumes: tuple[Mapping[str, Any], ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The injected container's name (also the value of ``luna.dev/injected``)."""
        return str(self.container["name"])


@dataclass(frozen=True)
class Injection:
    """What to change in a Pod: set ``spec.containers`` (and ``spec.volumes`` when
    ``volumes_added``) to the lists given here, and add ``annotations``/``labels`` (only keys
    the Pod does not have; ``luna.dev/injected`` among them)."""

    container_name: str
    service: str | None
    """The ``LUNA_SIDECAR_SERVICE`` value of the injected container (None if it has none)."""
    containers: list[dict[str, Any]]
    """The Pod's containers followed by the sidecar."""
    volumes: list[dict[str, Any]]
    """The Pod's volumes followed by the ones added."""
    volumes_added: bool
    annotations: dict[str, str]
    labels: dict[str, str]
    service_account: str
    """The Pod's ServiceAccount (``default`` when it names none): the sidecar's identity."""
    token: TokenSource
    """How the sidecar gets the API token: a mount ``copied`` from another container, a
    ``projected`` volume added for it, already in the ``template`` container, or ``none``
    (the Pod sets ``automountServiceAccountToken: false``)."""

    @property
    def warnings(self) -> list[str]:
        """Things the caller should log (the Pod is still created)."""
        if self.token == "none":
            return [
                f"sidecar {self.container_name!r} injected without an API token: the Pod sets "
                "automountServiceAccountToken: false, so it cannot read its LunaPlugins"
            ]
        return []


def load_template(path: str | Path) -> InjectionTemplate:
    """Read and check the template file; raises :class:`TemplateError` naming ``path``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TemplateError(f"injection template {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TemplateError(f"injection template {path}: not valid YAML: {exc}") from None
    try:
        return parse_template(raw)
    except TemplateError as exc:
        raise TemplateError(f"injection template {path}: {exc}") from None


def parse_template(raw: object) -> InjectionTemplate:
    """Check an already-parsed template document; raises :class:`TemplateError`."""
    if not isinstance(raw, dict):
        raise TemplateError("must be a mapping with the keys container, volumes, annotations, labels")
    unknown = sorted(str(key) for key in raw if key not in _TEMPLATE_KEYS)
    if unknown:
        raise TemplateError(f"unknown key(s) {', '.join(unknown)} (expected {', '.join(_TEMPLATE_KEYS)})")
    container = raw.get("container")
    if not isinstance(container, dict):
        raise TemplateError("`container` is required and must be a Container mapping")
    if not isinstance(container.get("name"), str) or not _DNS_LABEL.fullmatch(container["name"]):
        raise TemplateError("`container.name` is required and must be a DNS-1123 label")
    for key in ("env", "volumeMounts"):
        if key in container and not _is_list_of_named(container[key]):
            raise TemplateError(f"`container.{key}` must be a list of mappings with a name each")
    volumes = raw.get("volumes") or []
    if not _is_list_of_named(volumes):
        raise TemplateError("`volumes` must be a list of Volume mappings with a name each")
    names = [volume["name"] for volume in volumes]
    if len(set(names)) != len(names):
        raise TemplateError("`volumes` names a volume twice")
    return InjectionTemplate(
        container=container,
        volumes=tuple(volumes),
        annotations=_string_map(raw.get("annotations"), "annotations"),
        labels=_string_map(raw.get("labels"), "labels"),
    )


def _flag(value: object) -> str:
    return str(value if value is not None else "").strip().lower()


def asks_for_sidecar(meta: Mapping[str, Any], *, namespace_opted_in: bool = False) -> bool:
    """Whether a Pod of metadata ``meta`` is to get the sidecar: its label (or, as before,
    annotation) ``luna.dev/inject`` is "true", or its namespace opted in and the Pod does not
    refuse it (``luna.dev/inject: disabled``)."""
    values = {_flag((meta.get("labels") or {}).get(INJECT_LABEL))}
    values.add(_flag((meta.get("annotations") or {}).get(INJECT_ANNOTATION)))
    if "disabled" in values:
        return False
    return "true" in values or namespace_opted_in


def plan(
    pod: Mapping[str, Any], template: InjectionTemplate, *, namespace_opted_in: bool = False
) -> Injection | None:
    """What to change in ``pod`` (a Pod body being created) to inject ``template``.

    None when the Pod does not ask for injection (:func:`asks_for_sidecar`; ``namespace_opted_in``:
    the webhook was called for a Pod of a namespace labelled ``luna.dev/inject=enabled``) or
    already has it (a container or init container of the template's name, or the annotation
    ``luna.dev/injected``). Raises :class:`InjectionRefusedError` when the Pod asks for it but cannot
    have it: a ``luna.dev/service`` that is not a DNS-1123 label, a volume of the template's
    name that differs from the template's (except :data:`QUEUE_VOLUME`, which the Pod may bring
    itself, if writable), or ``hostNetwork`` (the loopback intake would be the node's). ``pod``
    is not modified.
    """
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if not asks_for_sidecar(meta, namespace_opted_in=namespace_opted_in):
        return None
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    existing = containers + list(spec.get("initContainers") or [])
    if INJECTED_ANNOTATION in annotations or any(c.get("name") == template.name for c in existing):
        return None
    if spec.get("hostNetwork") is True:
        raise InjectionRefusedError(
            "the Pod sets hostNetwork: true, so the sidecar's event intake and GET /plugins (loopback "
            "127.0.0.1:8081, meant for this Pod's containers only) would listen on the node's loopback, "
            "open to every process and host-network Pod of the node; run the Pod without hostNetwork, "
            "or drop luna.dev/inject and add the sidecar yourself"
        )

    sidecar: dict[str, Any] = copy.deepcopy(dict(template.container))
    service = _set_service(sidecar, annotations.get(SERVICE_ANNOTATION))
    volumes = copy.deepcopy(list(spec.get("volumes") or []))
    wanted = [_for_service(copy.deepcopy(dict(v)), service or DEFAULT_SERVICE) for v in template.volumes]
    added = _add_volumes(volumes, wanted)
    token = _give_token(sidecar, existing, volumes, spec)
    added = added or token == "projected"
    labels = meta.get("labels") or {}
    return Injection(
        container_name=template.name,
        service=service,
        containers=[*copy.deepcopy(containers), sidecar],
        volumes=volumes,
        volumes_added=added,
        annotations={
            **{k: v for k, v in template.annotations.items() if k not in annotations},
            INJECTED_ANNOTATION: template.name,
        },
        labels={k: v for k, v in template.labels.items() if k not in labels},
        service_account=str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"),
        token=token,
    )


def _set_service(sidecar: dict[str, Any], wanted: object) -> str | None:
    env: list[dict[str, Any]] = sidecar.setdefault("env", [])
    if wanted is not None:
        service = str(wanted)
        if len(service) > 63 or not _DNS_LABEL.fullmatch(service):
            raise InjectionRefusedError(
                f"annotation {SERVICE_ANNOTATION}={service!r} is not a valid service name "
                "(a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)"
            )
        entry = {"name": SERVICE_ENV, "value": service}
        index = next((i for i, item in enumerate(env) if item.get("name") == SERVICE_ENV), None)
        if index is None:
            env.append(entry)
        else:
            env[index] = entry
    if not env:
        del sidecar["env"]
    current = next((item for item in env if item.get("name") == SERVICE_ENV), None)
    return None if current is None or "value" not in current else str(current["value"])


def _for_service(volume: dict[str, Any], service: str) -> dict[str, Any]:
    """The template's volume for a Pod of ``service``: the settings Secret's is that service's."""
    if volume.get("name") == SETTINGS_VOLUME and isinstance(volume.get("secret"), dict):
        volume["secret"]["secretName"] = settings_secret_name(service)
    return volume


def _add_volumes(volumes: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """Append the wanted volumes the Pod lacks; refuse one of the same name that differs, except
    :data:`QUEUE_VOLUME`: the Pod's own (any writable source) is used instead of the template's."""
    by_name = {volume.get("name"): volume for volume in volumes}
    added = False
    for volume in wanted:
        present = by_name.get(volume["name"])
        if present is None:
            volumes.append(volume)
            added = True
        elif volume["name"] == QUEUE_VOLUME:
            readonly = [source for source in READ_ONLY_SOURCES if source in present]
            if readonly:
                raise InjectionRefusedError(
                    f"the Pod's volume {QUEUE_VOLUME!r} is a {readonly[0]} volume, which is mounted "
                    "read-only: the sidecar's delivery queues must be written there; use a "
                    "persistentVolumeClaim (e.g. a StatefulSet's volumeClaimTemplate) or an emptyDir"
                )
        elif not _covers(present, volume):
            raise InjectionRefusedError(
                f"the Pod already has a volume {volume['name']!r} that differs from the one the "
                "injected sidecar needs; rename it or remove it"
            )
    return added


def _give_token(
    sidecar: dict[str, Any],
    existing: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    spec: Mapping[str, Any],
) -> TokenSource:
    """Mount the API token in the sidecar: the ServiceAccount admission ran before us and only
    mounted it in the containers that existed then."""
    mounts: list[dict[str, Any]] = sidecar.setdefault("volumeMounts", [])
    if any(mount.get("mountPath") == TOKEN_PATH for mount in mounts):
        return "template"
    for container in existing:
        for mount in container.get("volumeMounts") or []:
            if mount.get("mountPath") == TOKEN_PATH:
                mounts.append(copy.deepcopy(mount))
                return "copied"
    if spec.get("automountServiceAccountToken") is False:
        if not mounts:
            del sidecar["volumeMounts"]
        return "none"
    _add_volumes(volumes, [_token_volume()])
    mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_PATH, "readOnly": True})
    return "projected"


def _token_volume() -> dict[str, Any]:
    """What the ServiceAccount admission plugin would have mounted: token, CA, namespace."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ]
        },
    }


def _covers(present: object, wanted: object) -> bool:
    """``present`` has everything ``wanted`` has (it may have more: fields the API server
    defaulted, such as a ConfigMap volume's defaultMode)."""
    if isinstance(wanted, dict):
        return isinstance(present, dict) and all(
            key in present and _covers(present[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(present, list)
            and len(present) == len(wanted)
            and all(_covers(p, w) for p, w in zip(present, wanted, strict=True))
        )
    return present == wanted


def _is_list_of_named(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"] for item in value
    )


def _string_map(value: object, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TemplateError(f'`{key}` must map names to strings (quote values such as "true" or "9100")')
    return dict(value)
