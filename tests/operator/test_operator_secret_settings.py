"""spec.settingsFrom: shape checks and resolution against offered Secrets (pure logic)."""

from __future__ import annotations

import base64

from luna_operator.secret_settings import (
    OfferedSecret,
    check_shape,
    offered_secret,
    referenced_secrets,
    resolve,
)

API = OfferedSecret("api", True, {"token": "s3cret", "user": "luna"})
HIDDEN = OfferedSecret("hidden", False, {"password": "p4ss"})


def test_a_key_and_a_whole_secret_resolve_to_settings() -> None:
    items = [
        {"setting": "apiToken", "secretKeyRef": {"name": "api", "key": "token"}},
        {"secretRef": {"name": "api"}, "prefix": "api_"},
    ]
    assert check_shape(items, {"url": "x"}) == []
    resolved = resolve(items, {"url": "x"}, {"api": API})
    assert resolved.values == {"apiToken": "s3cret", "api_token": "s3cret", "api_user": "luna"}
    assert resolved.encoded == b'{"apiToken":"s3cret","api_token":"s3cret","api_user":"luna"}'
    assert referenced_secrets(items) == {"api"}


def test_a_secret_that_is_not_offered_to_plugins_is_refused_without_its_values() -> None:
    items = [{"setting": "password", "secretKeyRef": {"name": "hidden", "key": "password"}}]
    resolved = resolve(items, {}, {"hidden": HIDDEN})
    assert resolved.values is None and not resolved.waiting
    (problem,) = resolved.problems
    assert "luna.dev/plugin-settings=true" in problem and "p4ss" not in problem


def test_a_missing_secret_or_key_is_waiting() -> None:
    for items in (
        [{"setting": "t", "secretKeyRef": {"name": "nope", "key": "token"}}],
        [{"setting": "t", "secretKeyRef": {"name": "api", "key": "nokey"}}],
    ):
        resolved = resolve(items, {}, {"api": API})
        assert resolved.values is None and resolved.waiting, resolved


def test_shapes_that_cannot_work_are_named() -> None:
    assert check_shape("x", {})[0].startswith("spec.settingsFrom must be a list")
    assert "exactly one of" in check_shape([{"setting": "a"}], {})[0]
    both = [{"setting": "a", "secretKeyRef": {"name": "s", "key": "k"}, "secretRef": {"name": "s"}}]
    assert "exactly one of" in check_shape(both, {})[0]
    assert (
        "also in spec.settings"
        in check_shape([{"setting": "a", "secretKeyRef": {"name": "s", "key": "k"}}], {"a": 1})[0]
    )
    assert "not a Secret name" in check_shape([{"secretRef": {"name": "Bad_Name"}}], {})[0]
    assert "at most 20" in check_shape([{"secretRef": {"name": "s"}}] * 21, {})[0]


def test_a_setting_from_two_places_and_binary_values_are_refused() -> None:
    twice = [
        {"setting": "token", "secretKeyRef": {"name": "api", "key": "token"}},
        {"secretRef": {"name": "api"}},
    ]
    assert "two places" in resolve(twice, {}, {"api": API}).problems[0]
    binary = OfferedSecret("bin", True, {"blob": None})
    problem = resolve([{"secretRef": {"name": "bin"}}], {}, {"bin": binary}).problems[0]
    assert "not UTF-8" in problem


def test_secrets_as_the_api_returns_them() -> None:
    body = {
        "metadata": {"name": "api", "labels": {"luna.dev/plugin-settings": "true"}},
        "data": {
            "token": base64.b64encode(b"s3cret").decode(),
            "blob": base64.b64encode(b"\xff\xfe").decode(),
        },
    }
    secret = offered_secret(body)
    assert secret.offered and secret.data == {"token": "s3cret", "blob": None}
    assert not offered_secret({"metadata": {"name": "x"}}).offered


def test_fields_the_crd_does_not_have_and_a_setting_from_two_items_are_named() -> None:
    # kubectl's strict field validation refuses fields the CRD does not have (without it, the API
    # server drops them: a typo would silently lose a setting)
    typo = [{"setting": "a", "secretKeyref": {"name": "s", "key": "k"}}]
    assert check_shape(typo, {}) == [
        "spec.settingsFrom[0] has a field the CRD does not know: 'secretKeyref' "
        "(it has prefix, secretKeyRef, secretRef, setting)"
    ]
    assert (
        "secretRef has a field the CRD does not know: 'key'"
        in check_shape([{"secretRef": {"name": "s", "key": "k"}}], {})[0]
    )
    twice = [{"setting": "a", "secretKeyRef": {"name": "s", "key": k}} for k in ("k", "l")]
    assert check_shape(twice, {}) == ["spec.settingsFrom[1].setting 'a' is also spec.settingsFrom[0]'s"]
