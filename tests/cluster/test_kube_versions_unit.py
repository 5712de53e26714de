"""The control plane of an older Kubernetes minor (``--kube-version``, ``LUNA_KUBE_VERSION``): which
modules build it, the controller manager's flags it accepts, what ``up`` refuses (no cluster needed)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import pytest

from luna_cluster import cli, cluster, tools

GO_ENV = "go1.26 linux amd64"


def test_today_is_the_minor_tools_kube_pins_and_asking_for_it_changes_nothing() -> None:
    today = tools.default_kube_version()
    assert re.fullmatch(r"1\.\d+", today)
    assert tools.module_version(tools.MODULES[0]).startswith(f"v{today}.")
    for same in (None, "", today, f"v{today}.0"):
        assert tools.kube_compat(same) is None
        assert tools.older_minor(same) is None
        assert tools.control_plane_modules(same) == tools.MODULES


def test_1_30_replaces_only_the_api_server_and_the_controller_manager() -> None:
    for asked in ("1.30", "v1.30", "v1.30.14"):
        assert tools.older_minor(asked) == "1.30"
        assert tools.kube_compat(asked) is tools.KUBE_COMPAT["1.30"]
    modules = tools.control_plane_modules("1.30")
    assert modules[: len(tools.MODULES)] == tools.MODULES
    (compat,) = modules[len(tools.MODULES) :]
    assert set(compat.packages) == {"kube-apiserver", "kube-controller-manager"}
    assert compat.directory.name == "kube-1.30"
    # ...and the older minor's own go.mod, not today's: versioned like the upstream release
    assert tools.module_version(compat).startswith("v1.30.")
    assert "gitMinor=30" in " ".join(tools.expand_ldflags(compat, tools.module_version(compat)))


def test_a_minor_there_is_no_module_of_is_refused_with_the_known_ones() -> None:
    with pytest.raises(
        tools.BuildError, match=r"no control plane of Kubernetes 1\.29 here \(there are 1\.30, "
    ):
        tools.kube_compat("1.29")
    with pytest.raises(tools.BuildError, match="not a Kubernetes version"):
        tools.kube_compat("latest")


def test_the_older_go_mod_points_every_staging_module_at_the_matching_release() -> None:
    go_mod = (tools.KUBE_COMPAT["1.30"].directory / "go.mod").read_text()
    version = tools.required_version(go_mod, "k8s.io/kubernetes")
    staging = f"v0.{version.removeprefix('v1.')}"
    replaced = re.findall(r"^\s*(k8s\.io/[\w.-]+) => (k8s\.io/[\w.-]+) (v\S+)$", go_mod, re.MULTILINE)
    assert len(replaced) > 20
    for source, target, pinned in replaced:
        assert (source, pinned) == (target, staging)


def test_ensure_all_takes_the_older_api_server_and_todays_clients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(tools, "go_environment", lambda: GO_ENV)
    built: list[str] = []

    def fake_build(plan_: tools.BuildPlan, out: Any = None, interval: float = 0) -> tools.BuildPlan:
        built.append(plan_.module.name)
        return plan_

    monkeypatch.setattr(tools, "build", fake_build)
    binaries = tools.ensure_all(io.StringIO(), kube_version="1.30")
    assert built == [*(module.name for module in tools.MODULES), "kube-1.30"]
    older, today = tools.plan(tools.KUBE_COMPAT["1.30"], GO_ENV), tools.plan(tools.MODULES[0], GO_ENV)
    assert older.output != today.output and older.output.name.startswith("kube-1.30-v1.30.")
    assert binaries["kube-apiserver"] == older.binary("kube-apiserver")
    assert binaries["kube-controller-manager"] == older.binary("kube-controller-manager")
    assert binaries["kubectl"] == today.binary("kubectl")
    assert tools.ensure_all(io.StringIO())["kube-apiserver"] == today.binary("kube-apiserver")


def test_pruning_todays_builds_leaves_the_older_minors_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    today = tools.plan(tools.MODULES[0], GO_ENV)
    now = 2_000_000_000.0
    stale: list[Path] = []
    for name in ("kube-v1.35.0-0123456789ab", "kube-1.30-v1.30.14-0123456789ab"):
        folder = today.output.parent / name
        folder.mkdir(parents=True)
        (folder / tools.COMPLETE_MARKER).write_text("{}")
        stamp = now - tools.UNUSED_FOR - 60
        os.utime(folder / tools.COMPLETE_MARKER, (stamp, stamp))
        stale.append(folder)
    assert tools.prune_unused([today], io.StringIO(), now=now) == [stale[0]]
    assert stale[1].is_dir()  # another module's: its own plan prunes it


def test_controllers_younger_than_the_minor_are_left_out() -> None:
    young = "-device-taint-eviction-controller"  # turned off without a node; 1.30 knows no such name
    assert young in cluster.controllers(node=False)
    older = cluster.controllers(node=False, kube_version="1.30")
    assert set(older) == set(cluster.controllers(node=False)) - {young}
    assert young not in cluster.controllers(node=False, kube_version="1.32")
    assert cluster.controllers(node=False, kube_version="1.33") == cluster.controllers(node=False)
    assert cluster.controllers(node=True, kube_version="1.30") == cluster.controllers(node=True)


def test_the_controller_manager_of_1_30_gets_only_names_it_knows(tmp_path: Path) -> None:
    state = cluster.StateDir.at(tmp_path)
    (flag,) = [
        arg
        for arg in cluster._kcm_args(state, Path("kube-controller-manager"), 4, kube_version="1.30")
        if arg.startswith("--controllers=")
    ]
    # kube-controller-manager 1.30's names (cmd/kube-controller-manager/names, k8s.io/cloud-provider/names)
    known_in_1_30 = {
        "node-ipam-controller",
        "cloud-node-lifecycle-controller",
        "service-lb-controller",
        "node-route-controller",
        "node-lifecycle-controller",
        "taint-eviction-controller",
        "persistentvolume-attach-detach-controller",
        "persistentvolume-expander-controller",
        "ttl-controller",
    }
    names = flag.removeprefix("--controllers=").split(",")
    assert names[0] == "*" and {name.lstrip("-") for name in names[1:]} <= known_in_1_30


def test_up_refuses_a_node_with_an_older_minor_and_an_unknown_minor(tmp_path: Path) -> None:
    state = cluster.StateDir.at(tmp_path / "state")
    with pytest.raises(cluster.ClusterError, match="kubelet may not be newer than its API server"):
        cluster.up(state, io.StringIO(), node=True, kube_version="1.30")
    with pytest.raises(tools.BuildError, match=r"no control plane of Kubernetes 1\.29"):
        cluster.up(state, io.StringIO(), kube_version="1.29")
    assert not state.root.exists()


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], None, None),
        ([], "1.30", "1.30"),
        (["--kube-version", "1.30"], None, "1.30"),
        (["--kube-version", "1.36"], "1.30", "1.36"),  # the flag wins
    ],
)
def test_the_cli_takes_the_version_from_the_flag_else_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], env: str | None, expected: str | None
) -> None:
    if env is None:
        monkeypatch.delenv(tools.KUBE_VERSION_ENV, raising=False)
    else:
        monkeypatch.setenv(tools.KUBE_VERSION_ENV, env)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cluster, "up", lambda state, out, **kwargs: calls.append(kwargs))
    assert cli.main(["up", "--state-dir", str(tmp_path / "state"), *argv]) == 0
    assert calls[0]["kube_version"] == expected


def test_the_cli_reports_an_unknown_minor_as_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(tools.KUBE_VERSION_ENV, raising=False)
    assert cli.main(["up", "--state-dir", str(tmp_path / "state"), "--kube-version", "1.29"]) == 1
    assert "luna-cluster up: error: no control plane of Kubernetes 1.29" in capsys.readouterr().err
