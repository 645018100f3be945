"""Ghost networks through `tfattack.edits`: a first step on a tiny residual network (skip connection erosion) and on a
tiny plain one (dropout erosion) equals a NumPy transcription with the draws replayed; the per-family ranges; the
eroded end points of real networks (the authors' list on Inception-v3); the contract on ResNet-50 and Inception-v3;
the composition with a feature-level objective (a transcription) and with an ensemble strategy (each member's pass
numbered as in the ensemble's); the error paths."""

import types

import numpy as np
import pytest
import tensorflow as tf

import real_contract
from shared_data import SHARED, requires_shared
import tfattack
from tfattack import backward, edits
from tfattack.attacks import build
from tfattack.attacks.loop import ForwardEdits, check_surrogate, make_member_logits
from tfattack.attacks.surrogate.ghost import PAPER_RANGES, Ghost
from tfattack.models.ensemble import Ensemble

EPS = 8 / 255


def tiny_batch(seed):
    """Two 4x4 images."""
    return np.random.default_rng(seed).uniform(0.2, 0.8, (2, 4, 4, 3)).astype(np.float32)


def first_step(net, x, labels, seed, **components):
    return build(eps=EPS, steps=1, seed=seed, **components)(net, x, labels).numpy()


def ce_gradient_at_logits(z, labels):
    """d CE / d z = softmax(z) - onehot(labels)."""
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True) - np.eye(z.shape[1])[labels]


class TinyNet(tf.Module):
    """4x4 images through per-pixel 3x3 layers A1, A2, A3 and a 3x1000 head W, all seeded."""

    image_size = 4

    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.a1, self.a2, self.a3 = (rng.normal(size=(3, 3)).astype(np.float32) for _ in range(3))
        self.w = rng.normal(size=(3, 1000)).astype(np.float32)

    def backward_primitives(self):
        with backward.counting() as counts:
            self(tf.zeros([1, 4, 4, 3]))
        return dict(counts)


class TinyResidualNet(TinyNet):
    """h1 = x + relu(x A1); h2 = h1 + relu(h1 A2); logits = mean over pixels of h2 @ W."""

    def __call__(self, images):
        edits.begin_forward(4, "tiny")
        h1 = backward.residual_add(images, tf.nn.relu(images @ self.a1))
        h2 = backward.residual_add(h1, tf.nn.relu(h1 @ self.a2))
        return tf.reduce_mean(h2, axis=[1, 2]) @ self.w


def test_first_step_equals_the_erosion_transcription():
    net, seed, r, x, labels = TinyResidualNet(), 2, 0.3, tiny_batch(1), np.array([4, 8])
    adv = first_step(net, x, labels, seed, forward=f"ghost:{r}")

    draws = tf.random.Generator.from_seed(seed)
    u1, u2 = (draws.uniform([1, 1, 1, 3], 1 - r, 1 + r).numpy().astype(np.float64) for _ in range(2))
    x64 = x.astype(np.float64)
    pre1 = x64 @ net.a1
    h1 = u1 * x64 + np.maximum(pre1, 0)
    pre2 = h1 @ net.a2
    h2 = u2 * h1 + np.maximum(pre2, 0)
    d_z = ce_gradient_at_logits(h2.mean(axis=(1, 2)) @ net.w, labels)
    d_h2 = np.broadcast_to((d_z @ net.w.T)[:, None, None, :] / 16.0, h2.shape)
    d_h1 = u2 * d_h2 + ((d_h2 * (pre2 > 0)) @ net.a2.T)
    d_x = u1 * d_h1 + ((d_h1 * (pre1 > 0)) @ net.a1.T)
    np.testing.assert_allclose(adv, np.clip(x + EPS * np.sign(d_x), 0, 1), atol=1e-6)


def test_each_family_gets_its_papers_range_and_no_edit_changes_nothing():
    ones = tf.ones([2, 3, 3, 64])
    assert edits.residual_skip(ones) is ones
    for architecture, r in [("resnet_v2_50", 0.22), ("resnet_v2_152", 0.12), ("efficientnet_lite0", 0.16)]:
        erosion = Ghost().prepare_edit(TinyResidualNet(), None, tf.random.Generator.from_seed(0))
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


class TinyPlainNet(TinyNet):
    """No residual additions; its end points, in forward order: conv1 (pre-activation), relu1, relu2, pool (2x2
    average), relu3, Logits."""

    def __call__(self, images):
        edits.begin_forward(4, "tiny_plain")
        points = {}
        conv1 = edits.end_point(points, "conv1", edits.layer_output(images @ self.a1))
        h1 = edits.end_point(points, "relu1", tf.nn.relu(conv1))
        h2 = edits.end_point(points, "relu2", tf.nn.relu(edits.layer_output(h1 @ self.a2)))
        pooled = edits.end_point(points, "pool", tf.nn.avg_pool2d(h2, 2, 2, "VALID"))
        h3 = edits.end_point(points, "relu3", tf.nn.relu(edits.layer_output(pooled @ self.a3)))
        return edits.end_point(points, "Logits", tf.reduce_mean(h3, axis=[1, 2]) @ self.w)


def test_the_units_of_a_body_are_its_activations_and_poolings_but_the_last():
    # conv1 is followed by its own activation (same size): not a unit's end; relu3 is the last, pooled by the head.
    assert edits.unit_end_points(TinyPlainNet()) == ("relu1", "relu2", "pool")


def test_first_step_equals_the_dropout_erosion_transcription():
    net, seed, rate, x, labels = TinyPlainNet(), 5, 0.3, tiny_batch(2), np.array([1, 9])
    adv = first_step(net, x, labels, seed, forward=f"ghost:dropout={rate}")

    draws = tf.random.Generator.from_seed(seed)
    m1, m2, m3 = ((draws.uniform(shape).numpy() >= rate) / (1 - rate)
                  for shape in ([2, 4, 4, 3], [2, 4, 4, 3], [2, 2, 2, 3]))
    x64 = x.astype(np.float64)
    pre1 = x64 @ net.a1
    h1 = np.maximum(pre1, 0) * m1
    pre2 = h1 @ net.a2
    h2 = np.maximum(pre2, 0) * m2
    pooled = 0.25 * (h2[:, 0::2, 0::2] + h2[:, 1::2, 0::2] + h2[:, 0::2, 1::2] + h2[:, 1::2, 1::2]) * m3
    pre3 = pooled @ net.a3
    d_z = ce_gradient_at_logits(np.maximum(pre3, 0).mean(axis=(1, 2)) @ net.w, labels)
    d_h3 = np.broadcast_to((d_z @ net.w.T)[:, None, None, :] / 4.0, pre3.shape)
    d_pooled = ((d_h3 * (pre3 > 0)) @ net.a3.T) * m3
    d_h2 = 0.25 * np.repeat(np.repeat(d_pooled, 2, axis=1), 2, axis=2) * m2
    d_h1 = ((d_h2 * (pre2 > 0)) @ net.a2.T) * m1
    d_x = (d_h1 * (pre1 > 0)) @ net.a1.T
    np.testing.assert_allclose(adv, np.clip(x + EPS * np.sign(d_x), 0, 1), atol=1e-6)


def test_inception_v3_is_eroded_where_the_authors_put_dropout_and_keeps_the_contract():
    inception = tfattack.models.load("inception_v3", random_weights=True)
    # The authors' Inception-v3 ghost: dropout after every end point of the base network but Mixed_7c.
    assert edits.unit_end_points(inception) == (
        "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_3a_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
        "MaxPool_5a_3x3", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
        "Mixed_6e", "Mixed_7a", "Mixed_7b")
    sites = Ghost().dropout_sites([inception])
    assert set(sites.values()) == {0.006} and len(sites) == 17
    x, labels = real_contract.images(), np.array([3, 7])
    first = real_contract.check_contract(build("ghost", eps=EPS, steps=2), inception, x, labels)
    assert not np.array_equal(first, build("mi_fgsm", eps=EPS, steps=2)(inception, x, labels).numpy())


@requires_shared
def test_the_real_ensembles_plain_members_are_eroded_at_their_activations_and_poolings():
    # The logit-fused source of the benchmarks: Lite0 (residual: skip erosion) + two TF.js networks (dropout).
    lite0, mobilenet, darknet = (tfattack.models.load(name, model_dir=str(SHARED / "real_models"))
                                 for name in ("efficientnet_lite0", "mobilenet_v1_075", "tiny_darknet"))
    ensemble = tfattack.models.Ensemble([lite0, mobilenet, darknet])
    check_surrogate(ensemble, build("ghost").config)
    sites = Ghost().dropout_sites(list(ensemble.members))
    # TF.js names each layer: a unit's end is its activation (conv1, conv1_bn are not); the last one is left out.
    assert sorted(n for i, n in sites if i == 1) == sorted(
        ["conv1_relu"] + [f"conv_{kind}_{k}_relu" for k in range(1, 14) for kind in ("dw", "pw")][:-1])
    darknet_units = [n for i, n in sites if i == 2]
    assert len(darknet_units) == 19 and {n.split("_")[0] for n in darknet_units} == {"leaky", "max"}
    assert not any(i == 0 for i, _ in sites)


def test_an_ensemble_member_gets_the_erosion_its_structure_allows():
    plain, residual = TinyPlainNet(), TinyResidualNet()
    assert Ghost(dropout=0.1).dropout_sites([residual, plain]) == {(1, n): 0.1 for n in ("relu1", "relu2", "pool")}
    assert Ghost().dropout_sites([plain, residual]) == {(0, n): 0.006 for n in ("relu1", "relu2", "pool")}


class TinyTappedNet(TinyNet):
    """h = relu(x A1) (end point "relu1", a unit), f = relu(h A2) (end point and feature tap "f", the last unit),
    logits = mean over pixels of f^2 @ W[:3]: ghost's dropout erosion acts at relu1 only."""

    spec = types.SimpleNamespace(name="tiny_tapped", architecture="tiny_tapped")

    def feature_tap(self, tap):
        return "f"

    def outputs(self, images, features=()):
        edits.begin_forward(4, "tiny_tapped")
        points = {}
        h = edits.end_point(points, "relu1", tf.nn.relu(edits.layer_output(images @ self.a1)))
        f = edits.end_point(points, "f", tf.nn.relu(edits.layer_output(h @ self.a2)))
        logits = edits.end_point(points, "Logits", tf.reduce_mean(f * f, axis=[1, 2]) @ self.w)
        return types.SimpleNamespace(logits=logits, aux=None, features={t: points["f"] for t in features})

    def __call__(self, images):
        return self.outputs(images).logits


def test_a_feature_level_objective_attacks_the_ghost():
    # FIA weighs the tap's features on the unedited network (its masked copies), then ascends them through a ghost.
    net, seed, rate, samples, drop = TinyTappedNet(seed=2), 3, 0.25, 4, 0.3  # seed 2: f is not all zero
    assert edits.unit_end_points(net) == ("relu1",)
    x, labels, fia = tiny_batch(6), np.array([2, 5]), f"fia:layer=f,samples={samples},drop={drop}"
    adv = first_step(net, x, labels, seed, objective=fia, forward=f"ghost:dropout={rate}")

    draws = tf.random.Generator.from_seed(seed)
    keep = (draws.uniform([samples, *x.shape]).numpy() >= drop).astype(np.float64)  # FIA's masks first
    mask = (draws.uniform([2, 4, 4, 3]).numpy() >= rate) / (1 - rate)             # then the ghost's, at relu1
    x64 = x.astype(np.float64)

    def features(images, dropped=1.0):
        pre1 = images @ net.a1
        h = np.maximum(pre1, 0) * dropped
        pre2 = h @ net.a2
        return pre1, pre2, np.maximum(pre2, 0)

    delta = sum(2 * features(x64 * keep[n])[2] * net.w[:, labels].T[:, None, None, :] / 16 for n in range(samples))
    weights = -delta / np.sqrt((delta ** 2).sum(axis=(1, 2, 3), keepdims=True))
    pre1, pre2, _ = features(x64, mask)
    d_h = ((weights * (pre2 > 0)) @ net.a2.T) * mask / weights[0].size      # d mean(f * weights) / d h
    d_x = (d_h * (pre1 > 0)) @ net.a1.T
    np.testing.assert_allclose(adv, np.clip(x + EPS * np.sign(d_x), 0, 1), atol=1e-6)
    assert not np.array_equal(adv, first_step(net, x, labels, seed, objective=fia))


def test_an_ensemble_strategy_forwards_each_member_at_its_place_in_the_ensembles_pass():
    residual, plain = TinyResidualNet(), TinyPlainNet()
    ensemble = Ensemble([residual, plain])
    config = build("cwa", forward="ghost:dropout=0.3").config

    class Keys(edits.Edit):
        def __init__(self):
            self.seen = []

        def end_point(self, y, key):
            self.seen.append(key)
            return y

    whole, alone = Keys(), Keys()
    with edits.editing(whole):
        ensemble(tf.zeros([1, 4, 4, 3]))
    forward_edits = ForwardEdits(ensemble, config)
    forward_edits.edit = alone
    make_member_logits(ensemble, config, forward_edits)[1](tf.zeros([1, 4, 4, 3]))
    assert alone.seen == whole.seen == [(1, n) for n in ("conv1", "relu1", "relu2", "pool", "relu3", "Logits")]
    # The strategy attacks the ghosts: the contract holds, and the erosion changes the result.
    rng = np.random.default_rng(8)
    x, labels = rng.uniform(0.2, 0.8, (2, 4, 4, 3)).astype(np.float32), np.array([1, 2])
    first = real_contract.check_contract(build("cwa", eps=EPS, steps=3, forward="ghost:dropout=0.3"), ensemble, x,
                                         labels)
    assert not np.array_equal(first, build("cwa", eps=EPS, steps=3)(ensemble, x, labels).numpy())


def test_networks_with_nothing_to_erode_are_refused_in_one_line():
    class Plain(tf.Module):
        name = "plain"

        def backward_primitives(self):
            return {"relu": 3, "layer_output": 4}

        def __call__(self, images):
            return tf.zeros([images.shape[0], 1000])

    with pytest.raises(ValueError, match="forward 'ghost': model 'plain' has no residual additions or named end "
                                         "points routed through tfattack.edits it can edit"):
        check_surrogate(Plain(), build("ghost").config)

    class LogitsOnly(Plain):
        name = "logits_only"
        image_size = 4

        def backward_primitives(self):
            return {"relu": 3, "end_point": 1}

        def __call__(self, images):
            return edits.end_point({}, "Logits", tf.zeros([images.shape[0], 1000]))

    with pytest.raises(ValueError, match="forward 'ghost': model 'logits_only' has no residual additions and no "
                                         "feature maps among its end points to erode"):
        check_surrogate(LogitsOnly(), build("ghost").config)
