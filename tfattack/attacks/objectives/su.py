"""SU (self-universality): a targeted objective over pairs of copies, the adversarial image and a local crop of the
clean image carrying the same perturbation (`tfattack.attacks.transforms.LocalCrop`), that also pulls their features
at one layer together.

    stack = [x_t ; crop(x) + delta]  (n images each, after any view transforms such as DI)
    J     = sum over both copies of the class objective  +  2 lambda sum_i cos(f_l(x_t)_i, f_l(crop_i + delta_i))

The paper's loss averages the class term over 2n images and the similarity over n; 2 lambda on the sums keeps that
balance. The class objective is the logit (the authors' and TransferAttack's choice) or the cross-entropy,
targeted or untargeted as the attack is.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks import losses
from tfattack.attacks.components import param, register
from tfattack.attacks.objectives.feature import FeatureObjective

# The paper's layer ("depth 3"): torchvision's ResNet-50 layer3, Inception-v3 Mixed_6e; slim's block3 end point is
# torchvision's layer3[-1] one resolution lower (slim strides in a stage's last unit).
SU_TAPS = {"inception_v3": "Mixed_6e", "resnet_v2_50": "resnet_v2_50/block3", "resnet_v2_101": "resnet_v2_101/block3",
           "resnet_v2_152": "resnet_v2_152/block3", "vgg_16": "vgg_16/conv4/conv4_3", "vgg_19": "vgg_19/conv4/conv4_4"}
CLASS_LOSSES = {"logit": lambda logits, labels: -tf.gather(logits, labels, batch_dims=1),
                "ce": losses.cross_entropy}


def cosine(a, b):
    """Per-image cosine similarity of two feature maps, flattened."""
    axes = list(range(1, a.shape.rank))
    dot = tf.reduce_sum(a * b, axis=axes)
    norms = tf.sqrt(tf.reduce_sum(tf.square(a), axis=axes) * tf.reduce_sum(tf.square(b), axis=axes))
    return dot / tf.maximum(norms, 1e-12)


@register
@dataclasses.dataclass(frozen=True)
class SU(FeatureObjective):
    """Self-universality: the class objective on the adversarial image and on its local copy, plus the feature
    similarity of the two. Needs `local_crop` as the attack's copy maker and one view."""

    name = "su"
    positional = "weight"
    paper = "Wei et al., Enhancing the self-universality for transferable targeted attacks, CVPR 2023"
    untargeted_only = False
    weight: float = param(0.001, "lambda, the weight of the feature similarity (TransferAttack and the authors' "
                                 "logit-loss setting: 0.001).", low=0.0)
    loss: str = param("logit", "Class objective on both copies: logit or ce.", choices=tuple(CLASS_LOSSES))

    def tap(self, member) -> str:
        architecture = getattr(getattr(member, "spec", None), "architecture", "")
        return member.feature_tap(self.layer or SU_TAPS.get(architecture, "late"))

    def check_config(self, config) -> None:
        makers, _ = config.split_transforms()
        if [t.name for t in makers] != ["local_crop"] or config.views != 1:
            raise self.error("pairs each image with its local copy: the attack needs transforms=local_crop (then "
                             "view transforms such as di) and views=1")
        if config.execution.copies_per_pass:
            raise self.error("pairs copies within one forward pass: use copies_per_pass=0")

    def prepare(self, member, tap, clean, labels, generator, per_pass, shared=None):
        return None

    def evaluate(self, outputs, tap, state, labels, targets):
        loss = CLASS_LOSSES[self.loss]
        class_value = loss(outputs.logits, labels) if targets is None else -loss(outputs.logits, targets)
        whole, local = tf.split(outputs.features[tap], 2, axis=0)
        similarity = 2.0 * self.weight * cosine(whole, local)
        return class_value + tf.concat([similarity, tf.zeros_like(similarity)], axis=0)
