"""luna_sidecar.testing itself: what a test sees when a plugin does not load, when the intake
refuses what the test sends, when settings cannot be plugin settings, how secret settings merge
and how declared requirements are checked (never installed); and the user's own examples (their
API document, when it is beside the project) under the harness."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from luna_sidecar.testing import (
    IntakeRefusedError,
    MissingRequirementError,
    PluginNotLoadedError,
    run_plugin,
)
from tests.sidecar.test_seed_examples import SEED, BucketService, bucket_service, extract_examples
from tests.support.hostile_plugins import MEMORY_AT_COMPILE, RECURSION_AT_COMPILE

__all__ = ["bucket_service"]  # the fixture, used by the seed test below

COUNTER = """
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Counter(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        logger.info("got %d point(s), greeting %s", len(points), self.settings.get("greeting"))
"""


def write(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    return path


async def test_settings_come_from_the_settings_file_beside_the_plugin_or_the_argument(tmp_path: Path) -> None:
    path = write(tmp_path, "counter", COUNTER)
    (tmp_path / "counter.settings.json").write_text('{"greeting": "from the file"}')
    async with run_plugin(path) as plugin:
        await plugin.send_points([{"series": "s"}])
        assert "got 1 point(s), greeting from the file" in plugin.log_text()
    async with run_plugin(path, settings={"greeting": "given"}) as plugin:
        await plugin.send_points([{"series": "s"}, {"series": "t", "tags": {"a": 1}}])
        assert "got 2 point(s), greeting given" in plugin.log_text()
        assert plugin.describe()["classes"][0]["handled"] == 1


async def test_a_plugin_that_does_not_load_says_why_and_where(tmp_path: Path) -> None:
    path = write(tmp_path, "broken", "import json\n\nraise SystemExit('no')\n")
    with pytest.raises(PluginNotLoadedError, match=r"import: SystemExit: no \(at .*broken.py:3"):
        async with run_plugin(path):
            pass
    for name, code in (("chained", RECURSION_AT_COMPILE), ("nested", MEMORY_AT_COMPILE)):
        with pytest.raises(PluginNotLoadedError) as failure:
            async with run_plugin(write(tmp_path, name, code)):
                pass
        assert "nested or chained too deeply" in str(failure.value), str(failure.value)[:300]
    with pytest.raises(PluginNotLoadedError, match="no concrete plugin class"):
        async with run_plugin(write(tmp_path, "empty", "X = 1\n")):
            pass


async def test_what_the_intake_refuses_is_refused_with_its_message(tmp_path: Path) -> None:
    async with run_plugin(write(tmp_path, "counter", COUNTER)) as plugin:
        with pytest.raises(
            IntakeRefusedError, match=r"422: points\[0\].tags.route: must be strings or numbers"
        ):
            await plugin.send_points([{"series": "s", "tags": {"route": ["a"]}}])
        reply = await plugin.post_event("monitoring_event", b"{not json")
        assert reply.status == 400 and "not valid JSON" in reply.json()["error"]


async def test_settings_that_are_not_json_or_a_missing_file_fail_before_loading(tmp_path: Path) -> None:
    path = write(tmp_path, "counter", COUNTER)
    with pytest.raises(ValueError, match="settings must be JSON-able"):
        async with run_plugin(path, settings={"when": object()}):
            pass
    (tmp_path / "counter.settings.json").write_text("{greeting: unquoted}")
    with pytest.raises(PluginNotLoadedError, match=r"cannot read settings file .*counter\.settings\.json"):
        async with run_plugin(path):
            pass
    with pytest.raises(FileNotFoundError, match="no plugin file"):
        async with run_plugin(tmp_path / "absent.py"):
            pass


SHOWS_SETTINGS = """
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Shows(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        logger.info("settings %s", sorted(self.settings.items()))
"""


async def test_secret_settings_are_merged_into_the_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "shows", SHOWS_SETTINGS)
    (tmp_path / "shows.settings.json").write_text('{"url": "from the file"}')
    async with run_plugin(path, secret_settings={"apiToken": "s3cret"}) as plugin:
        await plugin.send_points([{"series": "s"}])
        assert "settings [('apiToken', 's3cret'), ('url', 'from the file')]" in plugin.log_text()
    async with run_plugin(path, settings={"url": "given"}, secret_settings={"bucket_user": "luna"}) as plugin:
        await plugin.send_points([{"series": "s"}])
        assert "settings [('bucket_user', 'luna'), ('url', 'given')]" in plugin.log_text()
    with pytest.raises(ValueError, match=r"setting 'url' is both in settings and in secret_settings"):
        async with run_plugin(path, secret_settings={"url": "x"}):
            pass
    with pytest.raises(ValueError, match=r"secret_settings\['port'\] must be a string"):
        async with run_plugin(path, secret_settings={"port": 5432}):  # type: ignore[dict-item]
            pass


async def test_requirements_the_test_environment_has_are_checked_not_installed(tmp_path: Path) -> None:
    path = write(tmp_path, "shows", SHOWS_SETTINGS)
    # the harness has no package directory: a sidecar without one refuses every requirement, so
    # loading proves nothing is installed; what the environment has is enough
    async with run_plugin(path, requirements=["pytest>=7", 'absent-dist; python_version < "3"']) as plugin:
        assert plugin.describe()["state"] == "running"
    (tmp_path / "shows.requirements.txt").write_text("# as the sidecar reads it\nPyYAML>=6  # yaml\n")
    async with run_plugin(path) as plugin:
        assert plugin.describe()["state"] == "running"
    with pytest.raises(
        MissingRequirementError, match=r"'surely-absent-dist==1\.0' is not installed"
    ) as missing:
        async with run_plugin(path, requirements=["pytest", "surely-absent-dist==1.0"]):
            pass
    assert "does not install packages" in str(missing.value)
    assert isinstance(missing.value, PluginNotLoadedError)  # in a sidecar it would not load either
    with pytest.raises(MissingRequirementError, match=r"'pytest<1' .* has pytest \d"):
        async with run_plugin(path, requirements=["pytest<1"]):
            pass
    (tmp_path / "shows.requirements.txt").write_text("pyyaml\nsurely-absent-dist\n")
    with pytest.raises(MissingRequirementError, match="'surely-absent-dist' is not installed"):
        async with run_plugin(path):
            pass


async def test_requirements_the_operator_refuses_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "shows", SHOWS_SETTINGS)
    with pytest.raises(ValueError, match=r"requirements\[0\] '--index-url x' is a pip option"):
        async with run_plugin(path, requirements=["--index-url x"]):
            pass
    with pytest.raises(ValueError, match="requirements must be a list of requirement strings, got str"):
        async with run_plugin(path, requirements="pytest"):
            pass
    (tmp_path / "shows.requirements.txt").write_text("pkg @ https://evil.example/pkg.whl\n")
    with pytest.raises(PluginNotLoadedError, match=r"shows\.requirements\.txt\[0\] .* names a URL"):
        async with run_plugin(path):
            pass


@pytest.mark.skipif(not SEED.exists(), reason="the user's plugin document is not beside the project")
async def test_the_seed_examples_under_the_harness(
    tmp_path: Path, bucket_service: type[BucketService]
) -> None:
    monitoring, sending, background = extract_examples(SEED.read_text())
    async with run_plugin(write(tmp_path, "monitoring_example", monitoring)) as plugin:
        assert [c["name"] for c in plugin.describe()["classes"]] == ["RequestMonitoringPlugin"]
        await plugin.send_points([{"series": "requests", "tags": {"route": "GET:/x"}, "fields": {"a": 1}}])
    assert {"tags": {"route": "GET:/x"}, "fields": {"a": 1}} in bucket_service.objects
    async with run_plugin(write(tmp_path, "sending_example", sending)) as plugin:
        await plugin.send_events([{"event_id": "e1"}], handler_id="h-1", request_id="r-1")
    sent = [obj for obj in bucket_service.objects if "handler_id" in obj]
    assert sent[0]["Luna-Request-Id"] == "r-1" and sent[0]["events"] == [{"event_id": "e1"}]
    async with run_plugin(write(tmp_path, "background_example", background)) as plugin:
        teapot = await plugin.request("GET", "/teapot")
        assert (teapot.status, teapot.text) == (418, "I am teapot")
        assert (await plugin.request("GET", "/teapot/version")).text == "T800"
