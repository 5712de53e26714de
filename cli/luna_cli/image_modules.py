"""Which modules a plugin can import in the sidecar image.

The image installs exactly this project and its dependencies (``pip install luna-plugins``, see
the Dockerfile) on a plain Python. So what a plugin finds there is: the standard library, the
``log`` alias the runtime provides, the project's own packages, and the top-level modules of the
distributions in the closure of the project's requirements (extras such as ``dev`` left out).
That closure is read from the installed metadata of the ``luna-plugins`` that runs this command,
the same metadata the image's install resolved from.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

PROJECT = "luna-plugins"
#: the project's own top-level packages (pyproject: packages ``luna_*``; the local-cluster harness,
#: ``luna_cluster``, is a distribution of its own that the image does not install)
OWN_PACKAGES = frozenset({"luna_plugins", "luna_sidecar", "luna_operator", "luna_cli", "luna_contract"})
#: provided by the runtime to every plugin (``from log import Logger``)
ALIASES = frozenset({"log"})

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"\bextra\s*==")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(root: str = PROJECT) -> frozenset[str]:
    """Normalized names of ``root`` and every distribution it requires, transitively, without
    extras; raises ``metadata.PackageNotFoundError`` when ``root`` is not installed."""
    metadata.distribution(root)  # fail early, with the root's name
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = _normalized(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:  # required only on other Python versions/platforms
            continue
        for requirement in requires:
            if _EXTRA.search(requirement):
                continue
            found = _NAME.match(requirement)
            if found:
                todo.append(found.group(1))
    return frozenset(seen)


def image_modules() -> frozenset[str]:
    """Top-level module names a plugin can import in the sidecar image (see the module doc);
    raises ``metadata.PackageNotFoundError`` when the project is not installed."""
    distributions = requirement_closure()
    third_party = {
        module
        for module, owners in metadata.packages_distributions().items()
        if any(_normalized(owner) in distributions for owner in owners)
    }
    return frozenset(sys.stdlib_module_names) | OWN_PACKAGES | ALIASES | third_party
