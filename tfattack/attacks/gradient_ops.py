"""Operations on gradients (and on the perturbation): TI smoothing, VT neighbours, L1 normalisation."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import stats


def gaussian_kernel(size: int, nsig: float = 3.0) -> np.ndarray:
    """Normalised 2-D Gaussian, `size` samples over [-nsig, nsig] standard deviations per axis.

    The TI construction (Dong et al. CVPR 2019, and the SI-NI / VT / Admix code): the outer product
    of the normal pdf at `linspace(-nsig, nsig, size)`, divided by its sum. size 1 is the identity.
    """
    samples = stats.norm.pdf(np.linspace(-nsig, nsig, size))
    kernel = np.outer(samples, samples)
    return (kernel / kernel.sum()).astype(np.float32)


def smooth(tensor, kernel: np.ndarray):
    """Depthwise 'SAME' convolution (zero padding) of each channel of `tensor` [N,H,W,C] with `kernel`.

    With a 1x1 kernel this returns `tensor` unchanged (no op is added).
    """
    if kernel.shape == (1, 1):
        return tensor
    channels = tensor.shape[-1]
    filters = np.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(tensor, tf.constant(filters, tensor.dtype), [1, 1, 1, 1], "SAME")


def normalize_l1(gradient):
    """gradient / mean(|gradient|) per image, the MI-FGSM normalisation (Dong et al. CVPR 2018, eq. 6).

    The mean (rather than the sum) of |g| is what the authors' code uses; it differs from the
    paper's L1 norm only by the constant H*W*C, which the sign step ignores. A zero gradient stays 0.
    """
    scale = tf.reduce_mean(tf.abs(gradient), axis=[1, 2, 3], keepdims=True)
    return tf.math.divide_no_nan(gradient, scale)


def normalize_l2(tensor):
    """tensor / ||tensor||_2 per image (over every axis but the batch: images or feature maps); zero stays 0.

    Not tf.math.l2_normalize: that multiplies by rsqrt of an epsilon-floored square sum, a different rounding of
    the same formula from the authors' division, which the transcription tests compare."""
    length = tf.sqrt(tf.reduce_sum(tf.square(tensor), axis=list(range(1, tensor.shape.rank)), keepdims=True))
    return tf.math.divide_no_nan(tensor, length)


def ascent(direction, alpha, norm: str):
    """alpha * sign(d) under L-inf; alpha * d / ||d||_2 (per image) under L2."""
    if norm == "linf":
        return alpha * tf.sign(direction)
    return alpha * normalize_l2(direction)


def vt_neighbour(images, generator, radius):
    """One VT neighbour: images + r, r ~ U[-radius, radius]^d (Wang & He CVPR 2021; radius = beta*eps).

    Not clipped to [0, 1], as in the paper and its code.
    """
    return images + generator.uniform(tf.shape(images), -radius, radius, dtype=images.dtype)
