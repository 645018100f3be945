"""Objectives (role `objective`): what the attack ascends; importing this package registers them."""

from tfattack.attacks.objectives import classic, feature, su  # noqa: F401
from tfattack.attacks.objectives.classic import CE, CW, Logit, LogitMargin, PoTrip, Prob
from tfattack.attacks.objectives.feature import BFA, FIA, ILA, NAA, RPA
from tfattack.attacks.objectives.su import SU

__all__ = ["CE", "CW", "Logit", "LogitMargin", "PoTrip", "Prob", "FIA", "ILA", "NAA", "RPA", "BFA", "SU"]
