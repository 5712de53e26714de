"""The admission webhooks' server and its certificates: the files it serves as they change
(:mod:`luna_operator.webhook_tls`), from ``--webhook-cert``, a self-signed pair, or the
operator's own CA (:mod:`luna_operator.webhook_ca`)."""

from __future__ import annotations

import datetime
from pathlib import Path

import kopf

from luna_operator.certs import self_signed
from luna_operator.config import OperatorConfig
from luna_operator.metrics import OperatorMetrics
from luna_operator.state import USER_AGENT, api_client
from luna_operator.webhook_ca import CAApi, CAKeeper, CAPolicy, CAState, ServingFiles
from luna_operator.webhook_tls import ReloadingTLS, ServedCertificate

WEBHOOK_RESTART_INTERVAL = 10.0**9
"""kopf restarts its webhook listener when the certificate files change; ours never needs to"""


def webhook_tls(
    options: OperatorConfig, metrics: OperatorMetrics, serving: ServingFiles | None = None
) -> ReloadingTLS:
    """The webhook's certificate files (``serving``, else ``--webhook-cert``/``--webhook-key``,
    else a self-signed pair), served as they change (see :mod:`luna_operator.webhook_tls`) and
    in the metrics."""
    if serving is not None:
        cert, key = serving.certfile, serving.keyfile
    elif options.webhook_cert and options.webhook_key:
        cert, key = Path(options.webhook_cert), Path(options.webhook_key)
    else:
        cert, key = self_signed(Path(options.webhook_certs_dir), options.webhook_host)

    def renewed(certificate: ServedCertificate) -> None:
        metrics.webhook_certificate_reloads.inc()
        metrics.webhook_certificate_expiry.set(certificate.not_after)

    tls = ReloadingTLS(cert, key, check_interval=options.webhook_cert_check_interval, on_change=renewed)
    metrics.webhook_certificate_expiry.set(tls.served.not_after)
    return tls


def webhook_server(options: OperatorConfig, tls: ReloadingTLS) -> kopf.WebhookServer:
    """The admission webhook's server: one listener for the operator's whole life, whatever
    the certificate files do."""
    return kopf.WebhookServer(
        addr=options.webhook_host,
        port=options.webhook_port,
        host=options.webhook_host,
        context=tls.context,
        certfile=str(tls.certfile),
        pkeyfile=str(tls.keyfile),
        cafile=str(tls.certfile),
        file_check_interval=WEBHOOK_RESTART_INTERVAL,
    )


async def own_ca(options: OperatorConfig, metrics: OperatorMetrics) -> CAKeeper:
    """The keeper of the operator's own webhook CA (``--webhook-ca-secret``), after a first
    successful check: the serving certificate exists when this returns."""
    assert options.webhook_ca_secret is not None
    namespace, name = options.webhook_ca_secret.split("/", 1)
    api = await api_client()
    api.user_agent = USER_AGENT

    def trusted(state: CAState) -> None:
        if state.signer is not None:
            metrics.webhook_ca_expiry.set(state.signer.not_after.timestamp())

    keeper = CAKeeper(
        CAApi(api),
        namespace,
        name,
        tuple((kind, name) for kind, _, name in (e.partition("/") for e in options.webhook_configurations)),
        list(options.webhook_dns_names),
        ServingFiles(Path(options.webhook_certs_dir)),
        CAPolicy(
            ca_validity=datetime.timedelta(seconds=options.webhook_ca_validity),
            serving_validity=datetime.timedelta(seconds=options.webhook_serving_validity),
            overlap=datetime.timedelta(seconds=options.webhook_ca_overlap),
        ),
        interval=options.webhook_ca_check_interval,
        on_ca=trusted,
    )
    await keeper.bootstrap()
    return keeper
