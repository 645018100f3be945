"""Linear smoothing of gradients (role `filter`: TI) and of the perturbation (role `post`: blur)."""

from __future__ import annotations

import dataclasses

from tfattack.attacks.components import Filter, PostOp, param, register
from tfattack.attacks.gradient_ops import gaussian_kernel, smooth


class _GaussianSmoothing:
    """Shared by TI and blur: a normalised `kernel` x `kernel` Gaussian over [-nsig, nsig], depthwise, zero padded."""

    kernel: int
    nsig: float

    @property
    def is_identity(self) -> bool:
        return self.kernel == 1

    def apply(self, tensor):
        return smooth(tensor, gaussian_kernel(self.kernel, self.nsig))


@register
@dataclasses.dataclass(frozen=True)
class TI(_GaussianSmoothing, Filter):
    """Translation invariance: each gradient evaluation convolved with a Gaussian kernel."""

    name = "ti"
    positional = "kernel"
    paper = "Dong et al., Evading defenses to transferable adversarial examples by translation-invariant attacks, CVPR 2019"
    kernel: int = param(15, "Odd kernel size (TI paper and code: 15; SI-NI, VT and Admix code: 7).", low=1, odd=True)
    nsig: float = param(3.0, "The kernel spans [-nsig, nsig] standard deviations (paper: 3).", above=0.0)


@register
@dataclasses.dataclass(frozen=True)
class Blur(_GaussianSmoothing, PostOp):
    """Gaussian blur of the perturbation after each step (a smooth perturbation survives input filters)."""

    name = "blur"
    positional = "kernel"
    paper = "the Tianchi 2019 defense-attack write-up this project started from"
    kernel: int = param(3, "Odd kernel size.", low=1, odd=True)
    nsig: float = param(3.0, "The kernel spans [-nsig, nsig] standard deviations.", above=0.0)
