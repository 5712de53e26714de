"""Which of a service's reporting pods run the canary: exact, stable, chosen without restarts.

Each pod has a rank, the SHA-256 of the rollout's seed (the plugin's UID and the canary's code
hash) and its name: the same for every operator replica and after a restart. A step's share is
of the pods that report; the canary runs on :func:`target_count` of them. Pods already running
the canary keep it (a pod never flips from step to step); new canary pods are taken by rank; a
pod that stops reporting leaves the set, and when the set is above its count (pods went away) the
lowest-ranked return to stable, never the other way round.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable


def _rank(seed: str, pod: str) -> str:
    return hashlib.sha256(f"{seed}/{pod}".encode()).hexdigest()


def target_count(percent: int, pods: int) -> int:
    """How many of ``pods`` reporting pods run a canary at ``percent``: the share rounded down,
    at least one pod while there is one (a canary must run somewhere to be judged), all at 100."""
    if pods <= 0:
        return 0
    if percent >= 100:
        return pods
    return max(1, math.floor(percent * pods / 100))


def choose_canary_pods(
    seed: str, reporting: Iterable[str], percent: int, current: Iterable[str] = ()
) -> list[str]:
    """The pods (sorted by name) that run the canary at ``percent`` of ``reporting``, keeping
    those of ``current`` that still report (see the module docstring)."""
    pods = sorted(set(reporting))
    wanted = target_count(percent, len(pods))
    by_rank = sorted(pods, key=lambda pod: _rank(seed, pod))
    kept = [pod for pod in by_rank if pod in set(current)][:wanted]
    chosen = set(kept)
    for pod in by_rank:
        if len(chosen) >= wanted:
            break
        chosen.add(pod)
    return sorted(chosen)
