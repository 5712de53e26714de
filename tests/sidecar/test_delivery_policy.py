"""A LunaPlugin's ``spec.delivery`` on real sidecar processes in cluster mode (real operator, real
API server): the plugin's policy replaces the sidecar's default for that plugin only, and a plugin
asking for at-least-once on a sidecar without a queue directory fails alone, saying why.

The sink plugin writes one line per attempt to a file named after its module; a control file
decides whether it fails. Every wait is on a condition.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.operator_harness import Cluster, plugin_manifest
from tests.support.sidecar_harness import Sidecar, start_cluster_sidecar, wait_for

SINK = """
import json, os
from pathlib import Path

from luna_plugins.delivery import delivery_context
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin

CONTROL = Path(os.environ["LUNA_TEST_CONTROL"])


class Sink(BaseEventSendingPlugin):
    async def sendEvents(self, events, handlerId, accountId, requestId, createEventTime,
                         endEventTime, logger, *args, **kwargs):
        delivery = delivery_context()
        failing = (CONTROL / "fail").exists()
        line = {"req": requestId, "id": delivery.id if delivery else None, "ok": not failing}
        with open(CONTROL / (__name__ + ".jsonl"), "a") as sink:
            sink.write(json.dumps(line) + "\\n")
        if failing:
            raise RuntimeError("the third party is down")
"""

#: at-least-once with quick retries, so a test does not wait for the defaults' backoff
DURABLE = {
    "mode": "at-least-once",
    "retry": {"initialBackoff": 0.01, "maxBackoff": 0.05},
    "breaker": {"openSeconds": 0.2},
}


def event(index: int) -> dict[str, Any]:
    return {
        "events": [{"n": index}],
        "handlerId": "h",
        "accountId": "a",
        "requestId": f"r{index}",
        "createEventTime": "2026-12-07T00:00:00+00:00",
        "endEventTime": "2026-12-07T00:00:01+00:00",
    }


@pytest.fixture
def control(tmp_path: Path) -> Path:
    path = tmp_path / "control"
    path.mkdir()
    return path


@pytest.fixture
def sidecars(kube: Any, namespace: str, tmp_path: Path, control: Path) -> Iterator[Callable[..., Sidecar]]:
    """Sidecars in cluster mode for the test's namespace (service ``handlers``)."""
    started: list[Sidecar] = []

    def factory(pod: str, *args: str) -> Sidecar:
        workdir = tmp_path / f"sidecar-{pod}-{len(started)}"
        sidecar = start_cluster_sidecar(
            kube, namespace, workdir, pod, *args, env={"LUNA_TEST_CONTROL": str(control)}
        )
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        if sidecar.process.poll() is None:
            sidecar.stop()


def lines(control: Path, module: str) -> list[dict[str, Any]]:
    sink = control / f"{module}.jsonl"
    if not sink.exists():
        return []
    return [json.loads(line) for line in sink.read_text().splitlines() if line.endswith("}")]


def delivered(control: Path, module: str) -> list[str]:
    seen: dict[str, None] = {}
    for line in lines(control, module):
        if line["ok"]:
            seen.setdefault(line["req"], None)
    return list(seen)


def state(sidecar: Sidecar, module: str) -> dict[str, Any] | None:
    return sidecar.plugins().get(module)


@pytest.mark.kube
def test_the_plugins_policy_replaces_the_default_for_it_alone(
    cluster: Cluster, operator: Any, sidecars: Callable[..., Sidecar], control: Path, tmp_path: Path
) -> None:
    ns = cluster.namespace
    queue_dir = tmp_path / "queues"
    # the sidecar's default is at-most-once; it has a queue directory, as the chart always gives it
    sidecar = sidecars("pod-a", "--queue-dir", str(queue_dir))
    cluster.apply(plugin_manifest("durable-sink", ns, SINK, delivery=DURABLE))
    cluster.apply(plugin_manifest("plain-sink", ns, SINK))
    wait_for(
        lambda: all(
            (state(sidecar, m) or {}).get("state") == "running" for m in ("durable_sink", "plain_sink")
        ),
        timeout=20,
        what="both sinks running",
    )
    (durable_class,) = sidecar.plugin("durable_sink")["classes"]
    (plain_class,) = sidecar.plugin("plain_sink")["classes"]
    assert durable_class["delivery"]["mode"] == "at-least-once" and "delivery" not in plain_class

    (control / "fail").write_text("")
    for index in range(5):
        reply = sidecar.post_event("sending_event", event(index))
        assert reply.status == 202, reply.text
    wait_for(lambda: len(lines(control, "plain_sink")) == 5, what="each batch tried once by the plain sink")
    wait_for(lambda: len(lines(control, "durable_sink")) >= 5, what="the durable sink retrying")
    # SIGKILL mid-outage: what was accepted is on disk for the next process
    sidecar.process.send_signal(signal.SIGKILL)
    sidecar.process.wait(timeout=30)
    (control / "fail").unlink()
    again = sidecars("pod-a", "--queue-dir", str(queue_dir))
    wait_for(
        lambda: delivered(control, "durable_sink") == [f"r{index}" for index in range(5)],
        timeout=30,
        what="every accepted batch delivered to the durable sink, in order",
    )
    ids: dict[str, set[str]] = {}
    for line in lines(control, "durable_sink"):
        ids.setdefault(line["req"], set()).add(line["id"])
    assert all(len(found) == 1 and None not in found for found in ids.values()), ids
    assert delivered(control, "plain_sink") == []  # at-most-once: the failed batches are gone
    assert again.metric("luna_plugin_delivery_queue_batches", plugin="durable_sink") == 0
    assert (queue_dir / "durable_sink").is_dir() and not (queue_dir / "plain_sink").exists()


@pytest.mark.kube
def test_at_least_once_without_a_queue_directory_fails_that_plugin_alone(
    cluster: Cluster, operator: Any, sidecars: Callable[..., Sidecar], control: Path
) -> None:
    ns = cluster.namespace
    sidecar = sidecars("pod-b")  # no --queue-dir
    cluster.apply(plugin_manifest("durable-sink", ns, SINK, delivery=DURABLE))
    cluster.apply(plugin_manifest("plain-sink", ns, SINK))
    failed = wait_for(
        lambda: (s := state(sidecar, "durable_sink")) is not None and s["state"] == "failed" and s,
        timeout=20,
        what="the durable sink failed",
    )
    assert "at-least-once" in failed["error"] and "no queue directory" in failed["error"], failed["error"]
    wait_for(lambda: (state(sidecar, "plain_sink") or {}).get("state") == "running", what="the other plugin")
    assert sidecar.post_event("sending_event", event(0)).status == 202
    wait_for(lambda: delivered(control, "plain_sink") == ["r0"], what="the other plugin served")
    # the LunaPlugin's status says why, from the pod's report
    status = wait_for(
        lambda: "no queue directory" in (s := cluster.status("durable-sink")).get("message", "") and s,
        timeout=20,
        what="the reason in the LunaPlugin's status",
    )
    assert status["loaded"] == "0/1"
    # the same plugin without spec.delivery loads: the failure was the policy's, not the code's
    cluster.apply(plugin_manifest("durable-sink", ns, SINK))
    wait_for(
        lambda: (state(sidecar, "durable_sink") or {}).get("state") == "running", timeout=20, what="reload"
    )


@pytest.mark.kube
def test_a_plugin_whose_third_party_is_down_shows_in_metrics_and_the_pods_report(
    cluster: Cluster, operator: Any, sidecars: Callable[..., Sidecar], control: Path, tmp_path: Path
) -> None:
    """What the chart's alerts and dashboard read: the first batch becomes a dead letter at once
    and opens the breaker for an hour, so the next ones wait."""
    ns = cluster.namespace
    sidecar = sidecars("pod-c", "--queue-dir", str(tmp_path / "queues"))
    down = {
        "mode": "at-least-once",
        "retry": {"maxElapsed": 0.001},
        "breaker": {"failures": 1, "openSeconds": 3600},
    }
    cluster.apply(plugin_manifest("durable-sink", ns, SINK, delivery=down))
    wait_for(
        lambda: (state(sidecar, "durable_sink") or {}).get("state") == "running", timeout=20, what="loaded"
    )
    (control / "fail").write_text("")
    for index in range(4):
        assert sidecar.post_event("sending_event", event(index)).status == 202
    wait_for(
        lambda: sidecar.metric("luna_plugin_dead_letters", plugin="durable_sink") == 1, what="a dead letter"
    )
    assert sidecar.metric("luna_plugin_delivery_breaker_state", plugin="durable_sink", state="open") == 1
    assert sidecar.metric("luna_plugin_delivery_breaker_state", plugin="durable_sink", state="closed") == 0
    assert sidecar.metric("luna_plugin_delivery_queue_batches", plugin="durable_sink") == 3
    wait_for(
        lambda: sidecar.metric("luna_plugin_delivery_oldest_batch_age_seconds", plugin="durable_sink") > 1,
        what="the backlog to age",
    )

    def reported() -> dict[str, Any] | None:
        for item in cluster.items("lunapluginruntimes"):
            for entry in item["spec"].get("plugins") or []:
                if entry["module"] == "durable_sink" and "delivery" in entry:
                    return dict(entry["delivery"])
        return None

    delivery = wait_for(
        lambda: (found := reported()) is not None and found.get("oldestBatchAgeSeconds", 0) >= 1 and found,
        timeout=20,
        what="the delivery figures in the pod's report",
    )
    assert (delivery["pending"], delivery["deadLetters"], delivery["breaker"]) == (3, 1, "open")


def test_an_unwritable_queue_directory_stops_an_at_least_once_sidecar_only(
    sidecar_factory: Callable[..., Sidecar], tmp_path: Path
) -> None:
    """With at-least-once by default the start fails; with at-most-once (the chart's default,
    which always passes --queue-dir) the sidecar starts, says why in its log, and only plugins
    asking for at-least-once would fail to load."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    unwritable = str(blocker / "queues")
    lenient = sidecar_factory(
        plugins={"sink": SINK},
        active=["sink"],
        args=["--queue-dir", unwritable],
        env={"LUNA_TEST_CONTROL": str(tmp_path)},
    )
    wait_for(lambda: (state(lenient, "sink") or {}).get("state") == "running", what="the at-most-once plugin")
    assert "cannot write the durable queues there" in lenient.log()
    strict = sidecar_factory(
        plugins={"sink": SINK},
        active=["sink"],
        args=["--queue-dir", unwritable, "--delivery", "at-least-once"],
        wait_ready=False,
    )
    assert strict.process.wait(timeout=30) != 0
    assert "cannot write the durable queues there" in strict.log()
