"""The LunaPlugin spec as typed structures: what a user may write under ``spec``.

These structures are the one source of the spec's shape. The CRD's ``openAPIV3Schema`` for
``spec`` is generated from them (:func:`luna_contract.crd_schema.spec_schema`), and a test fails
when ``crds/lunaplugins.yaml`` says anything else. :func:`read_spec` decodes a stored spec into
them; the rules that need more than a shape (code parsed, settings' size, module names taken)
stay with the operator's checks.

Adding a field: see "Adding a LunaPlugin field" in docs/contributing.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, cast

import msgspec
from msgspec import Meta, Struct, field

from luna_contract.delivery import DeliveryPolicy, PolicyError, read_policy
from luna_contract.rollout import RolloutError, RolloutSpec, read_rollout

__all__ = [
    "IN_PROCESS",
    "ISOLATIONS",
    "PROCESS",
    "CodeFrom",
    "ConfigMapKeyRef",
    "Isolation",
    "LunaPluginSpec",
    "SecretKeyRef",
    "SecretRef",
    "SettingFrom",
    "SpecError",
    "SpecView",
    "read_spec",
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_NAME = Annotated[str, Meta(max_length=253)]

Isolation = Literal["inProcess", "process"]
"""Where a plugin runs: in the sidecar's process, or in a process of its own."""
IN_PROCESS: Isolation = "inProcess"
PROCESS: Isolation = "process"
ISOLATIONS: tuple[Isolation, ...] = (IN_PROCESS, PROCESS)


class SpecError(ValueError):
    """A stored spec does not have the shape of :class:`LunaPluginSpec`; the message names the
    field (``spec.codeFrom.configMapKeyRef.name``) and what is expected."""


class ConfigMapKeyRef(Struct, frozen=True):
    """One key of a ConfigMap in the plugin's namespace."""

    name: Annotated[str, Meta(max_length=253, pattern=DNS_SUBDOMAIN, description="The ConfigMap's name.")]
    key: Annotated[
        str,
        Meta(
            max_length=253,
            pattern=r"^[-._a-zA-Z0-9]+$",
            description="The key holding the code, e.g. my_plugin.py.",
        ),
    ]


class CodeFrom(Struct, frozen=True, rename="camel"):
    """Where the code is when it is not inline."""

    config_map_key_ref: ConfigMapKeyRef


class SecretKeyRef(Struct, frozen=True):
    """One key of a Secret."""

    name: OBJECT_NAME
    key: OBJECT_NAME


class SecretRef(Struct, frozen=True):
    """Every key of a Secret."""

    name: OBJECT_NAME


class SettingFrom(Struct, frozen=True, rename="camel", omit_defaults=True):
    """One ``spec.settingsFrom`` item: a setting from one key of a Secret, or every key of one."""

    setting: (
        Annotated[
            str,
            Meta(
                max_length=128, description="The name the plugin reads the value under (with secretKeyRef)."
            ),
        ]
        | None
    ) = None
    secret_key_ref: Annotated[SecretKeyRef, Meta(description="One key of a Secret.")] | None = None
    secret_ref: (
        Annotated[SecretRef, Meta(description="Every key of a Secret, each a setting (prefix + key).")] | None
    ) = None
    prefix: (
        Annotated[
            str, Meta(max_length=64, description="With secretRef, put before each key to name its setting.")
        ]
        | None
    ) = None


_SETTING_FROM_RULES = {
    "x-kubernetes-validations": [
        {
            "rule": "has(self.secretKeyRef) != has(self.secretRef)",
            "message": "each item needs exactly one of secretKeyRef and secretRef",
        },
        {
            "rule": "!has(self.secretKeyRef) || has(self.setting)",
            "message": "an item with secretKeyRef needs setting, the name the plugin reads the value under",
        },
    ]
}

_SPEC_RULES = {
    "x-kubernetes-validations": [
        {
            "rule": "has(self.code) != has(self.codeFrom)",
            "message": "set exactly one of spec.code (inline source) or spec.codeFrom (a ConfigMap key)",
        }
    ]
}


class LunaPluginSpec(Struct, frozen=True, rename="camel", omit_defaults=True):
    """A LunaPlugin's ``spec``: the plugin's code and where it runs."""

    service: Annotated[
        str,
        Meta(
            max_length=40,
            pattern=DNS_LABEL,
            description="The service whose sidecars load this plugin (a DNS label), e.g. handlers.",
        ),
    ] = "handlers"
    module: (
        Annotated[
            str,
            Meta(
                max_length=100,
                pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                description=(
                    "The plugin's Python module name; defaults to metadata.name with '-' replaced by '_'. "
                    "Must not shadow a standard-library module."
                ),
            ),
        ]
        | None
    ) = None
    code: (
        Annotated[
            str,
            Meta(
                max_length=819200,
                description=(
                    "The plugin's Python source. Above ~250 KiB use `kubectl apply --server-side` "
                    "(client-side apply copies the object into a 256 KiB annotation) or codeFrom."
                ),
            ),
        ]
        | None
    ) = None
    code_from: (
        Annotated[
            CodeFrom, Meta(description="Take the code from a key of a ConfigMap in the same namespace.")
        ]
        | None
    ) = None
    enabled: Annotated[
        bool, Meta(description="When false the plugin stays validated but is left out of the active list.")
    ] = True
    order: Annotated[
        int,
        Meta(
            ge=-(2**31),
            le=2**31 - 1,
            description="Load order within the service (lower first; ties by module name).",
            extra_json_schema={"format": "int32"},
        ),
    ] = 0
    settings: Annotated[
        dict[str, Any],
        Meta(
            description=(
                "Free-form settings the plugin reads as the read-only mapping self.settings; at most 64 KiB "
                "as JSON (they are copied into the service's active list)."
            )
        ),
    ] = field(default_factory=dict)
    settings_from: Annotated[
        list[Annotated[SettingFrom, Meta(extra_json_schema=_SETTING_FROM_RULES)]],
        Meta(
            max_length=20,
            description=(
                "Settings whose values come from Secrets of the plugin's namespace, merged into "
                "self.settings. Only Secrets labelled luna.dev/plugin-settings=true may be read. The "
                "values travel in a Secret per service that the sidecar mounts: never in a ConfigMap, a "
                "status or an event (docs/secrets.md)."
            ),
        ),
    ] = field(default_factory=list)
    requirements: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=400)]],
        Meta(
            max_length=50,
            description=(
                "Python packages the plugin needs, as PEP 508 requirement strings (redis>=5,<6), "
                "optionally with --hash=sha256:<hex> for pip's hash-checking mode. The sidecar installs "
                "them, with the other plugins' of the service, from the package index the chart "
                "configures; URLs and pip options are refused."
            ),
        ),
    ] = field(default_factory=list)
    sha256: (
        Annotated[
            str,
            Meta(
                pattern=r"^[a-f0-9]{64}$",
                description="Optional pin; code whose SHA-256 (hex) differs is refused.",
            ),
        ]
        | None
    ) = None
    rollout: (
        Annotated[
            RolloutSpec,
            Meta(
                description=(
                    "A new version reaches a share of the service's reporting pods first, step by step, "
                    "judged against the pods on the version in service, and is rolled back by itself "
                    "when it fails (docs/rollouts.md). Without it a new version goes to every pod at once."
                ),
                extra_json_schema={
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.steps[size(self.steps) - 1].percent == 100",
                            "message": "the last step of spec.rollout.steps must be 100 percent",
                        }
                    ]
                },
            ),
        ]
        | None
    ) = None
    delivery: (
        Annotated[
            DeliveryPolicy,
            Meta(
                description=(
                    "How the service's events reach this plugin (docs/delivery.md); replaces the "
                    "sidecar's delivery settings for this plugin as a whole, fields left out take the "
                    "defaults shown here. at-least-once needs a sidecar with a queue directory."
                )
            ),
        ]
        | None
    ) = None
    isolation: Annotated[
        Isolation,
        Meta(
            description=(
                "inProcess (the sidecar's process, beside the service's other plugins) or process (a "
                "child process of the sidecar of its own: a crash, a leak past its memory limit or a stall "
                "ends and restarts that process only, within the limits of the chart's sidecar.isolation "
                "values). Changing it reloads the plugin."
            )
        ),
    ] = IN_PROCESS


SPEC_DESCRIPTION = "The plugin's code and where it runs."
"""the description of ``spec`` itself in the CRD"""
SPEC_EXTRA_SCHEMA = _SPEC_RULES
"""what the CRD says of ``spec`` beyond its fields (its CEL rules)"""


def read_spec(spec: object) -> LunaPluginSpec:
    """``spec`` (as the API returns it) as a :class:`LunaPluginSpec`; unknown fields are ignored
    (a newer CRD's), a wrong shape raises :class:`SpecError` naming the field."""
    try:
        return msgspec.convert(spec, LunaPluginSpec, strict=True)
    except msgspec.ValidationError as exc:
        raise SpecError(str(exc).replace("`$", "`spec")) from None


_DEFAULTS = {f.name: f.default for f in msgspec.structs.fields(LunaPluginSpec)}


class SpecView:
    """A stored spec (as the API returns it) read field by field with the contract's names and
    defaults, never raising: the operator reads every spec through this, and its checks name what
    is wrong with a field (:meth:`raw` gives them the field as stored). A property per field of
    :class:`LunaPluginSpec`, same name; a test keeps the two in step."""

    __slots__ = ("_spec",)

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._spec = spec

    def raw(self, field_name: str) -> Any:
        """The field ``field_name`` (its Python name, e.g. ``settings_from``) as stored, or None."""
        return self._spec.get(_WIRE[field_name])

    def has(self, field_name: str) -> bool:
        """Whether the stored spec sets ``field_name`` at all."""
        return _WIRE[field_name] in self._spec

    @property
    def service(self) -> str:
        return str(self.raw("service") or _DEFAULTS["service"])

    @property
    def module(self) -> str | None:
        """``spec.module`` when set (the module name rule is the checks' to apply)."""
        value = self.raw("module")
        return str(value) if value else None

    @property
    def code(self) -> str | None:
        value = self.raw("code")
        return None if value is None else str(value)

    @property
    def code_from(self) -> ConfigMapKeyRef | None:
        """``codeFrom.configMapKeyRef`` when it names both a ConfigMap and a key."""
        code_from = self.raw("code_from")
        ref = code_from.get("configMapKeyRef") if isinstance(code_from, Mapping) else None
        if not isinstance(ref, Mapping) or not ref.get("name") or not ref.get("key"):
            return None
        return ConfigMapKeyRef(str(ref["name"]), str(ref["key"]))

    @property
    def enabled(self) -> bool:
        value = self.raw("enabled")
        return bool(_DEFAULTS["enabled"] if value is None else value)

    @property
    def order(self) -> int:
        value = self.raw("order")
        return int(value or _DEFAULTS["order"])

    @property
    def settings(self) -> Any:
        """As stored (None when unset): the checks refuse what is not an object."""
        return self.raw("settings")

    @property
    def settings_from(self) -> Any:
        """As stored (None when unset): the checks refuse what is not a list of items."""
        return self.raw("settings_from")

    @property
    def requirements(self) -> Any:
        """As stored (None when unset): the checks refuse what is not a list of strings."""
        return self.raw("requirements")

    @property
    def sha256(self) -> str | None:
        value = self.raw("sha256")
        return str(value) if value else None

    @property
    def rollout(self) -> RolloutSpec | None:
        """``spec.rollout`` when set and well formed (None otherwise: :meth:`rollout_problem` says why)."""
        rollout, _ = self._rollout()
        return rollout

    def rollout_problem(self) -> str | None:
        """What is wrong with a stored ``spec.rollout`` (None when it is unset or well formed)."""
        _, problem = self._rollout()
        return problem

    def _rollout(self) -> tuple[RolloutSpec | None, str | None]:
        value = self.raw("rollout")
        if value is None:
            return None, None
        try:
            return read_rollout(value), None
        except RolloutError as exc:
            return None, str(exc)
        except RecursionError:
            return None, "spec.rollout: nested too deeply"

    @property
    def delivery(self) -> DeliveryPolicy | None:
        """``spec.delivery`` as a policy; None when unset or not a valid policy (the checks say
        what is wrong: :meth:`delivery_problem`)."""
        policy, _ = self._delivery()
        return policy

    def delivery_problem(self) -> str | None:
        """Why a set ``spec.delivery`` is not a valid policy (None: unset or valid)."""
        _, problem = self._delivery()
        return problem

    def _delivery(self) -> tuple[DeliveryPolicy | None, str | None]:
        if not self.has("delivery"):
            return None, None
        try:
            return read_policy(self.raw("delivery")), None
        except PolicyError as exc:
            message = str(exc).removeprefix("delivery policy: ").replace("`$", "`spec.delivery")
            return None, message if "`spec.delivery" in message else f"spec.delivery: {message}"
        except RecursionError:
            return None, "spec.delivery: nested too deeply"

    @property
    def isolation(self) -> Isolation:
        """``spec.isolation``; the default (``inProcess``) when unset or not one of
        :data:`ISOLATIONS` (:meth:`isolation_problem` says so)."""
        value = self.raw("isolation")
        return cast(Isolation, value) if value in ISOLATIONS else IN_PROCESS

    def isolation_problem(self) -> str | None:
        """Why a set ``spec.isolation`` is not usable (None: unset or one of :data:`ISOLATIONS`)."""
        if not self.has("isolation") or self.raw("isolation") in ISOLATIONS:
            return None
        value = self.raw("isolation")
        shown = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
        return f"spec.isolation must be one of {', '.join(ISOLATIONS)}, not {shown}"


_WIRE = {f.name: f.encode_name for f in msgspec.structs.fields(LunaPluginSpec)}
