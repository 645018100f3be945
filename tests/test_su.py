"""SU (self-universality): the local crop transform against a NumPy transcription of its bilinear crop, the first
targeted step against a NumPy transcription of the paper's objective, the contract on a real network, and the
configurations it cannot pair."""

import numpy as np
import pytest
import tensorflow as tf

import real_contract
from tfattack.attacks import build
from tfattack.attacks.components import ComponentError
from tfattack.attacks.transforms import LocalCrop

from test_feature_level import EPS, H, W, TinyFeatureNet


def numpy_crop(image, top, left, crop_h, crop_w, height, width):
    """Bilinear samples of the box [top, top + crop_h - 1] x [left, left + crop_w - 1] on a height x width grid
    whose corners sit on the box's corner pixels."""
    out = np.zeros((height, width, image.shape[-1]))
    for i in range(height):
        for j in range(width):
            y = top + i * (crop_h - 1) / (height - 1)
            x = left + j * (crop_w - 1) / (width - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, image.shape[0] - 1), min(x0 + 1, image.shape[1] - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * image[y0, x0] + (1 - dy) * dx * image[y0, x1]
                         + dy * (1 - dx) * image[y1, x0] + dy * dx * image[y1, x1])
    return out


def test_local_crop_is_a_crop_of_the_clean_image_plus_the_perturbation():
    rng = np.random.default_rng(0)
    size, scale, seed = 20, 0.1, 5
    clean = rng.uniform(0.1, 0.9, (3, size, size, 3)).astype(np.float32)
    adv = np.clip(clean + rng.uniform(-0.03, 0.03, clean.shape), 0, 1).astype(np.float32)
    out = LocalCrop(scale).apply(tf.constant(adv), tf.random.Generator.from_seed(seed), 3, clean=tf.constant(clean))
    out = out.numpy()
    assert out.shape == (6, size, size, 3)
    np.testing.assert_array_equal(out[:3], adv)
    replay = tf.random.Generator.from_seed(seed)
    ratio = np.exp(replay.uniform([3], np.log(3 / 4), np.log(4 / 3)).numpy().astype(np.float64))
    crop_h = np.clip(np.round(np.sqrt(scale * size * size / ratio)), 1, size)
    crop_w = np.clip(np.round(np.sqrt(scale * size * size * ratio)), 1, size)
    top = np.floor(replay.uniform([3]).numpy() * (size - crop_h + 1))
    left = np.floor(replay.uniform([3]).numpy() * (size - crop_w + 1))
    for i in range(3):
        assert abs(crop_h[i] * crop_w[i] - scale * size * size) <= crop_h[i] + crop_w[i]  # the area, up to rounding
        local = numpy_crop(clean[i], top[i], left[i], crop_h[i], crop_w[i], size, size) + (adv[i] - clean[i])
        np.testing.assert_allclose(out[3 + i], local, atol=1e-5)


def test_su_first_targeted_step_equals_its_formula():
    model = TinyFeatureNet()
    rng = np.random.default_rng(5)
    x = rng.uniform(0.2, 0.8, (2, H, W, 3)).astype(np.float32)
    labels, targets, weight, seed = np.array([3, 11]), np.array([7, 9]), 0.5, 4
    local = LocalCrop(0.3).apply(tf.constant(x), tf.random.Generator.from_seed(seed), 2, clean=tf.constant(x))
    local = local.numpy()[2:].astype(np.float64)

    def to_input(images, feature_gradient):
        return (feature_gradient * (images @ model.a > 0)) @ model.a.T

    def cosine_gradient(a, b):  # d cos(a, b) / d a, per image over flattened features
        na = np.sqrt((a ** 2).sum(axis=(1, 2, 3), keepdims=True))
        nb = np.sqrt((b ** 2).sum(axis=(1, 2, 3), keepdims=True))
        cos = (a * b).sum(axis=(1, 2, 3), keepdims=True) / (na * nb)
        return b / (na * nb) - cos * a / na ** 2

    fx, fl = model.f(x), model.f(local)
    gradient = (to_input(x, model.logit_gradient_at_f(x, targets)) + to_input(local, model.logit_gradient_at_f(local, targets))
                + 2 * weight * (to_input(x, cosine_gradient(fx, fl)) + to_input(local, cosine_gradient(fl, fx))))
    expected = np.clip(x + EPS * np.sign(gradient), 0, 1)
    attack = build(eps=EPS, steps=1, transforms="local_crop:0.3", objective=f"su:{weight},layer=f", seed=seed)
    np.testing.assert_allclose(attack(model, x, labels, target=targets).numpy(), expected, atol=1e-6)


def test_su_preset_keeps_the_contract_on_a_real_network():
    attack = build("su", eps=EPS, steps=2)
    real_contract.check_contract(attack, real_contract.resnet(), real_contract.images(), np.array([3, 7]),
                                 np.array([10, 20]))
    assert attack.config.objective.tap(real_contract.resnet()) == "resnet_v2_50/block3"
    assert build("su").config.steps == 300 and build("su").config.alpha == pytest.approx(2 / 255)


@pytest.mark.parametrize("overrides, message", [
    (dict(transforms="si:2,local_crop"), "transform 'local_crop': must be the first transform and the only copy maker"),
    (dict(transforms="di"), "objective 'su': pairs each image with its local copy"),
    (dict(views=2), "objective 'su': pairs each image with its local copy"),
    (dict(copies_per_pass=1), "objective 'su': pairs copies within one forward pass"),
])
def test_configurations_that_break_the_pairs_are_refused(overrides, message):
    with pytest.raises(ComponentError, match=message):
        build("su", **overrides)
