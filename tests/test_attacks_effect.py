"""Effectiveness: on a small network trained here (seconds) on a synthetic 10-class task, every untargeted
preset drives accuracy far below clean, and targeted attacks reach the target on most inputs."""

import numpy as np
import pytest
import tensorflow as tf

import tfattack.attacks as attacks
from tfattack.models.ensemble import Ensemble

SIZE = 16
CLASSES = 10
# Low-contrast gratings: a budget of a few levels must be able to change the class.
AMPLITUDE = 0.05
NOISE = 0.02


def synthetic_images(count, seed, amplitude=AMPLITUDE, noise=NOISE):
    """Class k: a sinusoidal grating with one of 5 orientations/frequencies in one of 2 colours, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=count)
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    angles = np.array([0, 36, 72, 108, 144]) * np.pi / 180
    colours = np.array([[1.0, 0.2, 0.2], [0.2, 0.4, 1.0]])
    pattern_index, colour_index = labels % 5, labels // 5
    angle = angles[pattern_index][:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(count, 1, 1))
    grating = np.sin((rows * np.cos(angle) + cols * np.sin(angle)) * 0.9 + phase)
    images = 0.5 + amplitude * grating[..., None] * colours[colour_index][:, None, None, :]
    images += rng.normal(0, noise, size=images.shape)
    images = np.clip(np.round(images * 255) / 255, 0, 1)  # 8-bit images, as the attacks assume
    return images.astype(np.float32), labels


class TrainedNet(tf.Module):
    """conv(16) -> relu -> maxpool -> conv(32) -> tanh -> global mean -> dense(1000); only 10 classes are trained."""

    def __init__(self):
        super().__init__(name="trained_net")
        rng = np.random.default_rng(0)
        glorot = lambda shape, fan: tf.Variable(rng.normal(0, np.sqrt(2.0 / fan), shape).astype(np.float32))
        self.conv1 = glorot([3, 3, 3, 16], 27)
        self.conv2 = glorot([3, 3, 16, 32], 144)
        self.dense = glorot([32, 1000], 32)
        self.bias = tf.Variable(np.zeros(1000, np.float32))

    def __call__(self, images):
        hidden = tf.nn.relu(tf.nn.conv2d(images - 0.5, self.conv1, 1, "SAME"))
        hidden = tf.nn.max_pool2d(hidden, 2, 2, "VALID")
        hidden = tf.tanh(tf.nn.conv2d(hidden, self.conv2, 1, "SAME"))  # bounded features: no logit inflation
        return tf.reduce_mean(hidden, axis=[1, 2]) @ self.dense + self.bias


def train_network(images, labels, steps=400):
    model = TrainedNet()
    optimizer = tf.optimizers.Adam(0.01)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x)))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    rng = np.random.default_rng(1)
    for _ in range(steps):
        batch = rng.integers(0, len(images), size=64)
        train_step(tf.constant(images[batch]), tf.constant(labels[batch]))
    return model


@pytest.fixture(scope="session")
def trained():
    model = train_network(*synthetic_images(3000, seed=0))
    test_images, test_labels = synthetic_images(40, seed=2)
    accuracy = np.mean(predict(model, test_images) == test_labels)
    assert accuracy >= 0.95, f"the test network did not train ({accuracy:.2f}); the checks below would be void"
    return model, test_images, test_labels


def predict(model, images):
    return np.argmax(model(tf.constant(images)).numpy(), axis=-1)


# Long schedules are shortened to 10 steps to keep the suite fast; everything else is the preset.
SHORTEN = {"logit_ti_di_mi_fgsm": dict(steps=10), "po_trip_ti_di_mi_fgsm": dict(steps=10), "logit_margin": dict(steps=10)}
# Presets that change the backward or forward pass or read features need a native network (tests/test_model_related.py,
# tests/test_feature_level.py), not this small one.
UNTARGETED = [name for name in attacks.presets() if "target_class" not in name and not attacks.PRESETS[name].backward
              and not attacks.PRESETS[name].forward
              and not getattr(attacks.PRESETS[name].objective, "feature_level", False)]


@pytest.mark.parametrize("name", UNTARGETED)
def test_untargeted_preset_destroys_accuracy(trained, name):
    model, images, labels = trained
    attack = attacks.build(name, eps=8 / 255, **SHORTEN.get(name, {}))
    # Ensemble strategies need members: the network twice, equally weighted (the members' gradients agree, so
    # each strategy must still reduce to an attack on it).
    strategy = any(getattr(e, "ensemble_strategy", False) for e in attack.config.estimators)
    surrogate = Ensemble([model, model]) if strategy else model
    adv = attacks.quantize(attack(surrogate, images, labels), images, attack.config.eps)
    accuracy = np.mean(predict(model, adv) == labels)
    assert accuracy <= 0.2, f"{name}: adversarial accuracy {accuracy:.2f}"


# Admix is left out: an untargeted method in its paper, here it reaches the target on ~30% (the mixed-in
# images of other classes carry as much signal as this low-contrast task's own pattern).
TARGETED = ["i_fgsm", "mi_fgsm", "ni_fgsm", "ti_di_mi_fgsm", "si_ni_ti_dim", "vmi_fgsm",
            "logit_ti_di_mi_fgsm", "po_trip_ti_di_mi_fgsm", "logit_margin", "nips17_iter_target_class"]
# The logit loss needs long schedules (Zhao et al. use 300 steps); 40 suffice here.
SHORTEN_TARGETED = {"logit_ti_di_mi_fgsm": dict(steps=40), "po_trip_ti_di_mi_fgsm": dict(steps=40),
                    "logit_margin": dict(steps=40)}


@pytest.mark.parametrize("name", TARGETED)
def test_targeted_attack_hits_the_target(trained, name):
    model, images, labels = trained
    targets = (labels + 1 + np.arange(len(labels)) % (CLASSES - 1)) % CLASSES
    assert np.all(targets != labels)
    attack = attacks.build(name, eps=16 / 255, **SHORTEN_TARGETED.get(name, {}))
    adv = attacks.quantize(attack(model, images, labels, target=targets), images, attack.config.eps)
    success = np.mean(predict(model, adv) == targets)
    assert success >= 0.8, f"{name}: targeted success {success:.2f}"


def test_weak_budget_is_weaker(trained):
    """The effectiveness checks can fail: a tiny budget leaves the network mostly right."""
    model, images, labels = trained
    adv = attacks.build("mi_fgsm", eps=1 / 255)(model, images, labels)
    assert np.mean(predict(model, adv.numpy()) == labels) > 0.5
