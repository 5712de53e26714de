"""Errors the operator's passes deal in, independent of the Kubernetes client library.

:class:`ApiError` is every failed API call (:mod:`luna_operator.cluster_api` turns the client's
exceptions into it, and test doubles raise it directly); :class:`PassIncompleteError` ends a
pass that did everything it could but something that may pass by itself failed.
"""

from __future__ import annotations


class ApiError(Exception):
    """An API call that failed: ``status`` is the HTTP status, None when there was no answer."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


class PassIncompleteError(RuntimeError):
    """Some of a pass could not be done for a reason that may go away by itself; everything
    else was done. The message lists what failed."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failed API call may succeed when tried again: a conflict, throttling, a server
    error or no answer at all; other 4xx answers are the API server's final word."""
    if isinstance(exc, ApiError):
        return exc.status in (409, 429) or not exc.status or exc.status >= 500
    return True


def describe(exc: BaseException) -> str:
    """An API failure in a few words: the status and the API server's message."""
    if isinstance(exc, ApiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
