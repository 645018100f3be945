"""Ghost networks by skip connection erosion: every forward pass of the attack runs a randomly eroded copy of a
residual surrogate (see `tfattack.edits.SkipErosion`)."""

from __future__ import annotations

import dataclasses

from tfattack import edits
from tfattack.attacks.components import Forward, param, register

# The paper's erosion range r per family (Li et al. AAAI 2020, table 1: ResNet-50 0.22, ResNet-101 0.16, ResNet-152
# 0.12, Inception-ResNet-v2 0.08); the other residual families get TransferAttack's default, 0.16.
PAPER_RANGES = {"resnet_v2_50": 0.22, "resnet_v2_101": 0.16, "resnet_v2_152": 0.12, "inception_resnet_v2": 0.08}
OTHER_RANGE = 0.16


@register
@dataclasses.dataclass(frozen=True)
class Ghost(Forward):
    """Ghost networks (skip connection erosion): each residual addition's skip connection is scaled per channel by
    U[1 - r, 1 + r], drawn afresh at every forward pass. Networks without residual additions (Inception-v3/v4,
    VGG) would need the paper's dropout erosion, which is not built: they are refused."""

    name = "ghost"
    positional = "erosion"
    paper = "Li et al., Learning transferable adversarial examples via ghost networks, AAAI 2020"
    needs = ("residual_add",)
    erosion: float = param(0.0, "Erosion range r; 0 = the paper's per family (ResNet-50 0.22, -101 0.16, -152 0.12, "
                                "Inception-ResNet-v2 0.08; others 0.16).", low=0.0, high=1.0)

    def make_edit(self, recorded: dict, generator):
        if self.erosion:
            return edits.SkipErosion(generator, {}, self.erosion)
        return edits.SkipErosion(generator, PAPER_RANGES, OTHER_RANGE)
