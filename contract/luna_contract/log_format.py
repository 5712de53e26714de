"""How the operator and the sidecar write their logs: ``text`` lines or ``json`` lines.

``--log-format`` of both processes takes :data:`LOG_FORMATS`; :func:`configure_logging` sets the
root logger up once, on standard error. A ``json`` line is one JSON object with exactly these
members, whatever the record (log pipelines can rely on them):

- ``time``: when, in UTC, RFC 3339 with milliseconds (``2026-12-07T10:00:00.123Z``);
- ``level``: ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL``;
- ``logger``: the logger's name (a plugin's own: ``luna.plugins.<module>``);
- ``plugin``: the plugin the line is about, or ``null`` (see :func:`plugin_of`);
- ``message``: the message with its arguments, and the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
#: the ``text`` format, as both processes have always written it
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the loggers of plugins' own lines (the sidecar names one ``luna.plugins.<module>`` per plugin)
PLUGIN_LOGGERS = "luna.plugins."
#: the kind whose objects' lines kopf tags (``k8s_ref``) with the plugin they are about
PLUGIN_KIND = "LunaPlugin"


def plugin_of(record: logging.LogRecord) -> str | None:
    """The plugin ``record`` is about: its ``plugin`` extra (``log.info(..., extra={"plugin":
    name})``), else the module of a plugin's own logger, else the LunaPlugin kopf's object
    logger names; None otherwise."""
    given = getattr(record, "plugin", None)
    if isinstance(given, str) and given:
        return given
    if record.name.startswith(PLUGIN_LOGGERS):
        return record.name[len(PLUGIN_LOGGERS) :].split(".")[0] or None
    reference = getattr(record, "k8s_ref", None)
    if isinstance(reference, dict) and reference.get("kind") == PLUGIN_KIND:
        name = reference.get("name")
        return name if isinstance(name, str) else None
    return None


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, with the members the module doc lists."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        elif record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "plugin": plugin_of(record),
            "message": message,
        }
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (one of :data:`LOG_FORMATS`); ``ValueError`` otherwise."""
    if log_format == "json":
        return JsonLineFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")


def configure_logging(level: str | int, log_format: str, stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (standard error) in
    ``log_format``, replacing the root logger's handlers."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
