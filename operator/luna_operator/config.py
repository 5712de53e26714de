"""Operator settings: each a flag and a ``LUNA_OPERATOR_*`` environment variable (flag wins).

``resolve`` validates every value before anything starts: a bad one raises
:class:`~luna_contract.process_settings.SettingError` (a ``ValueError``) naming the flag or
variable it came from and what is expected (`luna-plugins operator` exits 2). The rules are the
sidecar's too: both read their settings with :mod:`luna_contract.process_settings`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from luna_contract import process_settings as rules
from luna_contract.log_format import LOG_FORMATS
from luna_contract.process_settings import SettingError


@dataclass(frozen=True)
class OperatorConfig:
    """What `luna-plugins operator` needs; see the README's operator table."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty watches all namespaces."""
    peering: str | None = None
    """kopf peering name: run several replicas with one active; unset runs standalone."""
    priority: int | None = None
    """Peering priority of this replica (the highest is active); random when unset."""
    liveness: str = "127.0.0.1:8090"
    """host:port of the liveness endpoint (GET /healthz)."""
    webhook: bool = False
    """Serve the admission webhooks (validation of LunaPlugins; sidecar injection with --inject)."""
    webhook_managed: bool = True
    """Create and update the webhook configurations lunaplugins.luna.dev; false: only serve them."""
    webhook_host: str = "127.0.0.1"
    """Address the webhook listens on and the API server calls."""
    webhook_port: int = 9443
    """Port of the webhook."""
    webhook_cert: str | None = None
    """PEM certificate of the webhook; a self-signed one is made when unset."""
    webhook_key: str | None = None
    """PEM private key of the webhook certificate."""
    webhook_certs_dir: str = ".luna/operator-webhook"
    """Where the self-signed webhook certificate is kept."""
    webhook_cert_check_interval: float = 2.0
    """Seconds between looks at the certificate files: a renewed pair is served this soon, no restart."""
    webhook_ca_secret: str | None = None
    """NAMESPACE/NAME of a Secret where the operator keeps its own webhook CA, rotated with overlap."""
    webhook_dns_names: tuple[str, ...] = ()
    """DNS names (comma-separated) of the serving certificate made from the operator's own CA."""
    webhook_configurations: tuple[str, ...] = ()
    """Webhook configurations whose caBundle the operator's own CA fills: validating/NAME, mutating/NAME."""
    webhook_ca_validity: float = 31536000.0
    """Seconds the operator's own webhook CA is valid; replaced after two thirds of it."""
    webhook_ca_overlap: float = 3600.0
    """Seconds a new webhook CA is trusted before it signs (below a third of the CA's validity)."""
    webhook_serving_validity: float = 2592000.0
    """Seconds a serving certificate from the operator's own CA is valid; replaced after two thirds."""
    webhook_ca_check_interval: float = 30.0
    """Seconds between checks of the CA Secret, the caBundles and the serving certificate."""
    inject: bool = False
    """Inject the sidecar into Pods labelled luna.dev/inject=true (needs --webhook, --inject-template)."""
    inject_template: str | None = None
    """YAML file with the sidecar to inject: container, volumes, annotations, labels."""
    sidecar_cluster_role: str | None = None
    """ClusterRole with what the sidecar needs; bound to each injected Pod's own ServiceAccount."""
    sidecar_role_binding: str = "luna-plugins-sidecar-access"
    """Name of the RoleBinding (one per namespace) of --sidecar-cluster-role to those accounts."""
    injection_audit_interval: float = 60.0
    """Seconds between scans for Pods that asked for the sidecar and run without it; 0: no scans."""
    metrics: str = "127.0.0.1:8091"
    """host:port of the Prometheus endpoint (GET /metrics)."""
    report_ttl: float = 30.0
    """Seconds after which a sidecar's report stops counting in status.loaded."""
    resync_interval: float = 60.0
    """Seconds between full passes over every service (a safety net: passes run on every change)."""
    api_timeout: float = 120.0
    """Seconds the sidecar reports or offered Secrets may go unread before the liveness probe fails."""
    code_check_memory: int = 192
    """MiB of address space the child process that parses a plugin's code may use."""
    code_check_timeout: float = 15.0
    """Seconds the parse of one plugin's code may take (a version that times out 3 times is invalid)."""
    prometheus_url: str | None = None
    """Prometheus that spec.rollout.analysis.queries ask (e.g. http://prometheus:9090); unset: none may."""
    prometheus_timeout: float = 10.0
    """Seconds one rollout query may take; a slower answer makes the judgement inconclusive."""
    prometheus_token_file: Path | None = None
    """File whose content goes with every rollout query as ``Authorization: Bearer`` (read at each
    query, so a rotated token is used at once), for a Prometheus behind an authenticating proxy."""
    prometheus_ca_file: Path | None = None
    """PEM certificates trusted for an ``https://`` Prometheus, besides the system's."""
    log_level: str = "INFO"
    """Log level: DEBUG, INFO, WARNING or ERROR."""
    log_format: str = "text"
    """Log lines: ``text``, or ``json`` (one object per line: time, level, logger, plugin, message)."""


#: below this the code-check child cannot even start the interpreter
MIN_CODE_CHECK_MEMORY = 64


def _configuration(value: str) -> str:
    kind, slash, name = value.partition("/")
    if not slash or kind not in ("validating", "mutating"):
        raise ValueError("not validating/NAME or mutating/NAME")
    rules.object_name(name)
    return value


SETTINGS = rules.Settings(
    OperatorConfig,
    env_prefix="LUNA_OPERATOR_",
    flags={"namespaces": "--namespace"},
    switches=("webhook", "inject"),
    repeatable=("namespaces",),
    parsers={
        "namespaces": rules.namespace_list,
        "peering": rules.object_name,
        "priority": rules.integer(),
        "liveness": rules.address,
        "metrics": rules.address,
        "webhook_managed": rules.boolean,
        "webhook_port": rules.port,
        "webhook_cert_check_interval": rules.seconds,
        "webhook_ca_secret": rules.namespaced_name,
        "webhook_dns_names": rules.comma_list(rules.object_name, "DNS names"),
        "webhook_configurations": rules.comma_list(
            _configuration, "webhook configurations (validating/NAME, mutating/NAME)"
        ),
        "webhook_ca_validity": rules.seconds,
        "webhook_ca_overlap": rules.seconds,
        "webhook_serving_validity": rules.seconds,
        "webhook_ca_check_interval": rules.seconds,
        "report_ttl": rules.seconds,
        "resync_interval": rules.seconds,
        "api_timeout": rules.seconds,
        "code_check_memory": rules.integer(minimum=MIN_CODE_CHECK_MEMORY, unit="MiB"),
        "code_check_timeout": rules.seconds,
        "prometheus_url": rules.http_url,
        "prometheus_timeout": rules.seconds,
        "prometheus_token_file": rules.path,
        "prometheus_ca_file": rules.path,
        "log_level": rules.log_level,
        "log_format": rules.one_of(LOG_FORMATS, "a log format"),
        "sidecar_cluster_role": rules.object_name,
        "sidecar_role_binding": rules.object_name,
        "injection_audit_interval": rules.seconds_or_zero,
    },
)
"""Every operator setting: its flag, variable, parser, default and meaning."""


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, variable, default, meaning) per setting, for the README."""
    return SETTINGS.rows()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    SETTINGS.add_arguments(parser)


def resolve(flags: Mapping[str, object], environ: Mapping[str, str] | None = None) -> OperatorConfig:
    """Flags over environment over defaults; raises :class:`SettingError` naming the bad setting."""
    options = SETTINGS.resolve(flags, environ)
    if options.inject and not options.webhook:
        raise SettingError("--inject needs --webhook: the sidecar is injected by the admission webhook")
    if options.inject and not options.inject_template:
        raise SettingError("--inject needs --inject-template: the YAML file with the sidecar to inject")
    if bool(options.webhook_cert) != bool(options.webhook_key):
        raise SettingError(
            "--webhook-cert and --webhook-key go together: set both, or neither for a self-signed one"
        )
    _check_own_ca(options)
    return options


def _check_own_ca(options: OperatorConfig) -> None:
    if options.webhook_ca_secret is None:
        if options.webhook_dns_names or options.webhook_configurations:
            raise SettingError("--webhook-dns-names and --webhook-configurations need --webhook-ca-secret")
        return
    if not options.webhook:
        raise SettingError("--webhook-ca-secret needs --webhook: the CA is the webhook's")
    if options.webhook_cert:
        raise SettingError(
            "--webhook-ca-secret and --webhook-cert exclude each other: one source of certificates"
        )
    if not options.webhook_dns_names:
        raise SettingError("--webhook-ca-secret needs --webhook-dns-names: the names the API server calls")
    if options.webhook_ca_overlap * 3 >= options.webhook_ca_validity:
        raise SettingError(
            "--webhook-ca-overlap must be below a third of --webhook-ca-validity: a new CA is made "
            "after two thirds of the old one's life and must sign before that one expires"
        )
    if options.webhook_serving_validity > options.webhook_ca_validity:
        raise SettingError("--webhook-serving-validity cannot exceed --webhook-ca-validity")
