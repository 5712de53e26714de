"""Rollout queries to a Prometheus that needs more than a URL, against real processes: one
serving ``https://`` with a certificate of a private CA (``--prometheus-ca-file``), and one behind
a proxy that wants a bearer token (``--prometheus-token-file``, read at each query). Whatever keeps
a query from its answer (an untrusted certificate, a refused or unusable token) is a
:class:`QueryError`, which the judgement counts as inconclusive."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from luna_operator.pki import issue_serving, make_ca
from luna_operator.prometheus import PrometheusClient
from luna_operator.rollout.queries import QueryError
from tests.operator.rollout.test_prometheus_queries import serve
from tests.support.prometheus import Prometheus, start_prometheus
from tests.support.sidecar_harness import HOST

DAY = datetime.timedelta(days=1)


def plain_config(tmp_path: Path) -> Path:
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {evaluation_interval: 1s}\n")
    return config


@pytest.fixture
def tls_prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, Path]]:
    ca = make_ca("luna-test-prometheus-ca", DAY)
    serving = issue_serving(ca, [HOST], DAY)
    for name, data in (("ca.crt", ca.cert), ("tls.crt", serving.cert), ("tls.key", serving.key)):
        (tmp_path / name).write_bytes(data)
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        f"tls_server_config:\n  cert_file: {tmp_path / 'tls.crt'}\n  key_file: {tmp_path / 'tls.key'}\n"
    )
    prometheus = start_prometheus(
        plain_config(tmp_path), tmp_path, web_config=web_config, ca_file=tmp_path / "ca.crt"
    )
    yield prometheus, tmp_path / "ca.crt"
    prometheus.stop()


async def test_an_https_prometheus_is_asked_with_the_ca_given_and_refused_without_it(
    tls_prometheus: tuple[Prometheus, Path], tmp_path: Path
) -> None:
    prometheus, ca_file = tls_prometheus
    assert prometheus.url.startswith("https://")
    trusting = PrometheusClient(prometheus.url, timeout=5, ca_file=ca_file)
    untrusting = PrometheusClient(prometheus.url, timeout=5)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    broken = PrometheusClient(prometheus.url, timeout=5, ca_file=garbage)
    missing = PrometheusClient(prometheus.url, timeout=5, ca_file=tmp_path / "nowhere.pem")
    try:
        assert await trusting.query("vector(3)") == [3.0]
        with pytest.raises(QueryError, match="certificate is not trusted"):
            await untrusting.query("vector(3)")
        with pytest.raises(QueryError, match=r"CA file .* cannot be used"):
            await broken.query("vector(3)")
        with pytest.raises(QueryError, match=r"CA file .* cannot be used"):
            await missing.query("vector(3)")
        (tmp_path / "nowhere.pem").write_bytes(ca_file.read_bytes())  # the Secret mounted later
        assert await missing.query("vector(4)") == [4.0]
    finally:
        for client in (trusting, untrusting, broken, missing):
            await client.close()


class TokenProxy:
    """Forwards ``POST /api/v1/query`` to a Prometheus when the request bears ``token``."""

    def __init__(self, upstream: str, token: str) -> None:
        self.upstream, self.token = upstream, token
        self.seen: list[str] = []

    async def query(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        self.seen.append(authorization)
        if authorization != f"Bearer {self.token}":
            return web.Response(status=401, text="unauthorized")
        form = await request.post()
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.upstream}/api/v1/query", data=dict(form)) as reply:
                return web.Response(
                    status=reply.status, body=await reply.read(), content_type="application/json"
                )


@pytest.fixture
async def token_proxy(tmp_path: Path) -> AsyncIterator[tuple[TokenProxy, str]]:
    prometheus = await asyncio.to_thread(start_prometheus, plain_config(tmp_path), tmp_path)
    proxy = TokenProxy(prometheus.url, "first-token")
    app = web.Application()
    app.router.add_post("/api/v1/query", proxy.query)
    try:
        async for url in serve(app):
            yield proxy, url
    finally:
        await asyncio.to_thread(prometheus.stop)


async def test_the_token_file_is_sent_read_at_each_query_and_a_bad_one_never_leaves(
    token_proxy: tuple[TokenProxy, str], tmp_path: Path
) -> None:
    proxy, url = token_proxy
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    client = PrometheusClient(url, timeout=5, token_file=token_file)
    anonymous = PrometheusClient(url, timeout=5)
    try:
        assert await client.query("vector(5)") == [5.0]
        proxy.token = "second-token"  # the proxy rotates its token, then the Secret follows
        with pytest.raises(
            QueryError, match=r"refused the operator's credentials \(HTTP 401\): check the token"
        ):
            await client.query("vector(5)")
        token_file.write_text("second-token")
        assert await client.query("vector(6)") == [6.0]  # no restart: read at each query
        with pytest.raises(QueryError, match="it needs a token"):
            await anonymous.query("vector(5)")
        asked = len(proxy.seen)
        for hostile in ("second-token\r\nX-Injected: 1", "", "  \n", "tok\x00en", "é" * 10, "x" * 20_000):
            token_file.write_text(hostile)
            with pytest.raises(QueryError, match="holds no usable token"):
                await client.query("vector(5)")
        token_file.unlink()
        with pytest.raises(QueryError, match=r"token file .* cannot be read"):
            await client.query("vector(5)")
        assert len(proxy.seen) == asked  # none of them was sent
    finally:
        await client.close()
        await anonymous.close()
