"""ILPD (intermediate-level perturbation decay) through `tfattack.edits`: two steps on a tiny network with a named end
point equal a NumPy transcription with the noise replayed (a fresh reference each step), end points are untouched
without an edit, the contract on ResNet-50, the error paths."""

import numpy as np
import pytest
import tensorflow as tf

import real_contract
from tfattack import backward, edits
from tfattack.attacks import build
from tfattack.attacks.loop import check_surrogate
from tfattack.models.features import FeatureError

EPS = 8 / 255


class TinyTappedNet(tf.Module):
    """h = relu(x A) (end point "hidden"); logits = mean over pixels of h @ W (per-pixel 3x3 and 3x1000 layers)."""

    name = "tiny"

    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.a = rng.normal(size=(3, 3)).astype(np.float32)
        self.w = rng.normal(size=(3, 1000)).astype(np.float32)

    def backward_primitives(self):
        with backward.counting() as counts:
            self(tf.zeros([1, 4, 4, 3]))
        return dict(counts)

    def feature_tap(self, tap):
        if tap != "hidden":
            raise FeatureError(f"model 'tiny' has no feature tap {tap!r}; its taps: hidden")
        return tap

    def __call__(self, images):
        edits.begin_forward(4, "tiny")
        hidden = edits.end_point({}, "hidden", tf.nn.relu(images @ self.a))
        return tf.reduce_mean(hidden, axis=[1, 2]) @ self.w


def transcription(net, x, labels, noises, gamma, sigma, eps=EPS, norm="linf"):
    """I-FGSM (L2: steps along the L2-normalised gradient, inside the ball here) on CE through
    h -> gamma h + (1 - gamma) relu((x + sigma n_t) A), n_t the step's noise."""
    x64, adv = x.astype(np.float64), x.astype(np.float64)
    for noise in noises:
        reference = np.maximum((x64 + sigma * noise) @ net.a, 0)
        pre = adv @ net.a
        mixed = gamma * np.maximum(pre, 0) + (1 - gamma) * reference
        z = mixed.mean(axis=(1, 2)) @ net.w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d_mixed = np.broadcast_to(((p - np.eye(1000)[labels]) @ net.w.T)[:, None, None, :] / 16.0, mixed.shape)
        d_x = (gamma * d_mixed * (pre > 0)) @ net.a.T
        if norm == "l2":
            adv = adv + eps / len(noises) * d_x / np.sqrt((d_x ** 2).sum(axis=(1, 2, 3), keepdims=True))
        else:
            adv = np.clip(np.clip(adv + eps / len(noises) * np.sign(d_x), x64 - eps, x64 + eps), 0, 1)
    return adv


def test_two_steps_equal_the_decay_transcription_with_a_fresh_reference_each_step():
    net, seed, gamma, sigma = TinyTappedNet(), 5, 0.3, 0.2
    x = np.random.default_rng(1).uniform(0.2, 0.8, (2, 4, 4, 3)).astype(np.float32)
    labels = np.array([4, 8])
    draws = tf.random.Generator.from_seed(seed)
    noises = [draws.normal(x.shape).numpy().astype(np.float64) for _ in range(2)]
    spec = f"ilpd:hidden,gamma={gamma},sigma={sigma}"

    adv = build(eps=EPS, steps=2, forward=spec, seed=seed)(net, x, labels).numpy()
    np.testing.assert_allclose(adv, transcription(net, x, labels, noises, gamma, sigma), atol=1e-6)
    # L2 steps follow the gradient's direction, not only its sign: the reference's draw shows, and the one the
    # attack matches is a fresh one at each step.
    adv = build(eps=0.5, steps=2, norm="l2", forward=spec, seed=seed)(net, x, labels).numpy()
    fresh = transcription(net, x, labels, noises, gamma, sigma, eps=0.5, norm="l2")
    reused = transcription(net, x, labels, [noises[0]] * 2, gamma, sigma, eps=0.5, norm="l2")
    np.testing.assert_allclose(adv, fresh, atol=1e-6)
    assert np.abs(fresh - reused).max() > 1e-4


def test_end_points_pass_unchanged_without_an_edit_and_gamma_one_is_no_edit():
    value, points = tf.ones([2, 3, 3, 8]), {}
    assert edits.end_point(points, "block", value) is value and points["block"] is value
    assert build(forward="ilpd:gamma=1").config.forward[0].is_identity


def test_ilpd_preset_keeps_the_contract_on_a_real_network():
    resnet, x, labels = real_contract.resnet(), real_contract.images(), np.array([3, 7])
    assert resnet.backward_primitives()["end_point"] > 16  # every unit, its convolutions, the blocks
    first = real_contract.check_contract(build("ilpd", eps=EPS, steps=2), resnet, x, labels)
    plain = build("mi_fgsm", eps=EPS, steps=2, step_size=1 / 255)(resnet, x, labels).numpy()
    assert not np.array_equal(first, plain)


def test_a_missing_tap_and_a_network_without_end_points_are_refused_in_one_line():
    with pytest.raises(FeatureError, match="model 'tiny' has no feature tap 'Mixed_5b'"):
        check_surrogate(TinyTappedNet(), build(forward="ilpd:Mixed_5b").config)

    class Opaque(tf.Module):
        name = "opaque"

        def backward_primitives(self):
            return {"relu": 3, "layer_output": 4}

        def __call__(self, images):
            return tf.zeros([images.shape[0], 1000])

    with pytest.raises(ValueError, match="forward 'ilpd': model 'opaque' has no named end points routed through"):
        check_surrogate(Opaque(), build("ilpd").config)
