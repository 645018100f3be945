"""Update rules: where the gradient is taken, how it is accumulated, and the sign step.

FGSM (Goodfellow et al. ICLR 2015) and I-FGSM (Kurakin et al. 2017) are momentum 0; MI-FGSM
(Dong et al. CVPR 2018) is momentum mu on L1-normalised gradients; NI-FGSM (Lin et al. ICLR 2020)
also takes the gradient at a Nesterov look-ahead point.
"""

from __future__ import annotations

import tensorflow as tf

from tfattack.attacks.gradient_ops import normalize_l1


def lookahead_point(images, accumulated, alpha: float, momentum: float, nesterov: bool):
    """NI-FGSM: x^nes = x + alpha * mu * g (Lin et al. ICLR 2020, eq. 8); else x itself."""
    if not nesterov or momentum == 0:
        return images
    return images + (alpha * momentum) * accumulated


def accumulate(accumulated, gradient, momentum: float):
    """g_{t+1} = mu * g_t + grad / mean|grad| (Dong et al. CVPR 2018, eq. 6)."""
    return momentum * accumulated + normalize_l1(gradient)


def sign_step(images, direction, alpha: float):
    """x_{t+1} = x_t + alpha * sign(g): ascend the attack objective."""
    return images + alpha * tf.sign(direction)
