"""ILPD (intermediate-level perturbation decay): at one intermediate layer, the forward pass keeps only a share gamma of
the adversarial change, measured from the features of the clean image plus Gaussian noise (see
`tfattack.edits.PerturbationDecay`):

    h_l(x_t)  ->  gamma h_l(x_t) + (1 - gamma) h_l(x + sigma n),   n ~ N(0, 1) per pixel, drawn at every step

and the attack ascends its loss through the rest of the network: a perturbation that still fools the surrogate
with its mid-layer effect decayed has to be a larger one there, which transfers better.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack import edits
from tfattack.attacks.components import Forward, param, register
from tfattack.attacks.objectives.feature import paper_tap


@register
@dataclasses.dataclass(frozen=True)
class ILPD(Forward):
    """Intermediate-level perturbation decay at one end point of each surrogate. The reference features come from
    one extra forward pass (no gradient) at every step, on a fresh noisy copy of the clean image."""

    name = "ilpd"
    positional = "layer"
    paper = ("Li et al., Improving adversarial transferability via intermediate-level perturbation decay, "
             "NeurIPS 2023")
    needs = ("end_point",)
    each_step = True
    layer: str = param("", "Feature tap (end-point name or early/mid/late; empty: the feature-level methods' "
                           "paper layer for the family, e.g. ResNets' block2, else 'mid').")
    gamma: float = param(0.1, "Share of the adversarial change kept at the layer (authors: 0.1).", low=0.0, high=1.0)
    sigma: float = param(0.05, "Standard deviation of the noise on the clean image the reference features are "
                               "taken from (authors: 0.05).", low=0.0)

    @property
    def is_identity(self) -> bool:
        return self.gamma == 1

    def taps(self, members):
        """(member's place in the forward pass, end-point name) of each member's layer."""
        return [(index, paper_tap(member, self.layer)) for index, member in enumerate(members)]

    def check_members(self, members) -> None:
        self.taps(members)

    def prepare_edit(self, model, clean, generator):
        recorder = edits.EndPointRecorder(self.taps(list(getattr(model, "members", [model]))))
        noisy = clean + self.sigma * generator.normal(tf.shape(clean))
        with edits.editing(recorder):
            model(noisy)
        return edits.PerturbationDecay(recorder.outputs, self.gamma)
