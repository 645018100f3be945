"""Named feature taps: which intermediate tensors of a network an attack may read, by name.

A tap is one of a network's end points, named as the network reports them (slim: "Mixed_5b",
"resnet_v2_50/block2"; EfficientNet-Lite: "block_5"; TF.js: layer names; TFLite: tensor names, also by
the part before the first ';' of a fused name), or one of three aliases every family answers:

  early   about a quarter of the way in
  mid     about half way
  late    about three quarters

The slim families map the aliases to block outputs, torchvision's ResNets to their stages (`layer1`..`layer3`,
registered by their module); other families fall back to the end points at 1/4,
1/2 and 3/4 of their forward order. The feature-level methods have their own per-family default layers
(their papers'), independent of the aliases.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from tfattack.errors import UserError
from tfattack.names import did_you_mean, first_few

ALIASES = ("early", "mid", "late")

_FAMILY_ALIASES: Dict[str, Dict[str, str]] = {
    "inception_v3": {"early": "Mixed_5b", "mid": "Mixed_6b", "late": "Mixed_6e"},
    "inception_v4": {"early": "Mixed_5e", "mid": "Mixed_6d", "late": "Mixed_7a"},
    "inception_resnet_v2": {"early": "Mixed_5b", "mid": "Mixed_6a", "late": "PreAuxLogits"},
    "vgg_16": {"early": "vgg_16/conv3/conv3_3", "mid": "vgg_16/conv4/conv4_3", "late": "vgg_16/conv5/conv5_3"},
    "vgg_19": {"early": "vgg_19/conv3/conv3_4", "mid": "vgg_19/conv4/conv4_4", "late": "vgg_19/conv5/conv5_4"},
}
for _depth in (50, 101, 152):
    _FAMILY_ALIASES[f"resnet_v2_{_depth}"] = {alias: f"resnet_v2_{_depth}/block{index}"
                                              for index, alias in enumerate(ALIASES, start=1)}

# End points that are outputs, not features.
_NOT_FEATURES = {"Logits", "Predictions", "predictions", "AuxLogits", "PreLogits", "PreLogitsFlatten",
                 "global_pool"}


def register_aliases(architecture: str, mapping: Dict[str, str]) -> None:
    """A family module declares what early/mid/late mean for one of its architectures."""
    if set(mapping) != set(ALIASES):
        raise ValueError(f"architecture {architecture!r}: aliases must be exactly {', '.join(ALIASES)}")
    _FAMILY_ALIASES[architecture] = dict(mapping)


class FeatureError(UserError):
    """A tap a model does not have; one line naming the model and its taps."""


def feature_points(end_points: Sequence[str]) -> Tuple[str, ...]:
    """The end points that are features (not logits or predictions), in forward order."""
    return tuple(n for n in end_points if n.split("/")[-1] not in _NOT_FEATURES and not n.endswith("/logits"))


def aliases(architecture: str, end_points: Sequence[str]) -> Dict[str, str]:
    """early/mid/late -> end point for a network with these end points (forward order)."""
    if architecture in _FAMILY_ALIASES:
        return dict(_FAMILY_ALIASES[architecture])
    points = feature_points(end_points)
    if not points:
        return {}
    return {alias: points[min(len(points) - 1, (len(points) * share) // 4)]
            for alias, share in zip(ALIASES, (1, 2, 3))}


def resolve(model_name: str, architecture: str, end_points: Sequence[str], tap: str) -> str:
    """The end-point name `tap` means for this model; FeatureError (one line) if it has no such tap."""
    names = list(end_points)
    if not names:
        raise FeatureError(f"model {model_name!r} has no feature taps (its network does not report end points; "
                           f"Keras applications do not)")
    if tap in names:
        return tap
    mapped = aliases(architecture, names)
    if tap in mapped:
        return mapped[tap]
    short = {n.split(";")[0]: n for n in names}
    if tap in short:
        return short[tap]
    shown = list(feature_points([short_name for short_name in short]))
    listed = first_few(shown, 12)
    raise FeatureError(f"model {model_name!r} has no feature tap {tap!r}{did_you_mean(tap, list(ALIASES) + shown)}; "
                       f"its taps: {', '.join(ALIASES)}, {listed}")
