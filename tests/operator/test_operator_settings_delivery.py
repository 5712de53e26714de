"""Settings from Secrets in full passes: the service's settings Secret, the hashes in the active
list, the phases, and that no value leaves the Secrets (against the in-memory API server)."""

from __future__ import annotations

import json
from typing import Any

from luna_contract.secret_settings import encode, version_of
from luna_operator.errors import ApiError, PassIncompleteError
from tests.operator.test_operator_reconciler import V1, V2, Operator

SETTINGS = "luna-plugins-handlers-settings"
TOKEN_FROM = [{"setting": "token", "secretKeyRef": {"name": "creds", "key": "token"}}]
VALUE = "s3cret-value-7f1c"


def details(operator: Operator) -> dict[str, Any]:
    data = operator.cluster.data("luna-plugins-handlers") or {}
    return dict(json.loads(data.get("plugins.json", "{}")))


def everything_but_secrets(operator: Operator) -> str:
    """What anyone who may not read Secrets may read of what the pass wrote."""
    cluster = operator.cluster
    shown = [list(cluster.config_maps.values()), [p.get("status") for p in cluster.plugins.values()]]
    shown.append(cluster.events)
    return json.dumps(shown, default=str)


async def test_a_secret_setting_is_delivered_by_the_settings_secret_and_named_by_hash_only() -> None:
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settings={"url": "u"}, settingsFrom=TOKEN_FROM)
    await operator.full()
    assert operator.cluster.status("p")["phase"] == "Ready"
    held = operator.cluster.secret_data(SETTINGS)
    assert held == {"p.json": encode({"token": VALUE})}
    entry = details(operator)["p"]
    assert entry["settings"] == {"url": "u"} and entry["secretSettingsHash"] == version_of(held["p.json"])
    assert VALUE not in everything_but_secrets(operator)
    secret = operator.cluster.secrets[("ns", SETTINGS)]
    assert [ref["name"] for ref in secret["metadata"]["ownerReferences"]] == ["p"]
    writes = len(operator.cluster.requests)
    await operator.full()
    assert len(operator.cluster.requests) == writes  # nothing changed: nothing written


async def test_a_rotated_secret_changes_the_hash_and_the_settings_secret() -> None:
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    await operator.full()
    first = details(operator)["p"]["secretSettingsHash"]
    operator.cluster.put_secret("creds", {"token": "rotated"})
    await operator.full()
    assert operator.cluster.secret_data(SETTINGS) == {"p.json": encode({"token": "rotated"})}
    assert details(operator)["p"]["secretSettingsHash"] not in (first, None)


async def test_a_missing_secret_or_key_is_pending_and_the_last_good_version_keeps_its_values() -> None:
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    await operator.full()
    good = details(operator)["p"]
    operator.cluster.secrets.pop(("ns", "creds"))
    operator.cluster.add_plugin("p", code=V2, settingsFrom=TOKEN_FROM)
    await operator.full()
    status = operator.cluster.status("p")
    assert status["phase"] == "Pending"
    assert "Secret 'creds' not found" in status["message"] and "keeps serving" in status["message"]
    assert details(operator)["p"] == good  # the old code, with the old values' hash
    assert operator.cluster.secret_data(SETTINGS) == {"p.json": encode({"token": VALUE})}
    operator.cluster.put_secret("creds", {"other": "x"})
    await operator.full()
    assert "has no key 'token'" in operator.cluster.status("p")["message"]
    operator.cluster.put_secret("creds", {"token": "back"})
    await operator.full()
    assert operator.cluster.status("p")["phase"] == "Ready"
    assert details(operator)["p"]["codeHash"] != good["codeHash"]
    assert operator.cluster.secret_data(SETTINGS) == {"p.json": encode({"token": "back"})}


async def test_a_secret_not_offered_to_plugins_is_never_read() -> None:
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE}, offered=False)
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    await operator.full()
    status = operator.cluster.status("p")
    assert status["phase"] == "Pending" and "label it luna.dev/plugin-settings=true" in status["message"]
    assert ("ns", SETTINGS) not in operator.cluster.secrets
    assert operator.active() == []  # no version in service, so nothing to keep


async def test_the_operators_own_settings_secret_cannot_be_read_through_settings_from() -> None:
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    await operator.full()
    stealing = [{"secretRef": {"name": SETTINGS}}]
    operator.cluster.add_plugin("thief", code=V1, settingsFrom=stealing)
    await operator.full()
    assert operator.cluster.status("thief")["phase"] == "Pending"
    assert "thief" not in details(operator)


async def test_malformed_settings_from_is_invalid_and_keeps_the_last_good_version() -> None:
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    await operator.full()
    good = details(operator)["p"]
    operator.cluster.add_plugin(
        "p", code=V2, settingsFrom=[{"secretKeyRef": {"name": "creds", "key": "token"}}]
    )
    await operator.full()
    status = operator.cluster.status("p")
    assert status["phase"] == "Invalid" and "setting must be a setting name" in status["message"]
    assert details(operator)["p"] == good


async def test_removed_settings_from_drops_the_values_from_the_settings_secret() -> None:
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    operator.cluster.add_plugin("q", code=V1, module="q", settingsFrom=TOKEN_FROM)
    await operator.full()
    assert set(operator.cluster.secret_data(SETTINGS) or {}) == {"p.json", "q.json"}
    operator.cluster.add_plugin("q", code=V1, module="q")
    operator.cluster.delete_plugin("p")
    await operator.full()
    assert operator.cluster.secret_data(SETTINGS) == {}
    assert "secretSettingsHash" not in details(operator)["q"]


async def test_a_settings_secret_the_api_server_refuses_leaves_the_plugin_pending_not_unlisted() -> None:
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    operator.cluster.failures[("create", SETTINGS)] = ApiError(503, "etcd is away")
    try:
        await operator.full()
    except PassIncompleteError as exc:
        assert "settings Secret" in str(exc)
    else:
        raise AssertionError("a transient failure must make the pass incomplete")
    status = operator.cluster.status("p")
    assert status["phase"] == "Pending" and "etcd is away" in status["message"]
    del operator.cluster.failures[("create", SETTINGS)]
    await operator.full()
    assert operator.cluster.status("p")["phase"] == "Ready"


async def test_a_squatted_settings_secret_name_is_reported_and_recovers_once_it_is_removed() -> None:
    """A Secret named like the service's settings Secret but not written by the operator (so not
    in its book): the create meets 409. The plugin is pending with what to do, the name is
    reported as blocked, the pass is retried; once the squatter is gone the service recovers."""
    operator = Operator()
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    operator.cluster.failures[("create", SETTINGS)] = ApiError(409, f'secrets "{SETTINGS}" already exists')
    for _ in range(2):  # tried again, not given up on
        try:
            await operator.full()
        except PassIncompleteError as exc:
            assert "settings Secret" in str(exc)
        else:
            raise AssertionError("a squatted name must leave the pass incomplete, to be retried")
        status = operator.cluster.status("p")
        assert status["phase"] == "Pending", status
        assert "did not write: delete or rename it" in status["message"]
        assert operator.reconciler.blocked == {("ns", "Secret", SETTINGS)}
    del operator.cluster.failures[("create", SETTINGS)]  # the squatter is deleted
    await operator.full()
    assert operator.cluster.status("p")["phase"] == "Ready"
    assert operator.reconciler.blocked == set()


async def test_until_the_secrets_are_listed_a_plugin_is_waiting_not_missing() -> None:
    operator = Operator()
    operator.reconciler.settings.known = lambda: False
    operator.cluster.put_secret("creds", {"token": VALUE})
    operator.cluster.add_plugin("p", code=V1, settingsFrom=TOKEN_FROM)
    try:
        await operator.full()
    except PassIncompleteError:
        pass
    else:
        raise AssertionError("waiting for the first LIST must make the pass retried")
    assert "to be listed" in operator.cluster.status("p")["message"]
