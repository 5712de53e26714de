"""`luna-plugins operator`: run the LunaPlugin operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from luna_contract.log_format import configure_logging
from luna_operator import config as operator_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    operator_config.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; exit 2 on a configuration error."""
    try:
        options = operator_config.resolve(vars(args))
    except ValueError as exc:
        print(f"luna-plugins operator: {exc}", file=sys.stderr)
        return 2
    configure_logging(options.log_level.upper(), options.log_format)
    # kopf logs every handler run at INFO, and the probe server every probe; ours say more
    # themselves. The API client's DEBUG lines carry whole response bodies: INFO at least.
    level = logging.getLogger().level
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, level))
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, level))
    logging.getLogger("kubernetes_asyncio").setLevel(max(logging.INFO, level))
    import kopf

    from luna_operator.handlers import OperatorState, build_registry
    from luna_operator.injection import TemplateError
    from luna_operator.metrics_http import serving_metrics
    from luna_operator.peering import own_identity

    identity = own_identity()
    try:
        state = OperatorState(options, identity=identity)
    except TemplateError as exc:
        print(f"luna-plugins operator: {exc}", file=sys.stderr)
        return 2
    registry = build_registry(state)
    host, _, port = options.liveness.rpartition(":")
    metrics_host, _, metrics_port = options.metrics.rpartition(":")

    async def main() -> None:
        if options.peering:
            async with await api_client() as api:
                await ensure_peering_objects(api, options.peering, options.namespaces)
        async with serving_metrics(state.metrics.registry, metrics_host or "127.0.0.1", int(metrics_port)):
            await kopf.operator(
                registry=registry,
                clusterwide=not options.namespaces,
                namespaces=list(options.namespaces),
                standalone=options.peering is None,
                peering_name=options.peering,
                identity=identity,  # type: ignore[arg-type]
                liveness_endpoint=f"http://{host or '127.0.0.1'}:{port}/healthz",
            )

    from luna_operator.handlers import api_client
    from luna_operator.peering import PeeringSetupError, ensure_peering_objects

    try:
        asyncio.run(main())
    except PeeringSetupError as exc:
        print(f"luna-plugins operator: {exc}", file=sys.stderr)
        return 2
    return 0
