"""Reload, unload and SIGTERM end on time even when plugin code ignores cancellation.

Real sidecar processes. The plugins here swallow every ``CancelledError``: in an event callback
(monitoring and sending) and in ``close()``. What cannot be stopped is abandoned and reported
(log, ``GET /plugins`` under ``stuck``, ``luna_plugin_abandoned_tasks``); the runtime goes on.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support import hostile_plugins as hostile
from tests.support.plugin_sources import route_plugin
from tests.support.sidecar_harness import Sidecar, http, points, wait_for

CALLBACK_TIMEOUT = 1
LIFECYCLE_TIMEOUT = 2
SHUTDOWN_TIMEOUT = 6
#: what a loaded machine may add to a deadline; the bug this guards against never ends at all
MARGIN = 15


def stuck(sidecar: Sidecar) -> set[tuple[str, str]]:
    entries = http("GET", sidecar.admin + "/plugins").json()["stuck"]
    return {(entry["plugin"], entry["what"]) for entry in entries}


def sending_events(n: int = 2) -> dict[str, object]:
    return {"events": [{"n": i} for i in range(n)], "handlerId": "h", "accountId": "a"}


def start(sidecar_factory, plugins: dict[str, str]) -> Sidecar:
    sidecar: Sidecar = sidecar_factory(
        plugins=plugins,
        active=list(plugins),
        args=[
            "--callback-timeout",
            str(CALLBACK_TIMEOUT),
            "--lifecycle-timeout",
            str(LIFECYCLE_TIMEOUT),
            "--shutdown-timeout",
            str(SHUTDOWN_TIMEOUT),
        ],
    )
    return sidecar


def test_reload_goes_on_when_the_old_version_ignores_cancellation(sidecar_factory) -> None:
    sidecar = start(
        sidecar_factory,
        {
            "stalled_callback": hostile.STALLED_CALLBACK,
            "swallows_in_close": hostile.SWALLOWS_IN_CLOSE,
            "healthy": route_plugin("/healthy", "v1"),
        },
    )
    assert sidecar.post_event("monitoring_event", points(5)).status == 202
    wait_for(
        lambda: sidecar.plugin("stalled_callback")["classes"][0]["callbackOverdueSeconds"] is not None,
        what="the callback to be reported past its timeout",
    )

    # reload both hostile plugins: their old versions cannot be stopped, the reload goes on
    started = time.monotonic()
    sidecar.write_plugin("stalled_callback", hostile.STALLED_CALLBACK + "\nVERSION = 2\n")
    sidecar.write_plugin("swallows_in_close", hostile.SWALLOWS_IN_CLOSE + "\nVERSION = 2\n")
    sidecar.write_plugin("healthy", route_plugin("/healthy", "v2"))
    wait_for(lambda: sidecar.get("/healthy").text == "v2", timeout=MARGIN + 10, what="the reload to finish")
    print(f"reload past two plugins that ignore cancellation: {time.monotonic() - started:.1f} s")
    wait_for(
        lambda: (
            stuck(sidecar)
            == {
                ("stalled_callback", "Stalled.handleEvent()"),
                ("swallows_in_close", "SwallowsInClose.close()"),
            }
        ),
        what="what could not be stopped to be reported",
    )
    assert sidecar.metric("luna_plugin_abandoned_tasks", plugin="stalled_callback") == 1
    assert sidecar.metric("luna_plugin_abandoned_tasks", plugin="swallows_in_close") == 1
    log = sidecar.log()
    assert "plugin stalled_callback: Stalled.handleEvent() is still running past its deadline" in log
    assert "SwallowsInClose.close() did not finish within 2 s" in log
    # the new versions run; the new stalled one gets its own queue
    for name in ("stalled_callback", "swallows_in_close"):
        assert sidecar.plugin(name)["state"] == "running" and sidecar.plugin(name)["failedCodeHash"] is None
    assert sidecar.post_event("monitoring_event", points(1)).json()["queued"] == 1
    assert sidecar.stop(timeout=SHUTDOWN_TIMEOUT + MARGIN) == 0


def test_sigterm_ends_on_time_with_plugins_that_ignore_cancellation(sidecar_factory, tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    sidecar = start(
        sidecar_factory,
        {
            "stalled_callback": hostile.STALLED_CALLBACK,
            "swallows_in_callback": hostile.SWALLOWS_IN_CALLBACK,
            "swallows_in_close": hostile.SWALLOWS_IN_CLOSE,
            "good_counter": hostile.GOOD_COUNTER.replace('self.settings["closed"]', repr(str(closed))),
        },
    )
    assert sidecar.post_event("monitoring_event", points(5)).status == 202
    assert sidecar.post_event("sending_event", sending_events()).status == 202
    wait_for(
        lambda: all(
            c.get("callbackOverdueSeconds") is not None
            for name in ("stalled_callback", "swallows_in_callback")
            for c in sidecar.plugin(name)["classes"]
        ),
        what="both callbacks stuck past their timeout",
    )
    started = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=SHUTDOWN_TIMEOUT + MARGIN) == 0
    took = time.monotonic() - started
    print(f"SIGTERM to exit with three plugins ignoring cancellation: {took:.1f} s")
    assert closed.read_text() == "closed", "the well-behaved plugin was closed"
    log = sidecar.log()
    assert "SwallowsInClose.close() did not finish within" in log
    assert "still runs at exit; abandoned" in log


def test_a_route_handler_ignoring_cancellation_releases_its_client_and_not_the_exit(sidecar_factory) -> None:
    sidecar = sidecar_factory(
        plugins={"stubborn": hostile.SWALLOWS_IN_ROUTE, "healthy": route_plugin("/healthy", "fine")},
        active=["stubborn", "healthy"],
        args=["--route-timeout", "1", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)],
    )
    try:
        reply = sidecar.get("/stubborn", timeout=MARGIN + 10)
    except OSError as exc:  # the connection is closed under the handler that never answers
        assert "closed" in str(exc) or "reset" in str(exc), exc
    else:
        raise AssertionError(f"expected the connection to be closed, got HTTP {reply.status}")
    wait_for(lambda: stuck(sidecar) == {("stubborn", "route GET /stubborn")}, what="the handler reported")
    assert sidecar.metric("luna_plugin_abandoned_tasks", plugin="stubborn") == 1
    assert sidecar.get("/healthy").text == "fine"
    started = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=SHUTDOWN_TIMEOUT + MARGIN) == 0
    print(f"SIGTERM to exit with a route handler ignoring cancellation: {time.monotonic() - started:.1f} s")
