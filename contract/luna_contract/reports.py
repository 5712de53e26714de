"""How a sidecar's report (``LunaPluginRuntime``) says what it runs, in few bytes.

A service's active list names a code hash per module. A sidecar that runs exactly that does not
repeat it: its report carries the list's *revision* (:func:`active_revision`: a digest of the
list's modules and code hashes) in ``spec.revision``, and ``spec.plugins`` holds only the
modules where it differs from it: a module that fails, loads, stops, waits for its code or
packages, runs another version, blocked the event loop, or is not in the list at all. A
module the list names and the report leaves out runs, as ``running``, the version the list names.

So a report stays a few hundred bytes however many plugins a service has: with 200 plugins and
500 pods the API server would otherwise store and fan out 500 copies of 20 KB on every
heartbeat and every rollout. A report without ``spec.revision`` lists every module it runs (what
sidecars did before, and do when the cluster's CRD is too old to keep the field).

Both sides compute the revision with this function from what the active list holds, so the
operator can expand a report without asking anyone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

#: the report field naming the active list's revision
REVISION_FIELD = "revision"
#: the state a report gives a module the active list names but the sidecar does not run yet
WAITING = "waiting"
#: the longest revision read from a report (a revision is 32 hex characters)
MAX_REVISION_CHARS = 64


def active_revision(code_hashes: Mapping[str, str]) -> str:
    """The revision of an active list that names ``code_hashes`` (module -> code hash): 32 hex
    characters of a SHA-256 over the sorted pairs; the same for the same pairs in any order,
    different when any module or hash differs."""
    digest = hashlib.sha256()
    for module, code_hash in sorted(code_hashes.items()):
        digest.update(f"{module}\0{code_hash}\n".encode())
    return digest.hexdigest()[:32]
