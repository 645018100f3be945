"""Input transformations (role `transform`), one module per family; importing this package registers them."""

from tfattack.attacks.transforms import augment, bsr, classic, decowa, local, maskblock, sia, ssa  # noqa: F401
from tfattack.attacks.transforms.augment import AUGMENTATIONS, NOT_XLA_COMPILABLE, Augment
from tfattack.attacks.transforms.bsr import BSR
from tfattack.attacks.transforms.classic import DI, SI, Admix
from tfattack.attacks.transforms.decowa import DeCoWA
from tfattack.attacks.transforms.local import LocalCrop
from tfattack.attacks.transforms.maskblock import MaskBlock
from tfattack.attacks.transforms.sia import SIA
from tfattack.attacks.transforms.ssa import SSA

__all__ = ["AUGMENTATIONS", "NOT_XLA_COMPILABLE", "Augment", "DI", "SI", "Admix", "BSR", "SIA", "SSA", "MaskBlock",
           "DeCoWA", "LocalCrop"]
