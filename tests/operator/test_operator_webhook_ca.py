"""The operator's own webhook CA: every decision of :func:`plan` and :func:`serving_due`, the
Secret's format (hostile contents first) and the serving files swapped as one."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from luna_operator.pki import issue_serving, make_ca, pem_certificates
from luna_operator.webhook_ca import CAPolicy, CAState, CAStateError, ServingFiles, plan, serving_due

T0 = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
POLICY = CAPolicy(ca_validity=30 * DAY, serving_validity=3 * DAY, overlap=DAY)


def at(days: float) -> datetime.datetime:
    return T0 + datetime.timedelta(days=days)


def test_an_empty_secret_gets_a_ca_and_nothing_is_due_until_two_thirds_of_its_life() -> None:
    first = plan(CAState(), T0, POLICY)
    assert first.signer is not None and first.next is None and first.retired == ()
    assert pem_certificates(first.bundle())[0].subject == pem_certificates(first.signer.cert)[0].subject
    assert plan(first, at(19.9), POLICY) is first


def test_rotation_trusts_the_next_ca_first_signs_with_it_after_the_overlap_and_drops_the_old_at_expiry() -> (
    None
):
    first = plan(CAState(), T0, POLICY)
    trusted = plan(first, at(20.1), POLICY)
    assert trusted.signer == first.signer and trusted.next is not None
    assert len(pem_certificates(trusted.bundle())) == 2
    assert plan(trusted, at(21.0), POLICY) is trusted  # the overlap has not passed
    promoted = plan(trusted, at(21.2), POLICY)
    assert promoted.signer == trusted.next and promoted.next is None
    assert first.signer is not None and promoted.retired == (first.signer.cert,)
    assert len(pem_certificates(promoted.bundle())) == 2  # the old CA stays trusted
    assert plan(promoted, at(29.9), POLICY) is promoted
    dropped = plan(promoted, at(30.1), POLICY)
    assert dropped.retired == () and dropped.signer == promoted.signer
    assert len(pem_certificates(dropped.bundle())) == 1


def test_an_expired_signer_is_replaced_by_the_trusted_next_or_afresh() -> None:
    first = plan(CAState(), T0, POLICY)
    trusted = plan(first, at(20.1), POLICY)
    late = plan(trusted, at(30.5), POLICY)  # the operator was away past the signer's expiry
    assert late.signer == trusted.next and late.next is None
    nothing = plan(first, at(31), POLICY)
    assert nothing.signer is not None and nothing.signer != first.signer


def test_serving_certificates_follow_the_signer_and_their_own_life() -> None:
    state = plan(CAState(), T0, POLICY)
    assert state.signer is not None
    assert serving_due(None, state, T0)
    leaf = issue_serving(state.signer, ["svc.ns.svc"], POLICY.serving_validity, now=T0)
    assert not serving_due(leaf, state, at(1.9))
    assert serving_due(leaf, state, at(2.1))
    promoted = plan(plan(state, at(20.1), POLICY), at(21.2), POLICY)
    fresh = issue_serving(state.signer, ["svc.ns.svc"], POLICY.serving_validity, now=at(21.1))
    assert serving_due(fresh, promoted, at(21.2))  # issued by the CA that no longer signs


def test_a_leaf_of_another_ca_with_the_same_name_is_not_taken_for_ours() -> None:
    ours = plan(CAState(), T0, POLICY)
    other = make_ca("luna-plugins webhook CA", 30 * DAY, now=T0)
    leaf = issue_serving(other, ["svc.ns.svc"], POLICY.serving_validity, now=T0)
    assert serving_due(leaf, ours, T0)


def test_the_secret_round_trips_every_state() -> None:
    first = plan(CAState(), T0, POLICY)
    for state in (
        first,
        plan(first, at(20.1), POLICY),
        plan(plan(first, at(20.1), POLICY), at(21.2), POLICY),
    ):
        assert CAState.from_secret(state.to_secret()) == state
    assert CAState.from_secret(None) == CAState() == CAState.from_secret({})


def encoded(**values: bytes) -> dict[str, str]:
    return {key.replace("_", "."): base64.b64encode(value).decode() for key, value in values.items()}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ca.crt": "not base64!"}, "not base64"),
        (encoded(ca_crt=b"x", tls_crt=b"y"), "unexpected keys"),
        (encoded(ca_key=b"k"), "go together"),
        (
            encoded(ca_crt=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ca_key=b"k"),
            None,
        ),
        (encoded(retired_crt=b"garbage"), None),
    ],
)
def test_a_secret_the_operator_did_not_write_is_refused_not_overwritten(
    data: dict[str, str], message: str
) -> None:
    with pytest.raises(CAStateError, match=message):
        CAState.from_secret(data)


def test_serving_files_are_swapped_as_one_and_the_old_generation_goes(tmp_path: Path) -> None:
    files = ServingFiles(tmp_path / "webhook")
    assert files.read() is None
    ca = make_ca("test", DAY)
    first, second = issue_serving(ca, ["a"], DAY), issue_serving(ca, ["a"], DAY)
    files.write(first)
    assert files.read() == first
    files.write(second)
    assert files.read() == second
    generations = [p for p in files.directory.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(generations) == 1
    assert (files.keyfile.resolve().stat().st_mode & 0o777) == 0o600
