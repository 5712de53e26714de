"""A fleet of simulated sidecars: N real report writers against a real API server, no pods.

    .venv/bin/python bench/sidecar_fleet.py --kubeconfig K --namespace NS --services a,b --pods 500

What is real and what is not:

- each simulated sidecar writes its ``LunaPluginRuntime`` with the sidecar's own
  :class:`~luna_sidecar.kube.kube_report.RuntimeReporter` (the same body, merge patch, create on 404),
  every ``--interval`` seconds (10, the sidecar's default ``--heartbeat-interval``) and at once
  when what it runs changes; the first reports are spread evenly over one interval;
- what it "runs" is what a sidecar of its service would load: the service's ConfigMaps are
  mirrored with the sidecar's own :class:`~luna_sidecar.kube.kube_source.ConfigMapMirror` (LIST, then
  WATCH) and turned into plugins by the sidecar's own
  :func:`~luna_sidecar.kube.kube_source.desired_plugins`, so a module moves to a new hash only once
  its ConfigMap holds the hash the active list names, after the sidecar's 50 ms debounce;
- not real: all simulated sidecars of a service share **one** mirror (a real sidecar watches on
  its own, so the API server serves N watches instead of one per service), and "loading" takes
  no time: a simulated sidecar reports every plugin ``running`` with the hash it would load.
  With ``--watches per-pod`` every simulated sidecar also holds a watch of its own on the
  service's ConfigMaps, as a real one does, so the API server sends every change N times; what
  these watches receive is read and dropped (decoding it N times would load this machine's CPU,
  which real sidecars spend on their own nodes).

``--reports full`` writes what sidecars wrote before reports named the active list's revision
(every module in every report): the baseline of ``bench/operator_scale.py --reports``.

It prints JSON lines on stdout: one per report write that changed a module's hash
(``{"t": monotonic seconds, "pod": ..., "service": ..., "changed": {module: hash}}``), one each
time a service's simulated sidecars take a new desired state (``{"t": ..., "applied": service}``),
and ``{"ready": N, "report_bytes": B, "watches": W}`` once every simulated sidecar has written
its first report (B: the mean size of the spec each wrote last, as JSON; W: the per-pod watches
the API server answered by then). SIGTERM or
SIGINT stops it; the reports stay (the caller deletes the namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any

from kubernetes_asyncio import client, config

from luna_sidecar.desired.sources import PluginSource
from luna_sidecar.kube.kube_report import RuntimeReporter
from luna_sidecar.kube.kube_source import ConfigMapMirror, desired_plugins


class SimulatedSidecar(RuntimeReporter):
    """One pod's report writer; :attr:`running` is what it would run now."""

    def __init__(
        self, api: client.ApiClient, *, namespace: str, service: str, pod: str, interval: float, compact: bool
    ):
        self.running: list[dict[str, Any]] = []
        self.last_bytes = 0
        self.named: dict[str, str] | None = None
        self._reported: dict[str, str] = {}
        self.first = asyncio.Event()
        super().__init__(
            api,
            namespace=namespace,
            service=service,
            pod=pod,
            pod_uid=None,
            plugins=lambda: self.running,
            ready=lambda: True,
            interval=interval,
            code_hashes=lambda: self.named,
        )
        self.compact = compact

    async def _write(self, body: dict[str, Any]) -> object:
        self.last_bytes = len(json.dumps(body["spec"]))
        return await super()._write(body)

    async def report(self) -> None:
        hashes = {plugin["name"]: str(plugin["codeHash"]) for plugin in self.running}
        await super().report()
        changed = {
            module: digest for module, digest in hashes.items() if self._reported.get(module) != digest
        }
        if changed and self._reported:
            print(
                json.dumps(
                    {"t": time.monotonic(), "pod": self.pod, "service": self.service, "changed": changed}
                ),
                flush=True,
            )
        self._reported = hashes
        self.first.set()


WATCHING: set[int] = set()
"""the per-pod watches that the API server answered (ids of their tasks)"""


async def drain_watch(api: client.ApiClient, namespace: str, selector: str) -> None:
    """Hold a watch of the ConfigMaps ``selector`` picks, as a sidecar does, reading and dropping
    what it sends; reconnect when it ends."""
    core = client.CoreV1Api(api)
    me = id(asyncio.current_task())
    while True:
        try:
            response = await core.list_namespaced_config_map(
                namespace, label_selector=selector, watch=True, timeout_seconds=300, _preload_content=False
            )
            async with response:
                if response.status == 200:
                    WATCHING.add(me)
                async for _ in response.content.iter_chunked(65536):
                    pass
        except asyncio.CancelledError:
            raise
        except Exception:
            await asyncio.sleep(1.0)


class ServiceFleet:
    """The simulated sidecars of one service and the one mirror they share."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        service: str,
        pods: list[str],
        interval: float,
        compact: bool,
    ):
        self.service = service
        self.sidecars = [
            SimulatedSidecar(
                api, namespace=namespace, service=service, pod=pod, interval=interval, compact=compact
            )
            for pod in pods
        ]
        self._changed = asyncio.Event()
        self.mirror = ConfigMapMirror(api, namespace, f"luna.dev/service={service}", self._changed.set)
        self._running: dict[str, PluginSource] = {}

    def _current(self, module: str) -> PluginSource | None:
        return self._running.get(module)

    async def follow(self) -> None:
        """Apply the mirror to every simulated sidecar whenever it changes (50 ms debounce)."""
        while True:
            await self._changed.wait()
            await asyncio.sleep(0.05)
            self._changed.clear()
            found = desired_plugins(self.service, self.mirror.items, self._current)
            if found.plugins is None:
                continue
            self._running = {p.module: p.source for p in found.plugins if p.source is not None}
            running = [
                {"name": module, "state": "running", "codeHash": source.code_hash}
                for module, source in self._running.items()
            ]
            for sidecar in self.sidecars:
                sidecar.running = running
                sidecar.named = found.code_hashes
                sidecar.poke()
            print(json.dumps({"t": time.monotonic(), "applied": self.service}), flush=True)


async def run(options: argparse.Namespace) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=options.kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = options.connections
    services = [name for name in options.services.split(",") if name]
    pods: dict[str, list[str]] = {service: [] for service in services}
    for index in range(options.pods):
        pods[services[index % len(services)]].append(f"sim-{index:04d}")
    async with client.ApiClient(configuration) as api:
        api.user_agent = "luna-plugins-sim-sidecar"  # tells its requests from the operator's
        compact = options.reports == "compact"
        fleets = [
            ServiceFleet(api, options.namespace, s, pods[s], options.interval, compact) for s in services
        ]
        tasks = [asyncio.create_task(fleet.mirror.run()) for fleet in fleets]
        watchers: client.ApiClient | None = None
        if options.watches == "per-pod":
            watching = client.Configuration()
            await config.load_kube_config(config_file=options.kubeconfig, client_configuration=watching)
            watching.connection_pool_maxsize = options.pods + 8  # a watch holds its connection
            watchers = client.ApiClient(watching)
            watchers.user_agent = "luna-plugins-sim-sidecar"
            tasks += [
                asyncio.create_task(
                    drain_watch(watchers, options.namespace, f"luna.dev/service={fleet.service}")
                )
                for fleet in fleets
                for _ in fleet.sidecars
            ]
        tasks += [asyncio.create_task(fleet.follow()) for fleet in fleets]
        await asyncio.gather(*(fleet.mirror.synced.wait() for fleet in fleets))
        await asyncio.sleep(0.2)  # the first apply of the mirror
        sidecars = [sidecar for fleet in fleets for sidecar in fleet.sidecars]
        spread = options.interval / max(1, len(sidecars))
        for sidecar in sorted(sidecars, key=lambda s: s.pod):
            tasks.append(asyncio.create_task(sidecar.run()))
            await asyncio.sleep(spread)
        await asyncio.gather(*(sidecar.first.wait() for sidecar in sidecars))
        sizes = [sidecar.last_bytes for sidecar in sidecars]
        ready = {"ready": len(sidecars), "report_bytes": sum(sizes) / len(sizes), "watches": len(WATCHING)}
        print(json.dumps(ready), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if watchers is not None:
            await watchers.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--services", default="handlers", help="comma-separated; pods are spread evenly")
    parser.add_argument("--pods", type=int, default=50, help="simulated sidecars in all (50)")
    parser.add_argument("--interval", type=float, default=10.0, help="heartbeat seconds (10)")
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections to the API server")
    parser.add_argument(
        "--reports",
        choices=("compact", "full"),
        default="compact",
        help="compact: the active list's revision and the differences (what sidecars write); "
        "full: every module, as sidecars wrote before and do with an old CRD (compact)",
    )
    parser.add_argument(
        "--watches",
        choices=("shared", "per-pod"),
        default="shared",
        help="shared: one ConfigMap watch per service; per-pod: also one per simulated sidecar, "
        "read and dropped (shared)",
    )
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
