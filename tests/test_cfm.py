"""CFM (clean feature mixup) through `tfattack.edits`: a first targeted step on a tiny network equals a NumPy
transcription of the mixing (draws replayed from the seeded generator), the forward pass is untouched without an
edit, every native family exposes its layer outputs, and the error paths."""

import numpy as np
import pytest
import tensorflow as tf

import real_contract
import tfattack
from tfattack import backward, edits
from tfattack.attacks import build
from tfattack.attacks.components import ComponentError
from tfattack.attacks.loop import check_surrogate

EPS = 8 / 255


class TinyConvNet(tf.Module):
    """8x8 input; a 1x1 conv (8 wide: not mixed), a stride-4 1x1 conv (2 wide: mixed), relu, mean, linear (mixed)."""

    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.a0 = rng.normal(size=(3, 3)).astype(np.float32)
        self.a1 = rng.normal(size=(3, 4)).astype(np.float32)
        self.w = rng.normal(size=(4, 1000)).astype(np.float32)

    def backward_primitives(self):
        with backward.counting() as counts:
            self(tf.zeros([1, 8, 8, 3]))
        return dict(counts)

    def __call__(self, images):
        edits.begin_forward(8)
        y0 = edits.layer_output(tf.einsum("nhwc,ck->nhwk", images, self.a0))
        y1 = edits.layer_output(tf.einsum("nhwc,ck->nhwk", y0[:, ::4, ::4], self.a1))
        return edits.layer_output(tf.reduce_mean(tf.nn.relu(y1), axis=[1, 2]) @ self.w)


def test_first_targeted_step_equals_the_mixing_transcription():
    net, seed = TinyConvNet(), 3
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, (2, 8, 8, 3)).astype(np.float32)
    labels, targets = np.array([1, 2]), np.array([5, 9])
    attack = build(eps=EPS, steps=1, objective="logit", forward="cfm:1.0,lower=0.1,upper=0.6", seed=seed)
    adv = attack(net, x, labels, target=targets).numpy()

    def layers(images):
        y0 = images @ net.a0
        return y0, y0[:, ::4, ::4] @ net.a1

    _, clean1 = layers(x.astype(np.float64))
    draws = tf.random.Generator.from_seed(seed)  # per mixed layer: the shuffle, the shares, the coin

    def mixing(shape):
        perm = np.argsort(draws.uniform([2]).numpy())
        share = draws.uniform(shape, 0.1, 0.6).numpy().astype(np.float64)
        assert draws.uniform([]).numpy() < 1.0  # prob 1: always mixed
        return perm, share

    perm1, share1 = mixing([2, 1, 1, 4])
    perm2, share2 = mixing([2, 1000])
    _, y1 = layers(x.astype(np.float64))
    mixed1 = (1 - share1) * y1 + share1 * clean1[perm1]
    # d z_t / d x: the linear mix scales z by (1 - share2), the conv mix scales y1 by (1 - share1)
    d_pooled = (1 - share2[np.arange(2), targets])[:, None] * net.w[:, targets].T          # [2, 4]
    d_y1 = (mixed1 > 0) * d_pooled[:, None, None, :] / 4.0 * (1 - share1)                   # [2, 2, 2, 4]
    d_strided = d_y1 @ net.a1.T                                                             # [2, 2, 2, 3]
    d_y0 = np.zeros((2, 8, 8, 3))
    d_y0[:, ::4, ::4] = d_strided
    gradient = d_y0 @ net.a0.T
    expected = np.clip(x + EPS * np.sign(gradient), 0, 1)
    np.testing.assert_allclose(adv, expected, atol=1e-6)


def test_without_an_edit_layer_outputs_pass_through_and_every_native_family_has_them():
    y = tf.constant(np.arange(6.0).reshape(2, 3))
    assert edits.layer_output(y) is y
    resnet = real_contract.resnet()
    assert resnet.backward_primitives()["layer_output"] == 54  # 53 convolutions and the logits
    lite = tfattack.models.load("efficientnet_lite0")
    assert lite.backward_primitives()["layer_output"] == 50  # stem, 16 blocks' 48 minus 1 expand, head, fc


def test_cfm_preset_keeps_the_contract_on_a_real_network():
    resnet, x, labels, targets = real_contract.resnet(), real_contract.images(), np.array([3, 7]), np.array([10, 20])
    first = real_contract.check_contract(build("cfm", eps=EPS, steps=2), resnet, x, labels, targets)
    plain = build("logit_ti_di_mi_fgsm", eps=EPS, steps=2, transforms="di:1.0,resize_ratio=1.1371237458193979")
    assert not np.array_equal(first, plain(resnet, x, labels, target=targets).numpy())  # the mixing acts


def test_error_paths_are_one_line():
    with pytest.raises(ComponentError, match="forward 'cfm': draws per forward pass"):
        build("cfm", copies_per_pass=1)

    class Opaque(tf.Module):
        introspectable = False
        name = "opaque"

        def __call__(self, images):
            return tf.zeros([images.shape[0], 1000])

    with pytest.raises(ValueError, match=r"forward 'cfm': model 'opaque' has no convolution or linear layers"):
        check_surrogate(Opaque(), build("cfm").config, targeted=True)
