"""Input transformations (role `transform`), one module per family; importing this package registers them."""

from tfattack.attacks.transforms import augment, classic  # noqa: F401
from tfattack.attacks.transforms.augment import AUGMENTATIONS, NOT_XLA_COMPILABLE, Augment
from tfattack.attacks.transforms.classic import DI, SI, Admix

__all__ = ["AUGMENTATIONS", "NOT_XLA_COMPILABLE", "Augment", "DI", "SI", "Admix"]
