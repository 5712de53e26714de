"""Run the Argo CD health check of docs/argocd/ as Argo CD does: in gopher-lua, with ``obj``.

``glua`` (gopher-lua's interpreter, the Lua Argo CD embeds) is built from ``tools/lua`` (or reused
from the build cache); a test fails, never skips, when it cannot be built. The object reaches the
script as a Lua table converted from its JSON, as Argo CD converts it; the script runs in an
environment holding only ``obj`` and the libraries Argo CD opens for health scripts (base, string,
table, math), so a script that reaches for anything else fails here too.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "argocd" / "lunaplugin-health.lua"

#: prints "<status>\n<message>" of what the health script returns
RUNNER = """
local chunk, problem = loadstring(SCRIPT, "lunaplugin-health.lua")
if chunk == nil then error(problem) end
local sandbox = {
  obj = OBJ, string = string, table = table, math = math, tostring = tostring, tonumber = tonumber,
  type = type, pairs = pairs, ipairs = ipairs, next = next, select = select, error = error,
  pcall = pcall, unpack = unpack,
}
setfenv(chunk, sandbox)
local hs = chunk()
if type(hs) ~= "table" or type(hs.status) ~= "string" then error("the script returned no hs.status") end
io.write(hs.status, "\\n", hs.message or "")
"""


@dataclass(frozen=True)
class Health:
    """What the script returned: Argo CD's health status and its message."""

    status: str
    message: str


def glua() -> str:
    """The path of ``glua``; fails the test when it cannot be built."""
    from luna_cluster import tools

    try:
        return str(tools.ensure(tools.LUA)["glua"])
    except tools.BuildError as exc:
        pytest.fail(f"glua is needed and could not be built: {exc}")


def lua_literal(value: Any) -> str:
    """``value`` (decoded JSON) as a Lua expression: objects and arrays become tables (arrays
    1-based), null becomes nil, strings are quoted with every byte outside printable ASCII escaped."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            chr(byte) if 32 <= byte < 127 and chr(byte) not in '"\\' else f"\\{byte:03d}"
            for byte in value.encode()
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(str(k))}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def health(obj: dict[str, Any], workdir: Path, script: Path = SCRIPT) -> Health:
    """Evaluate ``script`` against ``obj`` (a LunaPlugin as the API server returns it)."""
    program = workdir / "health-run.lua"
    program.write_text(
        f"SCRIPT = {lua_literal(script.read_text())}\nOBJ = {lua_literal(json.loads(json.dumps(obj)))}\n"
        + RUNNER
    )
    result = subprocess.run([glua(), str(program)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0 and not result.stderr, f"glua failed: {result.stdout}{result.stderr}"
    status, _, message = result.stdout.partition("\n")
    return Health(status, message)
