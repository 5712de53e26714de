"""Turning plugin code into plugin classes."""

from __future__ import annotations

import sys
import textwrap
import types
from collections.abc import Callable

import pytest

from luna_sidecar.engine.loader import (
    PluginLoadError,
    PluginModules,
    describe_exception,
    forget_module,
    import_module,
    plugin_classes,
    publish_module,
)
from tests.support.runtime import source

HEADER = """\
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin
"""


def _code(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def test_import_runs_the_code_as_a_module(module_name: Callable[[str], str]) -> None:
    name = module_name("imp")
    module = import_module(
        source(name, "import sys\nVALUE = 41 + 1\nSEEN = sys.modules[__name__].__name__\n")
    )
    assert module.__name__ == name
    assert module.VALUE == 42
    assert module.SEEN == name, "the module is in sys.modules while its code runs"
    assert module.__file__ == f"<{name}.py>"
    assert name not in sys.modules, "import_module must not publish the module"


def test_import_keeps_the_previous_module_visible(module_name: Callable[[str], str]) -> None:
    name = module_name("prev")
    old = import_module(source(name, "V = 1\n"))
    publish_module(old)
    new = import_module(source(name, "V = 2\n"))
    assert sys.modules[name] is old
    publish_module(new)
    assert sys.modules[name] is new
    forget_module(name)
    assert name not in sys.modules
    forget_module(name)  # harmless twice


def test_import_failure_restores_previous_module(module_name: Callable[[str], str]) -> None:
    name = module_name("restore")
    old = import_module(source(name, "V = 1\n"))
    publish_module(old)
    with pytest.raises(PluginLoadError):
        import_module(source(name, "raise RuntimeError('boom')\n"))
    assert sys.modules[name] is old


def test_dataclasses_work_in_plugin_code(module_name: Callable[[str], str]) -> None:
    code = "from dataclasses import dataclass\n@dataclass\nclass Point:\n    x: int\nP = Point(3)\n"
    assert import_module(source(module_name("dc"), code)).P.x == 3


def test_syntax_error_names_the_line(module_name: Callable[[str], str]) -> None:
    name = module_name("syntax")
    with pytest.raises(PluginLoadError) as caught:
        import_module(source(name, "x = 1\ndef broken(:\n"))
    assert caught.value.stage == "import"
    assert "SyntaxError" in caught.value.message
    assert f"<{name}.py>:2" in caught.value.message
    assert "\n" not in caught.value.message


def test_runtime_error_at_import_names_file_and_line(module_name: Callable[[str], str]) -> None:
    name = module_name("boom")
    with pytest.raises(PluginLoadError) as caught:
        import_module(source(name, "x = 1\n\nraise ValueError('no config')\n"))
    assert str(caught.value) == f"import: ValueError: no config (at <{name}.py>:3 in <module>)"


@pytest.mark.parametrize("statement", ["raise SystemExit(3)", "import sys; sys.exit('bye')"])
def test_system_exit_at_import_is_a_load_error(module_name: Callable[[str], str], statement: str) -> None:
    with pytest.raises(PluginLoadError, match="SystemExit"):
        import_module(source(module_name("exit"), statement + "\n"))


def test_null_bytes_are_a_load_error(module_name: Callable[[str], str]) -> None:
    with pytest.raises(PluginLoadError) as caught:
        import_module(source(module_name("nul"), "x = 1\0\n"))
    assert caught.value.stage == "import"


def test_plugin_classes_in_definition_order(module_name: Callable[[str], str]) -> None:
    code = _code(
        """
        class Second(BaseBackgroundPlugin):
            pass

        class First(BaseEventPlugin):
            eventName = "monitoring_event"
            async def handleEvent(self, points, logger):
                pass

        class Sender(BaseEventSendingPlugin):
            async def sendEvents(self, *args):
                pass
        """
    )
    module = import_module(source(module_name("order"), code))
    assert [cls.__name__ for cls in plugin_classes(module)] == ["Second", "First", "Sender"]


def test_imported_and_abstract_classes_are_skipped(module_name: Callable[[str], str]) -> None:
    helper = module_name("helper")
    publish_module(
        import_module(
            source(
                helper,
                _code(
                    """
                    class Shared(BaseBackgroundPlugin):
                        pass
                    """
                ),
            )
        )
    )
    code = _code(
        f"""
        from {helper} import Shared

        class StillAbstract(BaseEventSendingPlugin):
            pass

        class Own(Shared):
            pass
        """
    )
    module = import_module(source(module_name("user"), code))
    assert [cls.__name__ for cls in plugin_classes(module)] == ["Own"]


def test_module_without_plugin_classes(module_name: Callable[[str], str]) -> None:
    module = import_module(source(module_name("empty"), HEADER + "class NotAPlugin:\n    pass\n"))
    with pytest.raises(PluginLoadError) as caught:
        plugin_classes(module)
    assert caught.value.stage == "classes"
    assert "no concrete plugin class" in caught.value.message


@pytest.mark.parametrize("event_line", ["", "eventName = 'on_tuesday'"])
def test_event_plugin_needs_a_known_event_name(module_name: Callable[[str], str], event_line: str) -> None:
    code = _code(
        f"""
        class Listener(BaseEventPlugin):
            {event_line}
            async def handleEvent(self, *args):
                pass
        """
    )
    module = import_module(source(module_name("event"), code))
    with pytest.raises(PluginLoadError, match="Listener has eventName") as caught:
        plugin_classes(module)
    assert caught.value.stage == "classes"


def test_a_class_bound_to_two_names_is_listed_once(module_name: Callable[[str], str]) -> None:
    code = _code(
        """
        class Plugin(BaseBackgroundPlugin):
            pass

        Alias = Plugin
        """
    )
    module = import_module(source(module_name("alias"), code))
    assert [cls.__name__ for cls in plugin_classes(module)] == ["Plugin"]


def test_describe_exception_without_origin_frames() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        assert describe_exception(exc) == "KeyError: 'k'"
        assert describe_exception(exc, "<elsewhere.py>") == "KeyError: 'k'"


def test_plugin_load_error_carries_stage_and_message() -> None:
    error = PluginLoadError("initialize", "it broke")
    assert str(error) == "initialize: it broke"
    assert (error.stage, error.message) == ("initialize", "it broke")


def test_an_import_ending_late_never_replaces_a_newer_published_version(
    module_name: Callable[[str], str],
) -> None:
    name = module_name("late")
    modules = PluginModules()
    v1, v2, v3 = (types.ModuleType(name) for _ in range(3))
    modules.publish(v1)
    modules.begin(v2)  # version 2's code starts running (in its thread)
    assert sys.modules[name] is v2
    modules.abandon(name)  # the runtime gives up on it: version 1 is visible again
    assert sys.modules[name] is v1
    modules.publish(v3)
    modules.end(v2)  # version 2's code ends after version 3 was published
    assert sys.modules[name] is v3
    modules.forget(name)
    assert name not in sys.modules


def test_abandoning_a_finished_import_changes_nothing(module_name: Callable[[str], str]) -> None:
    name = module_name("done")
    modules = PluginModules()
    published = types.ModuleType(name)
    modules.publish(published)
    modules.abandon(name)
    assert sys.modules[name] is published
    modules.forget(name)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = " + "+".join(["1"] * 100_000) + "\n", "RecursionError"),
        ("x = " + "-" * 20_000 + "1\n", "MemoryError"),
        ("raise KeyboardInterrupt('x')\n", "KeyboardInterrupt: x"),
        ("raise GeneratorExit\n", "GeneratorExit"),
    ],
    ids=["recursion-in-compiler", "memory-in-compiler", "keyboard-interrupt", "generator-exit"],
)
def test_anything_the_compiler_or_the_code_raises_is_a_load_error(
    module_name: Callable[[str], str], code: str, expected: str
) -> None:
    with pytest.raises(PluginLoadError) as caught:
        import_module(source(module_name("any"), code))
    assert caught.value.stage == "import" and expected in caught.value.message
