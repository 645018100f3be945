"""ResNet-v2 50/101/152 ports against the official TF-slim graphs (tf_slim.nets.resnet_v2).

resnet_v2_50 is checked end to end at 299 through `tfattack.models.load` (images in [0, 1]); the deeper
nets run the same code with more units, so resnet_v2_101 is checked on the network directly at a cheap
64x64 input (the net is fully convolutional) and resnet_v2_152 by the official variable list.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

import slim_oracle
import tfattack.models as models
from tfattack.models import loading, registry
from tfattack.models.checkpoint import CheckpointError

from slim_checks import SLIM_VARIABLES as SHARED_VARIABLES, official_variables  # noqa: E402

RESNETS = ("resnet_v2_50", "resnet_v2_101", "resnet_v2_152")
# Facts about the official checkpoints (1001 classes): variable count and the sum of their shapes.
OFFICIAL_COUNTS = {
    "resnet_v2_50": (272, 25_615_849),
    "resnet_v2_101": (544, 44_677_609),
    "resnet_v2_152": (816, 60_382_697),
}


@functools.lru_cache(maxsize=None)
def random_network(name):
    """The network of a registered model with its builder's random weights, built once per module."""
    return loading.build_network(registry.get(name))


def variable_list(network):
    return [(name, tuple(var.shape)) for name, var in network.variables_by_name.items()]


def assert_close_to(actual, expected):
    """Equal up to float32 reordering: max abs difference below 1e-4 of the reference's spread."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    spread = float(expected.max() - expected.min())
    assert spread > 0 and np.abs(actual - expected).max() < 1e-4 * spread


def oracle_case(name, preprocessed, folder):
    """Runs the official graph on `preprocessed` with random values saved at `folder`/model.ckpt."""
    prefix = str(folder / "model.ckpt")
    logits, end_points, shapes = slim_oracle.run_oracle(name, preprocessed, prefix)
    return {"prefix": prefix, "logits": logits, "end_points": end_points,
            "shapes": [(var, tuple(shape)) for var, shape in shapes.items()]}


@pytest.fixture(scope="module")
def oracle_50(tmp_path_factory):
    images01 = np.random.default_rng(5).uniform(0, 1, (2, 299, 299, 3)).astype(np.float32)
    case = oracle_case("resnet_v2_50", images01 * 2 - 1, tmp_path_factory.mktemp("resnet_v2_50"))
    return {**case, "images01": images01}


@pytest.fixture(scope="module")
def model_50(oracle_50):
    return models.load("resnet_v2_50", checkpoint=oracle_50["prefix"])


@pytest.fixture(scope="module")
def oracle_101(tmp_path_factory):
    images = np.random.default_rng(6).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    return {**oracle_case("resnet_v2_101", images, tmp_path_factory.mktemp("resnet_v2_101")), "images": images}


@pytest.mark.parametrize("name", RESNETS)
def test_variable_and_parameter_counts(name):
    variables = random_network(name).variables_by_name
    assert (len(variables), sum(int(np.prod(v.shape)) for v in variables.values())) == OFFICIAL_COUNTS[name]


@pytest.mark.skipif(not SHARED_VARIABLES.exists(), reason=f"{SHARED_VARIABLES} (../shared) is not available")
@pytest.mark.parametrize("name", RESNETS)
def test_variables_equal_the_official_checkpoint_list_in_order(name):
    expected = official_variables(name)
    assert variable_list(random_network(name)) == expected
    assert (len(expected), sum(int(np.prod(shape)) for _, shape in expected)) == OFFICIAL_COUNTS[name]


def test_variables_equal_the_oracle_graphs_in_creation_order(model_50, oracle_50, oracle_101):
    # resnet_v2_152 differs only in unit counts; building its tf_slim graph alone takes ~15 s, so its
    # list is checked against the official checkpoint's list above.
    assert variable_list(model_50.network) == oracle_50["shapes"]
    assert variable_list(random_network("resnet_v2_101")) == oracle_101["shapes"]


def test_resnet_v2_50_logits_equal_the_oracle_through_the_classifier(model_50, oracle_50):
    logits = model_50(oracle_50["images01"]).numpy()
    assert model_50.info["scope"] == "resnet_v2_50"
    assert_close_to(logits, oracle_50["logits"][:, 1:])  # the classifier drops slim's background class
    assert not np.allclose(logits[0], logits[1])


def test_resnet_v2_50_end_points_equal_the_oracle(model_50, oracle_50):
    _, end_points = model_50.network(oracle_50["images01"] * 2 - 1)
    oracle_points = oracle_50["end_points"]
    assert set(end_points) == set(oracle_points)
    for name in ("resnet_v2_50/conv1", "resnet_v2_50/block1/unit_3/bottleneck_v2/conv2",
                 "resnet_v2_50/block1", "resnet_v2_50/block2", "resnet_v2_50/block3", "resnet_v2_50/block4"):
        assert_close_to(end_points[name].numpy(), oracle_points[name])
    # v2 puts each block's stride in its last unit: 299 -> 150 (conv1) -> 75 (pool1) -> 38, 19, 10, 10.
    assert [end_points[f"resnet_v2_50/block{i}"].shape[1] for i in range(1, 5)] == [38, 19, 10, 10]


def test_resnet_v2_101_logits_equal_the_oracle_at_64(oracle_101):
    model = models.load("resnet_v2_101", checkpoint=oracle_101["prefix"])
    logits, end_points = model.network(oracle_101["images"])
    assert_close_to(logits.numpy(), oracle_101["logits"])
    assert_close_to(end_points["resnet_v2_101/block3"].numpy(), oracle_101["end_points"]["resnet_v2_101/block3"])


def test_gradient_inside_tf_function_is_finite_and_nonzero(model_50, oracle_50):
    @tf.function
    def input_gradient(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(tf.nn.log_softmax(model_50(images))[:, 0])
        return tape.gradient(loss, images)

    gradient = input_gradient(tf.constant(oracle_50["images01"][:1])).numpy()
    assert np.all(np.isfinite(gradient)) and np.count_nonzero(gradient) > 0.5 * gradient.size


def test_resnet_v2_50_checkpoint_loaded_as_resnet_v2_101_names_missing_variables(oracle_50):
    with pytest.raises(CheckpointError) as error:
        models.load("resnet_v2_101", checkpoint=oracle_50["prefix"])
    message = str(error.value)
    assert "\n" not in message and "'resnet_v2_101'" in message and oracle_50["prefix"] in message
    assert "block3/unit_7/bottleneck_v2" in message  # block3 has 6 units in resnet_v2_50, 23 in 101


def test_non_rgb_input_is_a_one_line_error(model_50):
    with pytest.raises(ValueError, match=r"^resnet_v2_50 takes \[N, H, W, 3\] images, got shape"):
        model_50.network(tf.zeros([1, 64, 64, 1]))


@pytest.mark.parametrize("name, top1", [("resnet_v2_50", 75.6), ("resnet_v2_101", 77.0), ("resnet_v2_152", 77.8)])
def test_registry_records(name, top1):
    spec = registry.get(name)
    assert (spec.architecture, spec.source, spec.preprocessing) == (name, "slim_checkpoint", "inception")
    assert (spec.num_classes, spec.image_size, spec.checkpoint_scope, spec.aux_logits) == (1001, 299, name, False)
    assert spec.url == f"http://download.tensorflow.org/models/{name}_2017_04_14.tar.gz"
    assert spec.archive_files == (f"{name}.ckpt",) and spec.default_location == name
    assert spec.reference_top1 == top1 and spec.licence == "Apache-2.0" and spec.sha256 == ""


def test_resnet_v2_50_feature_taps_equal_the_oracle(model_50, oracle_50):
    taps = ["early", "mid", "resnet_v2_50/block3/unit_2/bottleneck_v2"]
    out = model_50.outputs(oracle_50["images01"], features=taps)
    assert model_50.feature_tap("early") == "resnet_v2_50/block1"
    for tap in taps:
        assert_close_to(out.features[tap].numpy(), oracle_50["end_points"][model_50.feature_tap(tap)])
    assert model_50.backward_primitives()["residual_add"] == 16  # 3 + 4 + 6 + 3 bottleneck units
