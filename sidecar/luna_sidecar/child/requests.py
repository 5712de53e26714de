"""The request a route handler receives in an isolated plugin's process, rebuilt from what the
sidecar forwarded, and the response it returns taken apart for the way back."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from luna_plugins.http import SERVER_HEADERS, response_payload

__all__ = ["ForwardedRequest", "response_parts"]


class ForwardedRequest:
    """What ``PluginRequest.raw`` offers in-process (``method``, ``path``, ``headers``,
    ``query``, ``query_string``, ``remote``); ``transport`` is None: the client's connection is
    the sidecar's. Headers and query are made on first use, as in-process."""

    __slots__ = (
        "_headers",
        "_query",
        "_raw_headers",
        "method",
        "path",
        "query_string",
        "remote",
        "transport",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        raw_headers: list[tuple[bytes, bytes]],
        remote: str | None,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self._raw_headers = raw_headers
        self._headers: CIMultiDictProxy[str] | None = None
        self._query: MultiDictProxy[str] | None = None
        self.remote = remote
        self.transport: Any = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(
                CIMultiDict(
                    (name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw_headers
                )
            )
        return self._headers

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(URL.build(query=self.query_string).query))
        return self._query


def response_parts(response: Any) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """(status, headers, body) of a handler's ``web.Response``; None for anything that cannot
    be sent in one piece (a streamed response, a body that is not bytes)."""
    if not isinstance(response, web.Response):
        return None
    payload = response_payload(response)
    if payload is None:
        return None
    headers = [
        (str(name), str(value))
        for name, value in response.headers.items()
        if name.lower() not in SERVER_HEADERS
    ]
    headers += [("Set-Cookie", cookie.OutputString()) for cookie in response.cookies.values()]
    return response.status, headers, payload
