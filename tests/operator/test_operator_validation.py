"""The operator's code checks: parsing only, with messages that name the line, and hostile code
that costs only its own plugin (checked in a real child process with its limits)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from luna_contract.code import code_hash
from luna_contract.plugin_modules import module_name
from luna_operator.validation import (
    FAILURES_BEFORE_GIVING_UP,
    MAX_CODE_BYTES,
    CheckUnavailableError,
    CodeChecker,
    validate_code,
    validate_module,
    validate_name,
)

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


def test_names_that_cannot_be_label_values_are_refused() -> None:
    assert validate_name("p" * 63) == []
    (problem,) = validate_name("p" * 64)
    assert "metadata.name is 64 characters; at most 63" in str(problem)


#: code that makes the parser itself fail, each a case from the field
HOSTILE = {
    "memory-error": ("x = " + "-" * 10_000 + "1\n", "(MemoryError)"),
    "recursion-error": ("x = " + "1+" * 100_000 + "1\n", "(RecursionError)"),
    # parses, but its syntax tree takes ~400 MiB: over the child's address-space limit
    "huge-tree": (GOOD + "x = [" + "1," * 400_000 + "]\n", "(MemoryError)"),
    "nested-lambdas": ("x = " + "lambda:" * 20_000 + "1\n", "(MemoryError)"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_code_is_invalid_with_a_reason_and_the_operator_carries_on(case: str) -> None:
    code, reason = HOSTILE[case]
    checker = CodeChecker()
    (problem,) = asyncio.run(checker.check(code))
    assert reason in str(problem)
    assert asyncio.run(checker.check(GOOD)) == []  # and the next plugin is checked as usual


def test_in_process_validation_never_raises_for_hostile_code() -> None:
    for case in ("memory-error", "recursion-error"):
        code, reason = HOSTILE[case]
        (problem,) = validate_code(code)
        assert reason in str(problem)


def test_a_version_is_checked_once() -> None:
    checker = CodeChecker()

    async def twice() -> None:
        for _ in range(2):
            assert await checker.check(GOOD) == []
            assert await checker.check(GOOD, pinned_sha256=code_hash(GOOD)) == []
        assert [str(p) for p in await checker.check("def f(:\n")] == ["line 1: syntax error: invalid syntax"]

    asyncio.run(twice())
    assert checker.children == 3  # GOOD, GOOD with its pin, the broken one


def test_a_check_that_times_out_is_retried_then_refused() -> None:
    checker = CodeChecker(timeout=0.001)

    async def check() -> list[str]:
        return [str(p) for p in await checker.check(GOOD)]

    for _ in range(FAILURES_BEFORE_GIVING_UP - 1):
        with pytest.raises(CheckUnavailableError, match=r"took longer than 0\.001 s; trying again later"):
            asyncio.run(check())
    (message,) = asyncio.run(check())
    assert (
        message
        == f"checking the code took longer than 0.001 s, {FAILURES_BEFORE_GIVING_UP} times: simplify the code"
    )


def test_a_child_that_dies_is_retried_then_refused() -> None:
    crash = (sys.executable, "-c", "import sys; sys.stderr.write('Segmentation fault\\n'); sys.exit(-11)")
    checker = CodeChecker(command=crash)
    for _ in range(FAILURES_BEFORE_GIVING_UP - 1):
        with pytest.raises(CheckUnavailableError, match=r"the code check failed \(Segmentation fault\)"):
            asyncio.run(checker.check(GOOD))
    (problem,) = asyncio.run(checker.check(GOOD))
    assert str(problem).endswith(f"{FAILURES_BEFORE_GIVING_UP} times: simplify the code")


def test_a_child_that_cannot_start_is_retried() -> None:
    checker = CodeChecker(command=("/nonexistent/python",))
    with pytest.raises(CheckUnavailableError, match="could not start the code check"):
        asyncio.run(checker.check(GOOD))
