"""Compute-matched attacks: a preset brought to a common budget of gradient passes per image, for a ranking by
transfer per unit of compute (issue 19's matched column) instead of each paper's own budget.

The knob, in this order of preference:
1. the outermost estimator with a `budget_param` (VT/PGN/GRA/EMI/MEF/MIG samples, OPS neighbours, L2T samples,
   SVRE inner steps per member, SMER rounds);
2. else the first input transform with one (SI/Admix/BSR/SIA/SSA/DeCoWA copies);
3. else, if a transform draws random views (DI, the augmentations), the number of views: independent draws whose
   gradients are averaged (how DI / TI-DI-MI spend more compute);
4. else nothing: a deterministic method (MI-FGSM, NI-FGSM) has no draw to repeat and stays as it is.
The knob takes the value whose `model_passes` comes closest to the budget (the smaller one on a tie).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from tfattack.attacks.config import AttackConfig

MAX_KNOB = 4096  # the search's upper bound for a knob's value


@dataclasses.dataclass(frozen=True)
class Matched:
    """`config` brought to the budget, and how: `knob` ("pgn.samples", "views" or None), its paper value and the
    value used, and the passes per image before and after."""

    config: AttackConfig
    knob: Optional[str]
    paper_value: Optional[int]
    value: Optional[int]
    paper_passes: int
    passes: int
    reason: str = "no random draw or sample count to scale"  # why the knob is None

    @property
    def how(self) -> str:
        if self.knob is None:
            return f"unchanged ({self.reason})"
        return f"{self.knob} {self.paper_value} -> {self.value}"


def _knob(config: AttackConfig) -> Tuple[Optional[str], Optional[str], Optional[int]]:
    """(slot, component index or None for views, field) of the knob; (None, None, None) if there is none."""
    for slot in ("estimators", "transforms"):
        for index, component in enumerate(getattr(config, slot)):
            if component.budget_param and not component.is_identity:
                return slot, index, component.budget_param
    if config.split_transforms()[1]:
        return "views", None, None
    return None, None, None


def _with_value(config: AttackConfig, slot: str, index: Optional[int], field: Optional[str], value: int):
    if slot == "views":
        return dataclasses.replace(config, views=value)
    components = list(getattr(config, slot))
    components[index] = dataclasses.replace(components[index], **{field: value})
    return dataclasses.replace(config, **{slot: tuple(components)})


def matched(config: AttackConfig, budget: int) -> Matched:
    """`config` with its knob set so that its gradient passes per image over its steps come closest to `budget`."""
    if budget < 1:
        raise ValueError(f"budget must be at least one pass per image, got {budget}")
    paper_passes = config.model_passes()
    slot, index, field = _knob(config)
    if slot is None:
        return Matched(config, None, None, None, paper_passes, paper_passes)
    paper_value = config.views if slot == "views" else getattr(getattr(config, slot)[index], field)
    knob = "views" if slot == "views" else f"{getattr(config, slot)[index].name}.{field}"
    try:
        _with_value(config, slot, index, field, paper_value + 1)
    except ValueError as error:  # another component pins the knob (SU's local copy needs views=1)
        pinned_by = str(error).split(":")[0]  # errors start with the component: "objective 'su': ..."
        return Matched(config, None, None, None, paper_passes, paper_passes, reason=f"{knob} is pinned by {pinned_by}")
    best = None
    for value in range(1, MAX_KNOB + 1):
        candidate = _with_value(config, slot, index, field, value)
        passes = candidate.model_passes()
        if best is None or abs(passes - budget) < abs(best[1] - budget):
            best = (value, passes, candidate)
        if passes >= budget:  # passes grow with the knob: nothing further can be closer
            break
    value, passes, candidate = best
    return Matched(candidate, knob, paper_value, value, paper_passes, passes)
