"""Operator settings: each a flag and a ``LUNA_OPERATOR_*`` environment variable (flag wins).

``resolve`` validates every value before anything starts: a bad one raises ``ValueError`` naming
the flag or variable it came from and what is expected (`luna-plugins operator` exits 2).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


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
    """Inject the sidecar into Pods annotated luna.dev/inject (needs --webhook, --inject-template)."""
    inject_template: str | None = None
    """YAML file with the sidecar to inject: container, volumes, annotations, labels."""
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
    log_level: str = "INFO"
    """Log level: DEBUG, INFO, WARNING or ERROR."""


_FLAGS = {
    "namespaces": ("--namespace", "LUNA_OPERATOR_NAMESPACES"),
    "peering": ("--peering", "LUNA_OPERATOR_PEERING"),
    "priority": ("--priority", "LUNA_OPERATOR_PRIORITY"),
    "liveness": ("--liveness", "LUNA_OPERATOR_LIVENESS"),
    "webhook": ("--webhook", "LUNA_OPERATOR_WEBHOOK"),
    "webhook_managed": ("--webhook-managed", "LUNA_OPERATOR_WEBHOOK_MANAGED"),
    "webhook_host": ("--webhook-host", "LUNA_OPERATOR_WEBHOOK_HOST"),
    "webhook_port": ("--webhook-port", "LUNA_OPERATOR_WEBHOOK_PORT"),
    "webhook_cert": ("--webhook-cert", "LUNA_OPERATOR_WEBHOOK_CERT"),
    "webhook_key": ("--webhook-key", "LUNA_OPERATOR_WEBHOOK_KEY"),
    "webhook_certs_dir": ("--webhook-certs-dir", "LUNA_OPERATOR_WEBHOOK_CERTS_DIR"),
    "webhook_cert_check_interval": (
        "--webhook-cert-check-interval",
        "LUNA_OPERATOR_WEBHOOK_CERT_CHECK_INTERVAL",
    ),
    "webhook_ca_secret": ("--webhook-ca-secret", "LUNA_OPERATOR_WEBHOOK_CA_SECRET"),
    "webhook_dns_names": ("--webhook-dns-names", "LUNA_OPERATOR_WEBHOOK_DNS_NAMES"),
    "webhook_configurations": ("--webhook-configurations", "LUNA_OPERATOR_WEBHOOK_CONFIGURATIONS"),
    "webhook_ca_validity": ("--webhook-ca-validity", "LUNA_OPERATOR_WEBHOOK_CA_VALIDITY"),
    "webhook_ca_overlap": ("--webhook-ca-overlap", "LUNA_OPERATOR_WEBHOOK_CA_OVERLAP"),
    "webhook_serving_validity": ("--webhook-serving-validity", "LUNA_OPERATOR_WEBHOOK_SERVING_VALIDITY"),
    "webhook_ca_check_interval": ("--webhook-ca-check-interval", "LUNA_OPERATOR_WEBHOOK_CA_CHECK_INTERVAL"),
    "inject": ("--inject", "LUNA_OPERATOR_INJECT"),
    "inject_template": ("--inject-template", "LUNA_OPERATOR_INJECT_TEMPLATE"),
    "metrics": ("--metrics", "LUNA_OPERATOR_METRICS"),
    "report_ttl": ("--report-ttl", "LUNA_OPERATOR_REPORT_TTL"),
    "resync_interval": ("--resync-interval", "LUNA_OPERATOR_RESYNC_INTERVAL"),
    "api_timeout": ("--api-timeout", "LUNA_OPERATOR_API_TIMEOUT"),
    "code_check_memory": ("--code-check-memory", "LUNA_OPERATOR_CODE_CHECK_MEMORY"),
    "code_check_timeout": ("--code-check-timeout", "LUNA_OPERATOR_CODE_CHECK_TIMEOUT"),
    "log_level": ("--log-level", "LUNA_OPERATOR_LOG_LEVEL"),
}


_SWITCHES = ("webhook", "inject")
"""Flags that take no value (store "true"); their variables take true/false."""


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, variable, default, meaning) per setting, for the README."""
    defaults = OperatorConfig()
    docs = _docs()
    return [
        (flag, env, _shown(getattr(defaults, name)), docs.get(name, ""))
        for name, (flag, env) in _FLAGS.items()
    ]


def _shown(default: object) -> str:
    if default is None or default == ():
        return "unset"
    return str(default).lower() if isinstance(default, bool) else str(default)


def _docs() -> dict[str, str]:
    import ast
    import inspect
    import itertools

    body = ast.parse(inspect.getsource(OperatorConfig)).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(following, ast.Expr)
            and isinstance(node.target, ast.Name)
        ):
            docs[node.target.id] = str(getattr(following.value, "value", ""))
    return docs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    docs = _docs()
    for name, (flag, env) in _FLAGS.items():
        if name in _SWITCHES:
            parser.add_argument(
                flag,
                dest=name,
                action="store_const",
                const="true",
                default=None,
                help=f"{docs[name]} [env {env}]",
            )
        elif name == "namespaces":
            parser.add_argument(
                flag,
                dest=name,
                action="append",
                default=None,
                help=f"{docs[name]} Repeat for several. [env {env}, comma-separated]",
            )
        else:
            parser.add_argument(flag, dest=name, default=None, help=f"{docs[name]} [env {env}]")


def resolve(flags: Mapping[str, object], environ: Mapping[str, str] | None = None) -> OperatorConfig:
    """Flags over environment over defaults; raises ``ValueError`` naming the bad setting."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, (flag, env) in _FLAGS.items():
        raw = flags.get(name)
        origin = flag
        if raw is None:
            raw, origin = environ.get(env), env
        if raw is None or raw == "":
            continue
        if name == "namespaces":
            items = raw if isinstance(raw, list) else str(raw).split(",")
            values[name] = tuple(_namespace(origin, item.strip()) for item in items if item.strip())
            continue
        try:
            values[name] = _PARSERS.get(name, _text)(str(raw).strip())
        except ValueError as exc:
            raise ValueError(f"{origin}={raw!r}: {exc}") from None
    options = OperatorConfig(**values)  # type: ignore[arg-type]
    if options.inject and not options.webhook:
        raise ValueError("--inject needs --webhook: the sidecar is injected by the admission webhook")
    if options.inject and not options.inject_template:
        raise ValueError("--inject needs --inject-template: the YAML file with the sidecar to inject")
    if bool(options.webhook_cert) != bool(options.webhook_key):
        raise ValueError(
            "--webhook-cert and --webhook-key go together: set both, or neither for a self-signed one"
        )
    _check_own_ca(options)
    return options


def _check_own_ca(options: OperatorConfig) -> None:
    if options.webhook_ca_secret is None:
        if options.webhook_dns_names or options.webhook_configurations:
            raise ValueError("--webhook-dns-names and --webhook-configurations need --webhook-ca-secret")
        return
    if not options.webhook:
        raise ValueError("--webhook-ca-secret needs --webhook: the CA is the webhook's")
    if options.webhook_cert:
        raise ValueError(
            "--webhook-ca-secret and --webhook-cert exclude each other: one source of certificates"
        )
    if not options.webhook_dns_names:
        raise ValueError("--webhook-ca-secret needs --webhook-dns-names: the names the API server calls")
    if options.webhook_ca_overlap * 3 >= options.webhook_ca_validity:
        raise ValueError(
            "--webhook-ca-overlap must be below a third of --webhook-ca-validity: a new CA is made "
            "after two thirds of the old one's life and must sign before that one expires"
        )
    if options.webhook_serving_validity > options.webhook_ca_validity:
        raise ValueError("--webhook-serving-validity cannot exceed --webhook-ca-validity")


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
#: below this the code-check child cannot even start the interpreter
MIN_CODE_CHECK_MEMORY = 64


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE or text.lower() in _FALSE:
        return text.lower() in _TRUE
    raise ValueError("not a boolean (true/false, 1/0, yes/no, on/off)")


def _text(text: str) -> str:
    return text


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not an integer") from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _seconds(text: str) -> float:
    """A number of seconds, or a duration as Kubernetes tools write them (``8760h``, ``1h30m``,
    ``500ms``)."""
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            raise ValueError(
                "not a number of seconds or a duration such as 90s, 30m, 720h or 1h30m"
            ) from None
        value = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a number of seconds above 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not a port number") from None
    if not 1 <= value <= 65535:
        raise ValueError("not a port number (1-65535)")
    return value


def _address(text: str) -> str:
    _, colon, port = text.rpartition(":")
    if not colon:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8090")
    _port(port)
    return text


def _log_level(text: str) -> str:
    if text.upper() not in _LOG_LEVELS:
        raise ValueError(f"not a log level ({', '.join(_LOG_LEVELS)})")
    return text.upper()


def _mebibytes(text: str) -> int:
    value = _integer(text)
    if value < MIN_CODE_CHECK_MEMORY:
        raise ValueError(f"must be at least {MIN_CODE_CHECK_MEMORY} (MiB)")
    return value


def _peering_name(text: str) -> str:
    if len(text) > 253 or not _DNS_SUBDOMAIN.fullmatch(text):
        raise ValueError("not a Kubernetes object name (lowercase letters, digits, '-' and '.')")
    return text


def _namespaced_name(text: str) -> str:
    namespace, slash, name = text.partition("/")
    if not slash or not _DNS_LABEL.fullmatch(namespace) or len(namespace) > 63:
        raise ValueError("expected NAMESPACE/NAME, e.g. luna-system/luna-plugins-webhook-ca")
    _peering_name(name)
    return text


def _comma_list(text: str, check: Callable[[str], str], what: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ValueError(f"expected one or more {what}, comma-separated")
    for item in items:
        try:
            check(item)
        except ValueError:
            raise ValueError(f"{item!r} is not one of the {what} expected") from None
    return items


def _dns_names(text: str) -> tuple[str, ...]:
    return _comma_list(text, _peering_name, "DNS names")


def _configuration(text: str) -> str:
    kind, slash, name = text.partition("/")
    if not slash or kind not in ("validating", "mutating"):
        raise ValueError("not validating/NAME or mutating/NAME")
    return _peering_name(name)


def _configurations(text: str) -> tuple[str, ...]:
    return _comma_list(text, _configuration, "webhook configurations (validating/NAME, mutating/NAME)")


def _namespace(origin: str, text: str) -> str:
    if len(text) > 63 or not _DNS_LABEL.fullmatch(text):
        raise ValueError(f"{origin}={text!r}: not a namespace name (lowercase letters, digits and '-')")
    return text


_PARSERS: dict[str, Callable[[str], object]] = {
    "peering": _peering_name,
    "priority": _integer,
    "liveness": _address,
    "metrics": _address,
    "webhook": _boolean,
    "webhook_managed": _boolean,
    "webhook_port": _port,
    "webhook_cert_check_interval": _seconds,
    "webhook_ca_secret": _namespaced_name,
    "webhook_dns_names": _dns_names,
    "webhook_configurations": _configurations,
    "webhook_ca_validity": _seconds,
    "webhook_ca_overlap": _seconds,
    "webhook_serving_validity": _seconds,
    "webhook_ca_check_interval": _seconds,
    "inject": _boolean,
    "report_ttl": _seconds,
    "resync_interval": _seconds,
    "api_timeout": _seconds,
    "code_check_memory": _mebibytes,
    "code_check_timeout": _seconds,
    "log_level": _log_level,
}
