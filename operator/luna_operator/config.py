"""Operator settings: each a flag and a ``LUNA_OPERATOR_*`` environment variable (flag wins)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
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
    inject: bool = False
    """Inject the sidecar into Pods annotated luna.dev/inject (needs --webhook, --inject-template)."""
    inject_template: str | None = None
    """YAML file with the sidecar to inject: container, volumes, annotations, labels."""
    report_ttl: float = 30.0
    """Seconds after which a sidecar's report stops counting in status.loaded."""
    log_level: str = "INFO"
    """Log level."""


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
    "inject": ("--inject", "LUNA_OPERATOR_INJECT"),
    "inject_template": ("--inject-template", "LUNA_OPERATOR_INJECT_TEMPLATE"),
    "report_ttl": ("--report-ttl", "LUNA_OPERATOR_REPORT_TTL"),
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
            values[name] = tuple(item.strip() for item in items if item.strip())
        elif name == "webhook":
            values[name] = str(raw).lower() in ("1", "true", "yes", "on")
        elif name in ("webhook_managed", "inject"):
            values[name] = _boolean(origin, raw)
        elif name == "webhook_port":
            try:
                values[name] = int(str(raw))
            except ValueError:
                raise ValueError(f"{origin}={raw!r}: not a port number") from None
        elif name == "priority":
            try:
                values[name] = int(str(raw))
            except ValueError:
                raise ValueError(f"{origin}={raw!r}: not an integer") from None
        elif name == "report_ttl":
            try:
                values[name] = float(str(raw))
            except ValueError:
                raise ValueError(f"{origin}={raw!r}: not a number of seconds") from None
        else:
            values[name] = str(raw)
    options = OperatorConfig(**values)  # type: ignore[arg-type]
    if options.inject and not options.webhook:
        raise ValueError("--inject needs --webhook: the sidecar is injected by the admission webhook")
    if options.inject and not options.inject_template:
        raise ValueError("--inject needs --inject-template: the YAML file with the sidecar to inject")
    return options


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(origin: str, raw: object) -> bool:
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{origin}={raw!r}: not a boolean (true/false, 1/0, yes/no, on/off)")
