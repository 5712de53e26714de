"""Run every check once, or again and again until all pass (``--wait``), and print the results."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from luna_cli.check.crds import check_crds
from luna_cli.check.kube import Kube, KubeconfigError, connect
from luna_cli.check.operator_pods import check_operator, operator_selector
from luna_cli.check.report_guard import check_report_guard
from luna_cli.check.results import Result, all_ok, as_json, failed, passed, text
from luna_cli.check.webhook import check_webhook

#: seconds between two rounds of checks under ``--wait``
RETRY_INTERVAL = 2.0


@dataclass(frozen=True)
class Options:
    """What ``luna-plugins check`` was asked (see its ``--help``)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    release: str | None = None
    selector: str | None = None
    operator_namespace: str | None = None
    wait: float = 0.0
    """seconds to keep retrying; 0: check once"""
    output: str = "text"


async def run_checks(kube: Kube, options: Options) -> list[Result]:
    """Every check once, in order; only the API server's when it does not answer."""
    version = await kube.get("/version")
    if version.status is None or version.status >= 500:
        return [
            failed(
                "api server",
                f"{kube.server} does not answer: {version.message}",
                "check --kubeconfig/--context, and that the cluster is up",
            )
        ]
    if version.status in (401, 403) or not version.ok:
        return [
            failed("api server", f"{kube.server}: {version.message}", "check the kubeconfig's credentials")
        ]
    results = [passed("api server", f"{kube.server}, Kubernetes {version.body.get('gitVersion', '?')}")]
    results += await check_crds(kube)
    selector = operator_selector(options.release, options.selector)
    results.append(await check_operator(kube, selector, options.operator_namespace))
    results += await check_webhook(kube, options.release, options.namespace)
    results.append(await check_report_guard(kube, options.release))
    return results


async def check(options: Options, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the checks (until all pass, for at most ``options.wait``), print the last round; the
    exit status."""
    try:
        kube = await connect(options.kubeconfig, options.context)
    except KubeconfigError as exc:
        print(f"luna-plugins check: {exc}", file=err)
        return 2
    started = time.monotonic()
    try:
        while True:
            results = await run_checks(kube, options)
            elapsed = time.monotonic() - started
            if all_ok(results) or elapsed + RETRY_INTERVAL > options.wait:
                break
            failing = [result for result in results if not result.ok]
            print(
                f"waiting ({int(elapsed)}s of {int(options.wait)}s): {len(failing)} of {len(results)} checks "
                f"fail: {'; '.join(f'{r.name}: {r.detail}' for r in failing)}",
                file=err,
                flush=True,
            )
            await asyncio.sleep(RETRY_INTERVAL)
    finally:
        await kube.close()
    print(as_json(results) if options.output == "json" else text(results), file=out)
    return 0 if all_ok(results) else 1
