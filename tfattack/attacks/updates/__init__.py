"""Update rules (role `update`): where the gradient is taken and how the iterate moves; importing this package
registers them."""

from tfattack.attacks.updates import classic  # noqa: F401
from tfattack.attacks.updates import gimi, gra  # noqa: F401
from tfattack.attacks.updates.classic import MI, NI, Sign
from tfattack.attacks.updates.gimi import GIMI
from tfattack.attacks.updates.gra import GRAUpdate

__all__ = ["MI", "NI", "Sign", "GIMI", "GRAUpdate"]
