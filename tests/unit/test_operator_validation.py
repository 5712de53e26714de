"""The operator's code checks: parsing only, with messages that name the line."""

from __future__ import annotations

import pytest

from luna_operator.validation import MAX_CODE_BYTES, code_hash, module_name, validate_code, validate_module

GOOD = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class Routes(BaseBackgroundPlugin):
    pass
"""


def messages(code: str, **kw: str) -> list[str]:
    return [str(problem) for problem in validate_code(code, **kw)]


def test_a_plugin_class_is_valid() -> None:
    assert messages(GOOD) == []


def test_plugin_class_through_a_base_defined_later_in_the_file() -> None:
    code = "class Concrete(Middle):\n    pass\n\nclass Middle(luna.BaseEventSendingPlugin):\n    pass\n"
    assert messages(code) == []


def test_code_is_never_executed() -> None:
    code = GOOD + "\nraise SystemExit('this would stop the operator if it ran')\nimport os; os._exit(3)\n"
    assert messages(code) == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = 1\ndef broken(:\n", "line 2: syntax error: invalid syntax"),
        (
            "import os\n\nclass Helper:\n    pass\n",
            "no plugin class: define a class deriving from BaseEventPlugin",
        ),
        (
            "class P(BaseEventPlugin):\n    eventName = 'on_event'\n",
            "line 2: P.eventName is 'on_event'; the service sends monitoring_event and sending_event",
        ),
    ],
)
def test_problems_name_the_line(code: str, expected: str) -> None:
    (message,) = messages(code)
    assert message.startswith(expected)


def test_size_limit() -> None:
    code = GOOD + "#" * MAX_CODE_BYTES
    (message,) = messages(code)
    assert message.startswith(f"code is {len(code.encode())} bytes; the limit is {MAX_CODE_BYTES}")


def test_sha256_pin() -> None:
    assert messages(GOOD, pinned_sha256=code_hash(GOOD)) == []
    (message,) = messages(GOOD, pinned_sha256="0" * 64)
    assert message == f"code SHA-256 {code_hash(GOOD)} does not match spec.sha256 {'0' * 64}"


def test_module_names() -> None:
    assert module_name("my-plugin", None) == "my_plugin"
    assert module_name("my-plugin", "other") == "other"
    assert validate_module("my_plugin") == []
    (problem,) = validate_module("json")
    assert "'json' would shadow the module" in str(problem) and "set spec.module" in str(problem)
    (problem,) = validate_module("my.plugin")
    assert "is not a Python module name" in str(problem)
