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
from luna_contract.requirements import check_requirements
from luna_operator.secret_settings import check_shape
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
        # what no earlier check of render's looks at, the schema the CRD is generated from refuses
        (kettle, "--order", str(2**31)): "does not fit the LunaPlugin schema: Expected `int` <= 2147483647",
        (kettle, "--order", str(-(2**31) - 1)): "does not fit the LunaPlugin schema: Expected `int` >=",
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


SETTINGS_FROM_YAML = """
# credentials of the third party, from Secrets offered to plugins
- setting: apiToken
  secretKeyRef: {name: bucket-credentials, key: token}
- secretRef:
    name: bucket-credentials
  prefix: bucket_
"""


def test_requirements_beside_the_file_and_settings_from_go_into_the_spec(tmp_path: Path) -> None:
    plugin = tmp_path / "kettle.py"
    plugin.write_text((PLUGINS / "kettle.py").read_text())
    (tmp_path / "kettle.requirements.txt").write_text(
        "# packages\nRedis >= 5 , < 6   # the client\n\naio_pika[connect]==9.4.1\nRedis >= 5 , < 6\n"
    )
    settings_from = tmp_path / "from.yaml"
    settings_from.write_text(SETTINGS_FROM_YAML)
    result = render(str(plugin), "--settings-from", str(settings_from))
    assert result.returncode == 0, result.stderr
    (document,) = yaml.safe_load_all(result.stdout)
    check_lunaplugin(document)
    # canonical spelling (as the operator and the sidecar keep them), exact duplicates once
    assert document["spec"]["requirements"] == ["Redis<6,>=5", "aio_pika[connect]==9.4.1"]
    assert document["spec"]["requirements"] == list(
        check_requirements(["Redis >= 5 , < 6", "aio_pika[connect]==9.4.1"])
    )
    assert document["spec"]["settingsFrom"] == [
        {"setting": "apiToken", "secretKeyRef": {"name": "bucket-credentials", "key": "token"}},
        {"secretRef": {"name": "bucket-credentials"}, "prefix": "bucket_"},
    ]
    assert check_shape(document["spec"]["settingsFrom"], None) == []
    assert f"spec.requirements from {tmp_path / 'kettle.requirements.txt'} (2 entries)" in result.stderr
    # --requirements names another file (JSON works for --settings-from too); none: no field
    other = tmp_path / "other.txt"
    other.write_text("orjson>=3\n")
    as_json = tmp_path / "from.json"
    as_json.write_text(json.dumps([{"setting": "t", "secretKeyRef": {"name": "s", "key": "k"}}]))
    result = render(str(plugin), "--requirements", str(other), "--settings-from", str(as_json))
    (document,) = yaml.safe_load_all(result.stdout)
    assert document["spec"]["requirements"] == ["orjson>=3"]
    assert document["spec"]["settingsFrom"] == [{"setting": "t", "secretKeyRef": {"name": "s", "key": "k"}}]
    (document,) = yaml.safe_load_all(render(str(PLUGINS / "kettle.py")).stdout)
    assert "requirements" not in document["spec"] and "settingsFrom" not in document["spec"]


def test_hostile_requirements_and_settings_from_stop_with_one_message_and_no_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def write(name: str, text: str | bytes) -> str:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return str(path)

    kettle = str(PLUGINS / "kettle.py")
    pip_option = write("option.txt", "redis\n--extra-index-url https://evil.example/simple\n")
    url = write("url.txt", "# from the internet\npkg @ https://evil.example/pkg.whl\n")
    many = write("many.txt", "".join(f"package-{n}\n" for n in range(51)))
    long_entry = write("long.txt", "x" + "y" * 400 + "\n")
    huge_requirements = write("huge.txt", "redis\n" + "#" * (5 * 1024 * 1024) + "\n")
    not_utf8 = write("binary.txt", b"redis\xff\n")
    a_mapping = write("mapping.yaml", "setting: t\nsecretKeyRef: {name: s, key: k}\n")
    a_string = write("string.yaml", "bucket-credentials\n")
    empty = write("empty.yaml", "")
    not_yaml = write("broken.yaml", "- {setting: t, secretKeyRef: [\n")
    nested = write("nested.json", "[" * 100_000 + "]" * 100_000)
    huge_list = write("huge.yaml", "- secretRef: {name: s}\n" * 250_000)
    unknown = write("unknown.yaml", "- setting: t\n  secretKeyref: {name: s, key: k}\n")
    both = write("both.yaml", "- setting: t\n  secretKeyRef: {name: s, key: k}\n  secretRef: {name: s}\n")
    no_setting = write("nosetting.yaml", "- secretKeyRef: {name: s, key: k}\n")
    bad_name = write("badname.yaml", "- secretRef: {name: Bad_Secret}\n")
    twice = write(
        "twice.yaml",
        "- {setting: t, secretKeyRef: {name: s, key: a}}\n- {setting: t, secretKeyRef: {name: s, key: b}}\n",
    )
    number = write("number.yaml", "- {setting: t, secretKeyRef: {name: s, key: 0755}}\n")
    twenty_one = write("many.yaml", "- secretRef: {name: s}\n" * 21)
    plain = write("plain.json", '{"t": "not secret"}')
    absent = str(tmp_path / "absent")
    requirements_cases = [
        (
            pip_option,
            f"{pip_option}:2:1: LP110 spec.requirements[1] '--extra-index-url https://evil.example/s' is",
        ),
        (url, f"{url}:2:1: LP110 spec.requirements[0] 'pkg @ https://evil.example/pkg.whl' names a URL"),
        (many, f"{many}:1:1: LP110 spec.requirements has 51 entries, at most 50 are allowed"),
        (long_entry, f"{long_entry}:1:1: LP110 spec.requirements[0] is 401 characters long"),
        (huge_requirements, f"{huge_requirements}:1:1: LP100 the file is larger than 256 KiB"),
        (not_utf8, f"{not_utf8}:1:1: LP100 not UTF-8 text"),
        (absent, f"{absent}:1:1: LP100 cannot read the file: No such file"),
    ]
    settings_from_cases = [
        (a_mapping, "must hold a list of settingsFrom items, not a mapping"),
        (a_string, "must hold a list of settingsFrom items, not a string"),
        (empty, "must hold a list of settingsFrom items, not an empty file"),
        (not_yaml, "not YAML or JSON: line 2, column 1"),
        (nested, "nested too deeply"),
        (huge_list, "the file is larger than 256 KiB"),
        (unknown, "spec.settingsFrom[0] has a field the CRD does not know: 'secretKeyref'"),
        (both, "spec.settingsFrom[0] needs exactly one of secretKeyRef and secretRef"),
        (no_setting, "spec.settingsFrom[0].setting must be a setting name"),
        (bad_name, "spec.settingsFrom[0].secretRef.name 'Bad_Secret' is not a Secret name"),
        (twice, "spec.settingsFrom[1].setting 't' is also spec.settingsFrom[0]'s"),
        (number, "spec.settingsFrom[0].secretKeyRef.key must be a Secret key"),
        (twenty_one, "spec.settingsFrom has 21 items, at most 20 are allowed"),
        (absent, "cannot read the file: No such file"),
    ]
    cases = {(kettle, "--requirements", path): message for path, message in requirements_cases}
    cases |= {
        (kettle, "--settings-from", path): f"--settings-from {path}: " for path, _ in settings_from_cases
    }
    cases[(kettle, "--settings-from", twice, "--settings", plain)] = (
        "spec.settingsFrom[0].setting 't' is also in spec.settings: keep it in one place"
    )
    messages = dict(settings_from_cases)
    for args, message in cases.items():
        code = main(["render", *args])  # in this process: one interpreter start for all cases
        out, err = capsys.readouterr()
        assert (code, out) == (1, ""), (args, out[:200], err)
        assert message in err, (args, err[:2000])
        if args[1] == "--settings-from" and len(args) == 3:
            assert messages[args[2]] in err, (args, err[:2000])
        assert len(err) < 2000 and "Traceback" not in err, (args, err[:2000])


def test_a_hostile_requirements_file_beside_the_plugin_stops_render_too(tmp_path: Path) -> None:
    plugin = tmp_path / "kettle.py"
    plugin.write_text((PLUGINS / "kettle.py").read_text())
    beside = tmp_path / "kettle.requirements.txt"
    beside.write_text("-e git+https://evil.example/repo.git#egg=pkg\n")
    result = render(str(plugin))  # the real process, as kubectl apply would get its output
    assert (result.returncode, result.stdout) == (1, "")
    message = (
        f"{beside}:1:1: LP110 spec.requirements[0] '-e git+https://evil.example/repo.git' is a pip option"
    )
    assert message in result.stderr


def test_isolation_goes_into_the_spec_only_when_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    kettle = str(PLUGINS / "kettle.py")
    for args, expected in (
        ((), None),
        (("--isolation", "process"), "process"),
        (("--isolation", "inProcess"), "inProcess"),
    ):
        assert main(["render", kettle, "--no-check", *args]) == 0
        (document,) = yaml.safe_load_all(capsys.readouterr().out)
        check_lunaplugin(document)
        assert document["spec"].get("isolation") == expected
    with pytest.raises(SystemExit) as refused:  # argparse refuses what the CRD would
        main(["render", kettle, "--isolation", "thread"])
    assert refused.value.code == 2
    assert "invalid choice: 'thread'" in capsys.readouterr().err
