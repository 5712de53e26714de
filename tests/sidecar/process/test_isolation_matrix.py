"""Isolated plugins against the issue's hostile matrix, on real processes: each hostile plugin
runs in a process of its own in one sidecar with two well-behaved in-process plugins and one
well-behaved isolated plugin, which keep answering and receiving events throughout."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.sidecar.process import plugins
from tests.support.sidecar_harness import Sidecar, http, wait_for


def probe_points(n: int = 5) -> dict[str, Any]:
    return {
        "points": [
            {"series": "probe", "eventTime": 1_700_000_000.0 + index, "tags": {}, "fields": {"n": index}}
            for index in range(n)
        ]
    }


@contextlib.contextmanager
def well_behaved(sidecar: Sidecar) -> Iterator[list[str]]:
    """While the body runs: the in-process route and both counters answer, and every probe batch
    is accepted; yields the failures. On exit, the counters must have received every point sent
    (the isolated one may take until its queue is drained)."""
    failures: list[str] = []
    stop = threading.Event()
    sent = [0]

    def run() -> None:
        while not stop.is_set():
            for path in ("/hello", "/count-here", "/count-isolated"):
                reply = http("GET", sidecar.public + path, timeout=15)
                if reply.status != 200:
                    failures.append(f"GET {path}: {reply.status} {reply.text[:200]}")
            reply = sidecar.post_event("monitoring_event", probe_points(), timeout=15)
            if reply.status != 202:
                failures.append(f"POST monitoring_event: {reply.status} {reply.text[:200]}")
            else:
                sent[0] += 5
            stop.wait(0.1)

    before = {path: sidecar.get(path).json()["points"] for path in ("/count-here", "/count-isolated")}
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(30)
    for path in ("/count-here", "/count-isolated"):
        wait_for(
            lambda path=path: sidecar.get(path).json()["points"] - before[path] >= sent[0],
            timeout=30,
            what=f"{path} to count all {sent[0]} probe points",
        )


@pytest.fixture
def start(sidecar_factory: Callable[..., Sidecar]) -> Callable[..., Sidecar]:
    """A sidecar with the well-behaved plugins and ``hostile`` (isolated) under ``name``."""

    def run(name: str, hostile: str, *, args: list[str] = (), wait: bool = True) -> Sidecar:  # type: ignore[assignment]
        sidecar = sidecar_factory(
            plugins={
                "good_route": plugins.GOOD_ROUTE,
                "counter_here": plugins.counter("/count-here"),
                "counter_isolated": plugins.counter("/count-isolated"),
                name: hostile,
            },
            active=["good_route", "counter_here", "counter_isolated", name],
            args=["--isolate", f"counter_isolated,{name}", "--isolated-crash-limit", "3", *args],
        )
        isolated = sidecar.get("/count-isolated").json()
        assert isolated["pid"] != sidecar.process.pid, "the isolated counter runs in a process of its own"
        return sidecar

    return run


def counted(sidecar: Sidecar, path: str) -> int:
    """The probe points the counter at ``path`` received; -1 while it does not answer."""
    reply = sidecar.get(path)
    return int(reply.json()["points"]) if reply.status == 200 else -1


def process_of(sidecar: Sidecar, name: str) -> dict[str, Any]:
    process = sidecar.plugin(name)["process"]
    assert process is not None, sidecar.plugin(name)
    return process


def test_a_segfault_in_a_route_ends_only_its_process_which_restarts(start: Callable[..., Sidecar]) -> None:
    sidecar = start("segfaults", plugins.SEGFAULT_IN_ROUTE)
    first = process_of(sidecar, "segfaults")["pid"]
    with well_behaved(sidecar) as failures:
        reply = sidecar.get("/crash")
        assert reply.status == 503, reply.text
        assert "SIGSEGV" in reply.json()["error"], reply.text
        wait_for(lambda: process_of(sidecar, "segfaults")["state"] == "running", what="the restart")
    assert failures == [], failures[:5]
    process = process_of(sidecar, "segfaults")
    assert process["pid"] != first and process["restarts"] == 1
    assert process["lastExit"]["reason"] == "killed by SIGSEGV"
    assert sidecar.metric("luna_plugin_process_exits_total", plugin="segfaults", reason="sigsegv") == 1
    assert sidecar.metric("luna_plugin_process_restarts_total", plugin="segfaults") == 1
    assert sidecar.process.poll() is None


def test_exit_at_import_fails_that_plugin_alone(start: Callable[..., Sidecar]) -> None:
    sidecar = start("exits", plugins.EXIT_AT_IMPORT)
    with well_behaved(sidecar) as failures:
        plugin = sidecar.plugin("exits")
        assert plugin["state"] == "failed", plugin
        assert "exit code 3" in plugin["error"], plugin["error"]
    assert failures == [], failures[:5]


def test_a_plugin_that_crashes_on_one_event_is_restarted_then_quarantined(
    start: Callable[..., Sidecar],
) -> None:
    sidecar = start("poisoned", plugins.EXIT_IN_CALLBACK)
    poison = {"points": [{"series": "poison", "eventTime": 1.0, "tags": {}, "fields": {}}]}
    with well_behaved(sidecar) as failures:
        for crash in (1, 2):
            assert sidecar.post_event("monitoring_event", poison).status == 202
            wait_for(
                lambda crash=crash: (
                    process_of(sidecar, "poisoned")["restarts"] == crash
                    and process_of(sidecar, "poisoned")["state"] == "running"
                ),
                timeout=30,
                what=f"restart {crash}",
            )
        assert sidecar.post_event("monitoring_event", poison).status == 202
        plugin = wait_for(
            lambda: (p := sidecar.plugin("poisoned"))["state"] == "failed" and p,
            timeout=30,
            what="the quarantine",
        )
    assert failures == [], failures[:5]
    assert "quarantined: its process ended 3 times" in plugin["error"], plugin["error"]
    assert "about to exit on a poison point" in plugin["error"], "the last output is in the report"
    assert sidecar.metric("luna_plugin_reloads_total", plugin="poisoned", result="quarantined") == 1
    assert sidecar.metric("luna_plugin_process_exits_total", plugin="poisoned", reason="exit") == 3
    # it stays quarantined until its code changes or SIGHUP asks for a retry
    sidecar.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: sidecar.plugin("poisoned")["state"] == "running", timeout=30, what="the retry after SIGHUP"
    )
    assert process_of(sidecar, "poisoned")["restarts"] == 0, "a new process, a new count"


def test_an_allocation_past_the_memory_limit_ends_only_that_process(start: Callable[..., Sidecar]) -> None:
    sidecar = start("grows", plugins.GROWS_IN_ROUTE, args=["--isolated-memory", str(128 * 2**20)])
    with well_behaved(sidecar) as failures:
        reply = sidecar.get("/grow", timeout=60)
        assert reply.status == 503, reply.text
        assert "memory" in reply.json()["error"], reply.text
        wait_for(lambda: process_of(sidecar, "grows")["state"] == "running", timeout=30, what="the restart")
    assert failures == [], failures[:5]
    assert sidecar.metric("luna_plugin_process_exits_total", plugin="grows", reason="memory") == 1


def test_resident_memory_past_the_limit_is_watched_and_ended(start: Callable[..., Sidecar]) -> None:
    sidecar = start("grows_slowly", plugins.GROWS_SLOWLY, args=["--isolated-memory", str(96 * 2**20)])
    with well_behaved(sidecar) as failures:
        reply = sidecar.get("/grow-slowly", timeout=60)
        assert reply.status == 503, reply.text
        wait_for(
            lambda: process_of(sidecar, "grows_slowly")["state"] == "running", timeout=30, what="the restart"
        )
    assert failures == [], failures[:5]
    last = process_of(sidecar, "grows_slowly")["lastExit"]["reason"]
    assert last.startswith("memory"), last


def test_a_catastrophic_regex_in_a_route_stalls_only_its_process(start: Callable[..., Sidecar]) -> None:
    sidecar = start("backtracks", plugins.CATASTROPHIC_REGEX_ROUTE, args=["--isolated-stall-timeout", "2"])
    with well_behaved(sidecar) as failures:
        reply = sidecar.get("/regex", timeout=60)
        assert reply.status == 503, reply.text
        wait_for(
            lambda: process_of(sidecar, "backtracks")["state"] == "running", timeout=30, what="the restart"
        )
    assert failures == [], failures[:5]
    last = process_of(sidecar, "backtracks")["lastExit"]["reason"]
    assert last.startswith("stalled"), last
    assert sidecar.metric("luna_plugin_process_exits_total", plugin="backtracks", reason="stalled") == 1


def test_an_isolated_plugin_reads_only_its_own_settings_and_files(
    start: Callable[..., Sidecar], tmp_path: Any
) -> None:
    token = tmp_path / "token"
    token.write_text("the sidecar's token")
    sidecar = start("snoops", plugins.SNOOPS)
    (sidecar.plugins_dir / "snoops.settings.json").write_text('{"mine": "own value"}')
    (sidecar.plugins_dir / "counter_here.settings.json").write_text('{"password": "not yours"}')
    wait_for(
        lambda: (
            sidecar.plugin("snoops")["process"]["pid"] is not None
            and sidecar.get("/snoop").json()["own_settings"]
        ),
        timeout=30,
        what="the settings reload",
    )
    paths = [
        str(sidecar.plugins_dir / "counter_here.settings.json"),
        str(token),
        "/proc/1/environ",
        f"/proc/{sidecar.process.pid}/environ",
        f"/proc/{sidecar.process.pid}/cmdline",
        str(sidecar.plugins_dir / "snoops.py"),
    ]
    reply = http(
        "GET",
        sidecar.public
        + "/snoop?"
        + "&".join(f"path={p}" for p in paths)
        + f"&signal_pid={sidecar.process.pid}",
    )
    assert reply.status == 200, reply.text
    found = reply.json()
    for path in paths:
        assert found[path].startswith("refused"), (path, found[path])
    assert found["signal"].startswith("refused"), found["signal"]
    assert found["environment"] == []
    assert found["own_settings"] == {"mine": "own value"}
    assert found["own_file"] == "mine"
    confinement = process_of(sidecar, "snoops")["confinement"]
    assert "landlock" in confinement and "scoped" in confinement, confinement


def test_a_fork_bomb_is_bounded_by_the_process_limit(start: Callable[..., Sidecar]) -> None:
    sidecar = start("forks", plugins.FORK_BOMB, args=["--isolated-processes", "32"])
    with well_behaved(sidecar) as failures:
        reply = sidecar.get("/fork", timeout=60)
        assert reply.status == 200, reply.text
        outcome = reply.json()
        assert outcome["refused"] == "BlockingIOError", outcome
        assert outcome["started"] < 32, outcome
    assert failures == [], failures[:5]
    pid = process_of(sidecar, "forks")["pid"]
    # the forked children live in the plugin's session: they end with its process
    sidecar.write_plugin("forks", plugins.FORK_BOMB + "\n# changed\n")
    wait_for(lambda: process_of(sidecar, "forks")["pid"] not in (None, pid), timeout=30, what="the reload")
    wait_for(lambda: not _session_members(pid), timeout=30, what="the forked children ended")


def _session_members(session: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # the session id
            members.append(int(entry))
    return members


def test_events_wait_in_the_queue_while_the_process_restarts(start: Callable[..., Sidecar]) -> None:
    sidecar = start("segfaults", plugins.SEGFAULT_IN_ROUTE)
    pid = process_of(sidecar, "counter_isolated")["pid"]
    os.kill(pid, 9)
    # once the sidecar knows (a batch sent to a process in the instant it dies is that batch's
    # failure, as a callback failing in-process)
    wait_for(lambda: process_of(sidecar, "counter_isolated")["state"] == "restarting", what="the end noticed")
    for _ in range(5):
        assert sidecar.post_event("monitoring_event", probe_points()).status == 202
    wait_for(lambda: counted(sidecar, "/count-isolated") >= 25, timeout=30, what="the queued points")
    process = process_of(sidecar, "counter_isolated")
    assert process["restarts"] == 1 and process["lastExit"]["reason"] == "killed by SIGKILL"
    queue = sidecar.plugin("counter_isolated")["classes"][0]
    assert queue["failed"] == 0 and queue["dropped"] == 0, queue


def test_forged_answers_on_the_socket_get_500_and_garbage_ends_the_process(
    start: Callable[..., Sidecar],
) -> None:
    sidecar = start("forges", plugins.FORGES_FRAMES)
    with well_behaved(sidecar) as failures:
        # calls are numbered per process; the route calls of this process so far: none, so the
        # first forged call answers itself (call 1), the next call 2
        split = sidecar.get("/forge/split?call=1")
        assert split.status == 500, split
        assert "stolen" not in str(split.headers) and b"forged" not in split.body
        status = sidecar.get("/forge/status?call=2")
        assert status.status == 500, status
        garbage = sidecar.get("/forge/garbage?call=3")
        assert garbage.status == 503, garbage.text
        wait_for(lambda: process_of(sidecar, "forges")["state"] == "running", timeout=30, what="the restart")
    assert failures == [], failures[:5]
    assert sidecar.metric("luna_plugin_process_exits_total", plugin="forges", reason="protocol") == 1


def test_at_least_once_reaches_the_process_with_its_context_and_retry_later(
    sidecar_factory: Callable[..., Sidecar], tmp_path: Any
) -> None:
    sidecar = sidecar_factory(
        plugins={"retries": plugins.RETRIES_ONCE},
        active=["retries"],
        args=["--isolate", "retries", "--delivery", "at-least-once", "--queue-dir", str(tmp_path / "queues")],
    )
    assert sidecar.post_event("monitoring_event", probe_points(3)).status == 202
    seen = wait_for(lambda: len(s := sidecar.get("/seen").json()) >= 2 and s, timeout=30, what="the retry")
    first, second = seen[0], seen[1]
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["id"] == second["id"] and second["points"] == 3
    assert second["at"] - first["at"] >= 0.5, "retried no sooner than the plugin asked"


def test_a_reload_keeps_the_process_series_and_an_unload_removes_them(
    sidecar_factory: Callable[..., Sidecar], tmp_path: Any
) -> None:
    active = tmp_path / "active"
    active.write_text("counter_isolated")
    sidecar = sidecar_factory(
        plugins={"counter_isolated": plugins.counter("/count-isolated")},
        args=["--active-file", str(active), "--isolate", "counter_isolated"],
    )
    first = process_of(sidecar, "counter_isolated")["pid"]
    sidecar.write_plugin("counter_isolated", plugins.counter("/count-isolated") + "\n# v2\n")
    wait_for(
        lambda: process_of(sidecar, "counter_isolated")["pid"] not in (None, first), timeout=30, what="v2"
    )
    # the old version retires after the new one runs: its end must not take the new one's gauges
    wait_for(lambda: not _session_members(first), timeout=30, what="the old process gone")
    assert sidecar.metric("luna_plugin_process_up", plugin="counter_isolated") == 1
    wait_for(
        lambda: sidecar.metric("luna_plugin_process_resident_memory_bytes", plugin="counter_isolated") > 0,
        what="the new process's memory",
    )
    active.write_text("")
    wait_for(lambda: "counter_isolated" not in sidecar.plugins(), timeout=30, what="the unload")
    assert not {name for name in sidecar.series_of("counter_isolated") if "process" in name}
