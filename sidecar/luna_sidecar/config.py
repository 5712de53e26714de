"""Sidecar settings: one declaration drives the command-line flags, the environment variables and
the README's settings table, so the three never disagree.

Precedence: command-line flag, then environment variable, then default. The rules (booleans,
whitespace, ports, seconds, log levels) and the messages are the operator's too: both read their
settings with :mod:`luna_contract.process_settings`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from luna_contract import process_settings as rules
from luna_contract.delivery import (
    AT_LEAST_ONCE,
    AT_MOST_ONCE,
    DELIVERY_MODES,
    WHEN_FULL,
    DeliveryPolicy,
    PolicyError,
    read_policy,
)
from luna_contract.log_format import LOG_FORMATS
from luna_contract.names import active_list_key
from luna_contract.plugin_modules import check_module_name
from luna_contract.process_settings import SettingError

ENV_PREFIX = "LUNA_SIDECAR_"
EVENT_LOOPS = ("uvloop", "asyncio")

ConfigError = SettingError
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
    delivery: str = AT_MOST_ONCE
    """Delivery to event plugins: ``at-most-once`` (in memory: a failed or timed-out batch is gone, a
    crash loses what is queued) or ``at-least-once`` (a durable queue per plugin class in
    ``--queue-dir``, on disk before the intake answers 202, retried until delivered or dead-lettered;
    docs/delivery.md)."""
    queue_dir: Path | None = None
    """Directory of the durable queues, on a volume that survives restarts; required with
    ``--delivery at-least-once`` and for plugins whose ``spec.delivery`` asks for it."""
    queue_max_bytes: int = 256 * 1024 * 1024
    """Bytes each durable queue holds at most (batches not delivered yet)."""
    dead_letters_max_bytes: int = 64 * 1024 * 1024
    """Bytes the dead letters of each durable queue hold at most; the oldest are removed (counted
    as dropped, ``dead_letters_full``) to make room for a new one."""
    queue_when_full: str = "refuse"
    """What a full durable queue does with a new batch: ``refuse`` (the intake answers 503, the
    service keeps it), ``dropOldest`` (its oldest segment, up to an eighth of the bound, is dropped)
    or ``dropNewest``; drops are counted by reason."""
    retry_initial_backoff: float = 0.5
    """Seconds before the first retry of a failed batch (at-least-once); doubles per failure, each
    wait drawn between half and all of it."""
    retry_max_backoff: float = 30.0
    """Most seconds between two attempts of a batch (at-least-once)."""
    retry_max_elapsed: float = 3600.0
    """Seconds a batch is retried before it becomes a dead letter (at-least-once); 0 retries forever."""
    breaker_failures: int = 5
    """Consecutive failed attempts that open a plugin's circuit breaker (at-least-once)."""
    breaker_open_time: float = 30.0
    """Seconds an open circuit breaker waits before one probe attempt (at-least-once)."""
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
    isolate: tuple[str, ...] = ()
    """Plugins (module names, comma-separated) that run each in a process of their own, standalone
    mode (in cluster mode a LunaPlugin's ``spec.isolation: process``): a crash, a leak or a stall
    there ends and restarts that process only (docs/isolation.md)."""
    isolated_memory: int = 512 * 1024 * 1024
    """Bytes of resident memory each isolated plugin's process may reach; past it the process is
    ended and restarted (the sidecar and other plugins keep running)."""
    isolated_stall_timeout: float = 10.0
    """Seconds an isolated plugin's callback or route handler may hold its process's CPU (or GIL)
    without its event loop answering; then the process is ended and restarted."""
    isolated_open_files: int = 256
    """Open files each isolated plugin's process may hold (``RLIMIT_NOFILE``)."""
    isolated_processes: int = 64
    """Processes and threads each isolated plugin's process may start (``RLIMIT_NPROC``), applied
    when the sidecar runs as root (each plugin then runs as a user of its own); a non-root
    sidecar's plugins are bounded by the pod's pids limit instead (the kernel would count every
    process of the user on the node)."""
    isolated_crash_limit: int = 5
    """Ends of an isolated plugin's process within five minutes that quarantine the plugin
    (restarts before that wait 0.5 s, doubled per end, at most 30 s)."""
    state_dir: Path | None = None
    """Directory for what must survive a restart of the sidecar's container (the marker of a plugin
    version being loaded: one that took the process down while loading is quarantined at the next
    start); unset: ``luna-sidecar-<service>-<port>`` in the temporary directory."""
    log_level: str = "INFO"
    """Log level of the runtime and plugins (DEBUG, INFO, WARNING, ERROR)."""
    log_format: str = "text"
    """Log lines: ``text``, or ``json`` (one object per line: time, level, logger, plugin, message)."""
    event_loop: str = "uvloop"
    """Event loop: ``uvloop`` (libuv-based, same asyncio API, less CPU per request; asyncio's own
    where it is not installed) or ``asyncio``."""


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


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or any(c.isspace() or c == "," for c in value):
        raise ValueError("not an http(s) URL")
    return value


def _module(value: str) -> str:
    problem = check_module_name(value)
    if problem:
        raise ValueError(problem)
    return value


def _host(value: str) -> str:
    if not all(char.isascii() and (char.isalnum() or char in ".-:[]") for char in value):
        raise ValueError("not a host name or address")
    return value


_SECONDS = (
    "api_timeout",
    "heartbeat_interval",
    "header_timeout",
    "request_read_timeout",
    "callback_timeout",
    "lifecycle_timeout",
    "route_timeout",
    "shutdown_timeout",
    "reload_debounce",
    "poll_interval",
    "loop_block_threshold",
    "packages_timeout",
    "retry_initial_backoff",
    "retry_max_backoff",
    "breaker_open_time",
    "isolated_stall_timeout",
)
_COUNTS = (
    "metrics_max_connections",
    "max_body_bytes",
    "max_connections",
    "max_requests_in_flight",
    "max_batch_items",
    "queue_items",
    "max_label_sets",
    "packages_max_bytes",
    "breaker_failures",
    "isolated_open_files",
    "isolated_processes",
    "isolated_crash_limit",
)
_PATHS = (
    "plugins_dir",
    "active_file",
    "secret_settings_dir",
    "metrics_mapping",
    "packages_dir",
    "packages_find_links",
    "packages_ca_file",
    "state_dir",
    "queue_dir",
)

SETTINGS = rules.Settings(
    SidecarConfig,
    env_prefix=ENV_PREFIX,
    parsers={
        **dict.fromkeys(_PATHS, rules.path),
        **dict.fromkeys(_SECONDS, rules.seconds),
        **dict.fromkeys(_COUNTS, rules.integer(minimum=1)),
        "active": parse_active_list,
        "namespace": rules.namespace_name,
        "port": rules.port,
        "admin_port": rules.port,
        "metrics_port": rules.port,
        "loop_block_budget": rules.seconds_or_zero,
        "packages_index_url": _url,
        "packages_extra_index_urls": rules.comma_list(_url, "http(s) URLs"),
        "packages_trusted_hosts": rules.comma_list(_host, "host names or addresses"),
        "packages_require_hashes": rules.boolean,
        "log_level": rules.log_level,
        "log_format": rules.one_of(LOG_FORMATS, "a log format"),
        "event_loop": rules.one_of(EVENT_LOOPS, "an event loop"),
        "delivery": rules.one_of(DELIVERY_MODES, "a delivery mode"),
        "queue_when_full": rules.one_of(WHEN_FULL, "what a full queue does"),
        "queue_max_bytes": rules.integer(minimum=1024 * 1024),
        "dead_letters_max_bytes": rules.integer(minimum=1024 * 1024),
        "isolated_memory": rules.integer(minimum=64 * 1024 * 1024),
        "isolate": rules.comma_list(_module, "plugin module names"),
        "retry_max_elapsed": rules.seconds_or_zero,
    },
)
"""Every sidecar setting: its flag, variable, parser, default and meaning."""


def flag_name(field_name: str) -> str:
    """The command-line flag of a setting (``plugins_dir`` -> ``--plugins-dir``)."""
    return "--" + field_name.replace("_", "-")


def env_name(field_name: str) -> str:
    """The environment variable of a setting (``plugins_dir`` -> ``LUNA_SIDECAR_PLUGINS_DIR``)."""
    return ENV_PREFIX + field_name.upper()


def setting_docs() -> list[tuple[str, str, str, str]]:
    """(flag, variable, default, description) for every setting, in declaration order."""
    return SETTINGS.rows()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; every flag defaults to ``None`` so that the environment and
    the defaults can be applied afterwards by :func:`resolve`."""
    SETTINGS.add_arguments(parser)


def resolve(flags: Mapping[str, object], environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """Build the configuration from flag values (strings or ``None``) and the environment.

    Raises :class:`ConfigError` naming the flag or variable whose value is unusable.
    """
    environ = os.environ if environ is None else environ
    config = SETTINGS.resolve(flags, environ)
    if config.active is None and config.active_file is None:
        service_env = active_list_key(config.service)
        raw = environ.get(service_env, "")
        if raw.strip():
            try:
                active = parse_active_list(raw)
            except ValueError as exc:
                raise rules.refused(service_env, raw, exc) from None
            config = dataclasses.replace(config, active=active)
    if config.delivery == AT_LEAST_ONCE and config.queue_dir is None:
        raise ConfigError(
            f"{flag_name('queue_dir')} ({env_name('queue_dir')}) is required with "
            f"{flag_name('delivery')} {AT_LEAST_ONCE}: the directory of the durable queues, on a volume "
            "that survives restarts"
        )
    delivery_policy(config)  # its bounds
    return config


def delivery_policy(config: SidecarConfig) -> DeliveryPolicy:
    """The delivery policy every event plugin gets from the settings; raises :class:`ConfigError`
    naming the settings when they are out of the policy's bounds."""
    try:
        return read_policy(
            {
                "mode": config.delivery,
                "retry": {
                    "initialBackoff": config.retry_initial_backoff,
                    "maxBackoff": max(config.retry_max_backoff, config.retry_initial_backoff),
                    "maxElapsed": config.retry_max_elapsed,
                },
                "breaker": {"failures": config.breaker_failures, "openSeconds": config.breaker_open_time},
                "maxQueueBytes": config.queue_max_bytes,
                "maxDeadLetterBytes": config.dead_letters_max_bytes,
                "whenFull": config.queue_when_full,
            }
        )
    except PolicyError as exc:
        raise ConfigError(
            f"the delivery settings (--delivery, --retry-*, --breaker-*, --queue-*, --dead-letters-*): {exc}"
        ) from None


def settings_table() -> str:
    """The README's settings table, in Markdown (``python -m luna_sidecar.config`` prints it)."""
    return SETTINGS.markdown()


if __name__ == "__main__":
    print(settings_table())
