"""`luna-plugins rollout status|promote|abort|retry NAME`: a LunaPlugin's staged rollout.

``status`` prints where the rollout is (phase, step, versions, canary pods, the last judgements).
``promote`` moves it past its current step (a manual pause, a hold), ``abort`` rolls it back,
``retry`` starts a rolled-back version again from the first step. The commands set the
annotation ``luna.dev/rollout-command`` (``<command>/<time>``), which GitOps users may set in
their manifests as well; the operator acts on each value once. With ``--wait`` the command waits
until the operator has acted on it.

Exit codes: 0 done, 1 the LunaPlugin has no rollout or the command does not apply to its phase,
2 the cluster could not be reached or refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any
from urllib.parse import quote

from luna_contract.names import ANNOTATION_ROLLOUT_COMMAND, GROUP, PLURAL_PLUGINS, VERSION

ACTIONS = ("status", "promote", "abort", "retry")
#: phases each command applies to
APPLIES = {
    "promote": ("Progressing", "Paused", "Held"),
    "abort": ("Progressing", "Paused", "Held"),
    "retry": ("RolledBack",),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="status, promote, abort or retry")
    parser.add_argument("name", help="the LunaPlugin")
    parser.add_argument("-n", "--namespace", help="its namespace (default: the context's)")
    parser.add_argument("--kubeconfig", help="the kubeconfig (default: KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="the kubeconfig context (default: the current one)")
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to wait for the operator to act on a command (30; 0: do not wait)",
    )


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def describe(name: str, status: dict[str, Any]) -> str:
    """The rollout of ``status`` as the ``status`` command prints it."""
    rollout = status.get("rollout")
    if not isinstance(rollout, dict):
        return f"LunaPlugin {name} has no staged rollout (no spec.rollout, or not reconciled yet)"
    canary, stable = str(rollout.get("canaryHash") or "")[:12], str(rollout.get("stableHash") or "-")[:12]
    pods = ", ".join(str(pod) for pod in rollout.get("canaryPods") or []) or "-"
    lines = [
        f"LunaPlugin {name}: {rollout.get('phase')} (step {int(rollout.get('step') or 0) + 1}, "
        f"{rollout.get('percent')}% of the pods)",
        f"  canary {canary}, stable {stable}",
        f"  canary pods ({rollout.get('canaryPodCount', 0)}): {pods}",
        f"  failed judgements: {rollout.get('failures', 0)}",
    ]
    if rollout.get("reason"):
        lines.append(f"  why: {rollout['reason']}")
    for analysis in rollout.get("analyses") or []:
        lines.append(
            f"  {analysis.get('at')} step {int(analysis.get('step') or 0) + 1}: "
            f"{analysis.get('verdict')}: {analysis.get('message')}"
        )
        for query in analysis.get("queries") or []:
            if isinstance(query, dict):
                value = query.get("value")
                lines.append(
                    f"    query {query.get('name')}: {query.get('verdict')}"
                    + (f", {value}" if value is not None else ", no value")
                )
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    from luna_cli.check.kube import KubeconfigError, connect

    try:
        kube = await connect(args.kubeconfig, args.context)
    except KubeconfigError as exc:
        print(f"luna-plugins rollout: {exc}", file=sys.stderr)
        return 2
    try:
        namespace = args.namespace or kube.namespace
        path = (
            f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{PLURAL_PLUGINS}/"
            f"{quote(args.name, safe='')}"
        )
        found = await kube.get(path)
        if not found.ok:
            print(
                f"luna-plugins rollout: LunaPlugin {namespace}/{args.name}: {found.message}", file=sys.stderr
            )
            return 2
        status = found.body.get("status") or {}
        if args.action == "status":
            print(describe(args.name, status))
            return 0 if isinstance(status.get("rollout"), dict) else 1
        phase = (status.get("rollout") or {}).get("phase")
        if phase not in APPLIES[args.action]:
            print(
                f"luna-plugins rollout: {args.action} does not apply to LunaPlugin {args.name}: its rollout "
                f"is {phase or 'absent'} ({args.action} applies to {', '.join(APPLIES[args.action])})",
                file=sys.stderr,
            )
            return 1
        value = f"{args.action}/{time.time():.0f}"
        patched = await kube.merge_patch(
            path, {"metadata": {"annotations": {ANNOTATION_ROLLOUT_COMMAND: value}}}
        )
        if not patched.ok:
            print(f"luna-plugins rollout: could not annotate {args.name}: {patched.message}", file=sys.stderr)
            return 2
        print(
            f"{args.action} asked of LunaPlugin {namespace}/{args.name} "
            f"({ANNOTATION_ROLLOUT_COMMAND}={value})"
        )
        deadline = time.monotonic() + args.wait
        while args.wait > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            found = await kube.get(path)
            rollout = (found.body.get("status") or {}).get("rollout") or {}
            if found.ok and rollout.get("handledCommand") == value:
                print(describe(args.name, found.body.get("status") or {}))
                return 0
        if args.wait > 0:
            print(
                f"luna-plugins rollout: the operator has not acted on it after {args.wait:g} s",
                file=sys.stderr,
            )
            return 2
        return 0
    finally:
        await kube.close()
