"""The plugin SDK (luna_plugins): responses, routes, requests, events, settings, ``import log``."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

import luna_plugins
from luna_plugins import compat, settings
from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import (
    BaseBackgroundHandler,
    BaseBackgroundPlugin,
    BaseEventPlugin,
    BasePlugin,
    RouteSpec,
    pluginHTTPResponse,
)
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin, Event, RawEvent
from luna_plugins.http import HTTP_VERBS, PluginRequest, RequestParameters, normalize_methods
from luna_plugins.monitoring import MonitoringPoint

# -- pluginHTTPResponse ---------------------------------------------------------------------------


def test_response_str_body_is_utf8_text() -> None:
    response = pluginHTTPResponse(body="häßlich")
    assert response.status == 200
    assert response.body == "häßlich".encode()
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_response_bytes_body_is_sent_raw() -> None:
    response = pluginHTTPResponse(statusCode=202, body=b"\x00\xffraw")
    assert response.status == 202
    assert response.body == b"\x00\xffraw"
    assert response.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("body", [{"a": 1, "b": [1, 2]}, [1, "two", None]])
def test_response_dict_and_list_are_json(body: object) -> None:
    response = pluginHTTPResponse(statusCode=201, body=body)  # type: ignore[arg-type]
    assert response.status == 201
    assert json.loads(response.body) == body
    assert response.headers["Content-Type"] == "application/json"


def test_response_none_body_is_empty() -> None:
    response = pluginHTTPResponse(statusCode=204)
    assert response.status == 204
    assert response.body == b""


def test_response_headers_are_sent_and_explicit_content_type_wins() -> None:
    response = pluginHTTPResponse(
        body={"x": 1}, headers={"content-type": "application/vnd.luna+json", "X-Teapot": "yes"}
    )
    assert response.headers["X-Teapot"] == "yes"
    assert response.headers.getall("Content-Type") == ["application/vnd.luna+json"]
    assert json.loads(response.body) == {"x": 1}


def test_response_rejects_other_body_types() -> None:
    with pytest.raises(TypeError, match="int"):
        pluginHTTPResponse(body=42)  # type: ignore[arg-type]


def test_handler_response_helper_uses_same_encoding() -> None:
    response = BaseBackgroundHandler.response(body=["a"], headers={"X-A": "1"}, statusCode=418)
    assert response.status == 418
    assert json.loads(response.body) == ["a"]
    assert response.headers["X-A"] == "1"


# -- addRoute and handler classes -----------------------------------------------------------------


class _Plugin(BaseBackgroundPlugin):
    pass


class _GetPost(BaseBackgroundHandler):
    def get(self, request: PluginRequest) -> web.Response:
        return self.response(body=f"get {self.plugin.app.serviceName}")

    async def post(self, request: PluginRequest) -> web.Response:
        return self.response(body="post", statusCode=201)


class _NoVerbs(BaseBackgroundHandler):
    def helper(self) -> None:
        """not a verb"""


class _Deleter(_GetPost):
    def delete(self, request: PluginRequest) -> web.Response:
        return self.response(statusCode=204)


@pytest.fixture
def plugin(app: LunaApplication) -> _Plugin:
    return _Plugin(app)


def _routes(plugin: BaseBackgroundPlugin) -> list[RouteSpec]:
    return plugin.app.router.routes_of(plugin)


def test_implemented_verbs_are_the_verb_methods_defined_below_the_base() -> None:
    assert _GetPost.implementedVerbs() == frozenset({"get", "post"})
    assert _Deleter.implementedVerbs() == frozenset({"get", "post", "delete"})
    assert _NoVerbs.implementedVerbs() == frozenset()
    assert BaseBackgroundHandler.implementedVerbs() == frozenset()


def test_add_route_function_defaults_to_get(plugin: _Plugin) -> None:
    def handler(request: PluginRequest) -> web.Response:
        return pluginHTTPResponse(body="hi")

    plugin.addRoute("/hello", handler)
    [spec] = _routes(plugin)
    assert spec.path == "/hello"
    assert spec.methods == frozenset({"get"})
    assert spec.plugin is plugin
    assert spec.endpoint is handler


def test_add_route_class_defaults_to_its_verbs(plugin: _Plugin) -> None:
    plugin.addRoute("/teapot/{name}", _GetPost)
    [spec] = _routes(plugin)
    assert spec.methods == frozenset({"get", "post"})


def test_add_route_methods_are_lower_cased(plugin: _Plugin) -> None:
    plugin.addRoute("/x", lambda request: pluginHTTPResponse(), methods=["POST", "Put"])
    assert _routes(plugin)[0].methods == frozenset({"post", "put"})


def test_add_route_class_with_subset_of_methods(plugin: _Plugin) -> None:
    plugin.addRoute("/only-post", _GetPost, methods={"post"})
    assert _routes(plugin)[0].methods == frozenset({"post"})


@pytest.mark.parametrize(
    ("path", "handler", "methods", "message"),
    [
        ("no-slash", lambda request: None, None, "starting with '/'"),
        (b"/bytes", lambda request: None, None, "starting with '/'"),
        ("/x", lambda request: None, {"fetch"}, "unknown HTTP method"),
        ("/x", lambda request: None, set(), "at least one HTTP method"),
        ("/x", _GetPost, {"delete"}, "has no method"),
        ("/x", _NoVerbs, None, "implements no HTTP verb"),
        ("/x", "not callable", None, "BaseBackgroundHandler subclass or a function"),
    ],
)
def test_add_route_validation(
    plugin: _Plugin, path: object, handler: object, methods: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plugin.addRoute(path, handler, methods)  # type: ignore[arg-type]
    assert _routes(plugin) == []


def test_normalize_methods_accepts_every_known_verb() -> None:
    assert normalize_methods([verb.upper() for verb in HTTP_VERBS]) == HTTP_VERBS


async def test_class_endpoint_makes_a_fresh_handler_per_request(plugin: _Plugin) -> None:
    seen: list[BaseBackgroundHandler] = []

    class Recorder(BaseBackgroundHandler):
        def get(self, request: PluginRequest) -> web.Response:
            seen.append(self)
            return self.response(body=request.method)

    plugin.addRoute("/rec", Recorder)
    endpoint = _routes(plugin)[0].endpoint
    for _ in range(2):
        raw = make_mocked_request("GET", "/rec")
        response = endpoint(PluginRequest(raw, b"", {}))
        assert isinstance(response, web.Response)
        assert response.body == b"GET"
    assert len(seen) == 2
    assert seen[0] is not seen[1]
    assert seen[0].plugin is plugin
    assert seen[0].app is plugin.app


async def test_class_endpoint_dispatches_async_verbs(plugin: _Plugin) -> None:
    plugin.addRoute("/gp", _GetPost)
    endpoint = _routes(plugin)[0].endpoint
    result = endpoint(PluginRequest(make_mocked_request("POST", "/gp"), b"", {}))
    response = await result  # type: ignore[misc]
    assert response.status == 201
    assert response.body == b"post"


class _Registrar:
    """A runtime's router in miniature: ``refuse`` stands for a route another plugin serves."""

    def __init__(self, refuse: str | None = None) -> None:
        self.received: list[RouteSpec] = []
        self.refuse = refuse

    def add(self, spec: RouteSpec) -> None:
        if self.refuse is not None:
            raise ValueError(self.refuse)
        self.received.append(spec)

    def routes_of(self, plugin: BasePlugin) -> list[RouteSpec]:
        return [spec for spec in self.received if spec.plugin is plugin]


def test_add_route_live_plugin_goes_through_the_app_router() -> None:
    registrar = _Registrar()
    plugin = _Plugin(LunaApplication("handlers", router=registrar))
    plugin.addRoute("/live", lambda request: pluginHTTPResponse())
    assert [spec.path for spec in registrar.received] == ["/live"]
    assert [spec.path for spec in _routes(plugin)] == ["/live"]


def test_add_route_router_refusal_keeps_route_out(app: LunaApplication) -> None:
    plugin = _Plugin(app)
    app.use_router(_Registrar(refuse="taken"))
    with pytest.raises(ValueError, match="taken"):
        plugin.addRoute("/taken", lambda request: pluginHTTPResponse())
    assert _routes(plugin) == []


def test_add_route_works_without_super_init(app: LunaApplication) -> None:
    class Lazy(BaseBackgroundPlugin):
        def __init__(self, app: LunaApplication) -> None:
            self.app = app  # no super().__init__()

    lazy = Lazy(app)
    lazy.addRoute("/lazy", lambda request: pluginHTTPResponse())
    assert [spec.path for spec in app.router.routes_of(lazy)] == ["/lazy"]


# -- requests -------------------------------------------------------------------------------------


def test_request_parameters_get_and_getlist() -> None:
    params = RequestParameters({"a": ["1", "2"], "empty": []})
    assert params.get("a") == "1"
    assert params.get("missing") is None
    assert params.get("missing", "d") == "d"
    assert params.get("empty", "d") == "d"
    assert params.getlist("a") == ["1", "2"]
    assert params.getlist("missing") == []
    assert params.getlist("missing", ["x"]) == ["x"]
    params.getlist("a").append("3")
    assert params["a"] == ["1", "2"], "getlist must return a copy"


def test_plugin_request_attributes() -> None:
    raw = make_mocked_request(
        "POST", "/cups/3?sugar=1&sugar=2&milk=yes", headers={"X-Token": "t", "Content-Type": "text/plain"}
    )
    request = PluginRequest(raw, b"hello", {"n": "3"})
    assert request.method == "POST"
    assert request.path == "/cups/3"
    assert request.query_string == "sugar=1&sugar=2&milk=yes"
    assert request.headers["x-token"] == "t"
    assert request.args.get("sugar") == "1"
    assert request.args.getlist("sugar") == ["1", "2"]
    assert request.args.get("milk") == "yes"
    assert request.match_info == {"n": "3"}
    assert request.body == b"hello"
    assert request.raw is raw


def test_plugin_request_json_is_a_property_parsed_once() -> None:
    request = PluginRequest(make_mocked_request("POST", "/"), b'{"litres": 1.5}', {})
    first = request.json
    assert first == {"litres": 1.5}
    assert request.json is first


def test_plugin_request_json_empty_body_is_none() -> None:
    assert PluginRequest(make_mocked_request("POST", "/"), b"", {}).json is None


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00"])
def test_plugin_request_invalid_json_is_bad_request(body: bytes) -> None:
    request = PluginRequest(make_mocked_request("POST", "/"), body, {})
    with pytest.raises(web.HTTPBadRequest) as caught:
        _ = request.json
    assert caught.value.status == 400
    assert caught.value.content_type == "application/json"
    assert "not valid JSON" in json.loads(caught.value.text or "")["error"]


async def test_request_and_response_over_http(aiohttp_client: Any) -> None:
    async def endpoint(raw: web.Request) -> web.Response:
        request = PluginRequest(raw, await raw.read(), raw.match_info)
        payload = request.json
        return pluginHTTPResponse(
            statusCode=201,
            body={"got": payload, "sugar": request.args.getlist("sugar"), "id": request.match_info["id"]},
            headers={"X-Echo": request.headers.get("x-token", "")},
        )

    application = web.Application()
    application.router.add_post("/cups/{id}", endpoint)
    client = await aiohttp_client(application)
    reply = await client.post("/cups/7?sugar=1&sugar=2", data=b'{"a": 1}', headers={"X-Token": "tok"})
    assert reply.status == 201
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Echo"] == "tok"
    assert await reply.json() == {"got": {"a": 1}, "sugar": ["1", "2"], "id": "7"}
    bad = await client.post("/cups/7", data=b"{oops")
    assert bad.status == 400
    assert "not valid JSON" in (await bad.json())["error"]


# -- events ---------------------------------------------------------------------------------------


def test_event_as_dict_is_a_copy() -> None:
    source = {"eventId": "e1", "faces": 2}
    event = Event(source)
    source["faces"] = 3  # the event keeps its own copy
    as_dict = event.asDict()
    assert as_dict == {"eventId": "e1", "faces": 2}
    as_dict["faces"] = 99
    as_dict["new"] = True
    assert event["faces"] == 2
    assert "new" not in event
    assert len(event) == 2
    assert dict(event) == {"eventId": "e1", "faces": 2}
    assert event.asDict() is not event.asDict()


def test_raw_event_dicts_are_copies() -> None:
    raw = RawEvent({"kind": "raw", "data": "x"})
    for as_dict in (raw.asHandlerEventDict(), raw.asDict()):
        assert as_dict == {"kind": "raw", "data": "x"}
        as_dict["data"] = "changed"
    assert raw["data"] == "x"
    assert "RawEvent" in repr(raw)


def test_event_as_dict_nested_values_are_copies_too() -> None:
    event = Event({"faces": [{"score": 0.9}], "meta": {"source": "cam1"}})
    as_dict = event.asDict()
    as_dict["faces"][0]["score"] = 0.0
    as_dict["meta"]["source"] = "changed"
    assert event.asDict() == {"faces": [{"score": 0.9}], "meta": {"source": "cam1"}}


def test_events_are_read_only() -> None:
    event = Event({"a": 1})
    with pytest.raises(TypeError):
        event["a"] = 2  # type: ignore[index]


async def test_sending_plugin_forwards_positionally(app: LunaApplication) -> None:
    received: list[tuple[object, ...]] = []

    class Sender(BaseEventSendingPlugin):
        async def sendEvents(self, *args: object, **kwargs: object) -> None:
            received.append(args)

    sender = Sender(app)
    assert Sender.eventName == "sending_event"
    logger = logging.getLogger("x")
    events = [Event({"a": 1})]
    await sender.handleEvent(events, "h", "acc", "req", "t0", "t1", logger)
    assert received == [(events, "h", "acc", "req", "t0", "t1", logger)]


def test_event_plugin_without_handle_event_is_abstract(app: LunaApplication) -> None:
    class Incomplete(BaseEventPlugin):
        eventName = "monitoring_event"

    with pytest.raises(TypeError):
        Incomplete(app)  # type: ignore[abstract]


def test_monitoring_point_round_trip() -> None:
    point = MonitoringPoint("requests", 1.5, {"route": "GET:/x"}, {"execution_time": 0.1})
    data = point.asDict()
    assert data == {
        "series": "requests",
        "eventTime": 1.5,
        "tags": {"route": "GET:/x"},
        "fields": {"execution_time": 0.1},
    }
    data["tags"]["route"] = "changed"
    assert point.tags == {"route": "GET:/x"}
    assert MonitoringPoint.fromDict(point.asDict()) == point
    assert MonitoringPoint("s", 1.0) != MonitoringPoint("s", 2.0)
    assert MonitoringPoint("s", 1.0).tags == {}


def test_public_surface_is_importable() -> None:
    for name in luna_plugins.__all__:
        assert getattr(luna_plugins, name) is not None
    assert luna_plugins.T_LUNA_APPLICATION is LunaApplication


def test_application_exposes_logger_service_and_read_only_config() -> None:
    application = LunaApplication("handlers", config={"k": "v"})
    assert application.serviceName == "handlers"
    assert isinstance(application.ctx.logger, logging.Logger)
    assert application.config["k"] == "v"
    with pytest.raises(TypeError):
        application.config["k"] = "w"  # type: ignore[index]


# -- settings -------------------------------------------------------------------------------------


def test_freeze_is_read_only_and_nested() -> None:
    original = {"url": "http://x", "nested": {"deep": {"n": 1}}, "items": [1, {"a": 2}]}
    frozen = settings.freeze(original)
    assert isinstance(frozen, MappingProxyType)
    with pytest.raises(TypeError):
        frozen["url"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        frozen["nested"]["deep"]["n"] = 2
    assert frozen["items"] == (1, frozen["items"][1])
    with pytest.raises(TypeError):
        frozen["items"][1]["a"] = 3
    original["nested"]["deep"]["n"] = 42  # the frozen copy does not follow the original
    assert frozen["nested"]["deep"]["n"] == 1


def test_freeze_empty_is_shared_empty() -> None:
    assert settings.freeze(None) is settings.EMPTY_SETTINGS
    assert settings.freeze({}) == {}


def test_settings_reach_init_only_while_constructing(app: LunaApplication) -> None:
    seen: dict[str, object] = {}

    class WithSettings(BaseBackgroundPlugin):
        def __init__(self, app: LunaApplication) -> None:
            super().__init__(app)
            seen["in_init"] = self.settings.get("tick")

    frozen = settings.freeze({"tick": 5})
    with settings.constructing_with(frozen):
        plugin = WithSettings(app)
    assert seen["in_init"] == 5
    assert plugin.settings is frozen
    assert settings.current() is settings.EMPTY_SETTINGS
    assert WithSettings(app).settings == {}


# -- import log -----------------------------------------------------------------------------------


@pytest.fixture
def clean_log_import() -> Iterator[None]:
    """Leave ``sys.modules``, ``sys.meta_path`` and ``sys.path`` as they were."""
    saved_log = sys.modules.pop("log", None)
    saved_meta = list(sys.meta_path)
    saved_path = list(sys.path)
    importlib.invalidate_caches()
    yield
    sys.modules.pop("log", None)
    if saved_log is not None:
        sys.modules["log"] = saved_log
    sys.meta_path[:] = saved_meta
    sys.path[:] = saved_path
    importlib.invalidate_caches()


def _drop_alias_finders() -> None:
    sys.meta_path[:] = [
        finder for finder in sys.meta_path if not isinstance(finder, compat._FallbackAliasFinder)
    ]


@pytest.mark.usefixtures("clean_log_import")
def test_import_log_falls_back_to_the_sdk() -> None:
    _drop_alias_finders()
    if importlib.util.find_spec("log") is not None:
        pytest.skip("a real 'log' module is installed in this environment")
    compat.install_log_alias()
    compat.install_log_alias()  # idempotent
    assert sum(isinstance(finder, compat._FallbackAliasFinder) for finder in sys.meta_path) == 1
    assert isinstance(sys.meta_path[-1], compat._FallbackAliasFinder)
    log_module = importlib.import_module("log")
    assert log_module is luna_plugins.log
    from log import Logger  # type: ignore[import-not-found]

    assert Logger is logging.Logger


@pytest.mark.usefixtures("clean_log_import")
def test_real_log_module_wins_over_the_alias(tmp_path: Path) -> None:
    _drop_alias_finders()
    (tmp_path / "log.py").write_text("REAL = True\nclass Logger:\n    pass\n")
    compat.install_log_alias()
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    log_module = importlib.import_module("log")
    assert getattr(log_module, "REAL", False) is True
    assert log_module is not luna_plugins.log
    assert log_module.__file__ == str(tmp_path / "log.py")
