"""The intake contract (docs/openapi/intake.yaml) holds for a running sidecar process: schemathesis
generates bodies from the document, valid and invalid ones, sends them to the real intake and
checks each answer against the document (status, content type, schema). It fuzzes the intake
too: no 5xx, no crash, every error a JSON object with an ``error`` message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.sidecar_harness import Sidecar, http, start_sidecar

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "intake.yaml"

#: one plugin per event name, so every accepted batch is queued somewhere
LISTENERS = """
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin

class Points(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        pass

class Events(BaseEventSendingPlugin):
    async def sendEvents(self, *args, **kwargs):
        pass
"""

schema = schemathesis.openapi.from_path(DOCUMENT)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=120, database="none"
)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    running = start_sidecar(
        tmp_path_factory.mktemp("contract"), plugins={"listeners": LISTENERS}, active=["listeners"]
    )
    yield running
    assert running.stop() == 0, running.log()[-3000:]
    assert "Traceback" not in running.log()


@schema.parametrize()
def test_the_running_sidecar_keeps_the_intake_contract(case: schemathesis.Case, sidecar: Sidecar) -> None:
    response = case.call(base_url=sidecar.admin)
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert sidecar.process.poll() is None, "the sidecar died"


def test_unknown_event_names_and_paths_get_a_json_404(sidecar: Sidecar) -> None:
    for path in ("/events/monitoring", "/events/", "/nowhere", "/events/monitoring_event/x"):
        reply = http("POST", sidecar.admin + path, body={"points": []})
        assert reply.status == 404 and reply.json()["error"], (path, reply.text)
