"""`luna-plugins dead-letters list|replay|discard PLUGIN`: the dead letters of a sidecar's
at-least-once plugin (docs/delivery.md), through its admin listener.

``list`` prints them as JSON; ``replay`` queues them for delivery again (at the end of the
queue, same delivery ids) and ``discard`` deletes them (counted as dropped), all of them or
those named with ``--name``. Exit codes: 0 done, 1 the sidecar refused (no such plugin, or not
at-least-once), 2 the sidecar could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from urllib.parse import quote

ACTIONS = ("list", "replay", "discard")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="list, replay or discard")
    parser.add_argument("plugin", help="the plugin (module name)")
    parser.add_argument(
        "--name",
        action="append",
        dest="names",
        metavar="NAME",
        help="a dead letter's name (as listed); repeat for more; default: all of them",
    )
    parser.add_argument(
        "--admin",
        default="http://127.0.0.1:8081",
        help="the sidecar's admin listener (--admin-host/--admin-port; default http://127.0.0.1:8081)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer (60)")


def run(args: argparse.Namespace) -> int:
    url = f"{args.admin.rstrip('/')}/plugins/{quote(args.plugin, safe='')}/dead-letters"
    data = None
    method = "GET"
    if args.action != "list":
        url += "/" + args.action
        method = "POST"
        data = json.dumps({"names": args.names}).encode() if args.names else b""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        print(f"luna-plugins dead-letters: {_error(exc.read())}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"luna-plugins dead-letters: cannot reach the sidecar at {args.admin}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(json.loads(body), indent=2))
    return 0


def _error(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:500]
