"""One served request as LUNA monitoring points: what every framework's middleware records.

Per request a ``requests`` point and, for an error answer (status 400 or more), an ``errors``
point, as the original services record them:

- tags: ``service``, ``route`` (``METHOD:/template`` with the route's own template, e.g.
  ``POST:/6/handlers/{id}/events``, never the concrete path; ``METHOD:unmatched`` when no route
  matched), ``status_code`` (int); ``errors`` points also ``error_code``;
- fields: ``request_id`` and, for ``requests``, ``execution_time`` (seconds, float);
- ``eventTime``: when the request arrived (UNIX seconds).

The request id is the caller's ``Luna-Request-Id`` header, else a new one in LUNA's
``<unix time>,<uuid>`` form (:func:`new_request_id`). Nothing here waits: the points go to the
sender's bounded backlog.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time

from luna_plugins_client.sender import SidecarSender

REQUEST_ID_HEADER = "Luna-Request-Id"
#: error answers larger than this are not read for their ``error_code``
ERROR_BODY_LIMIT = 64 * 1024
#: a path parameter as Sanic and Flask-style routers write it: ``<name>`` or ``<name:type>``
_ANGLE_PARAMETER = re.compile(r"<([^<>:]+)(?::[^<>]*)?>")


def new_request_id() -> str:
    """A request id in LUNA's form, ``<unix seconds>,<uuid>``: unique (a random 80-bit prefix per
    process and a counter) and about six times cheaper than ``uuid4()`` per request."""
    return f"{int(time.time())},{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"


def _id_prefix() -> str:
    """The first four groups of a version-4 UUID, random."""
    seed = os.urandom(10).hex()
    variant = "89ab"[int(seed[16], 16) & 3]
    return f"{seed[:8]}-{seed[8:12]}-4{seed[13:16]}-{variant}{seed[17:20]}-"


_ID_PREFIX = _id_prefix()
_id_counter = itertools.count()


def _reseed() -> None:
    """A forked worker (e.g. under gunicorn) gets its own prefix: ids stay unique across them."""
    global _ID_PREFIX, _id_counter
    _ID_PREFIX, _id_counter = _id_prefix(), itertools.count()


os.register_at_fork(after_in_child=_reseed)


def luna_route(method: str, template: str | None) -> str:
    """``METHOD:/template`` as LUNA names routes; ``METHOD:unmatched`` without a template.

    Templates in angle brackets (``/6/handlers/<id:str>/events``, Sanic's) are written with
    braces as LUNA's names have them (``/6/handlers/{id}/events``)."""
    if not template:
        return f"{method}:unmatched"
    braced = _ANGLE_PARAMETER.sub(lambda found: "{" + found.group(1).strip() + "}", template)
    return f"{method}:{braced if braced.startswith('/') else '/' + braced}"


def error_code_in(status: int, content_type: str | None, body: bytes | None) -> int | str:
    """The ``error_code`` of a LUNA error answer (its JSON body's ``error_code``), else ``status``.

    Bodies that are not JSON, larger than :data:`ERROR_BODY_LIMIT` or without an int or string
    ``error_code`` give the status."""
    if (
        body is None
        or len(body) > ERROR_BODY_LIMIT
        or (content_type or "").split(";")[0] != "application/json"
    ):
        return status
    try:
        code = json.loads(body).get("error_code")
    except (ValueError, AttributeError):
        return status
    return code if isinstance(code, int | str) and not isinstance(code, bool) else status


def record_request(
    sender: SidecarSender,
    *,
    service: str,
    route: str,
    status: int,
    request_id: str,
    arrived: float,
    elapsed: float,
    error_code: int | str | None = None,
) -> None:
    """Add the ``requests`` point of one answered request and, when ``status`` is 400 or more,
    its ``errors`` point (``error_code`` defaults to the status). Never waits."""
    sender.add_point(
        "requests",
        {"service": service, "route": route, "status_code": status},
        {"request_id": request_id, "execution_time": elapsed},
        event_time=arrived,
    )
    if status >= 400:
        sender.add_point(
            "errors",
            {
                "service": service,
                "route": route,
                "status_code": status,
                "error_code": status if error_code is None else error_code,
            },
            {"request_id": request_id},
            event_time=arrived,
        )


__all__ = [
    "ERROR_BODY_LIMIT",
    "REQUEST_ID_HEADER",
    "error_code_in",
    "luna_route",
    "new_request_id",
    "record_request",
]
