"""``luna-plugins cluster up|down|status|build``: the local Kubernetes control plane."""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "build"],
        help="up: start (or reuse) the cluster; down: stop it and delete its data; "
        "status: show what runs where; build: build or reuse the binaries only",
    )
    parser.add_argument(
        "--state-dir",
        default=".luna/cluster",
        help="where the kubeconfig, certificates, logs and pid files live (default: %(default)s)",
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
    parser.add_argument("--purge", action="store_true", help="down: also delete the whole state directory")


def run(args: argparse.Namespace) -> int:
    from . import cluster, tools
    from .pki import PkiError
    from .procs import PortInUseError

    state = cluster.StateDir.at(args.state_dir)
    try:
        if args.action == "build":
            started = time.monotonic()
            binaries = tools.ensure_all(sys.stderr)
            for name, path in sorted(binaries.items()):
                print(f"{name:<24} {path}")
            print(f"binaries ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
            return 0
        if args.action == "up":
            with cluster.locked(state):
                cluster.up(state, sys.stderr, apiserver_port=args.port, timeout=args.timeout)
            print(state.kubeconfig)
            return 0
        if args.action == "down":
            with cluster.locked(state):
                return 0 if cluster.down(state, sys.stderr, purge=args.purge) else 1
        return 0 if cluster.status(state, sys.stdout) else 1
    except (tools.BuildError, cluster.ClusterError, PkiError, PortInUseError) as exc:
        print(f"luna-plugins cluster {args.action}: error: {exc}", file=sys.stderr)
        return 1
