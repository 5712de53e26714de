"""``luna-cluster up|down|status|build|image|kind-image|kind-stop``: the local Kubernetes control
plane, its node, the project's image for that node, and a kind node image made offline (the test
harness; not a command of the product)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PROG = "luna-cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "build", "image", "kind-image", "kind-stop"],
        help="up: start (or reuse) the cluster; down: stop it and delete its data; "
        "status: show what runs where; build: build or reuse the binaries only; "
        "image: build the project's image and import it into the cluster's node; "
        "kind-image: build (or reuse) kind and a kind node image without a registry, print "
        "KIND=, KIND_NODE_IMAGE= and, when a Docker daemon had to be started for it, DOCKER_HOST= "
        "lines; kind-stop: stop the Docker daemon kind-image started",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        help="where the kubeconfig, certificates, logs and pid files live (default: .luna/cluster; "
        "for kind-image and kind-stop, where the pid and log of their Docker daemon live: .luna/kind)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="up: kube-apiserver port on 127.0.0.1 (default: a free one)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="up: seconds to wait for each component to become ready (default: %(default)s)",
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="up: also run a real node (kubelet, containerd, kube-proxy, kube-scheduler, CoreDNS) so "
        "that pods run; needs root and runc; build: also build the node's binaries",
    )
    parser.add_argument(
        "--kube-version",
        default=None,
        metavar="MINOR",
        help="up, build: kube-apiserver and kube-controller-manager of this older Kubernetes minor "
        "(1.30: the oldest the chart supports, for `make test-compat`) instead of today's; etcd, "
        "kubectl and helm stay today's, and there is no node (default: $LUNA_KUBE_VERSION, else today's)",
    )
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help="build: also build Prometheus and promtool with Kubernetes service discovery (for the tests)",
    )
    parser.add_argument(
        "--lua",
        action="store_true",
        help="build: also build glua, gopher-lua's interpreter (Argo CD's Lua), for the health check's tests",
    )
    parser.add_argument(
        "--audit-log",
        action="store_true",
        help="up: the API server logs every request (user, user agent, verb, resource; no bodies) to "
        "STATE_DIR/logs/kube-apiserver-audit.log, e.g. to count one client's requests",
    )
    parser.add_argument("--purge", action="store_true", help="down: also delete the whole state directory")
    parser.add_argument(
        "--tag", default="luna-plugins:dev", help="image: the image's name and tag (default: %(default)s)"
    )
    parser.add_argument(
        "--base",
        default=None,
        help="image: the BASE_IMAGE build argument; `local` builds one from Debian's packages "
        "(default: python:3.11-slim when it can be pulled, else `local`)",
    )
    parser.add_argument(
        "--context", default=None, help="image: the project checkout to build (default: the one installed)"
    )
    parser.add_argument(
        "--kind-config",
        default=None,
        metavar="FILE",
        help="kind-image: also write the kind cluster configuration the node image needs to FILE",
    )


def run(args: argparse.Namespace) -> int:
    from . import cluster, image, kind_image, tools
    from .pki import PkiError
    from .procs import PortInUseError

    kind_action = args.action in ("kind-image", "kind-stop")
    state = cluster.StateDir.at(args.state_dir or (".luna/kind" if kind_action else ".luna/cluster"))
    kube_version = args.kube_version or os.environ.get(tools.KUBE_VERSION_ENV) or None
    try:
        if args.action == "build":
            started = time.monotonic()
            extras = (*((tools.PROMETHEUS,) if args.prometheus else ()), *((tools.LUA,) if args.lua else ()))
            binaries = tools.ensure_all(sys.stderr, node=args.node, extras=extras, kube_version=kube_version)
            for name, path in sorted(binaries.items()):
                print(f"{name:<24} {path}")
            print(f"binaries ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
            return 0
        if args.action == "up":
            with cluster.locked(state):
                cluster.up(
                    state,
                    sys.stderr,
                    apiserver_port=args.port,
                    timeout=args.timeout,
                    node=args.node,
                    audit=args.audit_log,
                    kube_version=kube_version,
                )
            print(state.kubeconfig)
            return 0
        if args.action == "image":
            context = Path(args.context).resolve() if args.context else image.default_context()
            with cluster.locked(state):
                image.build_and_load(state, tag=args.tag, base=args.base, context=context, out=sys.stderr)
            return 0
        if args.action == "kind-image":
            started = time.monotonic()
            with cluster.locked(state):
                docker = kind_image.engine(state, sys.stderr)
                node_image, images = kind_image.build(docker, sys.stderr)
            if args.kind_config:
                Path(args.kind_config).write_text(kind_image.cluster_config(images))
            print(f"KIND={tools.ensure(tools.KIND, sys.stderr)['kind']}")
            print(f"KIND_NODE_IMAGE={node_image}")
            if docker.private:
                print(f"DOCKER_HOST={docker.env['DOCKER_HOST']}")
            print(f"kind node image ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
            return 0
        if args.action == "kind-stop":
            with cluster.locked(state):
                return 0 if kind_image.stop_engine(state, sys.stderr) else 1
        if args.action == "down":
            with cluster.locked(state):
                return 0 if cluster.down(state, sys.stderr, purge=args.purge) else 1
        return 0 if cluster.status(state, sys.stdout) else 1
    except (cluster.NodeUnavailableError, image.EngineUnavailableError) as exc:
        print(f"{PROG} {exc}", file=sys.stderr)
        return 2
    except (tools.BuildError, cluster.ClusterError, PkiError, PortInUseError) as exc:
        print(f"{PROG} {args.action}: error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``luna-cluster`` console script and of ``python -m luna_cluster``;
    returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run a local Kubernetes control plane (and node) for tests and the demo."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
