"""Testing a plugin file with pytest: one plugin file run by the real runtime inside the calling
process. Plugin authors import it as ``luna_sidecar.testing`` (the name the ``luna-plugins new``
skeletons use), which loads this module on first use; the SDK itself never imports the runtime.

::

    from luna_sidecar.testing import run_plugin

    async def test_tally():              # an async test (pytest-asyncio/pytest-aiohttp), or asyncio.run
        async with run_plugin("plugins/route_tally.py", settings={"slowSeconds": 1}) as plugin:
            await plugin.send_points([{"series": "requests", "tags": {...}, "fields": {...}}])
            reply = await plugin.request("GET", "/digest")
            assert reply.json() == {...}
            assert "tallied" in plugin.log_text()

:class:`PluginHarness` lists what a test may do.

Nothing here loads, starts or calls plugins itself. The components are those of the sidecar
process (:func:`luna_sidecar.assembly.server.build_sidecar`): the file is read as the standalone sidecar
reads its plugins directory (:class:`~luna_sidecar.desired.sources.DirectorySource`, with its
``NAME.settings.json``), loaded by the same runtime (loader, lifecycle, timeouts), its events go
through the same intake (validation, answers, per-plugin queues) and its routes through the same
dispatcher, both served on loopback ports of this process.

Two things a sidecar in a cluster does are the test's to provide instead: secret settings (the
values ``spec.settingsFrom`` would bring, merged into the settings as the sidecar merges them) and
the plugin's requirements, which the harness never installs: it checks that the test's
environment already has them (``NAME.requirements.txt`` beside the file, or ``requirements=``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from packaging.requirements import Requirement

from luna_contract.requirements import check_requirements
from luna_plugins.compat import install_log_alias
from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.assembly import Sidecar, build_sidecar
from luna_sidecar.config import SidecarConfig
from luna_sidecar.desired import DesiredPlugin, DirectorySource
from luna_sidecar.engine import forget_module
from luna_sidecar.serving import SHUTTING_DOWN, AdminEndpoints, AdminServer, PublicServer

#: loggers whose records a harness keeps: plugins (``app.ctx.logger`` and the per-plugin logger
#: handed to callbacks) and the runtime (load failures, callback errors)
CAPTURED_LOGGERS = ("luna.plugins", "luna_sidecar", "luna.sidecar")


class PluginNotLoadedError(AssertionError):
    """The plugin could not be loaded; the message is the runtime's (stage, line, reason)."""


class MissingRequirementError(PluginNotLoadedError):
    """A requirement the plugin declares is not installed in the test's environment (the harness
    never installs packages); the message names it."""


class PluginCallbackError(AssertionError):
    """An event callback of the plugin failed or timed out; the message is the runtime's."""


class IntakeRefusedError(AssertionError):
    """The intake refused what was sent (as the sidecar would answer the service)."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(f"the intake answered {status}: {error}")
        self.status = status
        self.error = error


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: ``status``, ``headers``, ``body`` (bytes), ``text`` and ``json()``."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Delivery:
    """What became of events sent to the plugin, once its queue was empty again.

    ``answer`` is the intake's 202 body; ``handled`` and ``failed`` count the plugin's callback
    calls (batches) for these events; ``errors`` are the failures' messages.
    """

    answer: Mapping[str, Any]
    handled: int
    failed: int
    errors: tuple[str, ...] = ()


@dataclass
class _Capture(logging.Handler):
    records: list[logging.LogRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        logging.Handler.__init__(self, logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __hash__(self) -> int:
        return id(self)


class PluginHarness:
    """One loaded plugin module and the ways to exercise it (see :func:`run_plugin`)."""

    def __init__(
        self,
        sidecar: Sidecar,
        module: str,
        capture: _Capture,
        admin: ClientSession,
        routes: ClientSession,
        drain_timeout: float,
    ) -> None:
        self._sidecar = sidecar
        self.module = module
        """the plugin's module name (the file name without ``.py``)"""
        self._capture = capture
        self._admin = admin
        self._routes = routes
        self._drain_timeout = drain_timeout

    # -- what the runtime says ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The plugin as ``GET /plugins`` of the sidecar shows it (state, classes, routes...)."""
        return next(entry for entry in self._sidecar.runtime.describe() if entry["name"] == self.module)

    @property
    def records(self) -> list[logging.LogRecord]:
        """Every log record of the plugin and of the runtime about it, oldest first."""
        return list(self._capture.records)

    @property
    def logs(self) -> list[str]:
        """The records as ``LEVEL logger: message`` lines."""
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self._capture.records]

    def log_text(self) -> str:
        """:attr:`logs` as one text (handy in ``assert "..." in plugin.log_text()``)."""
        return "\n".join(self.logs)

    # -- events --------------------------------------------------------------------------------------

    async def send_points(self, points: Iterable[MonitoringPoint | Mapping[str, Any]]) -> Delivery:
        """Send monitoring points through the intake and wait until the plugin's queue is empty.

        Points are :class:`MonitoringPoint` or mappings of the intake's shape (``series``,
        ``eventTime``, ``tags``, ``fields``; ``eventTime`` defaults to now). Raises
        :class:`IntakeRefusedError` as the intake refuses a bad point, and
        :class:`PluginCallbackError` when the plugin's callback failed."""
        body = {"points": [_point_body(point) for point in points]}
        return await self._deliver("monitoring_event", body)

    async def send_events(
        self,
        events: Iterable[Mapping[str, Any]],
        *,
        handler_id: str = "handler-id",
        account_id: str = "account-id",
        request_id: str | None = None,
        create_event_time: str | None = None,
        end_event_time: str | None = None,
    ) -> Delivery:
        """Send handler events (``sending_event``; ``"kind": "raw"`` makes a RawEvent) and wait
        until the plugin's queue is empty; raises as :meth:`send_points` does."""
        body: dict[str, Any] = {"events": [dict(event) for event in events]}
        body |= {"handlerId": handler_id, "accountId": account_id}
        optional = {
            "requestId": request_id,
            "createEventTime": create_event_time,
            "endEventTime": end_event_time,
        }
        body |= {key: value for key, value in optional.items() if value is not None}
        return await self._deliver("sending_event", body)

    async def post_event(self, event_name: str, body: Any) -> Reply:
        """POST ``body`` (JSON, or bytes as they are) to the intake as the service would; the
        answer as it is, whatever its status (nothing is awaited beyond the answer)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self._admin.post(f"/events/{event_name}", data=data) as response:
            return Reply(response.status, dict(response.headers), await response.read())

    async def _deliver(self, event_name: str, body: dict[str, Any]) -> Delivery:
        workers = [worker for slot in self._sidecar.runtime.slots for worker in slot.workers]
        before = {id(worker): (worker.handled, worker.failed) for worker in workers}
        reply = await self.post_event(event_name, body)
        if reply.status != 202:
            raise IntakeRefusedError(reply.status, str(reply.json().get("error")))
        deadline = time.monotonic() + self._drain_timeout
        for worker in workers:
            await worker.drain(deadline)
        handled = sum(worker.handled - before[id(worker)][0] for worker in workers)
        failed = sum(worker.failed - before[id(worker)][1] for worker in workers)
        errors = tuple(
            f"{worker.class_name}: {worker.last_error}"
            for worker in workers
            if worker.failed > before[id(worker)][1]
        )
        if errors:
            raise PluginCallbackError("; ".join(errors))
        return Delivery(reply.json(), handled, failed, errors)

    # -- routes ----------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        """Call a route of the plugin through the sidecar's dispatcher (timeouts, 404/405, request
        ids, the ``requests`` point it records): the answer as it is."""
        async with self._routes.request(
            method, path, json=json, data=data, headers=headers, params=params
        ) as response:
            reply = Reply(response.status, dict(response.headers), await response.read())
        self._sidecar.points.flush()  # the request's own point goes to monitoring plugins now
        return reply


def _point_body(point: MonitoringPoint | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(point, MonitoringPoint):
        return point.asDict()
    body = dict(point)
    body.setdefault("eventTime", time.time())
    return body


def _read_plugin(
    path: str | Path,
    settings: Mapping[str, Any] | None,
    secret_settings: Mapping[str, str] | None = None,
    requirements: Iterable[str] | None = None,
) -> tuple[Path, DesiredPlugin]:
    """The file as the standalone sidecar reads it, with ``settings`` instead of its own, the
    ``secret_settings`` merged in, and ``requirements`` instead of its own; the requirements are
    checked against this environment and taken off (nothing is installed)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no plugin file {file}")
    (desired,) = DirectorySource(file.parent, active=(file.stem,)).read()
    if settings is not None:
        try:
            json.dumps(settings)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"settings must be JSON-able, as a LunaPlugin's spec.settings: {exc}") from None
    declared = None
    if requirements is not None:  # a bare string is refused as the operator refuses one
        given = requirements if isinstance(requirements, str) else list(requirements)
        declared = check_requirements(given, "requirements")
    if desired.source is None:
        return file, desired
    source = desired.source
    merged = dict(source.settings if settings is None else settings)
    for key, value in (secret_settings or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(
                f"secret_settings[{key!r}] must be a string, as a value from a Secret is, "
                f"not {type(value).__name__}"
            )
        if key in merged:
            raise ValueError(
                f"setting {key!r} is both in settings and in secret_settings: keep it in one place (the "
                "operator refuses a setting in both spec.settings and spec.settingsFrom)"
            )
        merged[key] = value
    wanted = source.requirements if declared is None else declared
    _check_installed(file.stem, wanted)
    source = dataclasses.replace(source, settings=merged, requirements=())
    return file, dataclasses.replace(desired, source=source)


def _check_installed(module: str, requirements: tuple[str, ...]) -> None:
    """Raise :class:`MissingRequirementError` for the first of ``requirements`` (checked, canonical)
    this environment does not satisfy: its distribution is not installed, or not in a version the
    requirement allows. Requirements whose marker excludes this environment are skipped."""
    for text in requirements:
        requirement = Requirement(text.split(" --hash=")[0])
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        advice = (
            "luna_sidecar.testing does not install packages (a sidecar installs them from "
            f"spec.requirements): pip install {str(requirement)!r} where the tests run"
        )
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            raise MissingRequirementError(
                f"plugin {module}: requirement {text!r} is not installed in the test environment; {advice}"
            ) from None
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            raise MissingRequirementError(
                f"plugin {module}: requirement {text!r} is not met: the test environment has "
                f"{requirement.name} {version}; {advice}"
            )


@contextlib.asynccontextmanager
async def run_plugin(
    path: str | Path,
    *,
    settings: Mapping[str, Any] | None = None,
    secret_settings: Mapping[str, str] | None = None,
    requirements: Iterable[str] | None = None,
    service: str = "handlers",
    callback_timeout: float = 10.0,
    lifecycle_timeout: float = 30.0,
    route_timeout: float = 30.0,
) -> AsyncIterator[PluginHarness]:
    """Load the plugin file ``path`` as the sidecar would and yield a :class:`PluginHarness`;
    on exit the plugin is stopped as at a sidecar's shutdown (queues drained, ``close()``).

    ``settings`` replaces what ``NAME.settings.json`` beside the file holds (as ``self.settings``
    in the plugin). ``secret_settings`` (strings, as values from Secrets are) are merged into
    them, as the sidecar merges what ``spec.settingsFrom`` brings; a setting in both is refused,
    as the operator refuses it. ``requirements`` (PEP 508 strings, checked as the operator checks
    ``spec.requirements``) replace what ``NAME.requirements.txt`` beside the file declares; they
    must already be installed here: nothing is installed, and a missing one raises
    :class:`MissingRequirementError` naming it. Raises :class:`PluginNotLoadedError` with the
    runtime's reason when the plugin does not load. Must run inside an event loop (an ``async``
    test, or ``asyncio.run``).
    """
    file, desired = _read_plugin(path, settings, secret_settings, requirements)
    module = file.stem
    config = SidecarConfig(
        plugins_dir=file.parent,
        active=(module,),
        service=service,
        callback_timeout=callback_timeout,
        lifecycle_timeout=lifecycle_timeout,
        route_timeout=route_timeout,
    )
    install_log_alias()
    capture = _Capture()
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(capture)
        logger.setLevel(logging.DEBUG)
    on_path = str(file.parent) not in sys.path
    if on_path:
        sys.path.append(str(file.parent))  # helper modules beside the plugin, as in the sidecar
    sidecar = build_sidecar(config)
    admin_server = AdminServer(AdminEndpoints(sidecar.intake, sidecar.describe))
    route_server = PublicServer(sidecar.dispatcher)
    try:
        await sidecar.runtime.apply([desired])
        (state,) = sidecar.runtime.describe()
        if state["state"] != "running":
            raise PluginNotLoadedError(f"plugin {module} ({file}) did not load: {state['error']}")
        sidecar.ready = True
        await admin_server.start("127.0.0.1", 0)
        await route_server.start("127.0.0.1", 0)
        async with (
            ClientSession(base_url=f"http://127.0.0.1:{admin_server.port}/") as admin,
            ClientSession(base_url=f"http://127.0.0.1:{route_server.port}/") as routes,
        ):
            yield PluginHarness(sidecar, module, capture, admin, routes, callback_timeout + 5)
    finally:
        sidecar.intake.refusing = SHUTTING_DOWN
        sidecar.dispatcher.accepting = False
        sidecar.points.flush()
        await sidecar.runtime.shutdown(time.monotonic() + lifecycle_timeout)
        forget_module(module)
        await route_server.close()
        await admin_server.close()
        if on_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(file.parent))
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(capture)
            logger.setLevel(level)


__all__ = [
    "Delivery",
    "IntakeRefusedError",
    "MissingRequirementError",
    "PluginCallbackError",
    "PluginHarness",
    "PluginNotLoadedError",
    "Reply",
    "run_plugin",
]
