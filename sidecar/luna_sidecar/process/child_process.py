"""One isolated plugin's process, as the sidecar sees it: start it, call it, watch it, end it.

A :class:`PluginProcess` starts ``python -m luna_sidecar.child`` in a session of its own with
one end of a socket pair, a scrubbed environment (no token, no sidecar settings), and its own
working directory; sends it the plugin's code and settings; then multiplexes calls over the
socket. It relays the child's log lines to the plugin's logger, keeps the last lines of its
output for the crash report, samples its resident memory and CPU, pings it, and ends it (the
whole process group) when it passes its memory limit, stops answering for longer than the
stall limit, or breaks the protocol. Every end is reported once, with its reason, to
``on_exit``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from luna_sidecar.process.limits import ProcessLimits
from luna_sidecar.process.protocol import (
    Answer,
    Done,
    FrameProtocol,
    LoadFailed,
    MoreRoutes,
    Pong,
    ProtocolError,
    Ready,
    decode_child,
    encode_parent,
)

__all__ = ["ChildGoneError", "ChildLoadError", "ExitInfo", "PluginProcess"]

log = logging.getLogger(__name__)

#: exit code the child uses when its plugin ran out of memory (see ``luna_sidecar.child.host``)
EXIT_MEMORY = 86
#: lines of the child's output kept for the report of its end
TAIL_LINES = 20
#: how often the child's memory is read and the child pinged (seconds)
SAMPLE_EVERY = 0.25
PING_EVERY = 1.0
#: environment variables the child keeps (nothing else of the sidecar's reaches it)
KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONHASHSEED", "SSL_CERT_FILE", "SSL_CERT_DIR")


class ChildLoadError(Exception):
    """The plugin failed to load in its process (``stage`` as in-process), or the process ended
    before it was ready."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


class ChildGoneError(Exception):
    """The call was not answered: the plugin's process ended (or was ended) meanwhile."""


@dataclass(frozen=True)
class ExitInfo:
    """How a process ended: ``reason`` in one line (``SIGSEGV``, ``exit code 3``, ``memory``,
    ``stalled``...), ``kind`` for the metric, and the last lines it wrote."""

    reason: str
    kind: str
    tail: tuple[str, ...]
    expected: bool
    """ended because the sidecar closed it"""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class PluginProcess:
    """The process of one isolated plugin version (one start; a restart is a new object)."""

    def __init__(
        self,
        module: str,
        *,
        limits: ProcessLimits,
        workdir: str,
        logger: logging.Logger,
        on_exit: Callable[[ExitInfo], None],
        on_routes: Callable[[MoreRoutes], None] | None = None,
        on_sample: Callable[[int, float], None] | None = None,
    ) -> None:
        self.module = module
        self.limits = limits
        self.workdir = workdir
        self.logger = logger
        self.on_exit = on_exit
        self.on_routes = on_routes
        self.on_sample = on_sample
        self.pid: int | None = None
        self.started_at = 0.0
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._process: asyncio.subprocess.Process | None = None
        self._connection: FrameProtocol | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[Ready] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._kill_reason: tuple[str, str] | None = None
        self._closing = False
        self._exited: ExitInfo | None = None
        self._done = asyncio.Event()
        self._last_pong = 0.0
        self.rss_bytes = 0
        self.cpu_seconds = 0.0

    @property
    def alive(self) -> bool:
        return self._process is not None and self._exited is None

    async def start(self, start: dict[str, Any], timeout: float) -> Ready:
        """Start the process with ``start`` (code, settings, limits...) and wait until the
        plugin is loaded; raises :class:`ChildLoadError`."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        environment = {name: os.environ[name] for name in KEPT_ENVIRONMENT if name in os.environ}
        environment |= {"HOME": self.workdir, "TMPDIR": self.workdir, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "luna_sidecar.child",
                str(child_end.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(child_end.fileno(),),
                env=environment,
                cwd=self.workdir,
                start_new_session=True,
                limit=1024 * 1024,
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.pid = self._process.pid
        self._watch_exit(self.pid)
        self.started_at = time.monotonic()
        self._last_pong = self.started_at
        loop = asyncio.get_running_loop()
        _, self._connection = await loop.create_unix_connection(
            lambda: FrameProtocol(self._frame, self._connection_ended), sock=parent_end
        )
        self._ready = loop.create_future()
        self._connection.write(encode_parent(start))
        self._tasks = [
            asyncio.create_task(self._relay_output(), name=f"luna-isolated-{self.module}-output"),
            asyncio.create_task(self._watch(), name=f"luna-isolated-{self.module}-watch"),
        ]
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._ready)
        except TimeoutError:
            self.kill(f"did not load within {timeout:g} s", "load_timeout")
            raise ChildLoadError(
                "import", f"the plugin's process did not load it within {timeout:g} s"
            ) from None

    def _watch_exit(self, pid: int) -> None:
        """Once the process exits, end what it left in its session at once: a forked child
        holding the output pipe would otherwise keep the end from being noticed."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return  # a kernel without pidfds: the output's end is awaited instead
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

        loop.add_reader(pidfd, exited)

    # --- calls ---------------------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._connection is None or not self.alive:
            raise ChildGoneError(self._gone_text())
        try:
            self._connection.write(encode_parent(message))
        except ConnectionError:
            raise ChildGoneError(self._gone_text()) from None

    def _gone_text(self) -> str:
        info = self._exited
        return (
            f"the plugin's process ended ({info.reason})" if info else "the plugin's process is not running"
        )

    async def call(self, kind: str, *arguments: Any) -> Any:
        """Send one call and await its answer (:class:`Done` or :class:`Answer`); raises
        :class:`ChildGoneError` when the process ends first. Cancelling the await cancels the
        call in the child."""
        call = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call] = future
        try:
            self._send((kind, call, *arguments))
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(ChildGoneError, ProtocolError):
                self._send(("cancel", call))
            raise
        finally:
            self._calls.pop(call, None)

    # --- the connection ------------------------------------------------------------------------

    def _frame(self, frame: bytes) -> None:
        if self._kill_reason is not None:
            return  # being ended: nothing it says counts any more
        try:
            message = decode_child(frame)
        except ProtocolError as exc:
            self.kill(str(exc), "protocol")
            return
        self._dispatch(message)

    def _connection_ended(self, error: Exception | None) -> None:
        if error is not None:
            self.kill(str(error), "protocol")

    def _dispatch(self, message: object) -> None:
        if isinstance(message, Done | Answer):
            future = self._calls.get(message.call)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Pong):
            self._last_pong = time.monotonic()
        elif isinstance(message, Ready | LoadFailed):
            ready = self._ready
            if ready is not None and not ready.done():
                if isinstance(message, Ready):
                    ready.set_result(message)
                else:
                    ready.set_exception(ChildLoadError(message.stage, message.message))
        elif isinstance(message, MoreRoutes) and self.on_routes is not None:
            self.on_routes(message)

    async def _relay_output(self) -> None:
        """The child's log lines under the plugin's logger; anything else (print, a crash in C)
        as warnings. Every line is kept for the report of the process's end."""
        process = self._process
        assert process is not None and process.stdout is not None
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # a line over the limit: skip it
                with contextlib.suppress(Exception):
                    await process.stdout.read(1024 * 1024)
                continue
            if not line:
                break
            text = line.decode("utf-8", errors="replace").rstrip("\n")
            self._relay_line(text)
        await self._ended()

    def _relay_line(self, text: str) -> None:
        record: Any = None
        if text.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(text)
        if isinstance(record, dict) and isinstance(record.get("message"), str):
            level = logging.getLevelName(str(record.get("level", "INFO")))
            message = record["message"]
            self.tail.append(message.splitlines()[0] if message else "")
            self.logger.log(level if isinstance(level, int) else logging.INFO, "%s", message)
        else:
            self.tail.append(text[:500])
            self.logger.warning("(process output) %s", text[:4000])

    async def _watch(self) -> None:
        """Memory and CPU sampling, pings and the stall limit."""
        limits = self.limits
        next_ping = time.monotonic()
        ping_ids = itertools.count(1)
        while self.alive:
            self._sample()
            now = time.monotonic()
            if self.rss_bytes > limits.memory_bytes:
                mib = self.rss_bytes / 2**20
                self.kill(
                    f"memory: {mib:.0f} MiB resident, over its limit of "
                    f"{limits.memory_bytes / 2**20:.0f} MiB",
                    "memory",
                )
                return
            ready = self._ready is not None and self._ready.done()
            if ready and now - self._last_pong > limits.stall_seconds:
                self.kill(
                    f"stalled: its event loop did not answer for {now - self._last_pong:.1f} s "
                    "(a callback or route handler holding the CPU or the GIL; the limit is "
                    f"{limits.stall_seconds:g} s)",
                    "stalled",
                )
                return
            if ready and now >= next_ping:
                next_ping = now + PING_EVERY
                with contextlib.suppress(ChildGoneError, OSError):
                    self._send(("ping", next(ping_ids)))
            await asyncio.sleep(SAMPLE_EVERY)

    def _sample(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            with open(f"/proc/{pid}/statm") as statm:
                self.rss_bytes = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            self.cpu_seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return
        if self.on_sample is not None:
            self.on_sample(self.rss_bytes, self.cpu_seconds)

    # --- ending --------------------------------------------------------------------------------

    def kill(self, reason: str, kind: str) -> None:
        """End the process (and everything it started in its session) now, for ``reason``."""
        if self._kill_reason is None:
            self._kill_reason = (reason, kind)
            if self.alive:
                self.logger.error("plugin %s: ending its process: %s", self.module, reason)
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def close(self, timeout: float) -> None:
        """Ask the plugin to close (its ``close()`` runs) and wait for the process to end;
        killed when it takes longer than ``timeout``."""
        self._closing = True
        with contextlib.suppress(ChildGoneError, OSError):
            self._send(("close",))
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            self.kill(f"did not close within {timeout:g} s", "close_timeout")
            await self._done.wait()

    async def _ended(self) -> None:
        process = self._process
        assert process is not None
        code = await process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # what it started in its session goes too
        if self._kill_reason is not None:
            reason, kind = self._kill_reason
        elif code == EXIT_MEMORY:
            reason, kind = "memory: an allocation failed at its memory limit", "memory"
        elif code < 0:
            reason, kind = f"killed by {_signal_name(-code)}", _signal_name(-code).lower()
        else:
            reason, kind = f"exit code {code}", "exit"
        expected = self._closing and self._kill_reason is None
        self._exited = ExitInfo(reason, kind, tuple(self.tail), expected)
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        for future in self._calls.values():
            if not future.done():
                future.set_exception(ChildGoneError(self._gone_text()))
        ready = self._ready
        if ready is not None and not ready.done():
            tail = "; ".join(line for line in list(self.tail)[-3:] if line)
            ready.set_exception(
                ChildLoadError(
                    "import",
                    f"the plugin's process ended while loading ({reason})" + (f": {tail}" if tail else ""),
                )
            )
            ready.exception()  # retrieved here too: a start() that timed out awaits it no more
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._done.set()
        self.on_exit(self._exited)

    @property
    def exit_info(self) -> ExitInfo | None:
        return self._exited
