"""The HTTP side of background plugins: the request handed to route handlers and the reply."""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, getversion

#: HTTP verbs a handler class may implement, as lower-case method names
HTTP_VERBS = frozenset({"get", "post", "put", "patch", "delete", "head", "options"})


class RequestParameters(dict[str, list[str]]):
    """Query parameters: every name maps to all its values; ``get`` returns the first one."""

    def get(self, name: str, default: Any = None) -> Any:
        values = super().get(name)
        return values[0] if values else default

    def getlist(self, name: str, default: list[str] | None = None) -> list[str]:
        """All values given for ``name`` (``default`` or an empty list when absent)."""
        return list(super().get(name) or (default if default is not None else []))


class PluginRequest:
    """The request a route handler receives.

    Offers what the original service's handlers used: ``method`` (upper case), ``path``,
    ``headers`` (case-insensitive), ``args`` (query parameters), ``match_info`` (path
    variables), ``body`` (bytes, already read) and ``json`` (the parsed body; a property).
    ``raw`` is the listener's own request for anything else: ``method``, ``path``, ``headers``,
    ``query``, ``query_string``, ``remote`` (the client's address) and ``transport``.
    """

    __slots__ = ("_args", "_headers", "_json", "body", "match_info", "method", "path", "raw")

    def __init__(self, raw: Any, body: bytes, match_info: Mapping[str, str]) -> None:
        self.raw = raw
        self.method: str = raw.method
        self.path: str = raw.path
        self._headers: CIMultiDictProxy[str] | None = None
        self._args: RequestParameters | None = None
        self.match_info: dict[str, str] = dict(match_info)
        self.body = body
        self._json: Any = _UNPARSED

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The request's headers, case-insensitive (made on first use)."""
        if self._headers is None:
            self._headers = self.raw.headers
        return self._headers

    @property
    def query_string(self) -> str:
        """The raw query string (without ``?``)."""
        return str(self.raw.query_string)

    @property
    def args(self) -> RequestParameters:
        """Query parameters (parsed on first use: most handlers never look)."""
        if self._args is None:
            args = RequestParameters()
            for key, value in self.raw.query.items():
                args.setdefault(key, []).append(value)
            self._args = args
        return self._args

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` for an empty body).

        Invalid JSON raises ``aiohttp.web.HTTPBadRequest``, which the runtime turns into a 400
        reply with a JSON error, as the original service did.
        """
        if self._json is _UNPARSED:
            if not self.body:
                self._json = None
            else:
                try:
                    self._json = _json.loads(self.body)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise web.HTTPBadRequest(
                        text=_json.dumps({"error": f"request body is not valid JSON: {exc}"}),
                        content_type="application/json",
                    ) from exc
        return self._json


_UNPARSED = object()


#: response headers the HTTP server writes itself: left out of :meth:`PluginResponse.wire`'s lines
SERVER_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date"})
#: the header the sidecar adds to every route response unless the handler set it
_REQUEST_ID_LOWERED = "luna-request-id"


def response_payload(response: web.Response) -> bytes | None:
    """The body of ``response`` as bytes (``b""`` for none); None when it is not in memory (a
    payload that streams, e.g. from a file), so the response cannot be sent in one piece."""
    body = response.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    value = getattr(body, "_value", None)  # a Payload: only one holding bytes is in memory
    return bytes(value) if isinstance(value, bytes | bytearray) else None


#: the headers' version: it changes with every change of them (typed for a CIMultiDict of str)
_version = cast("Callable[[CIMultiDict[str]], int]", getversion)


class Wire(NamedTuple):
    """A :class:`PluginResponse` as the sidecar writes it."""

    status: int
    lines: str
    """the header lines (``Name: value\\r\\n`` each) given, :data:`SERVER_HEADERS` left out"""
    body: bytes
    has_request_id: bool
    """whether the lines hold ``Luna-Request-Id``"""


class PluginResponse(web.Response):
    """What :func:`pluginHTTPResponse` builds: an aiohttp ``web.Response`` in every respect (a
    handler may change its status, headers, body or cookies before returning it, and it can be
    returned from a plain aiohttp application).

    It also keeps itself as the sidecar writes it, made once from the arguments: :meth:`wire`
    hands that out only while the response is unchanged since it was built. A header name or
    value holding CR or LF raises ``ValueError``.
    """

    def __init__(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        super().__init__(status=status, body=payload, headers=headers)
        lines = ""
        kept = 0
        has_request_id = False
        for name, value in headers.items():
            lowered = name.lower()
            if lowered in SERVER_HEADERS:
                continue
            has_request_id = has_request_id or lowered == _REQUEST_ID_LOWERED
            lines += name + ": " + value + "\r\n"
            kept += 1
        # each line ends in the one CR and the one LF it may hold
        if lines.count("\r") != kept or lines.count("\n") != kept:
            raise ValueError("a response header name or value holds CR or LF")
        self._wire = Wire(status, lines, payload, has_request_id)
        self._wire_version = _version(self._headers)

    def wire(self) -> Wire | None:
        """The response as built; None once its status, headers, body or cookies changed."""
        wire = self._wire
        if (
            _version(self._headers) != self._wire_version
            or self._body is not wire.body
            or self._status != wire.status
            or self._cookies
        ):
            return None
        return wire


def pluginHTTPResponse(
    statusCode: int = 200,
    body: str | bytes | dict[str, Any] | list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> PluginResponse:
    """Build a route reply (an aiohttp ``web.Response``): a ``str`` body is text, ``bytes`` are
    sent as they are, a ``dict`` or ``list`` is JSON. ``headers`` are sent as given (a
    ``Content-Type`` there wins); a header name or value holding CR or LF raises ``ValueError``."""
    content_type: str | None
    if isinstance(body, str):
        payload = body.encode()
        content_type = "text/plain; charset=utf-8"
    elif isinstance(body, dict | list):
        payload = _json.dumps(body).encode()
        content_type = "application/json"
    elif isinstance(body, bytes | bytearray | memoryview):
        payload = bytes(body)
        content_type = "application/octet-stream"
    elif body is None:
        payload, content_type = b"", None
    else:
        raise TypeError(f"response body must be str, bytes, dict, list or None, not {type(body).__name__}")
    header_map = dict(headers) if headers else {}
    if content_type is not None and "Content-Type" not in header_map:
        if not any(name.lower() == "content-type" for name in header_map):
            header_map["Content-Type"] = content_type
    return PluginResponse(statusCode, payload, header_map)


def normalize_methods(methods: Iterable[str]) -> frozenset[str]:
    """Lower-case verbs, each checked against :data:`HTTP_VERBS`; raises ``ValueError`` otherwise."""
    normalized = frozenset(method.lower() for method in methods)
    unknown = normalized - HTTP_VERBS
    if unknown:
        raise ValueError(f"unknown HTTP method(s) {sorted(unknown)}; allowed: {sorted(HTTP_VERBS)}")
    if not normalized:
        raise ValueError("a route needs at least one HTTP method")
    return normalized
