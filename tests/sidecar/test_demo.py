"""`make demo` (examples/demo.py): the LunaPlugin manifests it builds and the committed example
YAML stay valid and in sync with examples/plugins, the demo service reports its requests to the
sidecar, the standalone demo runs, and the full demo on the local control plane comes up, serves
what it prints and leaves nothing running."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aiohttp import web

from luna_contract.plugin_modules import module_name
from luna_operator.validation import validate_code, validate_module
from tests.support.kube_fixtures import _cluster_command
from tests.support.sidecar_harness import http, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DEMO = EXAMPLES / "demo.py"
CRD = ROOT / "crds" / "lunaplugins.yaml"

#: committed YAML that copies an example plugin: file -> (example module, replacements applied to it)
DERIVED_YAML = {"kettle-v2.yaml": ("kettle", [('"kettle 1.0"', '"kettle 2.0"')])}


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def crd_spec_properties() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]  # type: ignore[no-any-return]


def check_lunaplugin(document: dict[str, Any]) -> None:
    """What the CRD's schema and the operator would refuse, without a cluster."""
    assert document["apiVersion"] == "luna.dev/v1alpha1" and document["kind"] == "LunaPlugin"
    metadata, spec = document["metadata"], document["spec"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata["name"]), metadata["name"]
    assert "namespace" not in metadata, "leave the namespace to kubectl -n"
    unknown = set(spec) - set(crd_spec_properties())
    assert not unknown, f"{metadata['name']}: spec fields the CRD does not have: {unknown}"
    assert ("code" in spec) != ("codeFrom" in spec)
    assert isinstance(spec.get("settings", {}), dict)
    module = module_name(metadata["name"], spec.get("module"))
    problems = validate_module(module) + validate_code(spec["code"], pinned_sha256=spec.get("sha256"))
    assert not problems, f"{metadata['name']}: {[str(p) for p in problems]}"


def committed_yaml() -> dict[str, list[dict[str, Any]]]:
    files = sorted((EXAMPLES / "lunaplugins").glob("*.yaml"))
    assert files, "examples/lunaplugins/ has no YAML"
    return {path.name: [d for d in yaml.safe_load_all(path.read_text()) if d] for path in files}


def test_demo_builds_a_valid_lunaplugin_per_example_plugin() -> None:
    demo = load_example("demo")
    manifests = demo.lunaplugin_manifests("http://127.0.0.1:5090")
    files = sorted(path.stem for path in (EXAMPLES / "plugins").glob("*.py"))
    assert sorted(m["metadata"]["name"].replace("-", "_") for m in manifests) == files
    for manifest in manifests:
        check_lunaplugin(manifest)
        module = manifest["metadata"]["name"].replace("-", "_")
        assert manifest["spec"]["code"] == (EXAMPLES / "plugins" / f"{module}.py").read_text()
    assert [m["spec"]["order"] for m in manifests] == list(range(len(manifests)))
    # what --print-manifests shows is the same, as YAML
    printed = subprocess.run(
        [sys.executable, str(DEMO), "--print-manifests"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert list(yaml.safe_load_all(printed.stdout)) == manifests


def test_committed_lunaplugin_yaml_is_valid_and_in_sync_with_the_examples() -> None:
    example_names = {path.stem.replace("_", "-") for path in (EXAMPLES / "plugins").glob("*.py")}
    for file_name, documents in committed_yaml().items():
        assert documents, file_name
        for document in documents:
            check_lunaplugin(document)
            name = document["metadata"]["name"]
            if name in example_names:
                assert file_name in DERIVED_YAML, (
                    f"{file_name} copies example plugin {name}: list it in DERIVED_YAML so it stays in sync"
                )
        if file_name in DERIVED_YAML:
            module, replacements = DERIVED_YAML[file_name]
            expected = (EXAMPLES / "plugins" / f"{module}.py").read_text()
            for old, new in replacements:
                assert expected.count(old) == 1, f"examples/plugins/{module}.py no longer contains {old}"
                expected = expected.replace(old, new)
            (document,) = documents
            assert document["spec"]["code"] == expected, (
                f"{file_name} is out of sync with examples/plugins/{module}.py"
            )


def test_committed_lunaplugin_yaml_runs_in_a_sidecar(sidecar_factory: Any) -> None:
    plugins, settings = {}, {}
    for documents in committed_yaml().values():
        for document in documents:
            module = module_name(document["metadata"]["name"], document["spec"].get("module"))
            plugins[module] = document["spec"]["code"]
            settings[module] = document["spec"].get("settings", {})
    sidecar = sidecar_factory(plugins=plugins, settings=settings, active=sorted(plugins))
    assert {name: p["state"] for name, p in sidecar.plugins().items()} == dict.fromkeys(plugins, "running")
    assert sidecar.get("/kettle/version").text == "kettle 2.0"
    assert sidecar.get("/hello").json() == {"greeting": "hello from a LunaPlugin", "count": 1}


async def test_demo_service_posts_requests_errors_and_events_to_the_intake(aiohttp_client: Any) -> None:
    service = load_example("demo_service")
    received: dict[str, list[Any]] = {"monitoring_event": [], "sending_event": []}

    async def intake(request: web.Request) -> web.Response:
        received[request.match_info["name"]].append(await request.json())
        return web.json_response({"accepted": 1}, status=202)

    sidecar = web.Application()
    sidecar.router.add_post("/events/{name}", intake)
    sidecar_client = await aiohttp_client(sidecar)
    client = await aiohttp_client(service.make_app(str(sidecar_client.make_url("")), flush_interval=0.05))

    handler = service.SEEDED_HANDLERS[0]
    before = time.time()
    reply = await client.post(f"/6/handlers/{handler}/events", json={"image": "a.jpg"})
    assert reply.status == 201 and reply.headers["Luna-Request-Id"]
    events = (await reply.json())["events"]
    assert (await client.post("/6/handlers/nope/events", json={"image": "a.jpg"})).status == 404
    assert (await client.get("/stats")).status == 200  # not monitored

    for _ in range(100):
        points = [p for body in received["monitoring_event"] for p in body["points"]]
        if len(points) >= 3 and received["sending_event"]:
            break
        await asyncio.sleep(0.05)
    requests = [p for p in points if p["series"] == "requests"]
    errors = [p for p in points if p["series"] == "errors"]
    assert [(p["tags"]["route"], p["tags"]["status_code"]) for p in requests] == [
        ("POST:/6/handlers/{id}/events", 201),
        ("POST:/6/handlers/{id}/events", 404),
    ]
    first = requests[0]
    assert first["tags"]["service"] == "handlers"
    assert before <= first["eventTime"] <= time.time()
    assert first["fields"]["request_id"] == reply.headers["Luna-Request-Id"]
    assert 0 < first["fields"]["execution_time"] < 5
    assert [(p["tags"]["route"], p["tags"]["error_code"]) for p in errors] == [
        ("POST:/6/handlers/{id}/events", 22002)
    ]
    assert errors[0]["fields"]["request_id"] == requests[1]["fields"]["request_id"]
    (sent,) = received["sending_event"]
    assert sent["events"] == events and sent["handlerId"] == handler
    assert sent["requestId"] == reply.headers["Luna-Request-Id"]


async def test_demo_service_answers_while_the_sidecar_is_unreachable(aiohttp_client: Any) -> None:
    service = load_example("demo_service")
    client = await aiohttp_client(service.make_app("http://127.0.0.1:9", flush_interval=0.05))
    for _ in range(5):
        assert (await client.get("/6/handlers")).status == 200
    for _ in range(100):
        stats = await (await client.get("/stats")).json()
        if stats.get("retried", 0) >= 1:
            break
        await asyncio.sleep(0.05)
    # the points wait (bounded) and are retried: the sidecar may be starting
    assert stats["retried"] >= 1 and stats["points_buffered"] == 5 and stats["points_sent"] == 0
    assert stats["requests"] == 5 and stats["status_200"] == 5


def test_standalone_demo_runs_and_stops_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--standalone", "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "curl http://127.0.0.1:" in result.stdout
    assert "sidecar exited with 0" in result.stdout
    sent = int(result.stdout.split("generator sent ")[1].split(" points")[0])
    assert sent > 0


# ---------------------------------------------------------------------------------------------
# the full demo on the local control plane


class DemoRun:
    """examples/demo.py as a child process whose output is collected line by line."""

    def __init__(self, state_dir: Path, *args: str) -> None:
        self.state_dir = state_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_") and k != "KUBECONFIG"}
        self.process = subprocess.Popen(
            [sys.executable, str(DEMO), "--state-dir", str(state_dir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, text: str, timeout: float) -> str:
        def found() -> str | None:
            if self.process.poll() is not None and not self.reader.is_alive():
                raise AssertionError(
                    f"the demo exited ({self.process.returncode}) before {text!r}:\n{self.output}"
                )
            return next((line for line in self.lines if text in line), None)

        return wait_for(found, timeout=timeout, what=f"{text!r} in the demo's output")  # type: ignore[no-any-return]

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    def kill_leftovers(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        subprocess.run(
            _cluster_command("down", "--state-dir", str(self.state_dir)),
            capture_output=True,
            check=False,
            timeout=60,
        )


def processes_using(state_dir: Path) -> list[str]:
    """Processes whose command line or environment mentions ``state_dir`` (the cluster's
    components by their flags; the operator, sidecar and demo service by their KUBECONFIG)."""
    needle = str(state_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in cmdline or needle in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command[:200]}")
    return found


def assert_all_gone(run: DemoRun) -> None:
    status = subprocess.run(
        _cluster_command("status", "--state-dir", str(run.state_dir)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert status.returncode != 0, status.stdout + status.stderr
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)", run.output)]
    assert pids, run.output
    wait_for(
        lambda: not processes_using(run.state_dir) and not any(Path(f"/proc/{pid}").exists() for pid in pids),
        timeout=10,
        what=f"every process of the demo to be gone (left: {processes_using(run.state_dir)})",
    )


needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="the local control plane needs Go")


@pytest.mark.kube
@needs_go
@pytest.mark.timeout(900)  # a first run on a machine builds the cluster binaries
def test_full_demo_serves_what_it_prints_and_leaves_nothing_running(tmp_path: Path) -> None:
    run = DemoRun(tmp_path / "demo", "--duration", "12")
    try:
        run.wait_line("kettle answered: {", timeout=800)
        run.wait_line("Ctrl-C stops everything", timeout=60)
        output = run.output
        # the curl commands it printed answer
        gets = re.findall(r"^  curl (?:-s )?(http://127\.0\.0\.1:\d+/\S*)", output, re.MULTILINE)
        assert len(gets) >= 7, output
        for url in gets:
            reply = http("GET", url, timeout=5)
            assert reply.status == 200, f"{url}: {reply.status} {reply.text}"
        by_path = {re.sub(r"http://[^/]+", "", url): url for url in gets}
        assert set(http("GET", by_path["/kettle"]).json()) == {"temperature", "litres"}
        assert http("GET", by_path["/kettle/version"]).text == "kettle 1.0"
        # the demo's traffic reaches the digest through the service's 0.5 s flushes: wait for it
        wait_for(
            lambda: "POST:/6/handlers/{id}/events 201" in http("GET", by_path["/digest"]).text,
            timeout=15,
            what="the demo's event-processing requests in route_digest's digest",
        )
        plugins = http("GET", by_path["/plugins"]).json()["plugins"]
        assert {p["name"]: p["state"] for p in plugins} == dict.fromkeys(
            ["kettle", "route_digest", "http_forwarder"], "running"
        )
        assert "luna_requests_total{" in http("GET", by_path["/metrics"]).text
        wait_for(
            lambda: http("GET", by_path["/third-party/events"]).json()["batches"] > 0,
            what="http_forwarder to forward the service's events",
        )
        # so do the kubectl commands
        kubeconfig = re.search(r"export KUBECONFIG=(\S+) PATH=(\S+):\$PATH", output)
        assert kubeconfig, output
        env = dict(os.environ, KUBECONFIG=kubeconfig[1])
        kubectl = str(Path(kubeconfig[2]) / "kubectl")
        assert re.search(r"^  kubectl -n luna-demo get lp\s", output, re.MULTILINE)
        table = subprocess.run(
            [kubectl, "-n", "luna-demo", "get", "lp"], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert re.search(r"^kettle\s+handlers\s+kettle\s+true\s+Ready\s+1/1\s", table, re.MULTILINE), table
        reports = subprocess.run(
            [kubectl, "-n", "luna-demo", "get", "lpr", "-o", "json"], env=env, capture_output=True, text=True
        )
        assert [item["spec"]["pod"] for item in json.loads(reports.stdout)["items"]] == ["handlers-demo-0"]

        code = run.finish()
    finally:
        run.kill_leftovers()
    output = run.output
    assert code == 0, output
    assert re.search(r"^\[ *1\d+s\] load: \d+ requests", output, re.MULTILINE), output  # a status line
    assert "--duration 12 s reached" in output
    assert "is down" in output and output.rstrip().endswith("demo stopped"), output
    assert_all_gone(run)


@pytest.mark.kube
@needs_go
@pytest.mark.timeout(900)
def test_full_demo_interrupted_while_starting_tears_down(tmp_path: Path) -> None:
    run = DemoRun(tmp_path / "demo")
    try:
        run.wait_line("operator running (pid", timeout=800)
        run.process.send_signal(signal.SIGINT)
        code = run.finish()
    finally:
        run.kill_leftovers()
    assert code == 0, run.output
    assert "SIGINT received" in run.output and "is down" in run.output, run.output
    assert_all_gone(run)
