"""`luna-plugins new NAME --kind event|background`: a plugin skeleton and its test.

Writes ``NAME.py`` and ``test_NAME.py`` into ``--dir`` (default: the current directory), never
over existing files. The test runs the plugin in the real runtime through the ``luna_plugin``
fixture (luna-plugins' pytest plugin, :mod:`luna_sidecar.pytest_plugin`) under plain pytest (no
plugin for async tests needed); ``luna-plugins lint NAME.py`` passes on the skeleton.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EVENT_PLUGIN = '''"""{title}: a monitoring plugin (it receives the service's monitoring points).

Settings (self.settings): ``series`` (the series it counts, default "requests").

{hints}
"""

from collections import Counter

from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin


class {cls}(BaseEventPlugin):
    """Counts the points of one series per route."""

    eventName = "monitoring_event"

    def __init__(self, app):
        super().__init__(app)
        self.series = self.settings.get("series", "requests")
        self.counts = Counter()

    async def handleEvent(self, points, logger):
        for point in points:
            if point.series == self.series:
                self.counts[point.tags.get("route", "?")] += 1
        logger.info("%d %s point(s) counted so far", sum(self.counts.values()), self.series)
'''

SENDING_PLUGIN = '''"""{title}: an event-sending plugin (it gets the events the service's handlers make).

{hints}
"""

from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin, Event


class {cls}(BaseEventSendingPlugin):
    """Logs each batch of events; send them somewhere from here (open sessions in initialize())."""

    async def sendEvents(
        self, events, handlerId, accountId, requestId, createEventTime, endEventTime, logger, *args, **kwargs
    ):
        documents = [e.asDict() if isinstance(e, Event) else e.asHandlerEventDict() for e in events]
        logger.info("%d event(s) of handler %s, request %s", len(documents), handlerId, requestId)
'''

BACKGROUND_PLUGIN = '''"""{title}: a background plugin serving a route and running a background task.

Settings (self.settings): ``greeting`` (what GET {route} answers, default "hello").

{hints}
"""

import asyncio

from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse


class {cls}(BaseBackgroundPlugin):
    """Answers GET {route} and counts ticks in the background."""

    def __init__(self, app):
        super().__init__(app)
        self.ticks = 0
        self.task = None

    async def initialize(self):
        self.addRoute("{route}", self.hello)

    async def start(self):
        self.task = asyncio.create_task(self.tick())  # start work, never await it here

    async def close(self):
        if self.task:
            self.task.cancel()

    async def tick(self):
        while True:
            await asyncio.sleep(1)
            self.ticks += 1

    async def hello(self, request):
        greeting = self.settings.get("greeting", "hello")
        return pluginHTTPResponse(body={{"greeting": greeting, "ticks": self.ticks}})
'''

#: what every skeleton says about packages and credentials (docs/writing-plugins.md has more)
HINTS = """Packages the sidecar image lacks: one per line in {name}.requirements.txt (spec.requirements;
lint and render read it). Credentials: render --settings-from adds settings whose values come from
Secrets (spec.settingsFrom); a test passes them as run_plugin(..., secret_settings={{...}})."""

EVENT_TEST = '''"""Tests of the {name} plugin, run by the real runtime (the luna_plugin fixture of
luna-plugins' pytest plugin)."""


def point(route):
    return {{
        "series": "requests",
        "tags": {{"service": "handlers", "route": route, "status_code": 200}},
        "fields": {{"request_id": "r-1", "execution_time": 0.01}},
    }}


def test_counts_the_points_of_its_series(luna_plugin):
    plugin = luna_plugin("{name}.py", settings={{"series": "requests"}})
    delivery = plugin.send_points([point("GET:/a"), point("GET:/a"), {{"series": "other"}}])
    assert delivery.handled == 1
    assert "2 requests point(s) counted so far" in plugin.log_text()
'''

SENDING_TEST = '''"""Tests of the {name} plugin, run by the real runtime (the luna_plugin fixture of
luna-plugins' pytest plugin)."""


def test_receives_the_events_of_a_request(luna_plugin):
    plugin = luna_plugin("{name}.py")
    events = [{{"event_id": "e1"}}, {{"kind": "raw", "event_id": "e2"}}]
    plugin.send_events(events, request_id="r-1")
    assert "2 event(s) of handler handler-id, request r-1" in plugin.log_text()
'''

BACKGROUND_TEST = '''"""Tests of the {name} plugin, run by the real runtime (the luna_plugin fixture of
luna-plugins' pytest plugin)."""


def test_serves_its_route_with_the_greeting_from_its_settings(luna_plugin):
    plugin = luna_plugin("{name}.py", settings={{"greeting": "hi"}})
    reply = plugin.request("GET", "{route}")
    assert reply.status == 200
    assert reply.json()["greeting"] == "hi"
    assert plugin.request("POST", "{route}").status == 405
'''

TEMPLATES = {
    ("event", "monitoring_event"): (EVENT_PLUGIN, EVENT_TEST),
    ("event", "sending_event"): (SENDING_PLUGIN, SENDING_TEST),
    ("background", None): (BACKGROUND_PLUGIN, BACKGROUND_TEST),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the plugin's module name (NAME.py), e.g. route_tally")
    parser.add_argument("--kind", choices=("event", "background"), required=True, help="the kind of plugin")
    parser.add_argument(
        "--event",
        choices=("monitoring_event", "sending_event"),
        default="monitoring_event",
        help="for --kind event: the event it handles (default monitoring_event)",
    )
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to write the files (default .)")
    parser.epilog = "Then: pytest test_NAME.py; luna-plugins lint NAME.py; luna-plugins render NAME.py"


def run(args: argparse.Namespace) -> int:
    """Write the two files; 1 when the name is unusable or a file exists."""
    from luna_contract.plugin_modules import check_module_name

    problem = check_module_name(args.name)
    if problem is not None:
        print(f"luna-plugins new: {problem}; choose another NAME", file=sys.stderr)
        return 1
    plugin_template, test_template = TEMPLATES[(args.kind, args.event if args.kind == "event" else None)]
    values = {
        "name": args.name,
        "cls": "".join(part.capitalize() for part in args.name.split("_") if part) or "Plugin",
        "title": args.name.replace("_", " ").strip().capitalize(),
        "route": "/" + args.name.strip("_").replace("_", "-"),
    }
    values["hints"] = HINTS.format(**values)
    files = {
        args.dir / f"{args.name}.py": plugin_template.format(**values),
        args.dir / f"test_{args.name}.py": test_template.format(**values),
    }
    existing = [str(path) for path in files if path.exists()]
    if existing:
        print(f"luna-plugins new: {', '.join(existing)} already exist(s); nothing written", file=sys.stderr)
        return 1
    args.dir.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path}")
    print(f"next: pytest {args.dir / f'test_{args.name}.py'}", file=sys.stderr)
    return 0
