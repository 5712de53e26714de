"""A plugin's Python requirements (``spec.requirements``): which strings are acceptable.

Each entry is one PEP 508 requirement naming a distribution from the package index the sidecar is
configured with: ``redis>=5,<6``, ``aio-pika[connect]==9.4.1; python_version >= "3.11"``,
optionally followed by the SHA-256 of the accepted files for pip's hash-checking mode:
``redis==5.0.8 --hash=sha256:<64 hex digits>`` (that option and no other). Refused,
because they would let a LunaPlugin decide where code comes from or how pip runs:

- direct references (``pkg @ https://...``, ``pkg @ file:///...``);
- anything that is not a requirement, such as pip options (``--index-url ...``, ``-e ...``);
- more than :data:`MAX_REQUIREMENTS` entries, an entry longer than :data:`MAX_LENGTH`, or one with
  a line break (the sidecar writes them one per line into a requirements file).

:func:`check_requirements` returns the entries in a canonical spelling (``str(Requirement)``),
in order and without exact duplicates, or raises :class:`RequirementsError` naming the entry
(:func:`check_requirement` checks one entry, with the same message).
:func:`requirements_file_entries` reads a requirements file as the standalone sidecar reads
``NAME.requirements.txt``, keeping line numbers for messages.
"""

from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

MAX_REQUIREMENTS = 50
MAX_LENGTH = 400
_HASH = re.compile(r"sha256:[0-9a-f]{64}")


class RequirementsError(ValueError):
    """The requirements cannot be used; the message names the entry and the reason."""


def check_requirements(value: object, where: str = "requirements") -> tuple[str, ...]:
    """The requirements in ``value`` (a list of strings), checked and in canonical spelling."""
    if not isinstance(value, list):
        raise RequirementsError(f"{where} must be a list of requirement strings, got {type(value).__name__}")
    if len(value) > MAX_REQUIREMENTS:
        raise RequirementsError(f"{where} has {len(value)} entries, at most {MAX_REQUIREMENTS} are allowed")
    checked: list[str] = []
    for index, item in enumerate(value):
        canonical = check_requirement(item, f"{where}[{index}]")
        if canonical not in checked:
            checked.append(canonical)
    return tuple(checked)


def check_requirement(item: object, entry: str) -> str:
    """One entry (named ``entry`` in messages, e.g. ``spec.requirements[3]``), checked and in
    canonical spelling; raises :class:`RequirementsError`."""
    if not isinstance(item, str):
        raise RequirementsError(f"{entry} must be a string, got {type(item).__name__}")
    text = item.strip()
    if not text:
        raise RequirementsError(f"{entry} is empty")
    if len(text) > MAX_LENGTH:
        raise RequirementsError(f"{entry} is {len(text)} characters long, at most {MAX_LENGTH} are allowed")
    if "\n" in text or "\r" in text:
        raise RequirementsError(f"{entry} must be one line")
    if text.startswith("-"):
        raise RequirementsError(f"{entry} {text[:40]!r} is a pip option, not a requirement")
    text, *hashes = text.split(" --hash=")
    for digest in hashes:
        if not _HASH.fullmatch(digest.strip()):
            raise RequirementsError(f"{entry}: --hash must be sha256:<64 hex digits>, got {digest[:80]!r}")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise RequirementsError(f"{entry} {text[:60]!r} is not a valid requirement: {exc}") from None
    if requirement.url:
        raise RequirementsError(
            f"{entry} {text[:60]!r} names a URL: requirements come from the package index the "
            "sidecar is configured with"
        )
    return " ".join([str(requirement), *(f"--hash={digest.strip()}" for digest in hashes)])


def requirements_file_entries(text: str) -> list[tuple[int, str]]:
    """The entries of a requirements file as the standalone sidecar reads ``NAME.requirements.txt``
    (one per line, ``#`` starts a comment, blank lines skipped): ``(line number, entry)``."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append((number, entry))
    return entries


def project_names(requirements: tuple[str, ...]) -> set[str]:
    """The normalized distribution names ``requirements`` ask for (``Aio_Pika`` -> ``aio-pika``)."""
    return {canonicalize_name(Requirement(text.split(" --hash=")[0]).name) for text in requirements}
