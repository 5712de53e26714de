"""The requirement strings a LunaPlugin may carry (shared by the operator and the sidecar)."""

from __future__ import annotations

import pytest

from luna_contract.requirements import (
    MAX_REQUIREMENTS,
    RequirementsError,
    check_requirement,
    check_requirements,
    project_names,
    requirements_file_entries,
)

HASH = "sha256:" + "ab" * 32


def test_requirements_come_back_in_canonical_spelling_in_order_without_duplicates() -> None:
    assert check_requirements(["Redis>=5,<6", "aio_pika[connect]==9.4.1", " Redis>=5,<6 "]) == (
        "Redis<6,>=5",
        "aio_pika[connect]==9.4.1",
    )
    assert check_requirements([f"redis==5.0.8 --hash={HASH}"]) == (f"redis==5.0.8 --hash={HASH}",)
    assert check_requirements([]) == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("redis", "must be a list"),
        ([1], "must be a string"),
        ([""], "is empty"),
        (["--index-url http://attacker.invalid/simple"], "pip option"),
        (["-e ."], "pip option"),
        (["-r other.txt"], "pip option"),
        (["evil @ https://attacker.invalid/evil.whl"], "names a URL"),
        (["evil @ file:///etc/passwd"], "names a URL"),
        (["redis==5 --hash=md5:abc"], "--hash must be sha256"),
        (["redis==5 --no-deps"], "not a valid requirement"),
        (["redis\n--index-url x"], "one line"),
        (["x" * 500], "characters long"),
        ([f"p{n}" for n in range(MAX_REQUIREMENTS + 1)], "at most"),
        (["redis>=="], "not a valid requirement"),
    ],
)
def test_what_is_not_one_requirement_from_the_index_is_refused(value: object, message: str) -> None:
    with pytest.raises(RequirementsError, match=message):
        check_requirements(value)


def test_the_entry_is_named_in_the_message() -> None:
    with pytest.raises(RequirementsError, match=r"spec.requirements\[1\]"):
        check_requirements(["redis", "--pre"], "spec.requirements")


def test_project_names_are_normalized() -> None:
    assert project_names(("Aio_Pika==9", f"REDIS==5 --hash={HASH}")) == {"aio-pika", "redis"}


def test_one_entry_gets_the_message_it_gets_in_a_list() -> None:
    for entry in ("--index-url x", "pkg @ https://x.invalid/p.whl", "redis>==", ""):
        with pytest.raises(RequirementsError) as in_list:
            check_requirements(["redis", entry], "spec.requirements")
        with pytest.raises(RequirementsError) as alone:
            check_requirement(entry, "spec.requirements[1]")
        assert str(alone.value) == str(in_list.value)
    assert check_requirement(" Redis >= 5 ", "e") == "Redis>=5"


def test_a_requirements_file_is_read_as_the_standalone_sidecar_reads_it() -> None:
    text = "# needs\nredis>=5  # the client\n\n   \naio-pika  \n#\n"
    assert requirements_file_entries(text) == [(2, "redis>=5"), (5, "aio-pika")]
