"""SSA, the spectrum simulation attack (Long et al. ECCV 2022): copies IDCT(DCT(x + xi) * mask), with Gaussian
noise xi ~ N(0, sigma^2) and a spectrum mask uniform in [1 - rho, 1 + rho] per coefficient (per pixel position
and channel), the DCT being the 2-D DCT-II over rows and columns of each channel.

The authors' code (github.com/yuyang-long/SSA, attack.py; also TransferAttack's ssm.py) takes the gradient with
respect to the transformed image and uses it as the gradient with respect to x: the transform is skipped on the
way back. That is the default here (`chain_rule=false`: forward the spectrum copy, backward the identity);
`chain_rule=true` back-propagates through the (linear) spectrum transformation instead.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.fft
import tensorflow as tf

from tfattack.attacks.components import Transform, param, register
from tfattack.attacks.transforms.bsr import copies_shape


@functools.lru_cache(maxsize=None)
def dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix [size, size]: row k is the k-th basis vector. (The authors' dct_2d/idct_2d
    with norm=None are a scaled pair that inverts exactly, so their round trip equals this orthonormal one.)"""
    return scipy.fft.dct(np.eye(size), norm="ortho", axis=0)  # column n: the transform of the n-th unit vector


def dct_2d(images, inverse: bool = False):
    """2-D orthonormal DCT-II (or its inverse) over the rows and columns of [..., H, W, C]."""
    rows = tf.constant(dct_matrix(images.shape[-3]), images.dtype)
    cols = tf.constant(dct_matrix(images.shape[-2]), images.dtype)
    if inverse:
        return tf.einsum("ai,...abc,bj->...ijc", rows, images, cols)
    return tf.einsum("ai,...ijc,bj->...abc", rows, images, cols)


def ssa_draws(generator, images, copies: int, rho: float, sigma: float):
    """Noise xi ~ N(0, sigma^2) and mask ~ U[1 - rho, 1 + rho], each [copies, M, H, W, C]."""
    shape = tf.concat([copies_shape(images, copies), images.shape[1:]], 0)
    return dict(noise=generator.normal(shape, stddev=sigma, dtype=images.dtype),
                mask=generator.uniform(shape, 1.0 - rho, 1.0 + rho, dtype=images.dtype))


def spectrum_transform(images, noise, mask, chain_rule: bool = False):
    """IDCT(DCT(x + noise) * mask) for every draw: images [M, H, W, C], noise/mask [copies, M, H, W, C] ->
    [copies*M, H, W, C], copy-major. chain_rule=False: the gradient passes to x unchanged (authors' code)."""
    source = images[None] if chain_rule else tf.stop_gradient(images)[None]
    out = dct_2d(dct_2d(source + noise) * mask, inverse=True)
    if not chain_rule:
        out = out + (images[None] - tf.stop_gradient(images)[None])   # straight through: d out / d x = identity
    return tf.reshape(out, tf.concat([[-1], images.shape[1:]], 0))


@register
@dataclasses.dataclass(frozen=True)
class SSA(Transform):
    """Spectrum simulation: `copies` images IDCT(DCT(x + xi) * mask), xi ~ N(0, sigma^2),
    mask ~ U[1 - rho, 1 + rho]."""

    name = "ssa"
    budget_param = "copies"
    positional = "rho"
    paper = "Long et al., Frequency domain model augmentation for adversarial attack, ECCV 2022"
    rho: float = param(0.5, "Spectrum mask uniform in [1 - rho, 1 + rho] (paper and authors' code: 0.5).",
                       low=0.0)
    sigma: float = param(16 / 255, "Standard deviation of the Gaussian noise in [0, 1] pixel units (paper and "
                                   "authors' code: 16/255, i.e. eps).", low=0.0)
    copies: int = param(20, "Spectrum transformations N per gradient evaluation (paper and authors' code: 20).",
                        low=1)
    chain_rule: bool = param(False, "false: the gradient w.r.t. the transformed copy is used as the gradient "
                                    "w.r.t. x (authors' code); true: back-propagate through the transformation.")

    @property
    def is_identity(self) -> bool:
        return self.rho == 0 and self.sigma == 0 and self.copies == 1

    @property
    def count(self) -> int:
        return self.copies

    @tf.autograph.experimental.do_not_convert  # static Python control flow only: no conversion needed
    def apply(self, images, generator, batch):
        draws = ssa_draws(generator, images, self.copies, self.rho, self.sigma)
        return spectrum_transform(images, chain_rule=self.chain_rule, **draws)
