"""The TF1 peer of the speed benchmark: MI-FGSM on Inception-v3 the way the 2017-2021 research code ran it.

The MI-FGSM authors' NIPS'17 code (dongyp13/Non-Targeted-Adversarial-Attacks, attack_iter.py) builds the
official tf-slim net in a `tf.Graph`, runs the T iterations inside one `tf.while_loop` (the net is
rebuilt in the loop body), takes `tf.gradients` of the softmax cross-entropy with respect to the input,
divides by `reduce_mean(|g|, [1, 2, 3])`, accumulates momentum, steps by alpha * sign and clips, with
images in [-1, 1] and eps doubled accordingly; one `Session.run` per batch. This module builds that
graph for one Inception-v3 and the given labels, so that it computes the same function as
`tfattack.attacks.build("mi_fgsm")` on `tfattack.models.load("inception_v3")`:
  - the loss is over the 1000 real classes (slim's background column 0 is dropped, as tfattack's
    classifier contract does); the authors' ensemble also used predicted labels and a 0.4-weighted
    aux-logits term, which change neither the cost per iteration nor the code path being compared;
  - it works in [0, 1] at its interface (images in, adversarial images out) and converts to the net's
    [-1, 1] inside, like the authors' load/save functions.

Benchmark and test code only: it needs tf_slim through the shim in tests/slim_oracle.py (loaded by
path), which the tfattack package never imports.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORACLE_PATH = os.path.join(REPO, "tests", "slim_oracle.py")
IMAGE_SIZE = 299
SLIM_CLASSES = 1001


def slim_oracle():
    """tests/slim_oracle.py, imported by path (it holds the documented tf_slim shim)."""
    module = sys.modules.get("slim_oracle")
    if module is None:
        spec = importlib.util.spec_from_file_location("slim_oracle", ORACLE_PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["slim_oracle"] = module
    return module


def write_random_checkpoint(prefix: str, seed: int = 0) -> str:
    """An official-format Inception-v3 checkpoint of random values; returns the prefix.

    Names and shapes come from tfattack's port (the official list, which the peer's Saver then checks
    variable by variable), values from the oracle's `random_value` (batch-norm statistics far from
    identity); written by the official-format writer.
    """
    import tfattack
    from tfattack.models.checkpoint import write_slim_checkpoint

    network = tfattack.models.load("inception_v3", random_weights=True).network
    rng = np.random.default_rng(seed)
    values = {name: slim_oracle().random_value(name, var.shape.as_list(), rng)
              for name, var in network.variables_by_name.items()}
    return write_slim_checkpoint(values, prefix)


class SlimMiFgsm:
    """`peer(images01, labels) -> adv01`: MI-FGSM in a TF1 graph + Session on the official slim Inception-v3.

    images01: float32 [batch, 299, 299, 3] in [0, 1]; labels: standard class indices 0..999.
    `first_gradient(images01, labels)` returns the input gradient of the first iteration (w.r.t. the
    [0, 1] image), for comparing the two implementations step by step.
    """

    def __init__(self, checkpoint: str, batch: int, *, eps: float = 16 / 255, steps: int = 10, momentum: float = 1.0):
        slim_oracle().install_shim()
        import tf_slim as slim
        from tf_slim.nets import inception_v3

        v1 = tf.compat.v1
        self.batch, self.steps = batch, steps
        self.graph = tf.Graph()
        with self.graph.as_default():
            shape = [batch, IMAGE_SIZE, IMAGE_SIZE, 3]
            self._images = v1.placeholder(tf.float32, shape)
            self._labels = v1.placeholder(tf.int64, [batch])
            x_input = self._images * 2.0 - 1.0
            radius = 2.0 * eps                      # eps in the net's [-1, 1] units
            alpha = radius / steps
            x_max = tf.clip_by_value(x_input + radius, -1.0, 1.0)
            x_min = tf.clip_by_value(x_input - radius, -1.0, 1.0)
            one_hot = tf.one_hot(self._labels, SLIM_CLASSES - 1)

            def input_gradient(x):
                """d loss / d x of the net's softmax cross-entropy (x in [-1, 1])."""
                with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
                    logits, _ = inception_v3.inception_v3(x, num_classes=SLIM_CLASSES, is_training=False,
                                                          reuse=v1.AUTO_REUSE)
                loss = v1.losses.softmax_cross_entropy(one_hot, logits[:, 1:])
                return tf.gradients(loss, x)[0]

            def iteration(i, x, accumulated):
                noise = input_gradient(x)
                noise = noise / tf.reduce_mean(tf.abs(noise), [1, 2, 3], keepdims=True)
                accumulated = momentum * accumulated + noise
                x = tf.clip_by_value(x + alpha * tf.sign(accumulated), x_min, x_max)
                return i + 1, x, accumulated

            _, x_adv, _ = tf.while_loop(lambda i, x, g: tf.less(i, steps), iteration,
                                        [tf.constant(0), x_input, tf.zeros(shape)])
            self._adv = (x_adv + 1.0) * 0.5
            self._input_gradient, self._x_input = input_gradient, x_input
            self._first_gradient = None  # built on first use: the timed graph is the loop alone
            saver = v1.train.Saver(slim.get_model_variables(scope="InceptionV3"))
            self.session = v1.Session(graph=self.graph)
            saver.restore(self.session, checkpoint)

    def _feed(self, images01, labels):
        return {self._images: np.asarray(images01, np.float32), self._labels: np.asarray(labels, np.int64)}

    def __call__(self, images01, labels) -> np.ndarray:
        return self.session.run(self._adv, self._feed(images01, labels))

    def first_gradient(self, images01, labels) -> np.ndarray:
        if self._first_gradient is None:
            with self.graph.as_default():
                # d loss / d image01 = 2 * d loss / d x_input (chain rule of x * 2 - 1); same variables.
                self._first_gradient = 2.0 * self._input_gradient(self._x_input)
        return self.session.run(self._first_gradient, self._feed(images01, labels))

    def close(self):
        self.session.close()
