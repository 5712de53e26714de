"""`luna-plugins check`: is this cluster ready for LunaPlugins, as this release expects?

Checks, against the cluster of the current kubeconfig context (``--kubeconfig``, ``--context``):
the API server answers; the LunaPlugin and LunaPluginRuntime CRDs serve the version and schema of
this release; the operator's Deployment is Ready; the admission webhook presents a certificate
its caBundle verifies and refuses a broken LunaPlugin (a server-side dry run: nothing is
stored); the report guard policy is bound. One line per check (``ok`` or ``FAIL`` with what to
do), or ``-o json``; exit status 0 only when every check passes, 1 otherwise, 2 for bad
arguments or an unusable kubeconfig. ``--wait 2m`` repeats the checks until all pass or the
time is up, printing progress on standard error.
"""

from __future__ import annotations

import argparse
import re

_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$")


def duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``2m``, ``1m30s`` or ``1h``; argparse's error otherwise."""
    found = _DURATION.match(text.strip())
    if not text.strip() or found is None or not any(found.groupdict().values()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write e.g. 90s, 2m, 1m30s")
    hours, minutes, seconds = (float(found.group(key) or 0) for key in ("h", "m", "s"))
    return hours * 3600 + minutes * 60 + seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)"
    )
    parser.add_argument("--context", help="the kubeconfig context (default: its current context)")
    parser.add_argument(
        "-n",
        "--namespace",
        help="where the admission probe's dry run goes (default: the context's namespace, unless the "
        "webhook only covers other namespaces)",
    )
    parser.add_argument(
        "--release",
        help="the Helm release: only its operator, webhook and policy (default: any release's)",
    )
    parser.add_argument(
        "-l",
        "--selector",
        help="label selector of the operator's Deployment (default: the chart's labels, of --release)",
    )
    parser.add_argument(
        "--operator-namespace", help="look for the operator only in this namespace (default: all)"
    )
    parser.add_argument(
        "--wait",
        type=duration,
        default=0.0,
        metavar="DURATION",
        help="repeat the checks until all pass, for at most this long (90s, 2m, 1m30s)",
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    parser.epilog = "Example: luna-plugins check --release luna --wait 2m"


def run(args: argparse.Namespace) -> int:
    """Print the checks' results; 0 when all pass, 1 when one fails, 2 when the kubeconfig is unusable."""
    import asyncio
    import dataclasses

    from luna_cli.check.runner import Options, check

    # every option of the command is a field of Options, of the same name
    options = Options(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Options)})
    return asyncio.run(check(options))
