"""Staged rollouts of a LunaPlugin's new version (``spec.rollout``), as pure decisions.

- :mod:`.canary_pods`: which of a service's reporting pods run the canary, stable and exact;
- :mod:`.analysis`: one judgement of the canary against the stable pods, from report counters;
- :mod:`.decision`: where a rollout goes next (steps, pauses, failures, user commands).

Nothing here calls the API; the operator feeds in what reports and status say.
"""

from luna_operator.rollout.analysis import Judgement, PodSample, judge
from luna_operator.rollout.canary_pods import choose_canary_pods, target_count
from luna_operator.rollout.decision import Command, Phase, RolloutState, advance, begin, judgement_due

__all__ = [
    "Command",
    "Judgement",
    "Phase",
    "PodSample",
    "RolloutState",
    "advance",
    "begin",
    "choose_canary_pods",
    "judge",
    "judgement_due",
    "target_count",
]
