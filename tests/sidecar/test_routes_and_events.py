"""Plugin routes and event delivery through the real sidecar process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.plugin_sources import RECORDER, SENDING_RECORDER
from tests.support.sidecar_harness import http, points, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"


def read_lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_example_plugins_serve_routes_with_variables_verbs_and_json(sidecar_factory) -> None:
    plugins = {name: (EXAMPLES / f"{name}.py").read_text() for name in ("kettle", "route_digest")}
    sidecar = sidecar_factory(plugins=plugins, active=["kettle", "route_digest"])
    state = sidecar.get("/kettle")
    assert state.status == 200 and state.headers["Content-Type"].startswith("application/json")
    assert state.json()["litres"] == 1.0
    assert sidecar.get("/kettle/version").text == "kettle 1.0"
    cups = sidecar.get("/kettle/cups/3?sugar=2&sugar=3")
    assert cups.json() == {"cups": 3, "sugar": "2"}
    refill = http("POST", sidecar.public + "/kettle", body={"litres": 2})
    assert (refill.status, refill.json()) == (201, {"refilled": 2})
    bad_json = http("POST", sidecar.public + "/kettle", raw=b"{nope")
    assert bad_json.status == 400 and "not valid JSON" in bad_json.json()["error"]
    not_allowed = http("DELETE", sidecar.public + "/kettle")
    assert not_allowed.status == 405 and set(not_allowed.headers["Allow"].split(", ")) == {"GET", "POST"}
    missing = sidecar.get("/teapot")
    assert missing.status == 404 and "no plugin route" in missing.json()["error"]
    # the runtime turned each request into a requests point, which the tally plugin received
    digest = wait_for(
        lambda: (d := sidecar.get("/digest").json()["requests"]).get("GET:/kettle/cups/{n} 200") and d,
        what="route points to reach the tally plugin",
    )
    assert digest["POST:/kettle 201"] == 1 and digest["DELETE:unmatched 405"] == 1
    assert sidecar.get("/kettle", headers={"Luna-Request-Id": "abc"}).headers["Luna-Request-Id"] == "abc"
    assert sidecar.metric("luna_plugin_route_requests_total", plugin="kettle", status_code="200") >= 3
    assert (
        sidecar.metric("luna_requests_total", route="GET:/kettle", luna_service="handlers", status_code="200")
        >= 1
    )


def test_events_reach_subscribed_plugins_with_their_arguments(sidecar_factory, tmp_path: Path) -> None:
    monitoring_out, sending_out = tmp_path / "points.jsonl", tmp_path / "events.jsonl"
    sidecar = sidecar_factory(
        plugins={"recorder": RECORDER, "sending_recorder": SENDING_RECORDER},
        active=["recorder", "sending_recorder"],
        settings={"recorder": {"out": str(monitoring_out)}, "sending_recorder": {"out": str(sending_out)}},
    )
    reply = sidecar.post_event("monitoring_event", points(5, series="custom_series"))
    assert (reply.status, reply.json()) == (202, {"accepted": 5, "queued": 1, "dropped": 0})
    body = {
        "events": [{"id": 1}, {"kind": "raw", "id": 2}],
        "handlerId": "h",
        "accountId": "a",
        "requestId": "r",
        "createEventTime": "2026-01-01T00:00:00Z",
        "endEventTime": "2026-01-01T00:00:01Z",
    }
    assert sidecar.post_event("sending_event", body).json() == {"accepted": 2, "queued": 1, "dropped": 0}
    batches = wait_for(lambda: read_lines(monitoring_out), what="points to be recorded")
    assert [p["series"] for p in batches[0]] == ["custom_series"] * 5
    assert batches[0][0]["tags"]["route"] == "POST:/6/handlers/x/events"
    sent = wait_for(lambda: read_lines(sending_out), what="events to be recorded")[0]
    assert sent["kinds"] == ["event", "raw"] and sent["events"][1] == {"kind": "raw", "id": 2}
    assert (sent["handlerId"], sent["accountId"], sent["requestId"]) == ("h", "a", "r")
    assert sent["logger"] == "luna.plugins.sending_recorder"
    assert sidecar.metric("luna_monitoring_points_total", series="custom_series") == 5
    assert sidecar.stop() == 0
    assert (tmp_path / "points.jsonl.closed").read_text() == "closed"


def test_active_list_from_the_original_environment_variable(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "points.jsonl"
    sidecar = sidecar_factory(
        plugins={"recorder": RECORDER, "unused": RECORDER},
        settings={"recorder": {"out": str(out)}},
        env={"LUNA_HANDLERS_ACTIVE_PLUGINS": "[recorder]"},
    )
    assert list(sidecar.plugins()) == ["recorder"]
