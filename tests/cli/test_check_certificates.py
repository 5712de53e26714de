"""A webhook's caBundle as `luna-plugins check` reads it: hostile bundles first."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from luna_cli.check.certificates import BundleError, expiry_note, read_bundle
from luna_operator.certs import self_signed


@pytest.mark.parametrize(
    ("bundle", "words"),
    [
        (None, "empty"),
        ("", "empty"),
        ("not base64!", "not base64"),
        (base64.b64encode(b"\xff\xfe").decode(), "not base64 of PEM"),
        (
            base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").decode(),
            "no valid PEM",
        ),
        (base64.b64encode(b"just text").decode(), "no valid PEM"),
    ],
)
def test_unusable_bundles_say_what_is_wrong(bundle: str | None, words: str) -> None:
    with pytest.raises(BundleError, match=words):
        read_bundle(bundle)


def test_a_real_bundle_gives_its_expiry(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "127.0.0.1")
    bundle = read_bundle(base64.b64encode(cert.read_bytes()).decode())
    assert bundle.earliest_expiry is not None
    assert expiry_note(bundle, now=bundle.earliest_expiry - 3 * 86400 - 60) == "CA valid 3 more days"
    assert expiry_note(bundle, now=bundle.earliest_expiry + 1) == "CA EXPIRED"
