"""The auxiliary-logits loss term (NIPS'17 sample attacks and MI-FGSM winner: weight 0.4)."""

import numpy as np
import tensorflow as tf

import tfattack
from tfattack.attacks import loop
from tfattack.attacks.config import AttackConfig
from tfattack.attacks.objectives import CE


class LinearWithAux(tf.Module):
    """logits = x W1 and aux = x W2 on flattened pixels: gradients are easy to check by hand."""

    def __init__(self, seed, aux=True):
        rng = np.random.default_rng(seed)
        self.w1 = tf.constant(rng.standard_normal((4 * 4 * 3, 1000)).astype(np.float32))
        self.w2 = tf.constant(rng.standard_normal((4 * 4 * 3, 1000)).astype(np.float32))
        self.has_aux = aux

    def logits_and_aux(self, images):
        flat = tf.reshape(images, [tf.shape(images)[0], -1])
        return flat @ self.w1, (flat @ self.w2 if self.has_aux else None)

    def __call__(self, images):
        return self.logits_and_aux(images)[0]


def cross_entropy(logits, labels):
    shifted = logits - logits.max(1, keepdims=True)
    return -(shifted[np.arange(len(labels)), labels] - np.log(np.exp(shifted).sum(1)))


def test_objective_adds_weighted_aux_loss_and_ignores_it_at_weight_zero():
    model = LinearWithAux(0)
    images = np.random.default_rng(1).uniform(0, 1, (3, 4, 4, 3)).astype(np.float32)
    labels = np.array([3, 500, 999])
    logits, aux = (t.numpy() for t in model.logits_and_aux(images))
    with_aux = loop.make_objective(model, AttackConfig(objective=CE(aux_weight=0.4)))(tf.constant(images), tf.constant(labels), None)
    np.testing.assert_allclose(with_aux.numpy(), cross_entropy(logits, labels) + 0.4 * cross_entropy(aux, labels),
                               rtol=1e-4)
    plain = loop.make_objective(model, AttackConfig())(tf.constant(images), tf.constant(labels), None)
    np.testing.assert_allclose(plain.numpy(), cross_entropy(logits, labels), rtol=1e-4)


def test_nips17_presets_use_the_aux_head_and_change_the_result():
    model = LinearWithAux(2)
    images = np.random.default_rng(3).uniform(0.2, 0.8, (2, 4, 4, 3)).astype(np.float32)
    labels, targets = np.array([1, 2]), np.array([10, 20])
    assert tfattack.attacks.build("nips17_iter_target_class").config.objective.aux_weight == 0.4
    with_aux = tfattack.attacks.build("nips17_iter_target_class", eps=8 / 255)(model, images, labels, target=targets)
    without = tfattack.attacks.build("nips17_iter_target_class", eps=8 / 255, aux_weight=0.0)(
        model, images, labels, target=targets)
    assert np.abs(with_aux.numpy() - without.numpy()).max() > 0
    assert np.abs(with_aux.numpy() - images).max() <= 8 / 255 + 1e-6


def test_ensemble_fuses_aux_over_members_that_have_one():
    a, b = LinearWithAux(4), LinearWithAux(5, aux=False)
    images = np.random.default_rng(6).uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)
    ensemble = tfattack.models.Ensemble([a, b], weights=[1, 3])
    logits, aux = ensemble.logits_and_aux(images)
    np.testing.assert_allclose(logits.numpy(), 0.25 * a(images).numpy() + 0.75 * b(images).numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(aux.numpy(), a.logits_and_aux(images)[1].numpy(), rtol=1e-6)
    assert tfattack.models.Ensemble([b]).logits_and_aux(images)[1] is None
