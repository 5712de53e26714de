"""The admin listener: its routing and answers, and the HTTP its small server speaks."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from luna_sidecar.engine.bus import EventBus
from luna_sidecar.observability.mapping import PointMetrics
from luna_sidecar.observability.metrics import RuntimeMetrics
from luna_sidecar.serving.admin_http import AdminEndpoints, EventIntake
from luna_sidecar.serving.admin_server import AdminServer
from luna_sidecar.serving.http_server import ListenerLimits, refused_counter
from tests.support.runtime import metric_value

BODY = json.dumps(
    {"points": [{"series": "requests", "eventTime": 1.5, "tags": {"route": "GET:/x"}}]}
).encode()
LIMIT = 1000


@pytest.fixture
async def server(runtime_metrics: RuntimeMetrics) -> AsyncIterator[AdminServer]:
    point_metrics = PointMetrics(
        overflow_counter=runtime_metrics.label_overflow,
        error_counter=runtime_metrics.point_errors,
        max_label_sets=10,
    )
    intake = EventIntake(
        bus=EventBus(point_metrics), metrics=runtime_metrics, max_body_bytes=LIMIT, max_items=5
    )
    admin = AdminServer(
        AdminEndpoints(intake, lambda: {"plugins": []}),
        keepalive_timeout=0.5,
        limits=ListenerLimits(header_timeout=1.0),
        refused=refused_counter(None),
    )
    await admin.start("127.0.0.1", 0)
    yield admin
    await admin.close()


@pytest.fixture
async def client(server: AdminServer) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        yield session


async def exchange(server: AdminServer, data: bytes, *, replies: int = 1) -> list[tuple[bytes, bytes]]:
    """Send raw bytes on one connection; read ``replies`` replies (head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    got = []
    for _ in range(replies):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = b"" if head.startswith(b"HTTP/1.1 100") else await reader.readexactly(length)
        got.append((head, body))
    writer.close()
    return got


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- what the endpoints answer ----------------------------------------------------------------------


async def test_intake_answers_202_with_counts(client: Any, registry: CollectorRegistry) -> None:
    async with client.post("/events/monitoring_event", data=BODY) as reply:
        assert reply.status == 202
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
        assert "Date" in reply.headers
        assert await reply.text() == json.dumps({"accepted": 1, "queued": 0, "dropped": 0})
    labels = {"event_name": "monitoring_event", "status_code": "202"}
    assert metric_value(registry, "luna_intake_requests_total", labels) == 1


async def test_plugins_are_listed(client: Any) -> None:
    async with client.get("/plugins") as reply:
        assert reply.status == 200 and await reply.json() == {"plugins": []}
    async with client.head("/plugins") as head:
        assert head.status == 200 and await head.read() == b""
        assert int(head.headers["Content-Length"]) == len(b'{"plugins": []}')


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/events/monitoring_event"),
        ("POST", "/events/"),
        ("POST", "/events/monitoring_event/more"),
        ("POST", "/plugins"),
        ("GET", "/plugins/"),
        ("GET", "/"),
        ("DELETE", "/anything"),
    ],
)
async def test_anything_else_is_a_json_404(client: Any, method: str, path: str) -> None:
    async with client.request(method, path) as reply:
        assert reply.status == 404
        assert await reply.json() == {"error": f"no such endpoint: {method} {path}"}


async def test_unknown_event_names_are_counted_as_unknown(client: Any, registry: CollectorRegistry) -> None:
    async with client.post("/events/nope", data=b"{}") as reply:
        assert reply.status == 404
        assert (await reply.json())["error"].startswith("unknown event name 'nope'")
    labels = {"event_name": "unknown", "status_code": "404"}
    assert metric_value(registry, "luna_intake_requests_total", labels) == 1


async def test_a_percent_encoded_path_and_a_query_are_understood(server: AdminServer) -> None:
    [(head, body)] = await exchange(server, post("/events/monitoring%5Fevent?x=1", BODY))
    assert head.startswith(b"HTTP/1.1 202 Accepted") and json.loads(body)["accepted"] == 1
    [(head, _)] = await exchange(
        server, post(f"http://127.0.0.1:{server.port}/events/monitoring_event", BODY)
    )
    assert head.startswith(b"HTTP/1.1 202"), "absolute form"


# -- HTTP ------------------------------------------------------------------------------------------


async def test_requests_on_one_connection_are_answered_in_order(server: AdminServer) -> None:
    pipelined = post("/events/monitoring_event", BODY) + b"GET /plugins HTTP/1.1\r\nHost: x\r\n\r\n"
    pipelined += post("/events/nope", b"{}")
    replies = await exchange(server, pipelined, replies=3)
    assert [head.split(b" ")[1] for head, _ in replies] == [b"202", b"200", b"404"]
    assert all(b"Connection: close" not in head for head, _ in replies)


async def test_connection_close_and_http_1_0_are_honoured(server: AdminServer) -> None:
    for request in (
        post("/events/monitoring_event", BODY, "Connection: close"),
        post("/events/monitoring_event", BODY).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request)
        data = await asyncio.wait_for(reader.read(), 10)  # the server closes: read() ends
        assert data.startswith(b"HTTP/1.1 202") and b"Connection: close" in data
        writer.close()


async def test_a_chunked_body_is_read(client: Any) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield BODY[:10]
        yield BODY[10:]

    async with client.post("/events/monitoring_event", data=pieces()) as reply:
        assert reply.status == 202


async def test_bodies_over_the_limit_get_the_intakes_413(client: Any, server: AdminServer) -> None:
    async with client.post("/events/monitoring_event", data=b" " * 2000) as reply:
        assert reply.status == 413
        assert (await reply.json())["error"] == f"body of 2000 bytes exceeds the limit of {LIMIT} bytes"

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * 600

    async with client.post("/events/monitoring_event", data=pieces()) as reply:
        assert reply.status == 413
        assert (await reply.json())["error"] == f"body exceeds the limit of {LIMIT} bytes"
    async with client.post("/events/monitoring_event", data=BODY) as reply:
        assert reply.status == 202, "the connection serves on"


async def test_expect_100_continue(server: AdminServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = post("/events/monitoring_event", b"", "Expect: 100-continue").replace(
        b"Content-Length: 0", f"Content-Length: {len(BODY)}".encode()
    )
    writer.write(head)
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(BODY)
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 202")
    writer.close()
    # too big: the final answer at once, and the connection closed
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        post("/events/monitoring_event", b"", "Expect: 100-continue").replace(
            b"Content-Length: 0", b"Content-Length: 5000"
        )
    )
    data = await asyncio.wait_for(reader.read(), 10)
    assert data.startswith(b"HTTP/1.1 413") and b"Connection: close" in data
    writer.close()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),
    ],
)
async def test_compressed_bodies_are_inflated(client: Any, encoding: str, encode: Any) -> None:
    headers = {"Content-Encoding": encoding}
    async with client.post("/events/monitoring_event", data=encode(BODY), headers=headers) as reply:
        assert reply.status == 202


async def test_compression_does_not_get_past_the_limit(client: Any) -> None:
    bomb = gzip.compress(b" " * 100_000)
    assert len(bomb) < LIMIT
    async with client.post(
        "/events/monitoring_event", data=bomb, headers={"Content-Encoding": "gzip"}
    ) as reply:
        assert reply.status == 413
    async with client.post(
        "/events/monitoring_event", data=b"junk", headers={"Content-Encoding": "gzip"}
    ) as reply:
        assert reply.status == 400 and "could not be decoded as gzip" in (await reply.json())["error"]
    async with client.post(
        "/events/monitoring_event", data=BODY, headers={"Content-Encoding": "br"}
    ) as reply:
        assert reply.status == 415 and "'br' is not supported" in (await reply.json())["error"]


async def test_malformed_requests_get_400_and_are_closed(server: AdminServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    assert data.startswith(b"HTTP/1.1 400") and b"malformed HTTP request" in data
    writer.close()


async def test_idle_connections_are_closed(server: AdminServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(reader.read(), 30) == b"", "closed without an answer"
    writer.close()
    assert not server.connections


async def test_a_request_whose_headers_do_not_come_in_time_gets_408(server: AdminServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /events/monitoring_event HTTP/1.1\r\n")  # and nothing more
    data = await asyncio.wait_for(reader.read(), 30)
    assert data.startswith(b"HTTP/1.1 408") and b"Connection: close" in data
    writer.close()
