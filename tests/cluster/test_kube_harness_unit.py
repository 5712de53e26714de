"""Pure logic of the local cluster harness: ports, pids, cache keys, certificates (no cluster needed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from luna_cluster import cluster, pki, procs, tools
from tests.support.sidecar_harness import wait_for


def test_free_ports_are_distinct_and_bindable_on_loopback() -> None:
    ports = procs.pick_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        assert procs.port_is_free(port)


def test_a_taken_port_is_reported_clearly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not procs.port_is_free(port)
        with pytest.raises(procs.PortInUseError, match=f"127.0.0.1:{port} is already in use"):
            procs.pick_ports(3, {1: port})


def test_requested_port_keeps_its_slot() -> None:
    wanted = procs.free_port()
    ports = procs.pick_ports(3, {2: wanted})
    assert ports[2] == wanted
    assert wanted not in ports[:2]


def test_pid_file_parsing(tmp_path: Path) -> None:
    assert procs.read_pid(tmp_path / "missing.pid") is None
    (tmp_path / "bad.pid").write_text("nope\n")
    assert procs.read_pid(tmp_path / "bad.pid") is None
    (tmp_path / "ok.pid").write_text("1234\n")
    assert procs.read_pid(tmp_path / "ok.pid") == 1234


def test_is_ours_checks_binary_and_state_dir(tmp_path: Path) -> None:
    marker = str(tmp_path / "state")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        # /proc/PID/cmdline may still show the parent's arguments for a moment after Popen returns
        wait_for(lambda: procs.is_ours(child.pid, Path(sys.executable), marker), timeout=10, what="the child")
        assert not procs.is_ours(child.pid, Path(sys.executable), str(tmp_path / "other"))
        assert not procs.is_ours(child.pid, Path("/bin/sh"), marker)
        assert procs.stop(child.pid, timeout=5)
        assert not procs.is_ours(child.pid, Path(sys.executable), marker)
    finally:
        child.kill()
        child.wait()


def test_stopped_or_unknown_pid_is_not_ours() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert procs.cmdline(done.pid) is None
    assert not procs.is_ours(done.pid, Path(sys.executable), "")
    assert procs.cmdline(os.getpid()) is not None


def test_required_version_is_read_from_go_mod() -> None:
    text = "module x\n\nrequire (\n\tk8s.io/kubernetes v1.36.3\n\tk8s.io/api v0.36.3 // indirect\n)\n"
    assert tools.required_version(text, "k8s.io/kubernetes") == "v1.36.3"
    assert tools.required_version("require helm.sh/helm/v4 v4.3.1\n", "helm.sh/helm/v4") == "v4.3.1"
    with pytest.raises(tools.BuildError):
        tools.required_version(text, "go.etcd.io/etcd/server/v3")


def test_version_ldflags_carry_major_and_minor() -> None:
    kube = tools.MODULES[0]
    flags = " ".join(tools.expand_ldflags(kube, "v1.36.3"))
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=36" in flags
    assert "-X k8s.io/component-base/version.gitMajor=1" in flags


def test_cache_key_changes_with_every_input() -> None:
    module = tools.MODULES[0]
    base = tools.cache_key(module, b"mod", b"sum", "go1.26 linux amd64", "v1.36.3")
    assert base == tools.cache_key(module, b"mod", b"sum", "go1.26 linux amd64", "v1.36.3")
    assert base != tools.cache_key(module, b"mod", b"sum2", "go1.26 linux amd64", "v1.36.3")
    assert base != tools.cache_key(module, b"mod2", b"sum", "go1.26 linux amd64", "v1.36.3")
    assert base != tools.cache_key(module, b"mod", b"sum", "go1.27 linux amd64", "v1.36.3")
    assert base != tools.cache_key(module, b"mod", b"sum", "go1.26 linux amd64", "v1.36.4")
    assert base != tools.cache_key(tools.MODULES[1], b"mod", b"sum", "go1.26 linux amd64", "v1.36.3")


def test_cache_lives_under_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tools.cache_root() == tmp_path / "luna-plugins"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tools.cache_root() == Path.home() / ".cache" / "luna-plugins"


def test_plan_names_the_cache_folder_by_version_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    plan = tools.plan(tools.BINARIES["helm"], go_env="go1.26 linux amd64")
    assert plan.output.parent == tmp_path / "luna-plugins" / "bin"
    assert plan.output.name == f"helm-{plan.version}-{plan.key}"
    assert not plan.ready


def test_cached_builds_unused_for_a_month_are_removed_and_the_one_in_use_never(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    helm = tools.plan(tools.BINARIES["helm"], go_env="go1.26 linux amd64")
    bin_dir = helm.output.parent
    now = 2_000_000_000.0
    old = now - tools.UNUSED_FOR - 60

    def cached(name: str, used: float | None) -> Path:
        folder = bin_dir / name
        folder.mkdir(parents=True)
        if used is not None:
            (folder / tools.COMPLETE_MARKER).write_text("{}")
            os.utime(folder / tools.COMPLETE_MARKER, (used, used))
        return folder

    in_use = cached(helm.output.name, old)  # old marker, but it is the plan's own folder
    stale = cached("helm-v0.1.0-0123456789ab", old)
    recent = cached("helm-v0.2.0-0123456789ab", now - 3600)
    unmarked = cached("helm-v0.3.0-0123456789ab", None)  # a build under way, or not ours
    other_tool = cached("etcd-v3.0.0-0123456789ab", old)  # not a module of these plans
    out = io.StringIO()
    assert tools.prune_unused([helm], out, now=now) == [stale]
    assert not stale.exists() and all(p.is_dir() for p in (in_use, recent, unmarked, other_tool))
    assert "removed 1 cached build(s) unused for 30 days: helm-v0.1.0-0123456789ab" in out.getvalue()
    tools.mark_used(helm)
    assert time.time() - (in_use / tools.COMPLETE_MARKER).stat().st_mtime < 3600


def test_certificate_extensions() -> None:
    text = pki.extensions(server=True, client=False, dns=("localhost",), ips=("127.0.0.1",))
    assert "extendedKeyUsage=serverAuth\n" in text
    assert "subjectAltName=DNS:localhost,IP:127.0.0.1" in text
    assert pki.subject("luna-admin", "system:masters") == "/O=system:masters/CN=luna-admin"


def test_status_and_down_without_a_cluster(tmp_path: Path) -> None:
    state = cluster.StateDir.at(tmp_path / "none")
    assert not cluster.status(state, io.StringIO())
    assert cluster.down(state, io.StringIO())


def test_every_server_listens_on_loopback_only(tmp_path: Path) -> None:
    state = cluster.StateDir.at(tmp_path)
    argv = (
        cluster._etcd_args(state, Path("etcd"), 1, 2)
        + cluster._apiserver_args(state, Path("kube-apiserver"), 1, 3)
        + cluster._kcm_args(state, Path("kube-controller-manager"), 4)
    )
    addresses = [
        arg for arg in argv if "address=" in arg or "urls=" in arg or arg.startswith("--etcd-servers")
    ]
    assert addresses
    for arg in addresses:
        assert "127.0.0.1" in arg and "0.0.0.0" not in arg, arg


def test_go_output_name_skips_major_version_suffix() -> None:
    assert tools.go_output_name("go.etcd.io/etcd/server/v3") == "server"
    assert tools.go_output_name("helm.sh/helm/v4/cmd/helm") == "helm"
    assert tools.go_output_name("k8s.io/kubernetes/cmd/kubectl") == "kubectl"


def test_log_tail_shows_the_latest_run_and_its_fatal_line(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    usage = "\n".join(f"      --flag-{i} string   help" for i in range(50))
    log.write_text(f"\n=== old run\nold output\n\n=== new run\nError: unknown flag: --nope\n{usage}\n")
    tail = procs.log_tail(log, lines=5)
    assert tail.startswith("Error: unknown flag: --nope\n...")
    assert "old output" not in tail
    assert tail.endswith("--flag-49 string   help")
    assert procs.log_tail(tmp_path / "missing.log") == "(no log)"


def _fake_binaries(tmp_path: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-component"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(tools, "ensure_all", lambda out, **_: dict.fromkeys(cluster.LINKED_BINARIES, fake))


def test_a_component_that_dies_fails_up_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_binaries(tmp_path, "echo 'Error: data dir is broken' >&2; exit 3", monkeypatch)
    state = cluster.StateDir.at(tmp_path / "state")
    with pytest.raises(cluster.ClusterError, match="etcd exited with code 3") as failure:
        cluster.up(state, io.StringIO(), timeout=10)
    assert "Error: data dir is broken" in str(failure.value)
    assert not cluster.status(state, io.StringIO())


def test_lost_port_race_is_retried_then_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_binaries(
        tmp_path, "echo 'listen tcp 127.0.0.1:1: bind: address already in use' >&2; exit 1", monkeypatch
    )
    out = io.StringIO()
    with pytest.raises(cluster.ClusterError, match="address already in use"):
        cluster.up(cluster.StateDir.at(tmp_path / "state"), out, timeout=10)
    assert out.getvalue().count("retrying with other ports") == 2


def test_build_env_is_static_local_and_readonly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOFLAGS", "-mod=mod -buildvcs=true -tags=x")
    monkeypatch.setenv("CGO_ENABLED", "1")
    env = tools.build_env()
    assert env["CGO_ENABLED"] == "0" and env["GOTOOLCHAIN"] == "local"
    assert env["GOFLAGS"].split() == ["-tags=x", "-trimpath", "-buildvcs=false", "-mod=readonly"]


def test_down_leaves_a_process_that_is_not_ours_alone(tmp_path: Path) -> None:
    state = cluster.StateDir.at(tmp_path / "state")
    state.run.mkdir(parents=True)
    fake_binaries = {name: str(tmp_path / name) for name in cluster.COMPONENTS}
    state.state_file.write_text(json.dumps({"server": "https://127.0.0.1:1", "binaries": fake_binaries}))
    for component in cluster.COMPONENTS:  # a recycled pid: now it is this test process
        state.pid_file(component).write_text(f"{os.getpid()}\n")
    out = io.StringIO()
    assert cluster.down(state, out)
    assert "was not running" in out.getvalue()
    assert procs.cmdline(os.getpid()) is not None  # still alive, obviously
    assert not state.run.exists()


def test_cache_key_follows_goflags(monkeypatch: pytest.MonkeyPatch) -> None:
    module = tools.MODULES[2]
    monkeypatch.delenv("GOFLAGS", raising=False)
    plain = tools.cache_key(module, b"mod", b"sum", "go", "v4.3.1")
    monkeypatch.setenv("GOFLAGS", "-tags=netgo")
    assert tools.cache_key(module, b"mod", b"sum", "go", "v4.3.1") != plain


def test_a_failed_build_reports_the_tail_of_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("go") is None:
        pytest.skip("needs the Go toolchain")
    # keep Go's build cache (which follows XDG_CACHE_HOME by default) warm
    go_cache = subprocess.run(
        ["go", "env", "GOCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setenv("GOCACHE", go_cache)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tools, "TOOLS_DIR", tmp_path)
    source = tmp_path / "broken"
    source.mkdir()
    # "upstream" is a local replacement: no network needed
    (source / "go.mod").write_text(
        "module example.com/broken\n\ngo 1.21\n\n"
        "require example.com/up v1.0.0\n\nreplace example.com/up => ./up\n"
    )
    (source / "go.sum").write_text("")
    (source / "up").mkdir()
    (source / "up" / "go.mod").write_text("module example.com/up\n\ngo 1.21\n")
    (source / "main.go").write_text("package main\n\nfunc main() { this is not Go }\n")
    module = tools.ToolModule(name="broken", upstream="example.com/up", packages={"broken": "./"})
    plan = tools.plan(module)
    with pytest.raises(tools.BuildError, match=r"building broken failed \(exit 1\)") as failure:
        tools.build(plan, io.StringIO(), interval=60)
    assert "main.go:3" in str(failure.value)
    assert not plan.ready


def test_the_audit_log_is_opt_in_and_records_no_bodies(tmp_path: Path) -> None:
    state = cluster.StateDir.at(tmp_path / "state")
    plain = cluster._apiserver_args(state, Path("kube-apiserver"), 1, 3)
    assert not [arg for arg in plain if arg.startswith("--audit")]
    audited = cluster._apiserver_args(state, Path("kube-apiserver"), 1, 3, audit=True)
    assert f"--audit-log-path={state.audit_log}" in audited
    policy = yaml.safe_load(state.audit_policy.read_text())
    assert [rule["level"] for rule in policy["rules"]] == ["Metadata"]  # who and what, never bodies
