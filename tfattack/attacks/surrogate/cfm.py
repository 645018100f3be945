"""CFM (clean feature mixup): the targeted attack competes, inside the surrogate, against clean features of other
images mixed into its convolution and linear outputs (see `tfattack.edits.CleanFeatureMixup`)."""

from __future__ import annotations

import dataclasses

from tfattack import edits
from tfattack.attacks.components import Forward, param, register


@register
@dataclasses.dataclass(frozen=True)
class CFM(Forward):
    """Clean feature mixup. The clean batch's layer outputs are recorded once per attack call (the authors spend
    the first of their 300 iterations on it); each forward pass then mixes, at each eligible layer with probability
    `prob`, a shuffled clean image's output into every image's, per channel."""

    name = "cfm"
    positional = "prob"
    records = True
    paper = ("Byun et al., Introducing competition to boost the transferability of targeted adversarial examples "
             "through clean feature mixup, CVPR 2023")
    prob: float = param(0.1, "Probability of mixing at each eligible layer per forward pass (authors: 0.1).",
                        low=0.0, high=1.0)
    lower: float = param(0.0, "Least share of the clean features (authors: 0).", low=0.0, high=1.0)
    upper: float = param(0.75, "Largest share of the clean features (authors: 0.75).", low=0.0, high=1.0)
    divisor: int = param(4, "Convolutions mix when their output is at most input width / divisor wide (authors: "
                            "4); linear layers always.", low=1)

    @property
    def is_identity(self) -> bool:
        return self.prob == 0 or self.upper == 0

    def validate(self):
        if self.lower > self.upper:
            raise self.error(f"lower ({self.lower}) must be <= upper ({self.upper})")

    def make_edit(self, recorded: dict, generator):
        return edits.CleanFeatureMixup(recorded, generator, self.prob, self.lower, self.upper, self.divisor)
