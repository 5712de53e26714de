"""What the operator keeps of the labelled Secrets its watch sends."""

from __future__ import annotations

import base64
from typing import Any

from luna_operator.secret_feed import SecretBook


def secret(name: str, label: str, version: str, namespace: str = "ns", **data: str) -> dict[str, Any]:
    labels = {"luna.dev/plugin-settings": label}
    if label == "service":
        labels["luna.dev/service"] = "handlers"
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "resourceVersion": version},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def test_offered_secrets_are_decoded_and_a_version_already_held_is_no_change() -> None:
    book = SecretBook()
    assert book.put(secret("creds", "true", "1", token="t")) == ("ns", "creds", None)
    assert book.offered("ns")["creds"].data == {"token": "t"}
    assert book.put(secret("creds", "true", "1", token="t")) is None  # our own echo, or a re-list
    assert book.offered("other") == {}


def test_a_label_that_is_not_true_takes_the_secret_away_from_plugins() -> None:
    book = SecretBook()
    book.put(secret("creds", "true", "1", token="t"))
    assert book.put(secret("creds", "false", "2", token="t")) == ("ns", "creds", None)
    assert book.offered("ns") == {}


def test_settings_secrets_are_kept_apart_and_never_offered() -> None:
    book = SecretBook()
    change = book.put(secret("luna-plugins-handlers-settings", "service", "1", **{"p.json": "{}"}))
    assert change == ("ns", "luna-plugins-handlers-settings", "handlers")
    assert book.offered("ns") == {}
    assert book.settings_secret("ns", "luna-plugins-handlers-settings") is not None


def test_a_list_drops_what_it_no_longer_holds_in_its_namespace_only() -> None:
    book = SecretBook()
    book.put(secret("a", "true", "1", x="1"))
    book.put(secret("b", "true", "1", x="1", namespace="other"))
    book.put(secret("luna-plugins-handlers-settings", "service", "1"))
    changes = book.replace("ns", [secret("c", "true", "2", x="1")])
    assert sorted(changes, key=str) == sorted(
        [("ns", "a", None), ("ns", "luna-plugins-handlers-settings", "handlers"), ("ns", "c", None)], key=str
    )
    assert set(book.offered("ns")) == {"c"} and set(book.offered("other")) == {"b"}
    assert book.remove(secret("c", "true", "3")) == ("ns", "c", None)
    assert book.remove(secret("c", "true", "3")) is None
