"""What no client can do to the metrics listener (``/metrics``, ``/healthz``, ``/readyz``), against
a real sidecar process: it has caps and deadlines of its own, so hostile clients on its port are
refused and forgotten, and a flood of the route and admin listeners never reaches it."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from tests.support import hostile_plugins as hostile
from tests.support import raw_http as raw
from tests.support.sidecar_harness import Sidecar, http, wait_for

PROBE_CAP = 8


def refused(sidecar: Sidecar, reason: str, listener: str = "metrics") -> float:
    return sidecar.metric("luna_http_refused_total", listener=listener, reason=reason)


def probes_answer(sidecar: Sidecar) -> None:
    for path in ("/healthz", "/readyz"):
        reply = http("GET", sidecar.metrics_url + path, timeout=15)
        assert reply.status == 200, (path, reply.status, reply.text)
    reply = http("GET", sidecar.metrics_url + "/metrics", timeout=15)
    assert reply.status == 200 and "luna_http_refused_total" in reply.text


def exchange(url: str, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything answered until the server closes."""
    sock = raw.connect(url)
    try:
        with contextlib.suppress(OSError):  # the server may close while we still send
            sock.sendall(request)
        return raw.read_all(sock)
    finally:
        sock.close()


@pytest.fixture
def sidecar(sidecar_factory) -> Sidecar:
    return sidecar_factory(
        plugins={"good_routes": hostile.GOOD_ROUTES},
        active=["good_routes"],
        args=["--metrics-max-connections", str(PROBE_CAP), "--header-timeout", "1"],
    )


def test_half_open_connections_on_the_probe_port_are_refused_and_released(sidecar_factory) -> None:
    # a header deadline long enough that the connections are all open before the first expires
    sidecar = sidecar_factory(
        plugins={"good_routes": hostile.GOOD_ROUTES},
        active=["good_routes"],
        args=["--metrics-max-connections", str(PROBE_CAP), "--header-timeout", "3"],
    )
    pid = sidecar.process.pid
    fds_before = raw.fds(pid)
    answers = raw.half_open_answers([sidecar.metrics_url], 3 * PROBE_CAP, path="/healthz")
    statuses = [answer[9:12] for answer in answers]
    assert set(statuses) == {b"408", b"503"}, statuses
    assert statuses[:PROBE_CAP] == [b"408"] * PROBE_CAP, "the first ones held until their deadline"
    probes_answer(sidecar)
    assert refused(sidecar, "too_many_connections") == statuses.count(b"503")
    assert refused(sidecar, "header_timeout") == statuses.count(b"408")
    wait_for(lambda: raw.fds(pid) <= fds_before + 2, what="the connections' descriptors released")


def test_a_trickled_probe_request_gets_408(sidecar: Sidecar) -> None:
    sock = raw.connect(sidecar.metrics_url)
    answer = b""
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break  # closed on us: the answer is waiting
            time.sleep(0.05)
        answer = raw.read_all(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    probes_answer(sidecar)
    assert refused(sidecar, "header_timeout") == 1


def test_oversized_and_odd_probe_requests_get_their_status_and_cost_nothing(sidecar: Sidecar) -> None:
    pid = sidecar.process.pid
    rss_before = raw.rss_kib(pid)
    url = sidecar.metrics_url
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"h" * (24 << 20) + b"\r\n\r\n"
    cases = [
        (f"GET /healthz?{'a' * 3000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), b"414"),
        (huge, b"431"),
        (b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(80)) + b"\r\n", b"431"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n" + b"b" * 10000, b"413"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", b"405"),
        (b"GET /plugins HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", b"400"),
        (b"\x00\x01\x02\xff" * 64, b"400"),
    ]
    for request, status in cases:
        answer = exchange(url, request)
        assert answer.startswith(b"HTTP/1.1 " + status), (status, request[:80], answer[:200])
    head = exchange(url, b"HEAD /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n"), head
    grown = raw.rss_kib(pid) - rss_before
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB"
    probes_answer(sidecar)
    assert refused(sidecar, "url_too_long") == 1
    assert refused(sidecar, "headers_too_large") == 2
    assert refused(sidecar, "body_too_large") == 1
    assert refused(sidecar, "malformed") == 2


def test_probes_answer_while_the_route_and_admin_listeners_are_full(sidecar_factory) -> None:
    cap = 40
    sidecar = sidecar_factory(
        plugins={"good_routes": hostile.GOOD_ROUTES},
        active=["good_routes"],
        args=["--max-connections", str(cap), "--header-timeout", "60"],
    )
    held: list[socket.socket] = []
    try:
        for url in (sidecar.public, sidecar.admin):
            for _ in range(cap):
                sock = raw.connect(url)
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # held: headers never end
                held.append(sock)
            # the cap is reached: one more is refused at once
            assert exchange(url, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503")
        probes_answer(sidecar)
        assert refused(sidecar, "too_many_connections", "routes") == 1
        assert refused(sidecar, "too_many_connections", "admin") == 1
        assert refused(sidecar, "too_many_connections") == 0
    finally:
        for sock in held:
            sock.close()
    assert sidecar.get("/hello").text == "hello"
