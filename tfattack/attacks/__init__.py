"""Transfer attacks: one loop, small components, presets as data.

    attack = tfattack.attacks.build("ti_di_mi_fgsm", eps=16/255, steps=10)
    attack = tfattack.attacks.build("mi_fgsm", transforms="di:0.5,si:5", filters="ti:7")  # preset + components
    attack = tfattack.attacks.build("mi_fgsm", diversity_prob=0.5, ti_kernel=7)           # the 0.1 flat arguments
    attack = tfattack.attacks.build(config=AttackConfig(update=MI(1.0)))
    adv = attack(model, images, labels)                 # untargeted
    adv = attack(model, images, labels, target=targets) # targeted
    png_ready = tfattack.attacks.quantize(adv, images, attack.config.eps, attack.config.norm)

This package never imports tfattack.models (a model is any callable images -> logits).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from tfattack.attacks import components, legacy
from tfattack.attacks import presets as _presets
from tfattack.attacks.components import ComponentError, available, parse
from tfattack.attacks.config import FIELD_DOCS, SLOTS, AttackConfig, Execution
from tfattack.attacks.loop import Attack
from tfattack.attacks.presets import PRESET_DOCS, PRESETS
from tfattack.attacks.projection import quantize
from tfattack.data import to_uint8  # one rounding rule for every saved image
from tfattack.attacks.transforms import AUGMENTATIONS

__all__ = ["build", "presets", "PRESETS", "quantize", "to_uint8", "Attack", "AttackConfig", "Execution", "FIELD_DOCS",
           "PRESET_DOCS", "AUGMENTATIONS", "ComponentError", "available", "parse", "components"]

_NEW_KEYS = {f.name for f in dataclasses.fields(AttackConfig)}


def presets() -> List[str]:
    """Names of the built-in presets."""
    return list(PRESETS)


def _slot_value(name: str, value):
    role, many = SLOTS[name]
    if isinstance(value, str):
        return components.parse(role, value) if many else components.parse_one(role, value)
    if many and isinstance(value, components.Component):
        return (value,)
    return tuple(value) if many else value


def with_overrides(config: AttackConfig, overrides: dict) -> AttackConfig:
    """`config` with keyword overrides: `AttackConfig` fields (slots as components or spec strings, `execution`
    as an `Execution` or a dict) and the flat arguments of tfattack 0.1 (`momentum`, `ti_kernel`, ...)."""
    overrides = dict(overrides)
    if "augmentations" in overrides and isinstance(overrides["augmentations"], (list, str)):
        overrides["augmentations"] = legacy.parse_list(overrides["augmentations"])
    if "scale_range" in overrides and isinstance(overrides["scale_range"], list):
        overrides["scale_range"] = tuple(overrides["scale_range"])
    flat = {k: v for k, v in overrides.items() if k not in _NEW_KEYS or k in legacy.TOP_LEVEL}
    new = {k: v for k, v in overrides.items() if k in _NEW_KEYS and k not in legacy.TOP_LEVEL}
    legacy.check_keys({k: v for k, v in flat.items()})
    for name in list(new):
        if name in SLOTS:
            new[name] = _slot_value(name, new[name])
        elif name == "execution" and isinstance(new[name], dict):
            new[name] = dataclasses.replace(config.execution, **new[name])
    config = dataclasses.replace(config, **new) if new else config
    return legacy.apply(config, flat) if flat else config


def build(preset: Optional[str] = None, *, config: Optional[AttackConfig] = None, **overrides) -> Attack:
    """An `Attack` from a preset name (default 'i_fgsm') or a full `config`, plus keyword overrides
    (see `with_overrides`). Unknown names, keys and invalid values raise ValueError naming the valid choices."""
    if preset is not None and config is not None:
        raise ValueError("build() takes a preset name or config=, not both")
    base = config if config is not None else _presets.get(preset or "i_fgsm")
    if not isinstance(base, AttackConfig):
        raise ValueError(f"config must be an AttackConfig, got {type(base).__name__}")
    return Attack(with_overrides(base, overrides))
