"""SGM and BPA: backward passes that favour what transfers (`tfattack.backward` holds the primitives).

    SGM   d z_{i+1} / d z_i = 1 + gamma * d f_i / d z_i      (residual block z_{i+1} = z_i + f_i(z_i))
    LinBP d z_{i+1} / d z_i = 1 + lam * (||G_true|| / ||G_lin||) G_lin   after a given unit, G_lin the branch's
          input gradient with its ReLUs linear (derivative 1), G_true the exact one
    BPA   d relu(x) / dx  ->  t_r * (sigma(x) + x sigma(x) (1 - sigma(x)))   after a given layer
          d maxpool / d x_i  ->  softmax(t_p * window)_i

Both keep the forward pass bit for bit. Default layers are the papers' where the authors' code sets one
(ResNets: from the second unit of the third stage on, slim's block3/unit_1 end point) and the `mid` tap
elsewhere.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from tfattack.attacks.components import Backward, param, register
from tfattack.models.torchvision_resnet import VARIANTS as TORCHVISION_RESNETS
from tfattack.models.torchvision_vgg import relu_name

# BPA's code applies its ReLU from torchvision layer3[1] on, i.e. after layer3[0]; slim's ResNet-v2 unit i+1
# is torchvision's unit i. On VGG it smooths the last two ReLUs of the conv stack.
_BPA_LAYERS = {"resnet_v2_50": "resnet_v2_50/block3/unit_1/bottleneck_v2",
               "resnet_v2_101": "resnet_v2_101/block3/unit_1/bottleneck_v2",
               "resnet_v2_152": "resnet_v2_152/block3/unit_1/bottleneck_v2",
               "vgg_16": "vgg_16/conv5/conv5_1", "vgg_19": "vgg_19/conv5/conv5_2"}
_BPA_LAYERS.update({architecture: "layer3.0" for architecture in TORCHVISION_RESNETS})  # the code's own names
_BPA_LAYERS.update({"vgg16": relu_name("vgg16", 5, 1), "vgg16_bn": relu_name("vgg16_bn", 5, 1),
                    "vgg19": relu_name("vgg19", 5, 2)})


def _member_taps(members: Sequence, layer: str, defaults: dict, component: str):
    """The end point each member starts the policy after: `layer` if given, else the family default."""
    taps = []
    for member in members:
        if not hasattr(member, "feature_tap"):
            raise ValueError(f"backward {component!r}: model {getattr(member, 'name', member)!r} is not a native "
                             f"network with named layers")
        architecture = getattr(getattr(member, "spec", None), "architecture", "")
        taps.append(member.feature_tap(layer or defaults.get(architecture, "mid")))
    return tuple(taps)


@register
@dataclasses.dataclass(frozen=True)
class SGM(Backward):
    """Skip gradient method: the gradient through each residual branch (a DenseNet layer's new features) decays by
    gamma, the skip's does not."""

    name = "sgm"
    positional = "gamma"
    paper = "Wu et al., Skip connections matter: on the transferability of adversarial examples generated with ResNets, ICLR 2020"
    needs = ("residual_add", "dense_concat")
    gamma: float = param(0.2, "Decay of the residual branch's gradient (paper: 0.2 for ResNets with PGD, 0.5 for "
                              "DenseNets; 1 = plain backprop).", low=0.0, high=1.0)

    @property
    def is_identity(self) -> bool:
        return self.gamma == 1.0

    def policy_fields(self, members) -> dict:
        return {"residual_gradient": self.gamma}


@register
@dataclasses.dataclass(frozen=True)
class BPA(Backward):
    """Backward propagation attack: smooth ReLU derivatives after a layer, softmax max-pool derivatives."""

    name = "bpa"
    paper = "Wang et al., Rethinking the backward propagation for adversarial transferability, NeurIPS 2023"
    needs = ("relu", "max_pool")
    relu_t: float = param(1.0, "Factor t on SiLU's derivative that replaces the ReLU's (its code: 1).", above=0.0)
    pool_t: float = param(10.0, "t in the max-pool softmax(t * window) (its code: 10 for ResNet-50's stem pool, "
                                "1 for VGG).", above=0.0)
    layer: str = param("", "End point after which ReLUs are smoothed (empty: ResNets after block3/unit_1, VGG the "
                           "last two conv ReLUs, other families the 'mid' tap).")

    def policy_fields(self, members) -> dict:
        return {"relu": "silu", "relu_temperature": self.relu_t, "max_pool": "softmax",
                "max_pool_temperature": self.pool_t,
                "linear_from": _member_taps(members, self.layer, _BPA_LAYERS, self.name)}


@register
@dataclasses.dataclass(frozen=True)
class LinBP(Backward):
    """Linear backpropagation: after a given unit, residual branches back-propagate with linear ReLUs, each branch's
    input gradient rescaled to the exact one's norm; the other ReLUs stay exact."""

    name = "linbp"
    positional = "layer"
    paper = "Guo et al., Backpropagating linearly improves transferability of adversarial examples, NeurIPS 2020"
    needs = ("residual_unit",)
    layer: str = param("", "End point after which the units are linear (empty: ResNets after block3/unit_1, the "
                           "authors' '3_1' start; other families the 'mid' tap).")
    lam: float = param(1.0, "Factor on every linearised branch's gradient (its code's sgm_lambda, 1.0).", low=0.0)

    def policy_fields(self, members) -> dict:
        return {"relu": "linear", "renormalize": True, "residual_gradient": self.lam,
                "linear_from": _member_taps(members, self.layer, _BPA_LAYERS, self.name)}
