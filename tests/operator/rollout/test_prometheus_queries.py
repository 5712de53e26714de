"""Rollout queries against a real Prometheus (built from its Go module, see tests/support/prometheus.py)
scraping a gauge this test serves: a good value on the canary pod passes the judgement, a bad one
fails it, and with Prometheus stopped the judgement is inconclusive and the step is held. Then the
bounds of the client against a stand-in that answers too slowly or too much."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from luna_operator.prometheus import PrometheusClient
from luna_operator.rollout.canary_pods import choose_canary_pods
from luna_operator.rollout.planner import RolloutPlanner
from luna_operator.rollout.queries import QueryContext, QueryError, fill
from tests.operator.rollout.planning import CANARY, PODS, judged, rollout
from tests.support.prometheus import SCRAPE_WAIT, Prometheus, start_prometheus
from tests.support.sidecar_harness import HOST

#: the pod the planner puts the canary on (50 % of PODS, ranked by the plugin and the canary's code)
(CANARY_POD,) = choose_canary_pods(f"uid-sender/{CANARY}", list(PODS), 50, ())
(STABLE_POD,) = set(PODS) - {CANARY_POD}
QUERY = {
    "name": "canary-errors",
    # the canary's pod only: the stable pod's value is bad all along
    "query": "max(max_over_time(luna_test_errors{pod=~$canaryPods, service=$service}[$window]))",
    "maxValue": 1,
}


class Gauge:
    """``luna_test_errors`` per pod, served at /metrics on a loopback port."""

    def __init__(self) -> None:
        self.values = {pod: 100.0 for pod in PODS}

    async def metrics(self, _: web.Request) -> web.Response:
        lines = ["# TYPE luna_test_errors gauge"]
        lines += [f'luna_test_errors{{pod="{pod}",service="handlers"}} {v}' for pod, v in self.values.items()]
        return web.Response(text="\n".join(lines) + "\n")


async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def gauge() -> AsyncIterator[tuple[Gauge, str]]:
    found = Gauge()
    app = web.Application()
    app.router.add_get("/metrics", found.metrics)
    async for url in serve(app):
        yield found, url


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: canary\n    static_configs: [{{targets: ['{target.removeprefix('http://')}']}}]\n"
        )
        started.append(start_prometheus(config, tmp_path))
        return started[-1]

    yield start
    for running in started:
        running.stop()


async def scraped(client: PrometheusClient, pod: str, value: float) -> None:
    """Wait until Prometheus holds ``value`` as ``pod``'s latest sample."""
    expression = f'luna_test_errors{{pod="{pod}"}}'
    deadline = asyncio.get_running_loop().time() + SCRAPE_WAIT
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await client.query(expression)
            if last == [value]:
                return
        except QueryError as exc:
            last = exc
        await asyncio.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape {pod}={value}: {last}")


async def test_a_real_prometheus_passes_fails_and_when_stopped_holds_the_rollout(
    gauge: tuple[Gauge, str], prometheus_for: Any
) -> None:
    values, target = gauge
    prometheus = await asyncio.to_thread(prometheus_for, target)
    client = PrometheusClient(prometheus.url, timeout=5)
    try:
        values.values[CANARY_POD] = 0.25
        await scraped(client, CANARY_POD, 0.25)
        good = await judged(RolloutPlanner(client), rollout([QUERY]))
        status = good.outcome.rollout
        assert status is not None and status["phase"] == "Progressing" and status["step"] == 1, status
        assert status["analyses"][-1]["queries"] == [
            {"name": "canary-errors", "verdict": "Successful", "value": "0.25"}
        ]

        values.values[CANARY_POD] = 7.0
        await scraped(client, CANARY_POD, 7.0)
        bad = await judged(RolloutPlanner(client), rollout([QUERY]))
        status = bad.outcome.rollout
        assert status is not None and status["phase"] == "RolledBack", status
        assert status["reason"].startswith("canary-errors: 7 above 1")

        # Prometheus reads a filled-in value as the string it stands in, however hostile: the
        # injected `or vector(1)` never runs, and a pod name's dot matches only a dot
        hostile = QueryContext(
            namespace="shop",
            service='handlers"} or vector(1) #\\',
            plugin="sender",
            module="sender",
            canary_pods=[STABLE_POD.replace("-", "."), CANARY_POD],
            stable_pods=[],
            canary_hash=CANARY,
            stable_hash="",
            window_seconds=5,
        )
        for template in (
            "count(luna_test_errors{service=$service}) or vector(0)",
            'count(luna_test_errors{service="$service"}) or vector(0)',
            "count(luna_test_errors{service='x$service'}) or vector(0)",
        ):
            assert await client.query(fill(template, hostile)) == [0.0], template
        by_pod = "sum by (pod) (luna_test_errors{pod=~$canaryPods})"
        assert await client.query(fill(by_pod, hostile)) == [values.values[CANARY_POD]]

        # a query Prometheus refuses: inconclusive, with its reason
        refused = {**QUERY, "query": "max(luna_test_errors{pod=~$canaryPods}"}
        held = await judged(RolloutPlanner(client), rollout([refused]))
        status = held.outcome.rollout
        assert status is not None and status["phase"] == "Held", status
        assert "Prometheus refused the query" in status["reason"]

        await asyncio.to_thread(prometheus.stop)
        held = await judged(RolloutPlanner(client), rollout([QUERY], onInconclusive="Hold"))
        status = held.outcome.rollout
        assert status is not None and status["phase"] == "Held" and status["failures"] == 0, status
        assert "canary-errors: no value (Prometheus could not be reached" in status["reason"]
        assert status["analyses"][-1]["queries"] == [{"name": "canary-errors", "verdict": "Inconclusive"}]
        rolled_back = await judged(RolloutPlanner(client), rollout([QUERY], onInconclusive="Rollback"))
        assert rolled_back.outcome.rollout is not None
        assert rolled_back.outcome.rollout["phase"] == "RolledBack"
    finally:
        await client.close()


async def test_an_answer_too_slow_too_big_or_not_prometheus_is_a_query_error() -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({})

    async def huge(_: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse()
        await reply.prepare(_)
        chunk = b'{"status":"success","data":{"resultType":"vector","result":[' + b" " * 65536
        for _round in range(40):  # 2.5 MiB, no length announced
            await reply.write(chunk)
        return reply

    async def page(_: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    app = web.Application()
    for name, handler in (("slow", slow), ("huge", huge), ("page", page)):
        app.router.add_post(f"/{name}/api/v1/query", handler)
    async for url in serve(app):
        for name, expected in (
            ("slow", r"did not answer within 0\.5 s"),
            ("huge", "larger than 1048576 bytes"),
            ("page", "HTTP 502"),
        ):
            client = PrometheusClient(f"{url}/{name}/", timeout=0.5 if name == "slow" else 5)
            started = asyncio.get_running_loop().time()
            try:
                with pytest.raises(QueryError, match=expected):
                    await client.query("up")
                assert asyncio.get_running_loop().time() - started < 5
            finally:
                await client.close()
