"""The surrogate's own computation: model-related methods (role `backward`: how gradients flow back through it) and
forward edits (role `forward`: CFM, ghost networks, ILPD); importing this package registers them."""

from tfattack.attacks.surrogate import cfm, ghost, ilpd, policies  # noqa: F401
from tfattack.attacks.surrogate.cfm import CFM
from tfattack.attacks.surrogate.ghost import Ghost
from tfattack.attacks.surrogate.ilpd import ILPD
from tfattack.attacks.surrogate.policies import BPA, SGM, LinBP

__all__ = ["BPA", "SGM", "LinBP", "CFM", "Ghost", "ILPD"]
