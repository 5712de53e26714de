"""`luna-plugins render`: the manifest it prints (inline, or from a ConfigMap with the sha256 pin)
matches the CRD and the operator's rules; bad input stops with one clear message and prints no
manifest. Applying the output to a real cluster is tests/e2e/test_render_apply.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from luna_cli.main import main
from tests.sidecar.test_demo import check_lunaplugin

PLUGINS = Path(__file__).resolve().parents[2] / "examples" / "plugins"


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "luna_cli.main", "render", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_inline_manifest_carries_the_file_its_settings_and_names(tmp_path: Path) -> None:
    settings = tmp_path / "s.json"
    settings.write_text('{"tickSeconds": 2, "nested": {"a": [1, 2]}}')
    result = render(str(PLUGINS / "kettle.py"), "--settings", str(settings), "--order", "3", "--disabled")
    assert result.returncode == 0, result.stderr
    (document,) = yaml.safe_load_all(result.stdout)
    check_lunaplugin(document)
    assert document["metadata"] == {"name": "kettle"}
    assert document["spec"] == {
        "service": "handlers",
        "order": 3,
        "enabled": False,
        "settings": {"tickSeconds": 2, "nested": {"a": [1, 2]}},
        "code": (PLUGINS / "kettle.py").read_text(),
    }
    assert "  code: |\n" in result.stdout  # the code reads as the file does


def test_code_from_a_configmap_is_pinned_and_module_and_namespace_follow(tmp_path: Path) -> None:
    result = render(
        str(PLUGINS / "route_digest.py"),
        "--code-from",
        "digest-code",
        "--name",
        "digest",
        "--namespace",
        "ns1",
        "--service",
        "other",
    )
    assert result.returncode == 0, result.stderr
    config_map, plugin = yaml.safe_load_all(result.stdout)
    code = (PLUGINS / "route_digest.py").read_text()
    assert config_map == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "digest-code", "namespace": "ns1"},
        "data": {"route_digest.py": code},
    }
    assert plugin["metadata"] == {"name": "digest", "namespace": "ns1"}
    assert plugin["spec"] == {
        "service": "other",
        "module": "route_digest",  # the name alone would make the module "digest"
        "codeFrom": {"configMapKeyRef": {"name": "digest-code", "key": "route_digest.py"}},
        "sha256": hashlib.sha256(code.encode()).hexdigest(),
    }


def test_bad_input_stops_with_one_message_and_no_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_json = tmp_path / "bad.json"
    not_json.write_text("{greeting: hi}")
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    huge = tmp_path / "huge.py"
    huge.write_text((PLUGINS / "kettle.py").read_text() + "#" + "x" * (2 * 1024 * 1024) + "\n")
    broken = tmp_path / "broken.py"
    broken.write_text("class Broken(BaseBackgroundPlugin)\n")
    big_settings = tmp_path / "big.json"
    big_settings.write_text(json.dumps({"blob": "x" * 70_000}))
    kettle = str(PLUGINS / "kettle.py")
    cases = {
        (kettle, "--settings", str(not_json)): f"--settings {not_json}: not JSON: Expecting property name",
        (kettle, "--settings", str(a_list)): "must hold a JSON object (the plugin's self.settings), not list",
        (kettle, "--settings", str(tmp_path / "none.json")): "cannot read the file: No such file",
        (kettle, "--settings", str(big_settings)): f"--settings {big_settings}: spec.settings is 700",
        (str(huge),): "bytes; the limit is 819200",
        (str(broken),): f"{broken}:1: syntax error",
        (kettle, "--name", "Kettle_1"): "'Kettle_1' cannot be a LunaPlugin name",
        (kettle, "--name", "k" * 64): "at most 63 characters",
        (kettle, "--code-from", "Not A Name"): "--code-from 'Not A Name' is not a valid ConfigMap name",
        (kettle, "--module", "json"): "module 'json' would shadow",
        (str(tmp_path / "absent.py"),): "cannot read the file",
    }
    for args, message in cases.items():
        code = main(["render", *args])  # in this process: one interpreter start instead of eleven
        out, err = capsys.readouterr()
        assert (code, out) == (1, ""), (args, out[:200], err)
        assert message in err, (args, err)
        assert len(err) < 2000


def test_large_inline_code_gets_a_note_about_server_side_apply(tmp_path: Path) -> None:
    large = tmp_path / "large.py"
    large.write_text((PLUGINS / "kettle.py").read_text() + "#" + "x" * 300_000 + "\n")
    result = render(str(large))
    assert result.returncode == 0
    assert "kubectl apply --server-side" in result.stderr and "--code-from" in result.stderr
