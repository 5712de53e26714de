"""Sidecar settings: one table drives the command-line flags, the environment variables and the
README's settings table, so the three never disagree.

Precedence: command-line flag, then environment variable, then default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from luna_plugins.naming import check_module_name

ENV_PREFIX = "LUNA_SIDECAR_"
EVENT_LOOPS = ("uvloop", "asyncio")


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the flag or variable."""


@dataclass(frozen=True)
class SidecarConfig:
    """Everything the sidecar runtime needs to start. Each field maps to a flag and a variable."""

    plugins_dir: Path | None = None
    """Directory holding the plugin files (``NAME.py``); standalone mode."""
    active: tuple[str, ...] | None = None
    """Active plugins in load order; when unset, ``--active-file`` or ``LUNA_<SERVICE>_ACTIVE_PLUGINS``."""
    active_file: Path | None = None
    """A file holding the active list (JSON list or comma-separated), watched like the plugins."""
    service: str = "handlers"
    """Name of the service the plugins extend (metric label, ``app.serviceName``)."""
    namespace: str | None = None
    """Kubernetes namespace: cluster mode, plugins come from the service's ConfigMaps there."""
    pod_name: str | None = None
    """This pod's name (downward API), for the per-pod report; defaults to the host name."""
    pod_uid: str | None = None
    """This pod's UID (downward API): the report is owned by the pod and deleted with it."""
    secret_settings_dir: Path | None = None
    """Where the service's settings Secret (``luna-plugins-<service>-settings``) is mounted: one
    ``<module>.json`` per plugin with ``spec.settingsFrom``; cluster mode."""
    api_timeout: float = 120.0
    """Seconds the desired state may go unread (the Kubernetes API unreachable, or its feed failing)
    before /healthz fails; plugins keep serving."""
    heartbeat_interval: float = 10.0
    """Most seconds between refreshes of the per-pod report (also refreshed on every change); each
    wait is drawn between 0.8 and 1 times it, so pods started together do not refresh together."""
    host: str = "0.0.0.0"
    """Address of the plugin-route listener."""
    port: int = 8080
    """Port of the plugin-route listener."""
    admin_host: str = "127.0.0.1"
    """Address of event intake and ``GET /plugins``; loopback so only the service's pod reaches it."""
    admin_port: int = 8081
    """Port of event intake and ``GET /plugins``."""
    metrics_host: str = "0.0.0.0"
    """Address of ``/metrics``, ``/healthz`` and ``/readyz``."""
    metrics_port: int = 9100
    """Port of ``/metrics``, ``/healthz`` and ``/readyz``."""
    metrics_max_connections: int = 64
    """Open connections the metrics listener keeps at most; one more gets 503 and is closed. Its
    own cap: a flood of the other listeners never takes the probes' connections."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest event-intake or route request body accepted; larger gets 413."""
    max_connections: int = 512
    """Open connections each of the route and admin listeners keeps at most; one more gets 503 and
    is closed (probes have a listener of their own)."""
    max_requests_in_flight: int = 256
    """Requests each listener lets wait for an asynchronous route handler at once; one more gets 503."""
    header_timeout: float = 10.0
    """Seconds from a request's first byte to the end of its headers; then 408 and the connection
    is closed."""
    request_read_timeout: float = 60.0
    """Seconds from a request's first byte to the end of its body; then 408 (the route timeout
    starts once the body is read)."""
    max_batch_items: int = 10_000
    """Most points or events in one intake request; more gets 413."""
    queue_items: int = 20_000
    """Points or events each event plugin's queue holds, counting its running callback's (a batch
    weighs one per KiB of its request body if that is more); a batch that does not fit is dropped
    and counted."""
    callback_timeout: float = 10.0
    """Seconds one event callback may run before it is cancelled and counted as failed."""
    lifecycle_timeout: float = 30.0
    """Seconds each of a plugin's import, initialize, start and close may take."""
    route_timeout: float = 30.0
    """Seconds a plugin route handler may take before the client gets 504."""
    shutdown_timeout: float = 20.0
    """Seconds SIGTERM may take: queued events are delivered, then plugins closed (half the time, at
    most the lifecycle timeout, is kept for closing); what still runs then is abandoned."""
    reload_debounce: float = 0.5
    """Seconds of quiet after a file change before plugins are reloaded (bursts become one reload)."""
    poll_interval: float = 1.0
    """Seconds between checks of the plugins directory and active-list file for changes."""
    metrics_mapping: Path | None = None
    """YAML or JSON file mapping more monitoring series and fields to metrics (docs/metrics.md)."""
    loop_block_threshold: float = 0.2
    """Seconds the event loop may go without turning before the watchdog charges the time to the
    plugin whose code holds it."""
    loop_block_budget: float = 0.0
    """Seconds per minute a plugin may block the event loop before it is quarantined (unloaded and
    marked failed until its code changes or SIGHUP); 0 turns quarantine off."""
    max_label_sets: int = 2_000
    """Label combinations each point-derived metric keeps; further ones are counted as overflow."""
    packages_dir: Path | None = None
    """Directory where plugins' Python requirements are installed, one folder per requirement set
    (on a volume they survive restarts); unset: a plugin that declares requirements fails."""
    packages_index_url: str | None = None
    """Package index of plugins' requirements (pip ``--index-url``); unset: pip's default, PyPI."""
    packages_extra_index_urls: tuple[str, ...] = ()
    """More package indexes, comma-separated (pip ``--extra-index-url``)."""
    packages_find_links: Path | None = None
    """A wheelhouse directory: plugins' requirements come from its wheels only, never from an index."""
    packages_ca_file: Path | None = None
    """CA bundle that the package index's TLS certificate must chain to (pip ``--cert``)."""
    packages_trusted_hosts: tuple[str, ...] = ()
    """Hosts whose plain-HTTP package index pip may use, comma-separated (pip ``--trusted-host``)."""
    packages_timeout: float = 300.0
    """Seconds resolving and installing one requirement set may take; then it fails and is retried
    with backoff (10 s up to 5 min)."""
    packages_require_hashes: bool = False
    """Install only distributions whose SHA-256 the plugins' requirements pin (``pkg==1.0
    --hash=sha256:...``, every dependency too), as pip's hash-checking mode."""
    packages_max_bytes: int = 512 * 1024 * 1024
    """Most bytes the plugins' packages of one service may take (one requirement set); a plugin
    whose packages would go past it is refused alone. Keep it below half the packages volume's
    size: the set in use and the one being installed may both be there for a moment."""
    state_dir: Path | None = None
    """Directory for what must survive a restart of the sidecar's container (the marker of a plugin
    version being loaded: one that took the process down while loading is quarantined at the next
    start); unset: ``luna-sidecar-<service>-<port>`` in the temporary directory."""
    log_level: str = "INFO"
    """Log level of the runtime and plugins (DEBUG, INFO, WARNING, ERROR)."""
    event_loop: str = "uvloop"
    """Event loop: ``uvloop`` (libuv-based, same asyncio API, less CPU per request; asyncio's own
    where it is not installed) or ``asyncio``."""


def _path(value: str) -> Path:
    return Path(value)


def parse_active_list(text: str) -> tuple[str, ...]:
    """Parse an active list: a JSON list, ``[a, b]`` as in the original docs, or ``a,b``.

    Raises :class:`ConfigError` for names that are not Python module names.
    """
    text = text.strip()
    names: list[str]
    if not text:
        return ()
    try:
        loaded = json.loads(text)
    except ValueError:
        loaded = None
    if isinstance(loaded, list):
        names = [str(item).strip() for item in loaded]
    else:
        names = [part.strip().strip("'\"") for part in text.strip("[]").split(",")]
    names = [name.removesuffix(".py") for name in names if name]
    problems = [problem for name in names if (problem := check_module_name(name))]
    if problems:
        raise ConfigError(
            "active plugin names must be Python module names (file name without .py): " + "; ".join(problems)
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"active list names a plugin twice: {duplicates}")
    return tuple(names)


def _active(value: str) -> tuple[str, ...]:
    return parse_active_list(value)


def _urls(value: str) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in value.split(",") if part.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"not an http(s) URL: {url!r}")
    return urls


def _url(value: str) -> str:
    (url,) = _urls(value) or ("",)
    if not url:
        raise ConfigError("empty URL")
    return url


def _hosts(value: str) -> tuple[str, ...]:
    hosts = tuple(part.strip() for part in value.split(",") if part.strip())
    for host in hosts:
        if not all(char.isalnum() or char in ".-:[]" for char in host):
            raise ConfigError(f"not a host name or address: {host!r}")
    return hosts


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"expected true or false, got {value!r}")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"unknown log level {value!r}")
    return level


def _event_loop(value: str) -> str:
    if value not in EVENT_LOOPS:
        raise ConfigError(f"unknown event loop {value!r}; choose from {', '.join(EVENT_LOOPS)}")
    return value


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        converted = kind(value)
        if not math.isfinite(converted) or converted <= 0:
            raise ConfigError(f"must be positive, got {value!r}")
        return converted

    return convert


def _not_negative(value: str) -> float:
    converted = float(value)
    if not math.isfinite(converted) or converted < 0:
        raise ConfigError(f"must be 0 or more, got {value!r}")
    return converted


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range: {value!r}")
    return port


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "plugins_dir": _path,
    "active": _active,
    "active_file": _path,
    "metrics_mapping": _path,
    "secret_settings_dir": _path,
    "port": _port,
    "admin_port": _port,
    "metrics_port": _port,
    "max_body_bytes": _positive(int),
    "max_batch_items": _positive(int),
    "queue_items": _positive(int),
    "max_label_sets": _positive(int),
    "callback_timeout": _positive(float),
    "lifecycle_timeout": _positive(float),
    "route_timeout": _positive(float),
    "shutdown_timeout": _positive(float),
    "reload_debounce": _positive(float),
    "poll_interval": _positive(float),
    "api_timeout": _positive(float),
    "heartbeat_interval": _positive(float),
    "loop_block_threshold": _positive(float),
    "loop_block_budget": _not_negative,
    "log_level": _log_level,
    "packages_dir": _path,
    "state_dir": _path,
    "packages_max_bytes": _positive(int),
    "max_connections": _positive(int),
    "metrics_max_connections": _positive(int),
    "max_requests_in_flight": _positive(int),
    "header_timeout": _positive(float),
    "request_read_timeout": _positive(float),
    "packages_index_url": _url,
    "packages_extra_index_urls": _urls,
    "packages_find_links": _path,
    "packages_ca_file": _path,
    "packages_trusted_hosts": _hosts,
    "packages_timeout": _positive(float),
    "packages_require_hashes": _boolean,
    "event_loop": _event_loop,
}


def flag_name(field_name: str) -> str:
    """The command-line flag of a setting (``plugins_dir`` -> ``--plugins-dir``)."""
    return "--" + field_name.replace("_", "-")


def env_name(field_name: str) -> str:
    """The environment variable of a setting (``plugins_dir`` -> ``LUNA_SIDECAR_PLUGINS_DIR``)."""
    return ENV_PREFIX + field_name.upper()


def setting_docs() -> list[tuple[str, str, str, str]]:
    """(flag, variable, default, description) for every setting, in declaration order."""
    return [
        (flag_name(field.name), env_name(field.name), _shown_default(field.default), _field_doc(field.name))
        for field in fields(SidecarConfig)
    ]


def _shown_default(default: Any) -> str:
    if default is None or default == ():
        return "unset"
    return str(default).lower() if isinstance(default, bool) else str(default)


def _field_doc(name: str) -> str:
    return _FIELD_DOCS.get(name, "")


def _collect_field_docs() -> dict[str, str]:
    """Read the attribute docstrings of :class:`SidecarConfig` from its source."""
    import ast
    import inspect
    import itertools

    tree = ast.parse(inspect.getsource(SidecarConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())  # one line per setting
    return docs


_FIELD_DOCS = _collect_field_docs()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; every flag defaults to ``None`` so that the environment and
    the defaults can be applied afterwards by :func:`resolve`."""
    for field in fields(SidecarConfig):
        parser.add_argument(
            flag_name(field.name),
            dest=field.name,
            default=None,
            metavar=field.name.upper(),
            help=f"{_field_doc(field.name)} [env {env_name(field.name)}; "
            f"default: {_shown_default(field.default)}]",
        )


def resolve(flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """Build the configuration from flag values (strings or ``None``) and the environment.

    Raises :class:`ConfigError` naming the flag or variable whose value is unusable.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in fields(SidecarConfig):
        raw = flags.get(field.name)
        origin = flag_name(field.name)
        if raw is None:
            raw = environ.get(env_name(field.name))
            origin = env_name(field.name)
        if raw is None or raw == "":
            continue
        convert = _CONVERTERS.get(field.name, str)
        try:
            values[field.name] = convert(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{origin}={raw!r}: {exc}") from None
    config = SidecarConfig(**values)
    if config.active is None and config.active_file is None:
        service_env = service_active_env(config.service)
        if environ.get(service_env):
            try:
                values["active"] = parse_active_list(environ[service_env])
            except ConfigError as exc:
                raise ConfigError(f"{service_env}: {exc}") from None
            config = SidecarConfig(**values)
    return config


def service_active_env(service: str) -> str:
    """The original service's active-list variable, e.g. ``LUNA_HANDLERS_ACTIVE_PLUGINS``."""
    return f"LUNA_{service.upper().replace('-', '_')}_ACTIVE_PLUGINS"


def settings_table() -> str:
    """The README's settings table, in Markdown (``python -m luna_sidecar.config`` prints it)."""
    lines = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for flag, variable, default, doc in setting_docs():
        lines.append(f"| `{flag}` | `{variable}` | `{default}` | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table())
