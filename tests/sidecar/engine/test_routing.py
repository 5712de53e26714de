"""The replaceable table of plugin routes."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, RouteSpec, pluginHTTPResponse
from luna_sidecar.engine.routing import RouteConflictError, RouteTable, route_shape


class _Plugin(BaseBackgroundPlugin):
    pass


_PLUGIN = _Plugin(LunaApplication("handlers"))


def _endpoint(request: object) -> object:
    return pluginHTTPResponse()


def spec(path: str, methods: Iterable[str] = ("get",)) -> RouteSpec:
    return RouteSpec(path=path, methods=frozenset(methods), endpoint=_endpoint, plugin=_PLUGIN)


@pytest.fixture
def table() -> RouteTable:
    return RouteTable()


def test_route_shape_erases_variable_names() -> None:
    assert route_shape("/a/{x}/b/{y_2}") == "/a/{}/b/{}"
    assert route_shape("/plain") == "/plain"


def test_exact_path_resolution(table: RouteTable) -> None:
    teapot = spec("/teapot", ("get", "post"))
    table.replace("kettle", [teapot])
    entry, variables, allowed = table.resolve("POST", "/teapot")
    assert entry is not None
    assert entry.plugin == "kettle"
    assert entry.spec is teapot
    assert entry.label == "POST:/teapot"
    assert variables == {}
    assert allowed == frozenset({"GET", "POST"})


def test_unknown_path_is_404_shape(table: RouteTable) -> None:
    table.replace("kettle", [spec("/teapot")])
    assert table.resolve("GET", "/coffee") == (None, {}, frozenset())
    assert table.resolve("GET", "/teapot/") == (None, {}, frozenset())


def test_wrong_method_is_405_shape(table: RouteTable) -> None:
    table.replace("kettle", [spec("/teapot", ("post",))])
    entry, _, allowed = table.resolve("DELETE", "/teapot")
    assert entry is None
    assert allowed == frozenset({"POST"})


def test_head_falls_back_to_get(table: RouteTable) -> None:
    table.replace("kettle", [spec("/teapot"), spec("/cups/{n}")])
    head, _, _ = table.resolve("HEAD", "/teapot")
    assert head is not None and head.label == "GET:/teapot"
    head_var, variables, _ = table.resolve("HEAD", "/cups/3")
    assert head_var is not None and variables == {"n": "3"}
    assert table.resolve("OPTIONS", "/teapot")[0] is None


def test_path_variables(table: RouteTable) -> None:
    table.replace("kettle", [spec("/cups/{n}/sugar/{amount}")])
    entry, variables, allowed = table.resolve("GET", "/cups/3/sugar/lots")
    assert entry is not None and entry.label == "GET:/cups/{n}/sugar/{amount}"
    assert variables == {"n": "3", "amount": "lots"}
    assert allowed == frozenset({"GET"})
    assert table.resolve("GET", "/cups/3/sugar")[0] is None
    assert table.resolve("GET", "/cups/a/b/sugar/x")[0] is None, "a variable never spans a '/'"


def test_regex_characters_in_paths_are_literal(table: RouteTable) -> None:
    table.replace("p", [spec("/v1.0/items+")])
    assert table.resolve("GET", "/v1.0/items+")[0] is not None
    assert table.resolve("GET", "/v1x0/itemss")[0] is None


def test_exact_paths_win_over_variables_inside_one_plugin(table: RouteTable) -> None:
    table.replace("a", [spec("/items/{id}"), spec("/items/new")])
    exact, _, _ = table.resolve("GET", "/items/new")
    assert exact is not None and exact.spec.path == "/items/new"
    by_var, variables, _ = table.resolve("GET", "/items/7")
    assert by_var is not None and by_var.spec.path == "/items/{id}" and variables == {"id": "7"}


def test_an_earlier_literal_segment_wins_inside_one_plugin(table: RouteTable) -> None:
    table.replace("a", [spec("/{kind}/x"), spec("/x/{name}")])
    entry, variables, _ = table.resolve("GET", "/x/x")
    assert entry is not None and entry.spec.path == "/x/{name}" and variables == {"name": "x"}
    entry, variables, _ = table.resolve("GET", "/y/x")
    assert entry is not None and entry.spec.path == "/{kind}/x" and variables == {"kind": "y"}


@pytest.mark.parametrize(
    ("first", "later"),
    [
        ("/{a}/{b}", "/users/{id}"),  # the red team's hijack: a catch-all loaded first
        ("/users/{id}", "/{a}/{b}"),  # and the other way round
        ("/items/{id}", "/items/new"),  # a literal path inside another plugin's variable route
        ("/{a}/x", "/x/{b}"),  # crossing variables
        ("/{a}", "/hello"),
    ],
)
def test_overlapping_routes_of_two_plugins_are_refused_for_the_later(
    table: RouteTable, first: str, later: str
) -> None:
    table.replace("first", [spec(first)])
    with pytest.raises(RouteConflictError, match=rf"GET {re.escape(later)} .*plugin 'first'"):
        table.replace("second", [spec(later)])
    assert table.routes_of("second") == ()
    assert table.routes_of("first")[0].spec.path == first


def test_get_overlaps_an_explicit_head(table: RouteTable) -> None:
    table.replace("first", [spec("/x/{a}", ("get",))])
    assert table.conflicts("second", [spec("/x/y", ("head",))]) == [
        "HEAD /x/y overlaps /x/{a} of plugin 'first' (a request could match both)"
    ]


def test_routes_that_cannot_match_one_request_do_not_conflict(table: RouteTable) -> None:
    table.replace("first", [spec("/{a}/{b}")])
    assert table.conflicts("second", [spec("/users/{id}", ("post",))]) == []  # another verb
    assert table.conflicts("second", [spec("/users/{id}/x")]) == []  # another length
    assert table.conflicts("second", [spec("/a/")]) == []  # a variable never matches ''


@pytest.mark.parametrize(
    "path", ["/files/..", "/files/.", "/files/a%2Fb", "/files/a%2fb", "/files/a%5Cb", "/files/a\\b"]
)
def test_path_variables_never_carry_dot_segments_or_separators(table: RouteTable, path: str) -> None:
    table.replace("p", [spec("/files/{name}")])
    entry, _, allowed = table.resolve("GET", path)
    assert entry is None and allowed == frozenset()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/x/{a}/{a}", "names the variable {a} twice"),
        ("/y/{b}/z/{b}", "names the variable {b} twice"),
        ("/x/{a}.json", "is not a variable"),
        ("/x/{1a}", "is not a variable"),
        ("/x/{a", "is not a variable"),
        ("/x//y", "empty segment"),
        ("/x/../y", "'..' segment"),
        ("/x y", "contains ' '"),
        ("/x?y=1", "contains '?'"),
        ("x", "starting with '/'"),
        ("/" + "a" * 1100, "at most 1024"),
        ("/a" * 40, "has 40 segments; at most 32"),
    ],
)
def test_bad_paths_are_refused_at_add_route(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        _Plugin(LunaApplication("handlers")).addRoute(path, _endpoint)


def test_patterns_are_tried_in_order_and_collect_allowed_verbs(table: RouteTable) -> None:
    table.replace("a", [spec("/x/{a}", ("post",))])
    table.replace("b", [spec("/{b}/y", ("get",))])
    entry, variables, _ = table.resolve("GET", "/x/y")
    assert entry is not None and entry.plugin == "b" and variables == {"b": "x"}
    entry, _, allowed = table.resolve("PUT", "/x/y")
    assert entry is None
    assert allowed == frozenset({"GET", "POST"})


def test_exact_path_without_the_method_falls_through_to_variable_routes(table: RouteTable) -> None:
    table.replace("a", [spec("/items/{id}", ("get",))])
    table.replace("b", [spec("/items/new", ("post",))])
    entry, variables, _ = table.resolve("GET", "/items/new")
    assert entry is not None and entry.plugin == "a"
    assert variables == {"id": "new"}


def test_conflict_with_other_plugin_changes_nothing(table: RouteTable) -> None:
    table.replace("first", [spec("/teapot", ("get", "post"))])
    with pytest.raises(RouteConflictError, match=r"POST /teapot is already served by plugin 'first'"):
        table.replace("second", [spec("/other"), spec("/teapot", ("post",))])
    assert table.routes_of("second") == ()
    assert table.resolve("GET", "/other")[0] is None
    assert table.conflicts("second", [spec("/teapot", ("put",))]) == []


def test_variable_names_do_not_avoid_a_conflict(table: RouteTable) -> None:
    table.replace("first", [spec("/cups/{n}")])
    assert table.conflicts("second", [spec("/cups/{count}")]) == [
        "GET /cups/{count} is already served by plugin 'first'"
    ]


def test_same_route_twice_within_a_plugin(table: RouteTable) -> None:
    with pytest.raises(RouteConflictError, match="already served by this plugin twice"):
        table.replace("p", [spec("/x"), spec("/x", ("get", "post"))])


def test_replace_swaps_a_plugins_routes_in_one_step(table: RouteTable) -> None:
    table.replace("p", [spec("/old"), spec("/shared/{x}")])
    table.replace("p", [spec("/new")])
    assert table.resolve("GET", "/old")[0] is None
    assert table.resolve("GET", "/shared/1")[0] is None
    assert table.resolve("GET", "/new")[0] is not None
    assert [entry.label for entry in table.routes_of("p")] == ["GET:/new"]


def test_replacing_own_routes_is_not_a_conflict(table: RouteTable) -> None:
    table.replace("p", [spec("/x")])
    table.replace("p", [spec("/x", ("get", "post"))])
    assert [entry.label for entry in table.routes_of("p")] == ["GET:/x", "POST:/x"]


def test_empty_replace_removes_the_plugin(table: RouteTable) -> None:
    table.replace("p", [spec("/x")])
    table.replace("p", [])
    assert table.routes_of("p") == ()
    assert table.resolve("GET", "/x") == (None, {}, frozenset())
    table.replace("q", [spec("/x")])  # free again


def test_add_appends_to_a_running_plugin(table: RouteTable) -> None:
    first = spec("/a", ("get", "post"))
    table.replace("p", [first])
    table.add("p", spec("/b"))
    assert [entry.label for entry in table.routes_of("p")] == ["GET:/a", "POST:/a", "GET:/b"]
    table.replace("other", [spec("/c")])
    with pytest.raises(RouteConflictError):
        table.add("p", spec("/c"))
    assert len(table.routes_of("p")) == 3


def test_labels_per_method_sorted(table: RouteTable) -> None:
    table.replace("p", [spec("/m", ("put", "delete", "get"))])
    assert [entry.label for entry in table.routes_of("p")] == ["DELETE:/m", "GET:/m", "PUT:/m"]


def test_the_tally_counts_answers_and_5xx_per_plugin_until_reset() -> None:
    from luna_sidecar.engine.routing import RouteTally

    tally = RouteTally()
    for status in (200, 204, 404, 500, 503, 599):
        tally.count("a", status)
    tally.count("b", 200)
    assert tally.of("a") == (6, 3) and tally.of("b") == (1, 0) and tally.of("c") == (0, 0)
    tally.reset("a")
    assert tally.of("a") == (0, 0) and tally.of("b") == (1, 0)
