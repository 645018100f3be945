"""Inception-v4 port: the official variable list, the paper's grid sizes, checkpoint round trip, gradients."""


import numpy as np
import pytest
import tensorflow as tf

import tfattack.models as models
from tfattack.models import loading, registry
from tfattack.models.checkpoint import CheckpointError
from tfattack.models.classifier import Classifier

from slim_checks import SLIM_VARIABLES, fill_and_save, read_tsv  # noqa: E402

SHARED_TSV = SLIM_VARIABLES / "inception_v4.tsv"
# Facts about the official checkpoint (the tsv's line count and the sum of its shapes).
OFFICIAL_VARIABLE_COUNT = 608
OFFICIAL_PARAMETER_COUNT = 46_074_066


@pytest.fixture(scope="module")
def spec():
    return registry.get("inception_v4")


@pytest.fixture(scope="module")
def images01():
    return np.random.default_rng(3).uniform(0, 1, (2, 299, 299, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(spec, tmp_path_factory):
    """A network filled with checkpoint-like random values (BN far from identity), saved as the
    official V2 format; returns (that network, the checkpoint prefix)."""
    network = loading.build_network(spec, seed=1)
    prefix = str(tmp_path_factory.mktemp("inception_v4") / "inception_v4.ckpt")
    fill_and_save(network, prefix, seed=11)
    return network, prefix


@pytest.fixture(scope="module")
def model(saved):
    return models.load("inception_v4", checkpoint=saved[1])


def test_variable_and_parameter_counts(model):
    variables = model.network.variables_by_name
    assert len(variables) == OFFICIAL_VARIABLE_COUNT
    assert sum(int(np.prod(var.shape)) for var in variables.values()) == OFFICIAL_PARAMETER_COUNT


@pytest.mark.skipif(not SHARED_TSV.exists(), reason=f"{SHARED_TSV} (../shared) is not available")
def test_variables_equal_the_official_checkpoint_list_in_order(model):
    actual = [(name, tuple(var.shape)) for name, var in model.network.variables_by_name.items()]
    assert actual == read_tsv(SHARED_TSV)


def test_end_point_grid_sizes_follow_the_paper(model, images01):
    _, end_points = model.network(images01[:1] * 2 - 1)
    expected = {"Conv2d_1a_3x3": (149, 149, 32), "Conv2d_2a_3x3": (147, 147, 32),
                "Conv2d_2b_3x3": (147, 147, 64), "Mixed_3a": (73, 73, 160), "Mixed_4a": (71, 71, 192),
                "Mixed_5a": (35, 35, 384), "Mixed_6a": (17, 17, 1024), "Mixed_7a": (8, 8, 1536)}
    expected.update({f"Mixed_5{c}": (35, 35, 384) for c in "bcde"})
    expected.update({f"Mixed_6{c}": (17, 17, 1024) for c in "bcdefgh"})
    expected.update({f"Mixed_7{c}": (8, 8, 1536) for c in "bcd"})
    for name, shape in expected.items():
        assert tuple(end_points[name].shape) == (1,) + shape, name
    assert tuple(end_points["AuxLogits"].shape) == (1, 1001)
    assert tuple(end_points["Logits"].shape) == (1, 1001)


def test_saved_checkpoint_reproduces_logits(spec, saved, model, images01):
    original = Classifier(spec, saved[0])
    expected_logits, expected_aux = (t.numpy() for t in original.logits_and_aux(images01))
    logits, aux = model.logits_and_aux(images01)
    assert model.info["scope"] == "InceptionV4" and model.info["variables"] == OFFICIAL_VARIABLE_COUNT
    np.testing.assert_allclose(logits.numpy(), expected_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(aux.numpy(), expected_aux, rtol=0, atol=1e-5)
    # The load really replaced the builder's own random values (seed 0), and outputs are informative.
    unloaded = models.load("inception_v4", random_weights=True)(images01).numpy()
    assert np.abs(unloaded - expected_logits).max() > 1e-2
    assert np.ptp(expected_logits) > 1e-2 and not np.allclose(expected_logits[0], expected_logits[1])


def test_gradient_with_respect_to_the_input_is_finite_and_nonzero(model, images01):
    x = tf.constant(images01[:1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits, aux = model.logits_and_aux(x)
        loss = tf.reduce_sum(tf.nn.log_softmax(logits)[:, 0]) + 0.4 * tf.reduce_sum(tf.nn.log_softmax(aux)[:, 0])
    gradient = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.count_nonzero(gradient) > 0.5 * gradient.size


def test_tf_function_equals_eager(model, images01):
    compiled = tf.function(model.logits_and_aux)
    eager_logits, eager_aux = model.logits_and_aux(images01[:1])
    logits, aux = compiled(tf.constant(images01[:1]))
    np.testing.assert_allclose(logits.numpy(), eager_logits.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(aux.numpy(), eager_aux.numpy(), rtol=0, atol=1e-5)


def test_inception_v4_checkpoint_loaded_as_inception_v3_names_missing_variables(saved):
    v3_network = loading.build_network(registry.get("inception_v3"))
    v4_names = {name.split("/", 1)[1] for name in saved[0].variables_by_name}
    first_missing = next(rel for rel in v3_network.store.by_name if rel not in v4_names)
    with pytest.raises(CheckpointError) as error:
        models.load("inception_v3", checkpoint=saved[1])
    message = str(error.value)
    assert "\n" not in message
    assert saved[1] in message and "'inception_v3'" in message
    assert first_missing in message


def test_registry_record(spec):
    assert (spec.architecture, spec.source, spec.preprocessing) == ("inception_v4", "slim_checkpoint", "inception")
    assert (spec.num_classes, spec.image_size, spec.checkpoint_scope, spec.aux_logits) == \
        (1001, 299, "InceptionV4", True)
    assert spec.url == "http://download.tensorflow.org/models/inception_v4_2016_09_09.tar.gz"
    assert spec.archive_files == ("inception_v4.ckpt",) and spec.default_location == "inception_v4"
    assert spec.reference_top1 == 80.2 and spec.licence == "Apache-2.0"
