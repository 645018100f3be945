"""Per-image classification losses [N] that the objectives (`tfattack.attacks.objectives`) are made of."""

from __future__ import annotations

import tensorflow as tf


def _one_hot(labels, logits):
    return tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Softmax cross-entropy per image; smoothing as tf.losses.softmax_cross_entropy (NIPS'17 samples)."""
    one_hot = _one_hot(labels, logits)
    if label_smoothing:
        classes = tf.cast(tf.shape(logits)[-1], logits.dtype)
        one_hot = one_hot * (1.0 - label_smoothing) + label_smoothing / classes
    return tf.nn.softmax_cross_entropy_with_logits(one_hot, logits)


def margin(logits, labels):
    """C&W margin: max_{j != y} z_j - z_y (Carlini & Wagner S&P 2017, without the kappa clamp)."""
    one_hot = _one_hot(labels, logits)
    own = tf.reduce_sum(logits * one_hot, axis=-1)
    others = tf.reduce_max(logits - one_hot * 1e9, axis=-1)
    return others - own


def negative_logit(logits, labels):
    """-z_y: descending it for a target t raises z_t (the logit loss, Zhao et al. NeurIPS 2021)."""
    return -tf.reduce_sum(logits * _one_hot(labels, logits), axis=-1)


def poincare_distance(logits, labels):
    """Poincare distance between l/||l||_1 and the one-hot of `labels` shrunk by 1e-5 (Li et al. CVPR 2020).

    Computed in float64: 1 - ||v||^2 is about 2e-5, which float32 resolves to only ~3 digits.
    """
    dtype = logits.dtype
    logits = tf.cast(logits, tf.float64)
    u = logits / tf.reduce_sum(tf.abs(logits), axis=-1, keepdims=True)
    v = tf.clip_by_value(_one_hot(labels, logits) - 1e-5, 0.0, 1.0)
    u_norm = tf.reduce_sum(tf.square(u), axis=-1)
    v_norm = tf.reduce_sum(tf.square(v), axis=-1)
    denominator = tf.maximum((1.0 - u_norm) * (1.0 - v_norm), 1e-12)
    delta = 2.0 * tf.reduce_sum(tf.square(u - v), axis=-1) / denominator
    return tf.cast(tf.math.acosh(1.0 + delta), dtype)


def cosine_distance(logits, labels):
    """D(l, y) = 1 - |l . onehot(y)| / (||l|| ||onehot(y)||) (Li et al. CVPR 2020, triplet term)."""
    own = tf.abs(tf.reduce_sum(logits * _one_hot(labels, logits), axis=-1))
    return 1.0 - own / tf.maximum(tf.norm(logits, axis=-1), 1e-12)


def po_trip_targeted(logits, labels, targets, weight: float, margin_gamma: float):
    """Po+Trip loss to descend: d_P(l, t) + lambda * max(D(l, t) - D(l, y) + gamma, 0) (Li et al. CVPR 2020).

    The triplet follows the paper's definition (anchor = logits, positive = target, negative =
    true label, D = 1 - |cosine similarity|).
    """
    triplet = tf.maximum(cosine_distance(logits, targets) - cosine_distance(logits, labels) + margin_gamma, 0.0)
    return poincare_distance(logits, targets) + weight * triplet
