"""`luna-plugins lint`: the operator's validation (same checker, same messages) on local files,
``FILE:LINE: message``, exit 1 on problems; warnings for imports the sidecar image lacks; hostile
files fail cleanly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from luna_cli.image_modules import image_modules
from luna_cli.plugin_check import imported_modules
from luna_operator.validation import CodeChecker, validate_requirements
from tests.support.hostile_plugins import MEMORY_AT_COMPILE, RECURSION_AT_COMPILE

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "examples" / "plugins"

BAD_EVENT = """
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Tally(BaseEventPlugin):
    eventName = "monitoring_evnt"

    async def handleEvent(self, points, logger):
        pass
"""

IMPORTS = """
import json
import requests
import aiohttp.web
from yaml import safe_load
from helper_module import thing
try:
    import ujson
except ImportError:
    ujson = None
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin
from log import Logger

class Quiet(BaseBackgroundPlugin):
    pass
"""


def lint(*files: Path, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "luna_cli.main", "lint", *options, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def write(tmp_path: Path, name: str, code: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(code, bytes):
        path.write_bytes(code)
    else:
        path.write_text(code)
    return path


def test_the_example_plugins_are_clean() -> None:
    result = lint(*sorted(GOOD.glob("*.py")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "3 file(s) checked: 0 problem(s), 0 warning(s)" in result.stderr


async def test_problems_are_the_operators_own_messages_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "tally.py", BAD_EVENT)
    (problem,) = await CodeChecker().check(BAD_EVENT)
    result = lint(path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{path}:{problem.line}:1: LP105 {problem.message}"]
    assert problem.line == 5 and "monitoring_evnt" in problem.message


def test_hostile_and_broken_files_each_get_one_clear_line(tmp_path: Path) -> None:
    files = [
        write(tmp_path, "chained.py", RECURSION_AT_COMPILE),
        write(tmp_path, "unary.py", MEMORY_AT_COMPILE),
        write(tmp_path, "syntax.py", "def broken(:\n    pass\n"),
        write(tmp_path, "binary.py", b"\xff\xfe\x00plugin"),
        write(tmp_path, "json.py", "x = 1\n"),
        tmp_path / "absent.py",
    ]
    result = lint(*files)
    assert result.returncode == 1
    out = result.stdout
    assert f"{files[0]}:1:1: LP103 the code is nested too deeply to parse (RecursionError)" in out
    assert f"{files[1]}:1:1: LP103 the code is too large or too deeply nested to parse (MemoryError)" in out
    assert f"{files[2]}:1:12: LP102 syntax error: invalid syntax" in out
    assert f"{files[3]}:1:1: LP100 not UTF-8 text (byte 0): plugin code must be UTF-8" in out
    assert f"{files[4]}:1:1: LP101 module 'json' would shadow the module of that name" in out
    assert "rename the file" in out and "spec.module" not in out  # a local file has no spec.module yet
    assert f"{files[5]}:1:1: LP100 cannot read the file: No such file or directory" in out
    assert "Traceback" not in result.stderr


def test_imports_the_image_lacks_are_warnings_not_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "quiet.py", IMPORTS)
    helper = write(tmp_path, "helper_module.py", BAD_EVENT.replace("monitoring_evnt", "monitoring_event"))
    alone = lint(path)
    assert alone.returncode == 0, alone.stdout
    warned = [
        line.split(" warning: ")[0] + " " + line.split("imports ")[1].split(",")[0]
        for line in alone.stdout.splitlines()
    ]
    assert warned == [
        f"{path}:3:1: LW201 'requests'",
        f"{path}:6:1: LW201 'helper_module'",
    ]  # ujson is guarded
    together = lint(path, helper)  # a plugin linted with it provides the module
    assert [line for line in together.stdout.splitlines() if "warning" in line] == [
        f"{path}:3:1: LW201 warning: imports 'requests', which the sidecar image does not have (it has the "
        "standard library, luna_plugins and the project's dependencies such as aiohttp): declare the "
        "distribution that provides it in spec.requirements (a line of "
        f"{path.stem}.requirements.txt beside the file; see docs/packages.md), or the plugin fails to "
        "load unless another active plugin is a module of that name"
    ]


def test_the_image_modules_are_the_standard_library_the_project_and_its_requirements() -> None:
    modules = image_modules()
    assert {
        "json",
        "asyncio",
        "aiohttp",
        "multidict",
        "yarl",
        "yaml",
        "orjson",
        "log",
        "luna_plugins",
    } <= modules
    # neither the dev extras nor the local-cluster harness (a distribution of its own) are in the image
    assert not {"requests", "pytest", "mypy", "schemathesis", "luna_cluster"} & modules


NEEDS_PACKAGES = """
import redis.asyncio
import aio_pika
import zope_thing
import markdown_it
import requests
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class Forwarder(BaseBackgroundPlugin):
    pass
"""


def warned_modules(stdout: str) -> list[str]:
    return [line.split("imports ")[1].split(",")[0] for line in stdout.splitlines() if " warning: " in line]


def test_imports_the_declared_requirements_provide_are_not_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, "forwarder.py", NEEDS_PACKAGES)
    before = lint(path)
    assert warned_modules(before.stdout) == [
        "'redis'",
        "'aio_pika'",
        "'zope_thing'",
        "'markdown_it'",
        "'requests'",
    ]
    # beside the file, as the standalone sidecar reads it: one per line, '#' comments, any spelling
    # of a name (normalized, '-' as '_'); markdown-it-py is installed here and says it provides
    # markdown_it; requests is declared by nobody
    write(
        tmp_path,
        "forwarder.requirements.txt",
        "# what the plugin needs\nredis>=5,<6  # the async client\n\nAio.Pika[connect]==9.4.1\n"
        'zope-thing; python_version >= "3.11"\nmarkdown-it-py\n',
    )
    after = lint(path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert warned_modules(after.stdout) == ["'requests'"]
    assert "spec.requirements" in after.stdout
    # --requirements names another file; an empty one declares nothing
    empty = write(tmp_path, "none.txt", "# nothing\n")
    assert len(warned_modules(lint(path, options=("--requirements", str(empty))).stdout)) == 5


def test_requirements_the_operator_refuses_are_errors_at_their_line_with_its_messages(tmp_path: Path) -> None:
    path = write(tmp_path, "forwarder.py", NEEDS_PACKAGES)
    lines = [
        "redis>=5",
        "# pip options and URLs decide where code comes from: refused",
        "--index-url https://evil.example/simple",
        "pkg @ https://evil.example/pkg-1.0-py3-none-any.whl",
        "https://evil.example/pkg-1.0-py3-none-any.whl",
        "-r other.txt",
        "-e .",
        "ok-package==1.0",
        "redis==5.0.8 --hash=md5:0123",
        "redis==5.0.8 --index-url=https://evil.example",
    ]
    requirements = write(tmp_path, "forwarder.requirements.txt", "\n".join(lines) + "\n")
    result = lint(path)
    assert result.returncode == 1
    entries = [line for line in lines if not line.startswith("#")]
    expected = []
    for index, entry in enumerate(entries):
        if index in (0, 6):
            continue
        # the operator's message for that entry at that place of spec.requirements (packaging's
        # own messages go on with the entry and a caret on lines of their own)
        (problem,) = validate_requirements(["redis>=5"] * index + [entry])[1]
        expected.append(f"{requirements}:{lines.index(entry) + 1}:1: LP110 {problem.message}")
    assert "\n".join(expected) in result.stdout
    assert "is a pip option" in expected[0] and "names a URL" in expected[1] and "md5" in expected[-2]
    errors = [line for line in result.stdout.splitlines() if line.startswith(str(requirements))]
    assert len(errors) == len(expected) == 7
    assert "Traceback" not in result.stderr


def test_hostile_or_unusable_requirements_files_get_one_clear_line(tmp_path: Path) -> None:
    path = write(tmp_path, "forwarder.py", NEEDS_PACKAGES)
    huge = write(tmp_path, "huge.txt", "redis>=5\n" + "#" * (5 * 1024 * 1024) + "\n")
    many = write(tmp_path, "many.txt", "".join(f"package-{n}\n" for n in range(51)))
    binary = write(tmp_path, "binary.txt", b"redis\xff\n")
    cases = {
        str(huge): f"{huge}:1:1: LP100 the file is larger than 256 KiB",
        str(many): f"{many}:1:1: LP110 spec.requirements has 51 entries, at most 50 are allowed",
        str(binary): f"{binary}:1:1: LP100 not UTF-8 text",
        str(
            tmp_path / "absent.txt"
        ): f"{tmp_path / 'absent.txt'}:1:1: LP100 cannot read the file: No such file",
    }
    for option, message in cases.items():
        result = lint(path, options=("--requirements", option))
        assert result.returncode == 1, (option, result.stdout)
        (problem,) = [line for line in result.stdout.splitlines() if " warning: " not in line]
        assert problem.startswith(message), (option, problem)
        assert len(problem) < 300 and "Traceback" not in result.stderr
    two = lint(path, path, options=("--requirements", str(many)))
    assert two.returncode == 2 and "--requirements applies to one plugin file" in two.stderr


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import a.b, c", [("a", 1, 1), ("c", 1, 1)]),
        ("from . import x\nfrom d.e import f", [("d", 2, 1)]),
        ("try:\n    import g\nexcept (ValueError, ModuleNotFoundError):\n    pass", []),
        ("try:\n    import h\nexcept ValueError:\n    pass", [("h", 2, 5)]),
        ("def f():\n    import i", [("i", 2, 5)]),
    ],
)
def test_imports_found_in_the_code(code: str, expected: list[tuple[str, int, int]]) -> None:
    assert sorted(imported_modules(code)) == expected


GITHUB_LINE = re.compile(r"^::(error|warning) file=([^,]*),line=(\d+),col=(\d+),title=(\w+)::(.*)$")


def unescape(text: str) -> str:
    for escaped, plain in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(escaped, plain)
    return text


def test_github_annotations_parse_back_to_the_json_findings(tmp_path: Path) -> None:
    """Every finding of a broken plugin, an import warning and bad requirements: the github lines,
    parsed back as the runner parses them, are the json document's findings, and each rule is
    one lint documents."""
    from luna_cli.lint_rules import RULES

    path = write(tmp_path, "tally.py", BAD_EVENT + "import requests\n")
    write(
        tmp_path,
        "tally.requirements.txt",
        "redis>=5\nredis==5.0.8 --index-url=https://x.example\nok==1 --hash=md5:0\n",
    )
    syntax = write(tmp_path, "broken.py", "x = 1\ndef f(:\n    pass\n")
    github, as_json = (
        lint(path, syntax, options=("--format", "github")),
        lint(path, syntax, options=("--format", "json")),
    )
    assert github.returncode == as_json.returncode == 1
    parsed = []
    for line in github.stdout.splitlines():
        found = GITHUB_LINE.match(line)
        assert found, line
        severity, file, number, column, rule, message = found.groups()
        parsed.append(
            {
                "path": unescape(file),
                "line": int(number),
                "column": int(column),
                "rule": rule,
                "severity": severity,
                "message": unescape(message),
            }
        )
    findings = json.loads(as_json.stdout)["findings"]
    assert parsed == findings
    assert {f["rule"] for f in findings} == {"LP105", "LW201", "LP110", "LP102"} and set(RULES) >= {
        f["rule"] for f in findings
    }
    (syntax_error,) = [f for f in findings if f["rule"] == "LP102"]
    assert (syntax_error["path"], syntax_error["line"], syntax_error["column"]) == (str(syntax), 2, 7)
    (warning,) = [f for f in findings if f["severity"] == "warning"]
    assert (warning["line"], warning["column"]) == (9, 1) and "'requests'" in warning["message"]
    multiline = [f for f in findings if "\n" in f["message"]]  # packaging's caret lines survive
    assert all("%0A" in line for line in github.stdout.splitlines() if "~" in line) and multiline


def test_an_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    result = lint(write(tmp_path, "tally.py", BAD_EVENT), options=("--format", "sarif"))
    assert result.returncode == 2 and result.stdout == ""
    assert "invalid choice: 'sarif' (choose from 'text', 'json', 'github')" in result.stderr
