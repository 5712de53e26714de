"""The grammar of plugin route paths: what ``addRoute`` accepts and how the runtime matches it.

A route path is ``/`` followed by segments separated by ``/``. A segment is either literal text or
a variable, ``{name}``, that stands for one whole non-empty segment (never a part of one, never
a ``/``). Only the last segment may be empty (``/`` itself, or a trailing slash). Two paths
*overlap* when some request path matches both; the runtime refuses overlapping routes of two
different plugins, so no plugin can take requests meant for another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_PATH_LENGTH",
    "MAX_SEGMENTS",
    "RoutePath",
    "parse_route_path",
    "request_segments",
    "variable_value_allowed",
]

#: longest route path a plugin may register (characters)
MAX_PATH_LENGTH = 1024
#: most segments a route path may have
MAX_SEGMENTS = 32

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f?#\\]")
#: what a variable never carries: an encoded slash or backslash (the listener leaves ``%2F``
#: encoded in the path it matches)
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)


@dataclass(frozen=True)
class RoutePath:
    """A parsed route path: ``segments`` holds each literal segment, ``None`` for a variable."""

    text: str
    segments: tuple[str | None, ...]
    #: the variables' names, in order
    names: tuple[str, ...]

    @property
    def has_variables(self) -> bool:
        return bool(self.names)

    @property
    def shape(self) -> str:
        """The path with variable names erased: ``/a/{x}`` and ``/a/{y}`` have one shape."""
        return "/" + "/".join("{}" if segment is None else segment for segment in self.segments)

    def overlaps(self, other: RoutePath) -> bool:
        """Whether some request path matches both ``self`` and ``other``."""
        if len(self.segments) != len(other.segments):
            return False
        for mine, theirs in zip(self.segments, other.segments, strict=True):
            if mine is None and theirs is None:
                continue
            if mine is None or theirs is None:
                if (theirs if mine is None else mine) == "":
                    return False  # a variable never matches an empty segment
                continue
            if mine != theirs:
                return False
        return True

    def specificity(self) -> tuple[int, ...]:
        """Sort key among one plugin's overlapping paths: a literal segment earlier wins."""
        return tuple(1 if segment is None else 0 for segment in self.segments)

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """The variables when request ``segments`` (see :func:`request_segments`) match, else None."""
        if len(segments) != len(self.segments):
            return None
        found: dict[str, str] = {}
        names = iter(self.names)
        for pattern, value in zip(self.segments, segments, strict=True):
            if pattern is None:
                if not variable_value_allowed(value):
                    return None
                found[next(names)] = value
            elif pattern != value:
                return None
        return found


def request_segments(path: str) -> list[str]:
    """The segments of a request path as :meth:`RoutePath.match` takes them."""
    return path[1:].split("/")


def variable_value_allowed(value: str) -> bool:
    """Whether a path variable may carry ``value``: non-empty, not ``.`` or ``..``, and no
    encoded or literal slash or backslash (handlers may build file or URL paths from it)."""
    return (
        bool(value)
        and value not in (".", "..")
        and "\\" not in value
        and "\x00" not in value
        and _ENCODED_SEPARATOR.search(value) is None
    )


def parse_route_path(path: object) -> RoutePath:
    """Parse a route path; raises ``ValueError`` saying what is wrong and how to write it."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"route path must be a string starting with '/', got {path!r}")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"route path is {len(path)} characters long; at most {MAX_PATH_LENGTH} are allowed")
    bad = _FORBIDDEN.search(path)
    if bad is not None:
        raise ValueError(
            f"route path {path!r} contains {bad.group()!r}: no spaces, control characters, '?', '#' or '\\'"
        )
    raw = path[1:].split("/")
    if len(raw) > MAX_SEGMENTS:
        raise ValueError(f"route path {path!r} has {len(raw)} segments; at most {MAX_SEGMENTS} are allowed")
    segments: list[str | None] = []
    names: list[str] = []
    for index, segment in enumerate(raw):
        if segment == "" and index < len(raw) - 1:
            raise ValueError(f"route path {path!r} has an empty segment ('//')")
        if segment in (".", ".."):
            raise ValueError(f"route path {path!r} has a {segment!r} segment")
        if "{" in segment or "}" in segment:
            name = segment[1:-1] if segment.startswith("{") and segment.endswith("}") else ""
            if not _NAME.match(name):
                raise ValueError(
                    f"route path {path!r}: {segment!r} is not a variable; a variable is a whole "
                    "segment '{name}' with a Python identifier as its name"
                )
            if name in names:
                raise ValueError(f"route path {path!r} names the variable {{{name}}} twice")
            names.append(name)
            segments.append(None)
        else:
            segments.append(segment)
    return RoutePath(path, tuple(segments), tuple(names))
