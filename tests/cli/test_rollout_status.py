"""`luna-plugins rollout status`: what it prints of status.rollout, each query's figure included."""

from __future__ import annotations

from luna_cli.rollout import describe


def test_the_status_lists_each_judgement_and_its_queries_figures() -> None:
    status = {
        "rollout": {
            "phase": "Held",
            "step": 0,
            "percent": 25,
            "canaryHash": "2" * 64,
            "stableHash": "1" * 64,
            "canaryPods": ["handlers-1"],
            "canaryPodCount": 1,
            "failures": 0,
            "reason": "errors: no value (Prometheus could not be reached: ClientConnectorError)",
            "analyses": [
                {
                    "at": "2026-12-08T00:00:00.000000Z",
                    "step": 0,
                    "verdict": "Inconclusive",
                    "message": "errors: no value (...); 0.0% failed on pod handlers-1",
                    "queries": [
                        {"name": "errors", "verdict": "Inconclusive"},
                        {"name": "latency", "verdict": "Successful", "value": "0.12"},
                    ],
                }
            ],
        }
    }
    printed = describe("sender", status).splitlines()
    assert printed[0] == "LunaPlugin sender: Held (step 1, 25% of the pods)"
    assert printed[-2:] == ["    query errors: Inconclusive, no value", "    query latency: Successful, 0.12"]
