"""The user's own plugin examples (their API description, kept beside the project) must load and
work unchanged. The examples are read from that document at test time, never copied here."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.sidecar_harness import points, wait_for

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "plugins-seed.txt"
BUCKET_PORT = 5020  # the examples post to a bucket service here


def extract_examples(text: str) -> list[str]:
    """The example code blocks: indented text from an 'example:' line to the line that
    describes it ('This plugin demonstrates ...')."""
    blocks, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if current is None:
            if stripped.endswith("example:"):
                current = []
            continue
        if stripped.startswith("This plugin demonstrates"):
            blocks.append(textwrap.dedent("\n".join(current)).strip() + "\n")
            current = None
        else:
            current.append(line)
    return blocks


class BucketService(BaseHTTPRequestHandler):
    """Stand-in for the third-party bucket store the examples talk to."""

    objects: list[Any] = []
    buckets: list[str] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.startswith("/1/buckets?"):
            self.buckets.append(self.path)
            self.send_response(201)
        elif self.path.endswith("/objects"):
            self.objects.append(json.loads(body))
            self.send_response(201)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def bucket_service() -> Iterator[type[BucketService]]:
    try:
        server = ThreadingHTTPServer(("127.0.0.1", BUCKET_PORT), BucketService)
    except OSError as exc:
        pytest.skip(f"port {BUCKET_PORT} (used by the examples) is busy: {exc}")
    BucketService.objects, BucketService.buckets = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield BucketService
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(not SEED.exists(), reason="the user's plugin document is not beside the project")
@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once"])
def test_seed_examples_run_unchanged(sidecar_factory, bucket_service, tmp_path, delivery) -> None:
    examples = extract_examples(SEED.read_text())
    assert len(examples) == 3, "expected the monitoring, event-sending and background examples"
    monitoring, sending, background = examples
    assert "BaseRequestMonitoringPlugin" in monitoring and "sendEvents" in sending and "teapot" in background
    sidecar = sidecar_factory(
        plugins={
            "monitoring_example": monitoring,
            "sending_example": sending,
            "background_example": background,
        },
        active=["monitoring_example", "sending_example", "background_example"],
        # at-least-once: the same plugins, unchanged, behind durable queues
        args=["--delivery", delivery, "--queue-dir", str(tmp_path / "queues")],
    )
    states = {name: plugin["state"] for name, plugin in sidecar.plugins().items()}
    assert states == dict.fromkeys(states, "running"), sidecar.plugins()
    # Only the concrete monitoring class is instantiated, not the abstract base defined beside it.
    classes = [c["name"] for c in sidecar.plugin("monitoring_example")["classes"]]
    assert classes == ["RequestMonitoringPlugin"]
    # Each plugin created its bucket in initialize().
    assert len(bucket_service.buckets) == 2

    teapot = sidecar.get("/teapot")
    assert (teapot.status, teapot.text, teapot.headers["Content-Type"]) == (418, "I am teapot", "text/plain")
    version = sidecar.get("/teapot/version")
    assert (version.status, version.text) == (200, "T800")

    assert sidecar.post_event("monitoring_event", points(3)).status == 202
    reply = sidecar.post_event(
        "sending_event",
        {
            "events": [{"event_id": "e1", "face": {"score": 0.9}}, {"kind": "raw", "event_id": "e2"}],
            "handlerId": "h-1",
            "accountId": "acc-1",
            "requestId": "req-1",
            "createEventTime": "2026-11-24T00:00:00+00:00",
            "endEventTime": "2026-11-24T00:00:01+00:00",
        },
    )
    assert reply.status == 202 and reply.json()["queued"] == 1
    # 3 posted points plus the runtime's own points for the two teapot requests, plus one events document
    wait_for(lambda: len(bucket_service.objects) >= 6, what="the examples to post to the bucket service")
    sent = [obj for obj in bucket_service.objects if "handler_id" in obj]
    assert len(sent) == 1
    assert sent[0]["handler_id"] == "h-1" and sent[0]["Luna-Request-Id"] == "req-1"
    assert [event["event_id"] for event in sent[0]["events"]] == ["e1", "e2"]
    monitored = [obj for obj in bucket_service.objects if "tags" in obj]
    routes = sorted(str(obj["tags"]["route"]) for obj in monitored)
    assert routes.count("POST:/6/handlers/x/events") == 3
    assert "GET:/teapot" in routes and "GET:/teapot/version" in routes
    assert sidecar.stop() == 0
    assert "Traceback" not in sidecar.log()
