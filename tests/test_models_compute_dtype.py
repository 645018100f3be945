"""Reduced-precision compute: zoo networks run their convolutions in bfloat16 when asked, with float32
variables, preprocessing and logits; models that cannot say so; attacks pick the option up."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

import tfattack
from tfattack.models import Classifier, Ensemble

from shared_data import SHARED, load_nips17_dev, requires_shared  # noqa: E402

IMAGES = tf.random.stateless_uniform([2, 299, 299, 3], seed=[3, 3])


class Float32Only(tf.Module):
    """A network with no `compute_dtypes`: float32 only."""

    def __init__(self, classes):
        super().__init__()
        self.classes = classes

    def __call__(self, x):
        return tf.reduce_mean(x, axis=[1, 2]) @ tf.ones([3, self.classes]), {}


@pytest.fixture(scope="module")
def inception_v3():
    return tfattack.models.load("inception_v3", random_weights=True)


def conv_dtypes(function, images):
    graph = tf.function(function).get_concrete_function(tf.TensorSpec(images.shape, tf.float32)).graph
    return {op.get_attr("T") for op in graph.get_operations() if op.type in ("Conv2D", "DepthwiseConv2dNative")}


def test_bfloat16_classifier_computes_in_bfloat16_and_stays_close(inception_v3):
    bf16 = inception_v3.with_compute_dtype("bfloat16")
    assert bf16.network is inception_v3.network and bf16.compute_dtype == "bfloat16"
    assert conv_dtypes(bf16, IMAGES) == {tf.bfloat16}
    assert conv_dtypes(inception_v3, IMAGES) == {tf.float32}
    (logits, aux), (ref_logits, ref_aux) = bf16.logits_and_aux(IMAGES), inception_v3.logits_and_aux(IMAGES)
    assert logits.dtype == aux.dtype == tf.float32 and logits.shape == ref_logits.shape
    for got, expected in ((logits, ref_logits), (aux, ref_aux)):
        error = np.abs(got.numpy() - expected.numpy()).max() / np.abs(expected.numpy()).max()
        assert 0 < error < 0.1  # bfloat16 keeps 8 bits of mantissa: close, not float32-equal
    assert all(v.dtype == tf.float32 for v in inception_v3.network.store.by_name.values())
    assert "computes in bfloat16" in repr(bf16) and inception_v3.with_compute_dtype("float32") is inception_v3


def test_efficientnet_lite_runs_in_bfloat16():
    model = tfattack.models.load("efficientnet_lite0", random_weights=True)
    bf16 = model.with_compute_dtype("bfloat16")
    images = IMAGES[:, :224, :224]
    assert conv_dtypes(bf16, images) == {tf.bfloat16}
    expected = model(images).numpy()
    assert np.abs(bf16(images).numpy() - expected).max() < 0.1 * np.abs(expected).max()


def test_unsupported_compute_dtypes_are_refused(inception_v3):
    with pytest.raises(ValueError, match="'inception_v3' cannot compute in 'int8'; it supports float32, bfloat16"):
        inception_v3.with_compute_dtype("int8")

    plain = Classifier(inception_v3.spec, Float32Only(1001))
    assert plain.compute_dtypes == ("float32",)
    with pytest.raises(ValueError, match="cannot compute in 'bfloat16'; it supports float32$"):
        plain.with_compute_dtype("bfloat16")
    with pytest.raises(ValueError, match="got int32 input"):
        inception_v3.network(tf.zeros([1, 299, 299, 3], tf.int32))


def test_ensemble_switches_the_members_that_can(inception_v3):
    other = Classifier(inception_v3.spec, Float32Only(1001))
    ensemble = Ensemble([inception_v3, other], weights=[3, 1]).with_compute_dtype("bfloat16")
    assert [m.compute_dtype for m in ensemble.members] == ["bfloat16", "float32"]
    assert ensemble.weights == [0.75, 0.25] and ensemble.compute_dtypes == ("bfloat16", "float16", "float32")


def test_attack_in_bfloat16_moves_pixels_like_float32_within_eps(inception_v3):
    labels = np.array([3, 7])
    images = IMAGES.numpy()
    eps = 8 / 255
    float32 = tfattack.attacks.build("i_fgsm", steps=1, eps=eps)(inception_v3, images, labels).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a zoo model switches without any fallback warning
        bf16 = tfattack.attacks.build("i_fgsm", steps=1, eps=eps, compute_dtype="bfloat16")(
            inception_v3, images, labels).numpy()
    assert np.abs(bf16 - images).max() <= eps + 1e-6 and bf16.min() >= 0 and bf16.max() <= 1
    moved_alike = np.mean(np.sign(bf16 - images) == np.sign(float32 - images))
    assert 0.6 < moved_alike < 1.0  # the same attack, computed with fewer digits


def test_attack_warns_about_members_left_in_float32(inception_v3):
    other = Classifier(tfattack.models.registry.get("efficientnet_lite0"), Float32Only(1000))
    attack = tfattack.attacks.build("fgsm", eps=4 / 255, compute_dtype="bfloat16")
    with pytest.warns(UserWarning, match="^efficientnet_lite0 cannot compute in bfloat16; it stays in float32$"):
        adv = attack(Ensemble([inception_v3, other]), IMAGES.numpy(), np.array([1, 2]))
    assert np.abs(adv.numpy() - IMAGES.numpy()).max() <= 4 / 255 + 1e-6


@requires_shared
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v1_075"])
def test_real_models_keep_their_predictions_in_bfloat16(name):
    """On real weights and photos bfloat16 changes few top-1 predictions and none of the accuracy that matters to a
    surrogate. Agreement on 100 DEV images depends on the CPU's bfloat16 arithmetic: 96-98 % with native AVX-512 BF16,
    92 % (mobilenet_v1_075) on an AMD EPYC without AVX-512, where TensorFlow emulates it; the bound covers both."""
    images, labels = load_nips17_dev(100)
    model = tfattack.models.load(name, model_dir=str(SHARED / "real_models"))
    reference = np.argmax(model(images).numpy(), 1)
    bf16 = np.argmax(model.with_compute_dtype("bfloat16")(images).numpy(), 1)
    assert np.mean(bf16 == reference) >= 0.90
    assert abs(np.mean(bf16 == labels) - np.mean(reference == labels)) <= 0.04
