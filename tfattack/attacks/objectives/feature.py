"""Feature-level objectives: disrupt the features an intermediate layer finds important for the true class.

    ILA  x'' = a base attack's result (MI-FGSM on the cross-entropy),  d'' = f_l(x'') - f_l(x)
         L(x_t) = (f_l(x_t) - f_l(x)) . d'' / ||d''||^2      (ascended from the clean image again)
    FIA  Delta = sum_n d z_y(x * M_n) / d f_l,   M_n ~ Bernoulli(1 - drop) per pixel and channel, n = 1..N
         w = -Delta / ||Delta||_2,               L(x_t) = sum(w * f_l(x_t)) / size(f_l)
    NAA  IA = sum_{k=0}^{N-1} d softmax(z(x_k))_y / d f_l,   x_k = (1 - k/N) (x + xi_k),   xi_k ~ N(0, noise^2)
         w = -IA / ||IA||_2,   A = (f_l(x_t) - f_l(0)) * w,   L(x_t) = (sum A+ + gamma sum A-) / size(f_l)
    RPA  FIA with random patches (sizes 1, 3, 5, 7 in turn, per channel) replaced by U(0, 1) noise instead of
         dropped pixels, and the true-class probability instead of its logit
    BFA  Delta = sum_n d z_y(x_n) / d f_l,   x_n = x + eta grad CE(x_{n-1}) / ||grad CE(x_{n-1})||_2,  x_0 = x
         (then FIA's L)

All ascend L; what they weigh features by is computed once per attack call from the clean batch (`prepare`,
and for ILA the base attack, `prepare_model`). They are untargeted methods. Taps are named as
`Classifier.feature_tap` reads them; each family's default is its paper's layer where the authors' code
sets one, else the `mid` tap.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Tuple

import tensorflow as tf

from tfattack.attacks.components import Objective, param, register
from tfattack.attacks.gradient_ops import normalize_l2
from tfattack.models.torchvision_resnet import VARIANTS as TORCHVISION_RESNETS
from tfattack.models.torchvision_vgg import relu_name

# The papers' layers in slim names (FIA: Mixed_5b for Inception-v3, conv3_3 for VGG-16; NAA: Mixed_5e for
# Inception-v4, Conv2d_4a_3x3 for Inception-ResNet-v2, the end of the second stage for ResNets; slim puts a
# stage's stride in its last unit, so its block2 end point is torchvision's layer2[-1] one resolution lower).
DEFAULT_TAPS = {"inception_v3": "Mixed_5b", "inception_v4": "Mixed_5e", "inception_resnet_v2": "Conv2d_4a_3x3",
                "resnet_v2_50": "resnet_v2_50/block2", "resnet_v2_101": "resnet_v2_101/block2",
                "resnet_v2_152": "resnet_v2_152/block2", "vgg_16": "vgg_16/conv3/conv3_3",
                "vgg_19": "vgg_19/conv3/conv3_4"}
# torchvision's ResNets, where the papers' code names its layers: the end of the second stage (FIA/NAA/ILPD on
# ResNet-50: layer2, i.e. layer2.3).
DEFAULT_TAPS.update({architecture: "layer2" for architecture in TORCHVISION_RESNETS})
# torchvision's VGGs: slim's conv3_3 (VGG-16) and conv3_4 (VGG-19) by torchvision's module index.
DEFAULT_TAPS.update({"vgg16": relu_name("vgg16", 3, 3), "vgg16_bn": relu_name("vgg16_bn", 3, 3),
                     "vgg19": relu_name("vgg19", 3, 4)})


def paper_tap(member, layer: str = "") -> str:
    """The end-point name of tap `layer` on `member`; empty `layer`: the family's paper layer, else "mid"
    (`features.FeatureError`, one line, for a tap the member lacks)."""
    architecture = getattr(getattr(member, "spec", None), "architecture", "")
    return member.feature_tap(layer or DEFAULT_TAPS.get(architecture, "mid"))


def _mean_over_features(tensor):
    return tf.reduce_mean(tensor, axis=list(range(1, tensor.shape.rank)))


@dataclasses.dataclass(frozen=True)
class FeatureObjective(Objective):
    """An objective on one feature tap of each surrogate. `prepare(member, tap, clean, labels, generator,
    per_pass) -> state` runs once per attack call; `feature_value(features, state) -> [n]` on every forward
    (state tiled to the stack of copies by the loop)."""

    feature_level: ClassVar[bool] = True
    linf_only: ClassVar[bool] = False
    untargeted_only: ClassVar[bool] = True
    layer: str = param("", "Feature tap (end-point name or early/mid/late; empty: the paper's layer for the family, "
                           "else 'mid').")

    def tap(self, member) -> str:
        return paper_tap(member, self.layer)

    def value(self, logits, labels, targets):
        raise self.error("is feature-level: it needs a surrogate with named feature taps")

    def prepare_model(self, model, clean, labels, eps: float):
        """Work on the whole surrogate before the per-member weights (ILA's base attack); its result is passed
        to every member's `prepare` as `shared`."""
        return None

    def prepare(self, member, tap, clean, labels, generator, per_pass, shared=None):
        raise NotImplementedError

    def feature_value(self, features, state):
        raise NotImplementedError

    def evaluate(self, outputs, tap, state, labels, targets):
        """The per-image value of one forward pass (`outputs`: logits, aux, features): by default
        `feature_value` of the tap alone."""
        return self.feature_value(outputs.features[tap], state)


def _summed_feature_gradient(member, tap, copies_of, count: int, score, per_pass: int):
    """sum_k d score_k / d f_tap over the copies k = 0..count-1 of the batch: `copies_of(ks)` gives the copies
    `ks` as [len(ks), B, H, W, 3], `score(logits, ks) -> [len(ks) * B]` their scores. `per_pass` copies go
    through the network at once (0: all of them, one batched pass)."""
    chunk = count if not per_pass else min(per_pass, count)

    def one_chunk(first):
        ks = first + tf.range(chunk)
        valid = ks < count  # the last chunk may run past `count`: its extra copies count 0
        ks = tf.minimum(ks, count - 1)
        copies = copies_of(ks)
        images = tf.reshape(copies, [-1] + copies.shape[2:].as_list())
        with tf.GradientTape() as tape:
            tape.watch(images)  # the tape records the forward pass (and so the tap) only from a watched input
            outputs = member.outputs(images, features=[tap])
            total = tf.reduce_sum(score(outputs.logits, ks) * tf.repeat(tf.cast(valid, tf.float32), copies.shape[1]))
        grads = tape.gradient(total, outputs.features[tap])
        return tf.reduce_sum(tf.reshape(grads, [chunk, -1] + grads.shape[1:].as_list()), axis=0)

    total = one_chunk(tf.constant(0))
    if chunk < count:
        for first in tf.range(chunk, count, chunk):
            total += one_chunk(first)
    return total


@register
@dataclasses.dataclass(frozen=True)
class FIA(FeatureObjective):
    """Feature importance-aware attack: features weighted by the true-class logit's gradient averaged over
    randomly pixel-dropped copies of the clean image."""

    name = "fia"
    positional = "layer"
    paper = "Wang et al., Feature importance-aware transferable adversarial attacks, ICCV 2021"
    samples: int = param(30, "Random masks N (paper and code: 30).", low=1)
    drop: float = param(0.3, "Drop probability of each pixel and channel (paper README: 0.3; its flag default 0.1).",
                        low=0.0, high=0.99)

    def setup_passes(self):
        return self.samples, 0

    def masked_copies(self, clean, generator):
        """`copies_of(ks) -> [len(ks), B, H, W, 3]`: the clean batch under random masks number ks."""
        keep = tf.cast(generator.uniform([self.samples] + clean.shape.as_list()) >= self.drop, clean.dtype)
        return lambda ks: clean[None] * tf.gather(keep, ks)

    def score(self, logits, labels):
        """What the masked copies' feature gradient is of: the true-class logit (FIA's official code)."""
        return tf.gather(logits, labels, batch_dims=1)

    def prepare(self, member, tap, clean, labels, generator, per_pass, shared=None):
        def score(logits, ks):
            return self.score(logits, tf.tile(labels, [tf.size(ks)]))

        delta = _summed_feature_gradient(member, tap, self.masked_copies(clean, generator), self.samples, score,
                                         per_pass)
        return -normalize_l2(delta)

    def feature_value(self, features, state):
        return _mean_over_features(features * state)


def patch_mask(shape, patch: int, share: float, seed):
    """RPA's mask of one copy: on a grid of `patch` x `patch` cells per channel, `share` of the cells of each image
    (an exact count; per pixel and channel when patch is 1, a Bernoulli draw) take U(0, 1) values, the rest 1;
    rows and columns past the last whole cell stay 1. `seed` [2] makes it a pure function of (seed, copy)."""
    batch, height, width, channels = shape
    values = tf.random.stateless_uniform(shape, seed)
    if patch == 1:
        chosen = tf.random.stateless_uniform(shape, seed + [0, 1]) < share
        return tf.where(chosen, values, tf.ones_like(values))
    rows, cols = height // patch, width // patch
    draws = tf.random.stateless_uniform([batch, rows * cols * channels], seed + [0, 1])
    count = int(rows * cols * channels * share)
    if count == 0:
        return tf.ones(shape)
    threshold = tf.sort(draws, axis=1)[:, count - 1:count]
    cells = tf.reshape(tf.cast(draws <= threshold, tf.float32), [batch, rows, cols, channels])
    chosen = tf.repeat(tf.repeat(cells, patch, axis=1), patch, axis=2)
    chosen = tf.pad(chosen, [[0, 0], [0, height - rows * patch], [0, width - cols * patch], [0, 0]]) > 0
    return tf.where(chosen, values, tf.ones_like(values))


@register
@dataclasses.dataclass(frozen=True)
class RPA(FIA):
    """Random patch attack: FIA whose copies replace random patches (per channel, of sizes cycling over `patches`)
    with uniform noise instead of dropping pixels, weighted by the true-class probability."""

    name = "rpa"
    paper = "Zhang et al., Enhancing the transferability of adversarial examples with random patch, IJCAI 2022"
    samples: int = param(60, "Masked copies N (paper: 60; TransferAttack: 30).", low=1)
    drop: float = param(0.3, "Share of the cells of each copy replaced by U(0, 1) noise (paper: modification "
                             "probability 0.3, i.e. keep 0.7).", low=0.0, high=0.99)
    patches: Tuple[int, ...] = param((1, 3, 5, 7), "Patch sizes the copies cycle through (paper: 1, 3, 5, 7; "
                                                   "TransferAttack's loop reaches 1, 3, 5).")

    def validate(self):
        if not self.patches or any(p < 1 for p in self.patches):
            raise self.error(f"patches must be sizes >= 1, got {self.patches}")

    def masked_copies(self, clean, generator):
        seed = generator.uniform_full_int([2], dtype=tf.int32)
        shape = clean.shape.as_list()
        sizes = self.patches

        def one(k):
            branches = [lambda p=p: patch_mask(shape, p, self.drop, seed + tf.stack([0, k]))
                        for p in sizes]
            return clean * tf.switch_case(k % len(sizes), branches)

        return lambda ks: tf.map_fn(one, ks, fn_output_signature=tf.TensorSpec(shape, clean.dtype))

    def score(self, logits, labels):
        return tf.gather(tf.nn.softmax(logits), labels, batch_dims=1)


@register
@dataclasses.dataclass(frozen=True)
class NAA(FeatureObjective):
    """Neuron attribution-based attack: feature attributions against a black baseline, weighted by integrated
    gradients of the true-class probability; positive and negative attributions weighted 1 and gamma."""

    name = "naa"
    positional = "layer"
    paper = "Zhang et al., Improving adversarial transferability via neuron attribution-based attacks, CVPR 2022"
    samples: int = param(30, "Integration steps N (paper and code: 30).", low=1)
    gamma: float = param(1.0, "Weight of the negative attributions (its code: 1.0, the linear transform).", low=0.0)
    noise: float = param(0.1, "Std of the Gaussian noise added to x on the path, in [0, 1] pixel units (its code: 0.2 "
                              "in Inception's [-1, 1] units; 0 = TransferAttack's noiseless path).", low=0.0)

    def setup_passes(self):
        return self.samples, 0  # and the black baseline's features: one image

    def prepare(self, member, tap, clean, labels, generator, per_pass, shared=None):
        shape = [self.samples] + clean.shape.as_list()
        noise = generator.normal(shape, stddev=self.noise) if self.noise else tf.zeros(shape, clean.dtype)

        def copies_of(ks):  # x_k = (1 - k/N) (x + xi_k): from x to the black image, which is left out
            scale = 1.0 - tf.cast(ks, clean.dtype) / self.samples
            return tf.reshape(scale, [-1, 1, 1, 1, 1]) * (clean[None] + tf.gather(noise, ks))

        def score(logits, ks):
            return tf.gather(tf.nn.softmax(logits), tf.tile(labels, [tf.size(ks)]), batch_dims=1)

        attribution = _summed_feature_gradient(member, tap, copies_of, self.samples, score, per_pass)
        baseline = member.outputs(tf.zeros_like(clean[:1]), features=[tap]).features[tap]
        return {"weights": -normalize_l2(attribution), "baseline": baseline}

    def feature_value(self, features, state):
        attributed = (features - state["baseline"]) * state["weights"]
        return _mean_over_features(tf.nn.relu(attributed) - self.gamma * tf.nn.relu(-attributed))


@register
@dataclasses.dataclass(frozen=True)
class ILA(FeatureObjective):
    """Intermediate level attack: a base attack gives a guide; the attack then starts again from the clean image and
    maximises the projection of its feature change onto the guide's."""

    name = "ila"
    positional = "layer"
    paper = "Huang et al., Enhancing adversarial example transferability with an intermediate level attack, ICCV 2019"
    linf_only = True  # its base attack steps in the L-inf ball
    base_steps: int = param(10, "Iterations of the base attack that makes the guide (TransferAttack: MI-FGSM, 10 "
                                "steps of eps/10).", low=1)
    base_momentum: float = param(1.0, "Momentum of the base attack (0: I-FGSM, the official code's first base).",
                                 low=0.0)

    def setup_passes(self):
        return self.base_steps, 2  # the base attack; then the clean and guide features in one stacked pass

    def prepare_model(self, model, clean, labels, eps: float):
        alpha = eps / self.base_steps
        guide, momentum = clean, tf.zeros_like(clean)
        for _ in tf.range(self.base_steps):
            with tf.GradientTape() as tape:
                tape.watch(guide)
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, model(guide)))
            gradient = tape.gradient(loss, guide)
            scale = tf.reduce_mean(tf.abs(gradient), axis=[1, 2, 3], keepdims=True)
            momentum = self.base_momentum * momentum + tf.math.divide_no_nan(gradient, scale)
            guide = tf.clip_by_value(guide + alpha * tf.sign(momentum), clean - eps, clean + eps)
            guide = tf.clip_by_value(guide, 0.0, 1.0)
        return tf.stop_gradient(guide)

    def prepare(self, member, tap, clean, labels, generator, per_pass, shared=None):
        pair = member.outputs(tf.concat([clean, shared], axis=0), features=[tap]).features[tap]
        at_clean, at_guide = tf.split(pair, 2, axis=0)
        change = at_guide - at_clean
        length = tf.reduce_sum(tf.square(change), axis=list(range(1, change.shape.rank)), keepdims=True)
        return {"clean": at_clean, "direction": tf.math.divide_no_nan(change, length)}

    def feature_value(self, features, state):
        return tf.reduce_sum((features - state["clean"]) * state["direction"], axis=list(range(1, features.shape.rank)))


@register
@dataclasses.dataclass(frozen=True)
class BFA(FeatureObjective):
    """Black-box feature attack: FIA's weights from a chain of images fitted along the cross-entropy's gradient
    instead of randomly masked ones."""

    name = "bfa"
    positional = "layer"
    paper = ("Wang et al., Improving the transferability of adversarial examples through black-box feature attacks, "
             "Neurocomputing 2024")
    samples: int = param(30, "Fitted images N (TransferAttack: 30).", low=1)
    eta: float = param(28.0, "L2 length of the move from the clean image, in [0, 1] pixel units (TransferAttack: "
                             "28).", low=0.0)

    def setup_passes(self):
        return self.samples + 1, 0  # the clean image starts the chain

    def prepare(self, member, tap, clean, labels, generator, per_pass, shared=None):
        def one_pass(images):
            """(d CE / d images, d z_y / d f_tap) from one forward pass: x_n's logit gradient and the direction
            to x_{n+1} share it."""
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(images)
                outputs = member.outputs(images, features=[tap])
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, outputs.logits))
                score = tf.reduce_sum(tf.gather(outputs.logits, labels, batch_dims=1))
            return tape.gradient(loss, images), tape.gradient(score, outputs.features[tap])

        direction, at_clean = one_pass(clean)
        total = tf.zeros_like(at_clean)  # x_0 = x only starts the chain
        for _ in tf.range(self.samples):
            direction, feature_gradient = one_pass(clean + self.eta * normalize_l2(direction))
            total += feature_gradient
        return -normalize_l2(total)

    def feature_value(self, features, state):
        return _mean_over_features(features * state)
