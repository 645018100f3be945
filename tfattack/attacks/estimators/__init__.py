"""Gradient estimators (role `estimator`): wrappers around the plain gradient; importing this package registers
them."""

from tfattack.attacks.estimators import classic  # noqa: F401
from tfattack.attacks.estimators import emi, gra, mef, mig, pgn, rap  # noqa: F401
from tfattack.attacks.estimators import l2t, ops  # noqa: F401
from tfattack.attacks.estimators.classic import VT
from tfattack.attacks.estimators.emi import EMI
from tfattack.attacks.estimators.gra import GRA
from tfattack.attacks.estimators.l2t import L2T
from tfattack.attacks.estimators.mef import MEF
from tfattack.attacks.estimators.mig import MIG
from tfattack.attacks.estimators.ops import OPS
from tfattack.attacks.estimators.pgn import PGN
from tfattack.attacks.estimators.rap import RAP

__all__ = ["VT", "PGN", "GRA", "EMI", "MEF", "MIG", "RAP", "OPS", "L2T"]
