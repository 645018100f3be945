"""Tiny analytic models for the attack tests: their input gradients are written out in NumPy."""

import numpy as np
import tensorflow as tf

CLASSES = 1000


class LinearModel(tf.Module):
    """logits = flatten(x) @ W + b; d CE / dx = W (softmax(z) - onehot(y)), written out in NumPy below."""

    def __init__(self, shape, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.shape = shape
        self.w = rng.normal(0, 1.0, size=[int(np.prod(shape)), CLASSES])
        self.b = rng.normal(0, 0.5, size=[CLASSES])
        self._w, self._b = tf.constant(self.w, tf.float32), tf.constant(self.b, tf.float32)

    def __call__(self, images):
        return tf.reshape(images, [tf.shape(images)[0], -1]) @ self._w + self._b

    def ce_gradient(self, images, labels):
        flat = images.reshape(len(images), -1)
        logits = flat @ self.w + self.b
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        probs[np.arange(len(labels)), labels] -= 1.0
        return (probs @ self.w.T).reshape(images.shape)
