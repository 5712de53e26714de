"""What `luna-plugins check` makes of webhook configurations and of the probe's answer (pure)."""

from __future__ import annotations

from luna_cli.check.kube import Reply
from luna_cli.check.webhook import Webhook, classify, covers_lunaplugins, probe_namespace, webhooks_of

RULE = {
    "apiGroups": ["luna.dev"],
    "apiVersions": ["*"],
    "resources": ["lunaplugins"],
    "operations": ["CREATE"],
}


def webhook(selector: dict[str, object] | None = None) -> Webhook:
    return Webhook("c", "lunaplugin.luna.dev", {}, selector or {}, "Fail")


def test_only_webhooks_validating_lunaplugin_creates_count() -> None:
    assert covers_lunaplugins({"rules": [RULE]})
    assert covers_lunaplugins({"rules": [{"apiGroups": ["*"], "resources": ["*"], "operations": ["*"]}]})
    assert not covers_lunaplugins({"rules": [RULE | {"operations": ["UPDATE"]}]})
    assert not covers_lunaplugins({"rules": [RULE | {"resources": ["pods"]}]})
    assert not covers_lunaplugins({})
    configurations = [
        {
            "metadata": {"name": "ours"},
            "webhooks": [{"name": "a", "rules": [RULE]}, {"name": "b", "rules": []}],
        },
        {"metadata": {"name": "empty"}, "webhooks": None},
    ]
    assert [w.label for w in webhooks_of(configurations)] == ["ours/a"]


def test_the_probe_goes_where_the_webhook_looks() -> None:
    listed = {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}]
    }
    assert probe_namespace([webhook(listed)], None, "default") == "a"
    assert probe_namespace([webhook(listed)], None, "b") == "b"
    assert probe_namespace([webhook(listed)], "mine", "default") == "mine"
    assert probe_namespace([webhook({"matchLabels": {"kubernetes.io/metadata.name": "x"}})], None, "d") == "x"
    assert probe_namespace([webhook()], None, "default") == "default"


def test_refused_failed_calls_and_admissions_are_told_apart() -> None:
    denied = Reply(
        400, {"message": 'admission webhook "lunaplugin.luna.dev" denied the request: line 1: syntax error'}
    )
    refused = classify(denied)
    assert (refused.outcome, refused.webhook, refused.message) == (
        "refused",
        "lunaplugin.luna.dev",
        "line 1: syntax error",
    )
    failing = classify(
        Reply(
            500,
            {"message": 'Internal error occurred: failed calling webhook "w.luna.dev": tls: bad certificate'},
        )
    )
    assert (failing.outcome, failing.webhook) == ("call-failed", "w.luna.dev")
    assert classify(Reply(201, {"kind": "LunaPlugin"})).outcome == "admitted"
    other = classify(Reply(422, {"message": 'LunaPlugin "x" is invalid: spec.code: Too long'}))
    assert other.outcome == "error" and "Too long" in other.message
    assert classify(Reply(None, {"message": "ClientConnectorError: refused"})).outcome == "error"
