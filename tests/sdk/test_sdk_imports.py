"""The SDK sits under the runtime: nothing in ``luna_plugins`` imports ``luna_sidecar`` (or the
operator, the CLI, the cluster harness) when it is imported. And the product sits beside the
local-cluster harness: no module of the product (``luna-plugins``' packages) imports
``luna_cluster``, a distribution of its own that the image does not install.

Read from the source with :mod:`ast`, so a new import fails here before anything runs it, lazy
or not: the test harness is the runtime's (``luna_sidecar.testing``), not the SDK's.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import luna_plugins

SDK = Path(luna_plugins.__file__).parent
ROOT = Path(__file__).resolve().parents[2]
#: packages above the SDK: they import it, so it must not import them
ABOVE_THE_SDK = frozenset({"luna_sidecar", "luna_operator", "luna_cli", "luna_cluster"})
#: the local-cluster harness (tools/pyproject.toml), which no product module may import
HARNESS = frozenset({"luna_cluster"})
#: (file, as luna_plugins/..., module it may load lazily): none
LAZY_ALLOWED: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Found:
    file: str
    line: int
    module: str
    when: str  # "import time", "in a function" or "type checking only"

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module} ({self.when})"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if node.level == 0 else []  # relative: inside the SDK
    if (  # importlib.import_module("...") and __import__("..."): no way around this check
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
        in ("import_module", "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def _walk(node: ast.AST, file: str, when: str) -> Iterator[Found]:
    for module in _imported(node):
        yield Found(file, getattr(node, "lineno", 0), module, when)
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            yield from _walk(child, file, "type checking only")
        for child in node.orelse:
            yield from _walk(child, file, when)
        return
    inner = "in a function" if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) else when
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, file, inner)


def imports_of(folders: Iterable[Path], packages: frozenset[str]) -> list[Found]:
    """Every import of one of ``packages`` in the Python source below ``folders`` (files named
    relative to the folder above each)."""
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            file = path.relative_to(folder.parent).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            found += [
                item for item in _walk(tree, file, "import time") if item.module.split(".")[0] in packages
            ]
    return found


def sdk_imports_from_above() -> list[Found]:
    """Every import in the SDK's source of a package above it."""
    return imports_of([SDK], ABOVE_THE_SDK)


def product_folders() -> list[Path]:
    """The folders the product's wheel is made from (pyproject: packages.find ``where``)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [ROOT / where for where in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]]


def test_no_sdk_module_imports_the_runtime_when_imported() -> None:
    at_import = [str(item) for item in sdk_imports_from_above() if item.when == "import time"]
    assert at_import == [], "the SDK must not depend on the runtime (hand things in through app)"


def test_no_sdk_module_imports_the_runtime_later_either() -> None:
    lazy = [item for item in sdk_imports_from_above() if item.when != "import time"]
    assert [str(item) for item in lazy if (item.file, item.module) not in LAZY_ALLOWED] == []


def test_no_product_module_imports_the_cluster_harness() -> None:
    folders = product_folders()
    names = {folder.name for folder in folders}
    assert {"sidecar", "cli", "operator", "contract"} <= names and "tools" not in names
    assert all(any(folder.rglob("*.py")) for folder in folders)
    assert [str(item) for item in imports_of(folders, HARNESS)] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import luna_sidecar.runtime", ["import time"]),
        ("from luna_sidecar import runtime", ["import time"]),
        ("try:\n    import luna_operator\nexcept ImportError:\n    pass", ["import time"]),
        ("class A:\n    import luna_cli", ["import time"]),
        ("def f():\n    from luna_sidecar.testing import run_plugin", ["in a function"]),
        ("if TYPE_CHECKING:\n    from luna_sidecar.bus import EventBus", ["type checking only"]),
        ("import importlib\nimportlib.import_module('luna_sidecar.loader')", ["import time"]),
        ("from . import luna_sidecar\nimport luna_contract\nimport luna_plugins.http", []),
    ],
)
def test_the_check_sees_every_kind_of_import(source: str, expected: list[str]) -> None:
    found = [
        item.when
        for item in _walk(ast.parse(source), "x.py", "import time")
        if item.module.split(".")[0] in ABOVE_THE_SDK
    ]
    assert found == expected


def test_importing_every_sdk_module_loads_no_runtime_module() -> None:
    script = (
        "import pkgutil, sys, luna_plugins\n"
        "for info in pkgutil.walk_packages(luna_plugins.__path__, 'luna_plugins.'):\n"
        "    __import__(info.name)\n"
        f"above = sorted(name for name in sys.modules if name.split('.')[0] in {sorted(ABOVE_THE_SDK)!r})\n"
        "print(above)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
