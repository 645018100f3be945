"""Ensemble strategies (role `estimator`, always outermost): how an attack on an `Ensemble` surrogate weighs and
schedules its members instead of fusing them once; importing this package registers them."""

from tfattack.attacks.ensemble import adaea, cwa, smer, svre  # noqa: F401
from tfattack.attacks.ensemble.adaea import AdaEA
from tfattack.attacks.ensemble.cwa import CWA
from tfattack.attacks.ensemble.smer import SMER
from tfattack.attacks.ensemble.svre import SVRE

__all__ = ["SVRE", "CWA", "AdaEA", "SMER"]
