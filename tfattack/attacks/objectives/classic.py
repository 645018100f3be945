"""Classification losses as objectives: cross-entropy, C&W margin, logit, Poincare + triplet."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks import losses
from tfattack.attacks.components import Objective, param, register


@dataclasses.dataclass(frozen=True)
class ClassLoss(Objective):
    """An objective made of one per-class loss: untargeted ascends loss(labels), targeted descends loss(targets)."""

    def loss(self, logits, labels):
        raise NotImplementedError

    def value(self, logits, labels, targets):
        logits = tf.cast(logits, tf.float32)
        if targets is None:
            return self.loss(logits, labels)
        return -self.loss(logits, targets)


@register
@dataclasses.dataclass(frozen=True)
class CE(ClassLoss):
    """Softmax cross-entropy."""

    name = "ce"
    positional = "smoothing"
    paper = "Goodfellow et al., Explaining and harnessing adversarial examples, ICLR 2015"
    smoothing: float = param(0.0, "Label smoothing (0.1 in the NIPS'17 targeted sample attacks).", low=0.0, high=1.0)

    def loss(self, logits, labels):
        return losses.cross_entropy(logits, labels, self.smoothing)


@register
@dataclasses.dataclass(frozen=True)
class CW(ClassLoss):
    """C&W margin max_{j != y} z_j - z_y, without the kappa clamp."""

    name = "cw"
    paper = "Carlini & Wagner, Towards evaluating the robustness of neural networks, S&P 2017"

    def loss(self, logits, labels):
        return losses.margin(logits, labels)


@register
@dataclasses.dataclass(frozen=True)
class Logit(ClassLoss):
    """-z_y: descending it for a target t raises z_t."""

    name = "logit"
    paper = "Zhao et al., On success and simplicity: a second look at transferable targeted attacks, NeurIPS 2021"

    def loss(self, logits, labels):
        return losses.negative_logit(logits, labels)


@register
@dataclasses.dataclass(frozen=True)
class LogitMargin(ClassLoss):
    """Cross-entropy of calibrated logits: z / T (temperature) or z / stop_gradient(z_(1) - z_(2)) (margin, the
    gap between the top two logits of the current input), so the softmax does not saturate as the target wins."""

    name = "logit_margin"
    positional = "mode"
    paper = "Weng et al., Logit margin matters: improving transferable targeted adversarial attack by logit calibration, IEEE TIFS 2023"
    mode: str = param("margin", "margin or temperature (TransferAttack's default: margin; the angle calibration needs "
                                "the classifier's input features and is not offered).", choices=("margin", "temperature"))
    temperature: float = param(5.0, "T of the temperature mode (TransferAttack: 5; the authors' ce05 script: 0.5).",
                               above=0.0)

    def loss(self, logits, labels):
        if self.mode == "temperature":
            scale = tf.cast(self.temperature, logits.dtype)
        else:
            top = tf.math.top_k(logits, k=2).values
            scale = tf.stop_gradient(top[:, :1] - top[:, 1:2])
        return losses.cross_entropy(tf.math.divide_no_nan(logits, scale), labels)


@register
@dataclasses.dataclass(frozen=True)
class PoTrip(Objective):
    """Poincare distance to the target plus a triplet term away from the true label; untargeted: ascend the
    Poincare distance to the true label."""

    name = "po_trip"
    paper = "Li et al., Towards transferable targeted attack, CVPR 2020"
    weight: float = param(0.01, "Weight lambda of the triplet term (paper: 0.01).", low=0.0)
    margin: float = param(0.007, "Triplet margin gamma (paper: 0.007).", low=0.0)

    def value(self, logits, labels, targets):
        logits = tf.cast(logits, tf.float32)
        if targets is None:
            return losses.poincare_distance(logits, labels)
        return -losses.po_trip_targeted(logits, labels, targets, self.weight, self.margin)


@register
@dataclasses.dataclass(frozen=True)
class Prob(ClassLoss):
    """-softmax(z)_y: untargeted lowers the label's probability, targeted raises the target's (MIG's objective)."""

    name = "prob"
    paper = ("Ma et al., Transferable adversarial attack for both vision transformers and convolutional networks "
             "via momentum integrated gradients, ICCV 2023")

    def loss(self, logits, labels):
        probabilities = tf.nn.softmax(logits, axis=-1)
        return -tf.reduce_sum(probabilities * tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype), -1)
