"""Every hostile plugin file at once, in one real sidecar, next to two well-behaved plugins.

The well-behaved plugins are checked with real HTTP the whole time (a thread keeps asking
their routes and the probes) while the hostile ones fail to compile, block their import, exit,
sleep on the event loop, swallow cancellation and stall under a burst of 10,000-point batches.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support import hostile_plugins as hostile
from tests.support.sidecar_harness import Sidecar, http, points, wait_for

GOOD = {"good_routes": hostile.GOOD_ROUTES, "good_counter": hostile.GOOD_COUNTER}

HOSTILE = {
    "recursion_at_compile": hostile.RECURSION_AT_COMPILE,
    "memory_at_compile": hostile.MEMORY_AT_COMPILE,
    "sleeps_at_import": hostile.sleeps_at_import(120),
    "exits_at_import": hostile.EXITS_AT_IMPORT,
    "interrupts_at_import": hostile.INTERRUPTS_AT_IMPORT,
    "exits_in_constructor": hostile.EXITS_IN_CONSTRUCTOR,
    "exits_in_initialize": hostile.EXITS_IN_INITIALIZE,
    "exits_in_handlers": hostile.EXITS_IN_HANDLERS,
    "stalled_callback": hostile.STALLED_CALLBACK,
    "swallows_in_callback": hostile.SWALLOWS_IN_CALLBACK,
    "swallows_in_close": hostile.SWALLOWS_IN_CLOSE,
    "sleeps_in_route": hostile.SLEEPS_IN_ROUTE,
    "sleeps_in_callback": hostile.SLEEPS_IN_CALLBACK,
}

LIFECYCLE_TIMEOUT = 4
QUEUE_ITEMS = 20_000

#: what GET /plugins says of the hostile plugins that cannot run
FAILED = {
    "recursion_at_compile": "import: RecursionError",
    "memory_at_compile": "import: MemoryError",
    "sleeps_at_import": f"import did not finish within {LIFECYCLE_TIMEOUT} s",
    "exits_at_import": "import: SystemExit: 3",
    "interrupts_at_import": "import: KeyboardInterrupt: at import",
    "exits_in_constructor": "SystemExit: 5",
    "exits_in_initialize": "SystemExit: 4",
}


class Traffic:
    """Asks the well-behaved plugins' routes and the probes, over and over, in a thread."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.results: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        urls = [
            self.sidecar.public + "/hello",
            self.sidecar.public + "/counted",
            self.sidecar.metrics_url + "/healthz",
        ]
        while not self._stop.is_set():
            for url in urls:
                try:
                    status = http("GET", url, timeout=15).status
                except OSError as exc:
                    self.failures.append(f"{url}: {exc}")
                    continue
                self.results[url.rsplit("/", 1)[1]] += 1
                if status != 200:
                    self.failures.append(f"{url}: HTTP {status}")
            self._stop.wait(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def counted(sidecar: Sidecar) -> dict[str, Any]:
    reply = sidecar.get("/counted")
    assert reply.status == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def class_info(sidecar: Sidecar, plugin: str, class_name: str) -> dict[str, Any]:
    return next(c for c in sidecar.plugin(plugin)["classes"] if c["name"] == class_name)


def test_hostile_plugins_cost_only_themselves(sidecar_factory, tmp_path: Path) -> None:
    active_file = tmp_path / "active.json"
    active_file.write_text(json.dumps([*GOOD, *HOSTILE]))
    closed = tmp_path / "good_counter.closed"
    sidecar = sidecar_factory(
        plugins={**GOOD, **HOSTILE},
        settings={"good_counter": {"closed": str(closed)}},
        args=[
            "--active-file",
            str(active_file),
            "--lifecycle-timeout",
            str(LIFECYCLE_TIMEOUT),
            "--callback-timeout",
            "1",
            "--queue-items",
            str(QUEUE_ITEMS),
            "--shutdown-timeout",
            "10",
        ],
        wait_ready=False,
    )

    # While the import that sleeps holds start-up, the process answers and the good plugins serve.
    def importing() -> bool:
        if sidecar.process.poll() is not None:
            raise AssertionError(
                f"sidecar exited with {sidecar.process.returncode}:\n{sidecar.log()[-3000:]}"
            )
        try:
            plugins = sidecar.plugins()
        except (OSError, AssertionError):
            return False
        return plugins.get("sleeps_at_import", {}).get("state") == "loading"

    wait_for(importing, timeout=30, what="the import that sleeps to be under way")
    assert http("GET", sidecar.metrics_url + "/healthz").status == 200
    assert sidecar.get("/hello").text == "hello"
    # the intake answers too: 503 until the first sync is done (the service sends it again later)
    assert sidecar.post_event("monitoring_event", points(3, series="burst")).status == 503
    wait_for(lambda: http("GET", sidecar.metrics_url + "/readyz").status == 200, timeout=30, what="ready")

    plugins = sidecar.plugins()
    for name, reason in FAILED.items():
        assert plugins[name]["state"] == "failed", (name, plugins[name])
        assert reason in plugins[name]["error"], (name, plugins[name]["error"])
    running = set(GOOD) | set(HOSTILE) - set(FAILED)
    assert {name for name, plugin in plugins.items() if plugin["state"] == "running"} == running
    assert sidecar.get("/slept").status == 404
    assert sidecar.metric("luna_plugin_stuck_threads", plugin="sleeps_at_import") == 1

    with Traffic(sidecar) as traffic:
        # a 10,000-point burst: the stalled plugin keeps what fits, the good one gets everything
        expected = 0
        for _ in range(8):
            reply = sidecar.post_event("monitoring_event", points(10_000, series="burst"))
            assert reply.status == 202, reply.text
            expected += 10_000
            wait_for(
                lambda total=expected: counted(sidecar).get("burst") == total,
                timeout=60,
                what=f"{expected} points",
            )
        for _ in range(3):
            body = {"events": [{"n": i} for i in range(10)], "handlerId": "h", "accountId": "a"}
            assert sidecar.post_event("sending_event", body).status == 202
        wait_for(lambda: counted(sidecar)["events"] == 30, what="30 events counted")
        for _ in range(3):
            assert sidecar.get("/snooze?seconds=0.5").text == "yawn"
        assert sidecar.get("/exits").status == 500
        wait_for(lambda: "SystemExit: 7" in sidecar.log(), what="the task's SystemExit to be logged")

        stalled = class_info(sidecar, "stalled_callback", "Stalled")
        assert stalled["queue"]["items"] <= QUEUE_ITEMS
        assert stalled["queue"]["capacity"] == QUEUE_ITEMS
        assert stalled["droppedItems"] >= 8 * 10_000 - QUEUE_ITEMS
        assert (
            sidecar.metric("luna_plugin_dropped_items_total", plugin="stalled_callback")
            == stalled["droppedItems"]
        )
        wait_for(
            lambda: sidecar.metric("luna_plugin_loop_blocked_seconds_total", plugin="sleeps_in_route") >= 1.0,
            what="the route's sleeps to be charged to it",
        )
        wait_for(
            lambda: sidecar.metric("luna_plugin_loop_blocked_seconds_total", plugin="sleeps_in_callback") > 0,
            what="the callback's sleeps to be charged to it",
        )
        assert sidecar.plugin("sleeps_in_route")["loopBlockedSeconds"] >= 1.0
        # (a machine so loaded that it pauses the whole process could charge a stray tick)
        assert sidecar.metric("luna_plugin_loop_blocked_seconds_total", plugin="good_routes") < 0.3
        for name in ("exits_in_handlers", "stalled_callback", "swallows_in_callback", "sleeps_in_route"):
            assert sidecar.plugin(name)["state"] == "running"

        # unload the hostile plugins: bounded, even for those that ignore cancellation
        active_file.write_text(json.dumps(list(GOOD)))
        wait_for(lambda: set(sidecar.plugins()) == set(GOOD), timeout=60, what="the hostile plugins unloaded")
        expected_stuck = {
            ("swallows_in_close", "SwallowsInClose.close()"),
            ("stalled_callback", "Stalled.handleEvent()"),
            ("swallows_in_callback", "Swallows.handleEvent()"),
            ("sleeps_at_import", "import"),
        }

        def stuck() -> set[tuple[str, str]]:
            entries = http("GET", sidecar.admin + "/plugins").json()["stuck"]
            return {(entry["plugin"], entry["what"]) for entry in entries}

        # a close() that ignores cancellation is reported a moment after its timeout
        wait_for(lambda: stuck() == expected_stuck, what="the abandoned work to be reported")
        assert sidecar.metric("luna_plugin_abandoned_tasks", plugin="swallows_in_close") == 1
        # their series are gone; only the gauges of what still runs remain
        leftover_gauges = {"luna_plugin_stuck_threads", "luna_plugin_abandoned_tasks"}
        for name in HOSTILE:
            assert sidecar.series_of(name) <= leftover_gauges, (name, sidecar.series_of(name))
        assert sidecar.get("/hello").text == "hello"

    assert traffic.failures == [], traffic.failures[:5]
    assert min(traffic.results.values()) > 10, traffic.results

    started = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=60) == 0
    print(f"SIGTERM to exit: {time.monotonic() - started:.1f} s")
    assert closed.read_text() == "closed"
