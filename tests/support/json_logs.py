"""Reading a process's ``--log-format json`` output back, line by line."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

#: the members of every JSON log line, no more, no less (luna_contract.log_format)
FIELDS = {"time", "level", "logger", "plugin", "message"}
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every complete line of ``text`` as a log record; fails on a line that is not one, naming it."""
    records = []
    for line in text[: text.rfind("\n") + 1].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
        assert isinstance(record, dict) and set(record) == FIELDS, line
        assert record["level"] in LEVELS, line
        assert record["time"].endswith("Z") and datetime.fromisoformat(record["time"]).tzinfo is not None, (
            line
        )
        assert isinstance(record["logger"], str) and record["logger"], line
        assert record["plugin"] is None or isinstance(record["plugin"], str), line
        assert isinstance(record["message"], str), line
        records.append(record)
    return records
