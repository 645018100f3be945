"""Transfer attacks: one loop, small pieces, presets as data.

    attack = tfattack.attacks.build("ti_di_mi_fgsm", eps=16/255, steps=10)
    attack = tfattack.attacks.build("mi_fgsm", diversity_prob=0.5, ti_kernel=7)   # preset + pieces
    attack = tfattack.attacks.build(config=AttackConfig(momentum=1.0))
    adv = attack(model, images, labels)                 # untargeted
    adv = attack(model, images, labels, target=targets) # targeted
    png_ready = tfattack.attacks.quantize(adv, images, attack.config.eps)

This package never imports tfattack.models (a model is any callable images -> logits).
"""

from __future__ import annotations

from typing import List, Optional

from tfattack.attacks.config import AUGMENTATIONS, FIELD_DOCS, AttackConfig, check_keys
from tfattack.attacks.loop import Attack
from tfattack.attacks.presets import PRESET_DOCS, PRESETS
from tfattack.attacks import presets as _presets
from tfattack.attacks.projection import quantize, to_uint8

__all__ = ["build", "presets", "PRESETS", "quantize", "to_uint8", "Attack", "AttackConfig", "FIELD_DOCS", "PRESET_DOCS",
           "AUGMENTATIONS"]


def presets() -> List[str]:
    """Names of the built-in presets."""
    return list(PRESETS)


def build(preset: Optional[str] = None, *, config: Optional[AttackConfig] = None, **overrides) -> Attack:
    """An `Attack` from a preset name (default 'i_fgsm') or a full `config`, plus keyword overrides.

    Overrides are `AttackConfig` field names; unknown names, unknown presets and invalid values
    raise ValueError listing the valid choices.
    """
    if preset is not None and config is not None:
        raise ValueError("build() takes a preset name or config=, not both")
    check_keys(overrides)
    if "augmentations" in overrides and isinstance(overrides["augmentations"], (list, str)):
        value = overrides["augmentations"]
        overrides["augmentations"] = tuple(value.split(",") if isinstance(value, str) else value)
    base = config if config is not None else _presets.get(preset or "i_fgsm")
    if not isinstance(base, AttackConfig):
        raise ValueError(f"config must be an AttackConfig, got {type(base).__name__}")
    return Attack(_presets.with_overrides(base, overrides))
