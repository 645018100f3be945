"""Ghost networks: every forward pass of the attack runs a randomly eroded copy of each surrogate (see
`tfattack.edits.GhostErosion`). Residual networks get skip connection erosion, the others dropout erosion, as the
paper's best ghosts of each family do."""

from __future__ import annotations

import dataclasses

from tfattack import edits
from tfattack.attacks.components import Forward, param, register

# The paper's erosion range r per family (Li et al. AAAI 2020, table 1: ResNet-50 0.22, ResNet-101 0.16, ResNet-152
# 0.12, Inception-ResNet-v2 0.08); the other residual families get TransferAttack's default, 0.16.
PAPER_RANGES = {"resnet_v2_50": 0.22, "resnet_v2_101": 0.16, "resnet_v2_152": 0.12, "inception_resnet_v2": 0.08}
OTHER_RANGE = 0.16
# The authors' dropout rate (1 - keep_prob of their "optimal" ghosts) per family without residual additions; the
# others take Inception-v3's, the smaller one.
PAPER_DROPOUT = {"inception_v3": 0.006, "inception_v4": 0.012}
OTHER_DROPOUT = 0.006


@register
@dataclasses.dataclass(frozen=True)
class Ghost(Forward):
    """Ghost networks. In a surrogate with residual additions each skip connection is scaled per channel by
    U[1 - r, 1 + r] (skip connection erosion); in one without, dropout of rate L acts at the output of every unit
    of its body but the last (dropout erosion, at `tfattack.edits.unit_end_points`). Fresh draws at every forward
    pass; in an ensemble each member gets the erosion its structure allows."""

    name = "ghost"
    positional = "erosion"
    paper = "Li et al., Learning transferable adversarial examples via ghost networks, AAAI 2020"
    needs = ("residual_add", "end_point")
    erosion: float = param(0.0, "Skip erosion range r; 0 = the paper's per family (ResNet-50 0.22, -101 0.16, -152 "
                                "0.12, Inception-ResNet-v2 0.08; others 0.16).", low=0.0, high=1.0)
    dropout: float = param(0.0, "Dropout erosion rate L of networks without residual additions; 0 = the authors' "
                                "per family (Inception-v3 0.006, Inception-v4 0.012; others 0.006).",
                           low=0.0, high=0.5)

    def dropout_sites(self, members) -> dict:
        """(member's place in the forward pass, end-point name) -> dropout rate, for the members without residual
        additions."""
        sites = {}
        for index, member in enumerate(members):
            if member.backward_primitives().get("residual_add", 0):
                continue
            architecture = getattr(getattr(member, "spec", None), "architecture", "")
            rate = self.dropout or PAPER_DROPOUT.get(architecture, OTHER_DROPOUT)
            sites.update({(index, name): rate for name in edits.unit_end_points(member)})
        return sites

    def check_members(self, members) -> None:
        from tfattack.attacks.loop import model_name  # the loop imports the components

        for member in members:
            if not member.backward_primitives().get("residual_add", 0) and not edits.unit_end_points(member):
                raise self.error(f"model {model_name(member)!r} has no residual additions and no feature maps "
                                 f"among its end points to erode")

    def prepare_edit(self, model, clean, generator):
        sites = self.dropout_sites(list(getattr(model, "members", [model])))
        ranges = {} if self.erosion else PAPER_RANGES
        return edits.GhostErosion(generator, ranges, self.erosion or OTHER_RANGE, sites)
