"""Gradient estimators (role `estimator`): wrappers around the plain gradient; importing this package registers
them."""

from tfattack.attacks.estimators import classic  # noqa: F401
from tfattack.attacks.estimators.classic import VT

__all__ = ["VT"]
