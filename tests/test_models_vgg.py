"""VGG-16/19 ports against the official TF-slim graphs (tf_slim.nets.vgg).

vgg_16 is checked end to end at 224 through `tfattack.models.load` (images in [0, 1], RGB mean
subtraction inside the classifier). Filling and saving the official graph costs ~30 s per VGG (its
553 MB of values become graph constants), so vgg_19, the same code with one more convolution in
stages 3-5, is checked by its variable list against the official graph and the official checkpoint.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import slim_oracle
import tfattack.models as models
from tfattack.models import loading, preprocessing, registry

from slim_checks import SLIM_VARIABLES as SHARED_VARIABLES, official_variables  # noqa: E402

VGGS = ("vgg_16", "vgg_19")
# Facts about the official checkpoints (1000 classes): variable count and the sum of their shapes.
OFFICIAL_COUNTS = {"vgg_16": (32, 138_357_544), "vgg_19": (38, 143_667_240)}


def variable_list(network):
    return [(name, tuple(var.shape)) for name, var in network.variables_by_name.items()]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    images01 = np.random.default_rng(9).uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
    preprocessed = images01 * 255.0 - np.array(preprocessing.VGG_RGB_MEANS, np.float32)
    prefix = str(tmp_path_factory.mktemp("vgg_16") / "model.ckpt")
    logits, end_points, shapes = slim_oracle.run_oracle("vgg_16", preprocessed, prefix)
    return {"prefix": prefix, "images01": images01, "preprocessed": preprocessed, "logits": logits,
            "end_points": end_points, "shapes": [(var, tuple(shape)) for var, shape in shapes.items()]}


@pytest.fixture(scope="module")
def model(oracle):
    return models.load("vgg_16", checkpoint=oracle["prefix"])


@pytest.fixture(scope="module")
def networks(model):
    """Both architectures; vgg_16 is the loaded one (building a VGG fills 140M random values)."""
    return {"vgg_16": model.network, "vgg_19": loading.build_network(registry.get("vgg_19"))}


@pytest.mark.parametrize("name", VGGS)
def test_variable_and_parameter_counts(networks, name):
    variables = networks[name].variables_by_name
    assert (len(variables), sum(int(np.prod(v.shape)) for v in variables.values())) == OFFICIAL_COUNTS[name]


@pytest.mark.skipif(not SHARED_VARIABLES.exists(), reason=f"{SHARED_VARIABLES} (../shared) is not available")
@pytest.mark.parametrize("name", VGGS)
def test_variables_equal_the_official_checkpoint_list_in_order(networks, name):
    assert variable_list(networks[name]) == official_variables(name)


def test_variables_equal_the_oracle_graphs_in_creation_order(model, oracle, networks):
    assert variable_list(model.network) == oracle["shapes"]
    # vgg_19's graph alone (no values) is cheap to build.
    slim, (vgg_19, arg_scope, num_classes) = slim_oracle._oracle_net("vgg_19")
    with tf.Graph().as_default(), slim.arg_scope(arg_scope()):
        vgg_19(tf.compat.v1.placeholder(tf.float32, [1, 224, 224, 3]), num_classes=num_classes, is_training=False)
        expected = [(v.op.name, tuple(v.shape.as_list())) for v in tf.compat.v1.global_variables()]
    assert variable_list(networks["vgg_19"]) == expected


def test_logits_equal_the_oracle_through_the_classifier(model, oracle):
    """The oracle sees 0..255 RGB minus the RGB means, unflipped: a BGR flip in the classifier fails this."""
    logits = model(oracle["images01"]).numpy()
    expected = oracle["logits"]  # 1000 classes in the standard order: no background column to drop
    spread = float(expected.max() - expected.min())
    assert logits.shape == expected.shape == (2, 1000) and spread > 0
    assert np.abs(logits - expected).max() < 1e-4 * spread
    assert not np.allclose(logits[0], logits[1])


def test_end_points_equal_the_oracle(model, oracle):
    _, end_points = model.network(oracle["preprocessed"])
    assert set(end_points) == set(oracle["end_points"])
    for name in ("vgg_16/conv1/conv1_1", "vgg_16/pool3", "vgg_16/conv5/conv5_3", "vgg_16/fc7"):
        expected = oracle["end_points"][name]
        assert end_points[name].shape == expected.shape
        assert np.abs(end_points[name].numpy() - expected).max() < 1e-4 * float(expected.max() - expected.min())


def test_gradient_inside_tf_function_is_finite_and_nonzero(model, oracle):
    @tf.function
    def input_gradient(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(tf.nn.log_softmax(model(images))[:, 0])
        return tape.gradient(loss, images)

    gradient = input_gradient(tf.constant(oracle["images01"][:1])).numpy()
    assert np.all(np.isfinite(gradient)) and np.count_nonzero(gradient) > 0.5 * gradient.size


def test_other_input_sizes_are_a_one_line_error(model):
    with pytest.raises(ValueError, match=r"^vgg_16 takes 224x224 inputs, got 256x256"):
        model.network(tf.zeros([1, 256, 256, 3]))


def test_spec_with_another_input_size_is_refused_before_building():
    spec = dataclasses.replace(registry.get("vgg_19"), name="vgg_19_at_299", image_size=299)
    with pytest.raises(ValueError, match=r"^model 'vgg_19_at_299': vgg_19 is defined for 224 inputs"):
        registry.architecture("vgg_19")(spec)


@pytest.mark.parametrize("name, top1", [("vgg_16", 71.5), ("vgg_19", 71.1)])
def test_registry_records(name, top1):
    spec = registry.get(name)
    assert (spec.architecture, spec.source, spec.preprocessing) == (name, "slim_checkpoint", "vgg_rgb_mean")
    assert (spec.num_classes, spec.image_size, spec.checkpoint_scope, spec.aux_logits) == (1000, 224, name, False)
    assert spec.url == f"http://download.tensorflow.org/models/{name}_2016_08_28.tar.gz"
    assert spec.archive_files == (f"{name}.ckpt",) and spec.default_location == name
    assert spec.reference_top1 == top1 and spec.licence == "Apache-2.0" and spec.sha256 == ""
