"""`luna-plugins sidecar`: run the plugin runtime next to a service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from luna_contract.log_format import configure_logging
from luna_sidecar import config as sidecar_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every setting as a flag (see ``luna_sidecar.config`` and the README's settings table)."""
    parser.epilog = (
        "Each flag can also be set by its environment variable; the active list also by "
        "LUNA_<SERVICE>_ACTIVE_PLUGINS as in the original service (e.g. LUNA_HANDLERS_ACTIVE_PLUGINS)."
    )
    sidecar_config.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Resolve the settings and serve until SIGTERM; exit 2 on a configuration error."""
    from luna_sidecar.assembly import StartupError, serve

    try:
        config = sidecar_config.resolve(vars(args))
    except sidecar_config.ConfigError as exc:
        print(f"luna-plugins sidecar: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    loop = new_event_loop(config.event_loop)
    try:
        return _run_contained(loop, serve(config))
    except StartupError as exc:
        print(f"luna-plugins sidecar: {exc}", file=sys.stderr)
        return 2
    finally:
        _close_loop(loop)


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind`` (``uvloop`` or ``asyncio``); asyncio's own when uvloop is
    asked for but not installed (said in the log)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger("luna.sidecar").warning("uvloop is not installed; using asyncio's event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _run_contained(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` to its end. asyncio lets a ``SystemExit`` or ``KeyboardInterrupt`` raised in
    *any* task stop the loop; the runtime's own awaits of plugin code contain them, but a task a
    plugin created itself is out of reach: when one does, it is logged and the loop resumes
    (SIGINT and SIGTERM arrive through signal handlers, never as these exceptions)."""
    task = loop.create_task(main, name="luna-sidecar")
    while True:
        try:
            return loop.run_until_complete(task)
        except (SystemExit, KeyboardInterrupt) as exc:
            if task.done():
                raise
            logging.getLogger("luna.sidecar").error(
                "a task raised %s (%s) and was ended; the sidecar carries on",
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        except RuntimeError:
            if task.done():
                raise
            # the loop was stopped past the guard (luna_sidecar.isolation.containment): run it again
            logging.getLogger("luna.sidecar").error("the event loop was stopped; the sidecar carries on")


def _quiet_about_pending_tasks(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if "task" in context and str(context.get("message", "")).startswith(
        "Task was destroyed but it is pending"
    ):
        return
    loop.default_exception_handler(context)


def _close_loop(loop: asyncio.AbstractEventLoop, grace: float = 0.5) -> None:
    """Cancel what plugins left running and close the loop, waiting at most ``grace`` seconds:
    unlike ``asyncio.run``, a plugin task that ignores cancellation cannot keep the process alive."""
    leftovers = asyncio.all_tasks(loop)
    for task in leftovers:
        task.cancel()
    if leftovers:
        _, stuck = loop.run_until_complete(asyncio.wait(leftovers, timeout=grace))
        if stuck:
            logging.getLogger("luna.sidecar").warning(
                "%d plugin task(s) ignored cancellation and were abandoned at exit", len(stuck)
            )
            # said once above: not once more per task as the loop closes under them
            loop.set_exception_handler(_quiet_about_pending_tasks)
    # bounded too: an async generator of a plugin may ignore its closing as well
    closing = loop.create_task(loop.shutdown_asyncgens())
    loop.run_until_complete(asyncio.wait({closing}, timeout=grace))
    loop.close()
