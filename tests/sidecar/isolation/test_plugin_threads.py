"""Plugin code run in a thread of its own under a deadline (real threads, no mocks)."""

from __future__ import annotations

import threading

import pytest

from luna_sidecar.isolation.leftovers import Leftovers
from luna_sidecar.isolation.plugin_threads import run_in_thread
from luna_sidecar.isolation.timeouts import PluginEscapeError
from tests.support.runtime import wait_until


async def test_the_result_comes_back_from_another_thread() -> None:
    leftovers = Leftovers()
    caller = threading.get_ident()
    ident = await run_in_thread(
        threading.get_ident, timeout=5, leftovers=leftovers, plugin="p", code_hash="h", what="import"
    )
    assert ident != caller
    assert leftovers.entries() == []


async def test_system_exit_in_the_thread_arrives_as_a_plugin_error() -> None:
    def exits() -> None:
        raise SystemExit(3)

    with pytest.raises(PluginEscapeError) as caught:
        await run_in_thread(exits, timeout=5, leftovers=Leftovers(), plugin="p", code_hash="h", what="import")
    assert isinstance(caught.value.original, SystemExit)


async def test_a_thread_past_its_deadline_is_abandoned_counted_and_its_result_discarded() -> None:
    release = threading.Event()
    finished = threading.Event()
    leftovers = Leftovers()

    def blocks() -> str:
        release.wait(30)
        finished.set()
        return "too late"

    with pytest.raises(TimeoutError, match=r"import did not finish within 0\.05 s"):
        await run_in_thread(
            blocks, timeout=0.05, leftovers=leftovers, plugin="p", code_hash="h", what="import"
        )
    [entry] = leftovers.entries()
    assert (entry.kind, entry.plugin, entry.code_hash, entry.what) == ("thread", "p", "h", "import")
    assert leftovers.counts() == {("thread", "p"): 1}
    release.set()
    await wait_until(lambda: finished.is_set() and not leftovers.entries(), what="the thread to end")
