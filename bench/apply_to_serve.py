"""Time from `kubectl apply` of a LunaPlugin (create and update) to the new code answering on the
sidecar, and from `kubectl delete` to the route answering 404.

    .venv/bin/python bench/apply_to_serve.py [--kubeconfig PATH] [--applies 20] [--sidecars 1|2]

Starts a local control plane (`luna-cluster up`, in a temporary directory) unless
--kubeconfig names a cluster, applies ``crds/``, creates a namespace, starts the operator and one
or two cluster-mode sidecars (service ``handlers``), all on loopback. Then, for each of
``--applies`` plugins: create a LunaPlugin whose route ``/bench{i}`` answers a unique text, note
the time just before `kubectl apply` starts and poll the route on every sidecar every
``--interval`` seconds (10 ms) until it answers that text; then update the plugin with a new
text and measure the same way. At the end each plugin is deleted and the time until its route
answers 404 on every sidecar is measured.

Targets (create and update): p50 at most 1 s, p95 at most 2 s. A mounted ConfigMap volume
takes tens of seconds to follow a change (the kubelet's sync period plus its ConfigMap cache);
that is the bar this path beats.

Where the time goes is shown per stage, from one long-lived watch on the namespace's LunaPlugins
and ConfigMaps (see ``bench/operator_bench.py``): the API server has stored the object, the
operator has written the plugin's ConfigMap, then the service's active list, the sidecar serves,
and the status says Ready and then ``loaded n/n``. kubectl's own share (process start-up and
discovery) is measured separately with `kubectl version --client` and a no-op `kubectl apply`.
Every process it started is stopped at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operator_bench import (
    CLI,
    HOST,
    BenchError,
    BenchRun,
    Kubectl,
    Processes,
    State,
    bench_main,
    code_hash,
    free_port,
    is_ready,
    log_warnings,
    manifest,
    route_code,
    start_operator,
    summary,
    table,
)

SERVICE = "handlers"
TARGETS = {"create": (1.0, 2.0), "update": (1.0, 2.0)}
STAGES = {
    "apply": ("stored", "rendered", "listed", "exited", "serving", "ready", "reported"),
    "delete": ("deleting", "unlisted", "gone", "exited", "removed"),
}
STAGE_MEANING = {
    "stored": "the API server has the new spec (LunaPlugin watch event)",
    "rendered": "the operator wrote the plugin's ConfigMap with the new hash",
    "listed": "the operator wrote the active list naming the new hash",
    "exited": "the kubectl process exited",
    "serving": "every sidecar answers the new text",
    "ready": "status.phase Ready with the new codeHash",
    "reported": "status.loaded n/n: every sidecar reported the new version",
    "deleting": "the API server marked the LunaPlugin for deletion",
    "unlisted": "the operator removed it from the active list",
    "gone": "every sidecar answers 404",
    "removed": "the LunaPlugin is gone",
}


@dataclass
class Sidecar:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    connection: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, bytes] | None:
        """One GET on a kept-alive connection; None when the sidecar did not answer."""
        for _ in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                self.connection.request("GET", path)
                reply = self.connection.getresponse()
                return reply.status, reply.read()
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
        return None


def start_sidecar(
    processes: Processes, kubeconfig: str, namespace: str, pod: str, workdir: Path, *extra: str
) -> Sidecar:
    port, admin_port, metrics_port = free_port(), free_port(), free_port()
    argv = [
        CLI, "sidecar", "--namespace", namespace, "--service", SERVICE, "--pod-name", pod,
        "--host", HOST, "--port", str(port), "--admin-host", HOST, "--admin-port", str(admin_port),
        "--metrics-host", HOST, "--metrics-port", str(metrics_port), *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_")} | {"KUBECONFIG": kubeconfig}
    log = workdir / f"sidecar-{pod}.log"
    process = processes.start(pod, argv, log, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"sidecar {pod} exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{metrics_port}/readyz", timeout=1):
                return Sidecar(pod, process, port, metrics_port)
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"sidecar {pod} not ready within 60 s; see {log}")


def has_configmap(name: str, digest: str) -> Callable[[State], bool]:
    def check(state: State) -> bool:
        item = state["cm"].get(f"lunaplugin-{name}") or {}
        return bool((item.get("metadata", {}).get("annotations") or {}).get("luna.dev/code-hash") == digest)

    return check


def has_code(name: str, code: str) -> Callable[[State], bool]:
    """The API server has stored ``code`` in the LunaPlugin's spec."""
    return lambda state: bool((state["lp"].get(name) or {}).get("spec", {}).get("code") == code)


def lists(name: str, digest: str | None) -> Callable[[State], bool]:
    """The active list names ``digest`` for the plugin (None: does not list it)."""
    return lambda state: listed_hash(state, name) == digest


def marked_for_deletion(name: str) -> Callable[[State], bool]:
    def check(state: State) -> bool:
        item = state["lp"].get(name)
        return item is None or bool(item["metadata"].get("deletionTimestamp"))

    return check


def removed(name: str) -> Callable[[State], bool]:
    return lambda state: name not in state["lp"]


def answers(status: int, body: bytes | None = None) -> Callable[[int, bytes], bool]:
    return lambda got, text: got == status and (body is None or text == body)


def listed_hash(state: State, name: str) -> str | None:
    """The code hash the service's active list names for LunaPlugin ``name`` (None: not listed)."""
    item = state["cm"].get(f"luna-plugins-{SERVICE}") or {}
    try:
        details = json.loads((item.get("data") or {}).get("plugins.json", "{}"))
    except ValueError:
        return None
    for entry in details.values():
        if entry.get("plugin") == name:
            return str(entry.get("codeHash"))
    return None


def timed(
    sidecars: list[Sidecar],
    command: subprocess.Popen[str],
    path: str,
    answered: Callable[[int, bytes], bool],
    started: float,
    interval: float,
    timeout: float,
) -> tuple[float, float]:
    """Poll ``path`` on every sidecar every ``interval`` s while ``command`` runs and after;
    returns (when every sidecar answered as wanted, when the command exited), both monotonic."""
    pending = {sidecar.name: sidecar for sidecar in sidecars}
    exited: float | None = None
    served: float | None = None
    deadline = started + timeout
    tick = started
    while served is None or exited is None:
        now = time.monotonic()
        if exited is None and command.poll() is not None:
            exited = now
            if command.returncode:
                problem = command.stderr.read() if command.stderr else ""
                raise BenchError(f"{command.args!r} failed (exit {command.returncode}): {problem}")
        if served is None:
            for name, sidecar in list(pending.items()):
                reply = sidecar.get(path)
                if reply is not None and answered(*reply):
                    del pending[name]
            if not pending:
                served = time.monotonic()
        if now > deadline:
            raise BenchError(f"timed out after {timeout:g} s: {path} on {sorted(pending)} (exited: {exited})")
        tick += interval
        time.sleep(max(0.0, tick - time.monotonic()))
    return served, exited


def run_kubectl(kubectl: Kubectl, *args: str, input: str | None = None) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [kubectl.binary, *args],
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=kubectl.env,
    )
    if input is not None:
        assert process.stdin is not None
        process.stdin.write(input)
        process.stdin.close()
    return process


def kubectl_overhead(kubectl: Kubectl, body: dict[str, Any], samples: int) -> dict[str, list[float]]:
    """Wall time of `kubectl version --client` (process start-up only) and of a `kubectl apply`
    that changes nothing (start-up, the OpenAPI v3 documents for validation, one GET, the OpenAPI
    v2 document for the patch). The first apply of an existing object also makes the API server
    build its OpenAPI v2 document, once per server: that one is kept apart (``first_noop``)."""
    found: dict[str, list[float]] = {"version": [], "noop": [], "first_noop": [], "server_side": []}
    text = json.dumps(body)
    for index in range(samples + 1):
        started = time.monotonic()
        kubectl("version", "--client")
        if index:
            found["version"].append(time.monotonic() - started)
        started = time.monotonic()
        out = kubectl("apply", "-f", "-", input=text)
        found["noop" if index else "first_noop"].append(time.monotonic() - started)
        if "unchanged" not in out:
            raise BenchError(f"the no-op apply changed something: {out}")
    for index in range(samples + 1):  # after the others: the first one takes over the fields
        started = time.monotonic()
        kubectl("apply", "--server-side", "--field-manager=bench", "-f", "-", input=text)
        if index:
            found["server_side"].append(time.monotonic() - started)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a local control plane")
    parser.add_argument("--keep-logs", action="store_true", help="keep the operator and sidecar logs")
    parser.add_argument("--applies", type=int, default=20, help="plugins created, updated and deleted (20)")
    parser.add_argument("--sidecars", type=int, choices=(1, 2), default=1, help="sidecars of the service (1)")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between polls of a route")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one change (30)")
    parser.add_argument("--kubectl-samples", type=int, default=10, help="runs of each kubectl probe (10)")
    parser.add_argument("--output", help="write the raw figures (seconds) to this JSON file")
    options = parser.parse_args()
    return bench_main("apply_to_serve", "bench-serve", options, run_and_report)


def run_and_report(bench: BenchRun) -> None:
    results = run(bench)
    watch = bench.watch
    print(f"watch: {watch.events} events, {len(watch.restarts)} restart(s) {watch.restarts}")
    print(log_warnings(bench.workdir / "operator.log"))
    if bench.options.output:
        Path(bench.options.output).write_text(json.dumps(results, indent=1))


def run(bench: BenchRun) -> dict[str, Any]:
    options, kubeconfig, kubectl, namespace = bench.options, bench.kubeconfig, bench.kubectl, bench.namespace
    watch, processes, workdir = bench.watch, bench.processes, bench.workdir
    start_operator(processes, kubeconfig, namespace, workdir / "operator.log")
    sidecars = [
        start_sidecar(processes, kubeconfig, namespace, f"bench-pod-{k}", workdir)
        for k in range(options.sidecars)
    ]
    pods = f"{len(sidecars)}/{len(sidecars)}"
    token = f"{os.getpid()}-{time.time_ns() % 10**6}"

    # warm-up (not counted): the service's first active list, the watches, kubectl's discovery cache
    warm = manifest("warm-up", namespace, route_code("/warm-up", f"warm {token}"), SERVICE)
    waiter = watch.expect(is_ready("warm-up", code_hash(warm["spec"]["code"]), pods))
    started = time.monotonic()
    apply = run_kubectl(kubectl, "apply", "-f", "-", input=json.dumps(warm))
    timed(sidecars, apply, "/warm-up", answers(200), started, options.interval, options.timeout)
    watch.wait(waiter, options.timeout, "the warm-up plugin to be reported loaded")
    overhead = kubectl_overhead(kubectl, warm, options.kubectl_samples)

    totals: dict[str, list[float]] = {"create": [], "update": [], "delete": []}
    stages: dict[str, list[dict[str, float]]] = {"create": [], "update": [], "delete": []}
    for index in range(options.applies):
        name, path = f"bench-{index}", f"/bench{index}"
        for kind in ("create", "update"):
            answer = f"{kind} {index} {token}"
            body = manifest(name, namespace, route_code(path, answer), SERVICE)
            code = body["spec"]["code"]
            digest = code_hash(code)
            waiters = {
                "stored": watch.expect(has_code(name, code)),
                "rendered": watch.expect(has_configmap(name, digest)),
                "listed": watch.expect(lists(name, digest)),
                "ready": watch.expect(is_ready(name, digest)),
                "reported": watch.expect(is_ready(name, digest, pods)),
            }
            expected = answer.encode()
            started = time.monotonic()
            apply = run_kubectl(kubectl, "apply", "-f", "-", input=json.dumps(body))
            served, exited = timed(
                sidecars, apply, path, answers(200, expected), started, options.interval, options.timeout
            )
            times = {
                key: watch.wait(w, options.timeout, f"{name} {kind}: {key}") for key, w in waiters.items()
            }
            totals[kind].append(served - started)
            stages[kind].append(
                {key: at - started for key, at in {**times, "serving": served, "exited": exited}.items()}
            )
    for index in range(options.applies):
        name, path = f"bench-{index}", f"/bench{index}"
        waiters = {
            "deleting": watch.expect(marked_for_deletion(name)),
            "unlisted": watch.expect(lists(name, None)),
            "removed": watch.expect(removed(name)),
        }
        started = time.monotonic()
        delete = run_kubectl(kubectl, "delete", "lunaplugin", name, "-n", namespace, "--timeout=60s")
        gone, exited = timed(sidecars, delete, path, answers(404), started, options.interval, options.timeout)
        times = {key: watch.wait(w, options.timeout, f"{name} delete: {key}") for key, w in waiters.items()}
        totals["delete"].append(gone - started)
        stages["delete"].append(
            {key: at - started for key, at in {**times, "gone": gone, "exited": exited}.items()}
        )

    report(options, totals, stages, overhead)
    return {"totals": totals, "stages": stages, "kubectl": overhead, "sidecars": len(sidecars)}


def report(
    options: argparse.Namespace,
    totals: dict[str, list[float]],
    stages: dict[str, list[dict[str, float]]],
    overhead: dict[str, list[float]],
) -> None:
    print(f"\nsidecars: {options.sidecars}; route polled every {options.interval * 1000:.0f} ms\n")
    rows = [(kind, values) for kind, values in totals.items()]
    print(table("kubectl apply/delete → served", rows, TARGETS))
    print("\nMedian time of each stage after `kubectl` was started (ms); p95 in brackets:\n")
    print("| stage | create | update | delete | meaning |\n|---|---:|---:|---:|---|")
    for stage in dict.fromkeys(STAGES["apply"] + STAGES["delete"]):
        cells = []
        for kind in ("create", "update", "delete"):
            values = [sample[stage] for sample in stages[kind] if stage in sample]
            _, p50, p95, _ = summary(values)
            cells.append(f"{p50:.0f} ({p95:.0f})" if values else "")
        print(f"| {stage} | {' | '.join(cells)} | {STAGE_MEANING[stage]} |")
    after = {
        kind: [sample[end] - sample["exited"] for sample in stages[kind]]
        for kind, end in (("create", "serving"), ("update", "serving"), ("delete", "gone"))
    }
    print("\nkubectl's own share:\n")
    print("| what | n | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|")
    for label, values in (
        ("`kubectl version --client` (process start-up only)", overhead["version"]),
        ("no-op `kubectl apply` (start-up, OpenAPI documents, GET)", overhead["noop"]),
        ("the first no-op `kubectl apply` (the API server builds /openapi/v2)", overhead["first_noop"]),
        ("no-op `kubectl apply --server-side` (no client-side patch)", overhead["server_side"]),
        ("measured `kubectl apply`, create (start to exit)", [s["exited"] for s in stages["create"]]),
        ("measured `kubectl apply`, update (start to exit)", [s["exited"] for s in stages["update"]]),
        ("create: kubectl exit → served", after["create"]),
        ("update: kubectl exit → served", after["update"]),
        ("delete: kubectl exit → 404 (negative: 404 before kubectl exited)", after["delete"]),
    ):
        n, p50, p95, worst = summary(values)
        print(f"| {label} | {n} | {p50:.0f} | {p95:.0f} | {worst:.0f} |")
    version = statistics.median(overhead["version"])
    for kind in ("create", "update"):
        _, p50, _, _ = summary(totals[kind])
        print(f"{kind}: p50 {p50:.0f} ms, of which ≈ {version * 1000:.0f} ms is kubectl starting up")


if __name__ == "__main__":
    sys.exit(main())
