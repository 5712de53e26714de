"""The Prometheus that rollout queries ask (``--prometheus-url``): instant queries over its HTTP
API, each bounded in time and in the size of its answer.

:func:`read_answer` turns an answer's body into sample values (pure); :class:`PrometheusClient`
asks and reads. Anything short of numbers raises
:class:`~luna_operator.rollout.queries.QueryError` with a short reason: the judgement counts the
query as inconclusive, never as successful.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from luna_operator.rollout.queries import QueryError

__all__ = ["MAX_ANSWER_BYTES", "PrometheusClient", "read_answer", "read_token"]

#: the largest answer read; a bigger one is refused (a query that returns too many series)
MAX_ANSWER_BYTES = 1024 * 1024
#: the longest part of Prometheus's own error message kept
MAX_ERROR_CHARS = 200
#: the longest bearer token read from its file
MAX_TOKEN_BYTES = 16 * 1024


def _number(pair: Any) -> float:
    """The value of a sample ``[time, "value"]``."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise QueryError("Prometheus answered a sample that is not [time, value]")
    try:
        return float(pair[1])
    except ValueError:
        raise QueryError(f"Prometheus answered a value that is not a number: {pair[1][:40]!r}") from None


def read_answer(body: bytes) -> list[float]:
    """The sample values of an instant query's answer ``body`` (a scalar is one value; NaN is kept,
    the judgement decides); raises :class:`QueryError` for an error answer, a range vector, a
    string, or anything that is not Prometheus's JSON."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise QueryError("Prometheus's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise QueryError("Prometheus's answer is not a JSON object")
    if answer.get("status") != "success":
        error = answer.get("error")
        shown = error[:MAX_ERROR_CHARS] if isinstance(error, str) else "no reason given"
        raise QueryError(f"Prometheus refused the query: {shown}")
    data = answer.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind == "scalar":
        return [_number(result)]
    if kind != "vector":
        raise QueryError(f"the query returned a {kind or 'result'} where an instant vector or scalar belongs")
    if not isinstance(result, list):
        raise QueryError("Prometheus answered a vector that is not a list")
    values = []
    for item in result:
        if not isinstance(item, dict):
            raise QueryError("Prometheus answered a vector sample that is not an object")
        values.append(_number(item.get("value")))
    return values


def read_token(path: Path) -> str:
    """The bearer token in the file ``path`` (surrounding whitespace removed); raises
    :class:`QueryError` when it cannot be read, is empty, too long or not one printable line."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise QueryError(f"the Prometheus token file {path} cannot be read: {exc.strerror or exc}") from None
    token = raw.strip()
    if not token or len(raw) > MAX_TOKEN_BYTES or not all(0x21 <= byte <= 0x7E for byte in token):
        raise QueryError(
            f"the Prometheus token file {path} holds no usable token "
            f"(one line of printable ASCII, at most {MAX_TOKEN_BYTES} bytes)"
        )
    return token.decode("ascii")


class PrometheusClient:
    """Instant queries to the Prometheus at ``url`` (a base URL: ``/api/v1/query`` is added),
    each answered within ``timeout`` seconds and ``max_bytes``, or :class:`QueryError`.

    ``token_file``: its content goes with every query as ``Authorization: Bearer``, read at each
    query (a rotated token is used at once). ``ca_file``: PEM certificates trusted for an
    ``https://`` Prometheus besides the system's, read when the first query needs them (and again
    after a failure). A token or CA that cannot be used is a :class:`QueryError` like any other."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_bytes: int = MAX_ANSWER_BYTES,
        token_file: Path | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.token_file = token_file
        self.ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.ca_file is None:
            return True  # aiohttp's default: the system's trust store
        context = ssl.create_default_context()
        try:
            context.load_verify_locations(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise QueryError(f"the Prometheus CA file {self.ca_file} cannot be used: {exc}") from None
        return context

    async def query(self, expression: str) -> list[float]:
        """The sample values of ``expression`` evaluated now (see :func:`read_answer`)."""
        headers = {"Authorization": f"Bearer {read_token(self.token_file)}"} if self.token_file else {}
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            )
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._post(self._session, expression, headers)
        except TimeoutError:
            raise QueryError(f"Prometheus did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise QueryError(f"Prometheus's certificate is not trusted: {exc.certificate_error}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise QueryError(f"Prometheus could not be reached: {type(exc).__name__}") from None
        return read_answer(body)

    async def _post(self, session: aiohttp.ClientSession, expression: str, headers: dict[str, str]) -> bytes:
        url = f"{self.url}/api/v1/query"
        async with session.post(url, data={"query": expression}, headers=headers) as reply:
            if reply.status in (401, 403):
                raise QueryError(
                    f"Prometheus refused the operator's credentials (HTTP {reply.status}): "
                    + ("check the token" if self.token_file else "it needs a token (--prometheus-token-file)")
                )
            declared = reply.content_length
            if declared is not None and declared > self.max_bytes:
                raise QueryError(f"Prometheus's answer is larger than {self.max_bytes} bytes")
            body = bytearray()
            async for chunk in reply.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > self.max_bytes:
                    raise QueryError(f"Prometheus's answer is larger than {self.max_bytes} bytes")
            # an error answer (400 bad query, 422 cannot execute, 503 overloaded) has a JSON body
            # saying why; anything else without one is named by its status
            if reply.status >= 300 and not body.lstrip().startswith(b"{"):
                raise QueryError(f"Prometheus answered HTTP {reply.status}")
            return bytes(body)

    async def close(self) -> None:
        """Close the connections (the client opens new ones if asked again)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
