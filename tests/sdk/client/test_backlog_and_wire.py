"""The sender's pure parts: the bounded backlog and the checks of what may be sent."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from typing import Any

import pytest

from luna_plugins.client import InvalidPointError, SenderSettings, admin_url
from luna_plugins_client.backlog import Backlog
from luna_plugins_client.wire import (
    checked_point,
    encode_event,
    encode_events,
    encode_metadata,
    encode_points,
)


def test_backlog_drops_the_oldest_waiting_and_counts_them() -> None:
    backlog: Backlog[int] = Backlog(3)
    for item in range(5):
        assert backlog.push(item)
    assert backlog.take(10) == [2, 3, 4]
    assert backlog.dropped == 2


def test_backlog_bound_counts_what_is_in_flight_and_given_back_keeps_order() -> None:
    backlog: Backlog[int] = Backlog(4)
    for item in range(4):
        backlog.push(item)
    taken = backlog.take(2)
    assert backlog.in_flight == 2 and backlog.waiting == 2
    backlog.push(4)  # room for 4 in all: the oldest *waiting* (2) goes, not what is on the wire
    assert backlog.dropped == 1 and backlog.waiting + backlog.in_flight == 4
    backlog.give_back(taken)
    assert backlog.take(10) == [0, 1, 3, 4]


def test_backlog_refuses_an_item_heavier_than_its_room() -> None:
    backlog: Backlog[str] = Backlog(10, weighed=True)
    assert not backlog.push("x" * 11)
    assert backlog.dropped == 11 and backlog.waiting == 0
    backlog.push("a" * 6)
    backlog.take(6)  # in flight
    assert not backlog.push("b" * 5)  # only 4 of room while "a" is on the wire
    assert backlog.push("c" * 4)


def test_backlog_weights_count_in_take_and_clear() -> None:
    backlog: Backlog[str] = Backlog(100, weighed=True)
    backlog.push("a" * 30)
    backlog.push("b" * 30)
    assert backlog.take(40) == ["a" * 30]  # b would exceed 40
    assert backlog.clear() == 30 and backlog.dropped == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", None, None, 1.0), "series: must be a non-empty string"),
        ((None, None, None, 1.0), "series: must be a non-empty string"),
        (("s", None, None, math.nan), "eventTime: must be a finite number"),
        (("s", None, None, "now"), "eventTime: must be UNIX seconds"),
        (("s", None, None, True), "eventTime: must be UNIX seconds"),
        (("s", {"route": ["a"]}, None, 1.0), "tags.route: must be a string or number, got list"),
        (("s", {"ok": True}, None, 1.0), "tags.ok: must be a string or number, got bool"),
        (("s", None, {"x": object()}, 1.0), "fields.x: must be a string, number or boolean, got object"),
        (("s", None, {"x": math.inf}, 1.0), "fields.x: must be a finite number"),
        (("s", None, {"x": 2**70}, 1.0), "fields.x: integer 1180591620717411303424 does not fit in 64 bits"),
        (("s", {1: "a"}, None, 1.0), "tags: keys must be strings"),
        (("s", ["a"], None, 1.0), "tags: must be a mapping"),
        (("s", None, {"x": None}, 1.0), "fields.x: must be a string, number or boolean, got NoneType"),
    ],
)
def test_points_the_intake_would_refuse_are_refused_when_added(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidPointError, match=message.replace("(", r"\(")):
        checked_point(*args)


def test_a_checked_point_is_a_copy_and_encodes_as_the_intake_takes_it() -> None:
    tags = {"route": "GET:/x", "status_code": 200}
    point = checked_point("requests", tags, {"ok": True, "t": 0.5}, 1_700_000_000)
    tags["route"] = "changed"
    assert point == {
        "series": "requests",
        "eventTime": 1_700_000_000,
        "tags": {"route": "GET:/x", "status_code": 200},
        "fields": {"ok": True, "t": 0.5},
    }
    assert json.loads(encode_points([point])) == {"points": [point]}


def test_events_must_be_json_objects() -> None:
    with pytest.raises(InvalidPointError, match=r"events\[0\]: must be a mapping"):
        encode_event(0, ["not", "an", "object"])
    with pytest.raises(InvalidPointError, match=r"events\[3\]: cannot be sent as JSON: .*set"):
        encode_event(3, {"tags": {1, 2}})
    with pytest.raises(InvalidPointError, match=r"events\[1\]: cannot be sent as JSON: .*not JSON compliant"):
        encode_event(1, {"score": math.nan})
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(InvalidPointError, match=r"events\[0\]: cannot be sent as JSON: Circular"):
        encode_event(0, loop)
    with pytest.raises(InvalidPointError, match="handlerId: must be a string, got int"):
        encode_metadata({"handlerId": 5})  # type: ignore[dict-item]


def test_an_events_body_is_json_of_the_intake_shape() -> None:
    body = encode_events(
        [encode_event(0, {"a": 1}), encode_event(1, {"kind": "raw"})],
        encode_metadata({"handlerId": "h", "accountId": "a"}),
    )
    assert json.loads(body) == {"events": [{"a": 1}, {"kind": "raw"}], "handlerId": "h", "accountId": "a"}


def test_admin_url_comes_from_the_argument_the_environment_or_the_default() -> None:
    assert admin_url(None, {}) == "http://127.0.0.1:8081"
    assert admin_url(None, {"LUNA_SIDECAR_ADMIN_URL": "http://127.0.0.1:9999/"}) == "http://127.0.0.1:9999"
    assert admin_url("http://h:1", {"LUNA_SIDECAR_ADMIN_URL": "http://x:2"}) == "http://h:1"
    with pytest.raises(ValueError, match="LUNA_SIDECAR_ADMIN_URL: expected http://HOST:PORT"):
        admin_url(None, {"LUNA_SIDECAR_ADMIN_URL": "127.0.0.1:8081"})


def test_settings_that_cannot_work_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="max_points must be at least 1"):
        SenderSettings(max_points=0)
    with pytest.raises(ValueError, match="batch_points must not exceed"):
        SenderSettings(batch_points=500, max_points=100)
    with pytest.raises(ValueError, match="batch_delay must be a positive"):
        SenderSettings(batch_delay=0)


BLOCKER = """
import importlib.abc, sys
RUNTIME_ONLY = {"orjson", "prometheus_client", "yaml", "kopf", "kubernetes_asyncio",
                "luna_sidecar", "luna_operator", "luna_cli", "luna_cluster"}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in RUNTIME_ONLY:
            raise ImportError(f"{name} is not installed in a service's environment")
        return None
sys.meta_path.insert(0, Refuse())
import luna_plugins.client
from luna_plugins.client import SidecarSender, monitoring_middleware
ours = {"luna_plugins", "luna_plugins_client", "luna_contract"}
third_party = sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names) - ours)
print(" ".join(third_party))
"""


def requirement_closure(root: str) -> set[str]:
    """Import names of ``root`` and of every distribution it requires (no extras), transitively."""
    from importlib.metadata import PackageNotFoundError, distribution

    seen: set[str] = set()
    names: set[str] = set()
    todo = [root]
    while todo:
        name = re.split(r"[\s;\[<>=!~(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:  # required only on other Python versions
            continue
        names |= set((dist.read_text("top_level.txt") or "").split()) | {name.replace("-", "_")}
        names |= {file.parts[0].removesuffix(".py") for file in dist.files or [] if len(file.parts) > 1}
        todo += [req for req in dist.requires or [] if "extra ==" not in req]
    return names


def test_the_client_imports_with_nothing_beyond_aiohttp() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    # cython_runtime: what any Cython-compiled extension (multidict, yarl...) registers
    imported = {name for name in result.stdout.split() if not name.startswith("_")} - {"cython_runtime"}
    extra = imported - requirement_closure("aiohttp")
    assert not extra, f"luna_plugins.client loaded modules beyond aiohttp's: {extra}"
