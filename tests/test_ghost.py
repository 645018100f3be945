"""Ghost networks (skip connection erosion) through `tfattack.edits`: a first step on a tiny residual network equals
a NumPy transcription with the draws replayed, the per-family ranges, the contract on ResNet-50, the error paths."""

import numpy as np
import pytest
import tensorflow as tf

import real_contract
from tfattack import backward, edits
from tfattack.attacks import build
from tfattack.attacks.loop import check_surrogate
from tfattack.attacks.surrogate.ghost import PAPER_RANGES

EPS = 8 / 255


class TinyResidualNet(tf.Module):
    """h1 = x + relu(x A1); h2 = h1 + relu(h1 A2); logits = mean over pixels of h2 @ W (per-pixel 3x3 layers)."""

    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.a1, self.a2 = (rng.normal(size=(3, 3)).astype(np.float32) for _ in range(2))
        self.w = rng.normal(size=(3, 1000)).astype(np.float32)

    def backward_primitives(self):
        with backward.counting() as counts:
            self(tf.zeros([1, 4, 4, 3]))
        return dict(counts)

    def __call__(self, images):
        edits.begin_forward(4, "tiny")
        h1 = backward.residual_add(images, tf.nn.relu(images @ self.a1))
        h2 = backward.residual_add(h1, tf.nn.relu(h1 @ self.a2))
        return tf.reduce_mean(h2, axis=[1, 2]) @ self.w


def test_first_step_equals_the_erosion_transcription():
    net, seed, r = TinyResidualNet(), 2, 0.3
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, (2, 4, 4, 3)).astype(np.float32)
    labels = np.array([4, 8])
    adv = build(eps=EPS, steps=1, forward=f"ghost:{r}", seed=seed)(net, x, labels).numpy()

    draws = tf.random.Generator.from_seed(seed)
    u1, u2 = (draws.uniform([1, 1, 1, 3], 1 - r, 1 + r).numpy().astype(np.float64) for _ in range(2))
    x64 = x.astype(np.float64)
    pre1 = x64 @ net.a1
    h1 = u1 * x64 + np.maximum(pre1, 0)
    pre2 = h1 @ net.a2
    h2 = u2 * h1 + np.maximum(pre2, 0)
    z = h2.mean(axis=(1, 2)) @ net.w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_z = p - np.eye(1000)[labels]                                       # d CE / d z
    d_h2 = np.broadcast_to((d_z @ net.w.T)[:, None, None, :] / 16.0, h2.shape)
    d_h1 = u2 * d_h2 + ((d_h2 * (pre2 > 0)) @ net.a2.T)
    d_x = u1 * d_h1 + ((d_h1 * (pre1 > 0)) @ net.a1.T)
    np.testing.assert_allclose(adv, np.clip(x + EPS * np.sign(d_x), 0, 1), atol=1e-6)


def test_each_family_gets_its_papers_range_and_no_edit_changes_nothing():
    ones = tf.ones([2, 3, 3, 64])
    assert edits.residual_skip(ones) is ones
    for architecture, r in [("resnet_v2_50", 0.22), ("resnet_v2_152", 0.12), ("efficientnet_lite0", 0.16)]:
        erosion = build("ghost").config.forward[0].make_edit({}, tf.random.Generator.from_seed(0))
        with edits.editing(erosion):
            edits.begin_forward(299, architecture)
            scaled = edits.residual_skip(ones).numpy()
        assert np.all(scaled == scaled[:1, :1, :1])  # one factor per channel, shared by images and pixels
        assert 1 - r <= scaled.min() and scaled.max() <= 1 + r and scaled.max() - scaled.min() > r  # fills the range
    assert PAPER_RANGES["inception_resnet_v2"] == 0.08


def test_ghost_preset_keeps_the_contract_on_a_real_network():
    resnet, x, labels = real_contract.resnet(), real_contract.images(), np.array([3, 7])
    first = real_contract.check_contract(build("ghost", eps=EPS, steps=2), resnet, x, labels)
    assert not np.array_equal(first, build("mi_fgsm", eps=EPS, steps=2)(resnet, x, labels).numpy())


def test_networks_without_residual_additions_are_refused_in_one_line():
    class Plain(tf.Module):
        name = "plain"

        def backward_primitives(self):
            return {"relu": 3, "layer_output": 4}

        def __call__(self, images):
            return tf.zeros([images.shape[0], 1000])

    with pytest.raises(ValueError, match="forward 'ghost': model 'plain' has no residual additions it can edit"):
        check_surrogate(Plain(), build("ghost").config)
