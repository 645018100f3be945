"""Model-related methods (role `backward`): how gradients flow back through the surrogate; importing this
package registers them."""

from tfattack.attacks.surrogate import policies  # noqa: F401
from tfattack.attacks.surrogate.policies import BPA, SGM, LinBP

__all__ = ["BPA", "SGM", "LinBP"]
