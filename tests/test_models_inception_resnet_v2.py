"""Inception-ResNet-v2 port: official variable list, grid sizes, residual scaling, an independent
implementation (keras.applications' InceptionResNetV2, the same graph) as logits oracle, checkpoint
round trips in the official and the community's renamed scope, gradients.

tf_slim does not ship this net, so there is no tf_slim oracle; Keras's version has no auxiliary head
(the head is pinned by its variable list, shapes and the checkpoint round trip).
"""

import re

import numpy as np
import pytest
import tensorflow as tf

import tfattack.models as models
from tfattack.models import inception_resnet_v2 as irv2
from tfattack.models import layers, loading, registry
from tfattack.models.classifier import Classifier

from slim_checks import SLIM_VARIABLES, fill_and_save, read_tsv  # noqa: E402

SHARED_TSV = SLIM_VARIABLES / "inception_resnet_v2.tsv"
# Facts about the official checkpoint (1001 classes, aux head included): variables and parameters.
OFFICIAL_VARIABLE_COUNT = 908
OFFICIAL_PARAMETER_COUNT = 59_244_594


@pytest.fixture(scope="module")
def spec():
    return registry.get("inception_resnet_v2")


@pytest.fixture(scope="module")
def images01():
    return np.random.default_rng(4).uniform(0, 1, (2, 299, 299, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(spec, tmp_path_factory):
    """A network filled with checkpoint-like random values (BN far from identity), written in the
    official format; returns (that network, its values by full name, the checkpoint prefix)."""
    network = loading.build_network(spec, seed=1)
    prefix = str(tmp_path_factory.mktemp("inception_resnet_v2") / "inception_resnet_v2.ckpt")
    values = fill_and_save(network, prefix, seed=12)
    return network, values, prefix


@pytest.fixture(scope="module")
def model(saved):
    return models.load("inception_resnet_v2", checkpoint=saved[2])


@pytest.fixture(scope="module")
def expected_outputs(spec, saved, images01):
    logits, aux = Classifier(spec, saved[0]).logits_and_aux(images01)
    return logits.numpy(), aux.numpy()


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
    expected = {"Conv2d_1a_3x3": (149, 149, 32), "Conv2d_2a_3x3": (147, 147, 32), "Conv2d_2b_3x3": (147, 147, 64),
                "MaxPool_3a_3x3": (73, 73, 64), "Conv2d_3b_1x1": (73, 73, 80), "Conv2d_4a_3x3": (71, 71, 192),
                "MaxPool_5a_3x3": (35, 35, 192), "Mixed_5b": (35, 35, 320), "Mixed_6a": (17, 17, 1088),
                "PreAuxLogits": (17, 17, 1088), "Mixed_7a": (8, 8, 2080), "Conv2d_7b_1x1": (8, 8, 1536),
                "PreLogitsFlatten": (1536,), "AuxLogits": (1001,), "Logits": (1001,), "Predictions": (1001,)}
    assert {name: tuple(point.shape[1:]) for name, point in end_points.items()} == expected


def keras_layers_in_slim_order(keras_model):
    """Keras's InceptionResNetV2 layers matched to the slim checkpoint's convolution scopes.

    Keras builds the same convolutions in the same branch order, auto-naming each `conv2d_bn` pair
    `conv2d_<k>` / `batch_normalization_<k>` in creation order; the residual projections, the last
    convolution and the classifier carry explicit names.
    """
    def creation_order(prefix):
        pattern = re.compile(rf"{prefix}(?:_(\d+))?")
        found = [(int(m.group(1) or 0), layer) for layer in keras_model.layers
                 for m in [pattern.fullmatch(layer.name)] if m]
        return iter([layer for _, layer in sorted(found, key=lambda pair: pair[0])])

    return creation_order("conv2d"), creation_order("batch_normalization")


def keras_name_of_projection(scope):
    """Repeat/block35_3 -> block35_3_conv; the final Block8 is Keras's block8_10."""
    return "block8_10_conv" if scope == "Block8" else f"{scope.split('/')[-1]}_conv"


def test_logits_equal_keras_applications_inception_resnet_v2(saved, images01):
    import keras  # keras 3: an independent TF2 implementation of the same graph (weights converted from slim)

    network, values, _ = saved
    keras_model = keras.applications.InceptionResNetV2(weights=None, classes=1001, classifier_activation=None)
    convs, batch_norms = keras_layers_in_slim_order(keras_model)
    scope = irv2.SCOPE + "/"
    for name in values:
        if not name.endswith("/weights") or name.startswith(scope + "AuxLogits/"):
            continue
        layer_scope = name[len(scope): -len("/weights")]
        weights = values[name]
        if layer_scope == "Logits/Logits":
            keras_model.get_layer("predictions").set_weights([weights, values[scope + "Logits/Logits/biases"]])
        elif layer_scope.endswith("/Conv2d_1x1") and "/Branch_" not in layer_scope:
            block = layer_scope[: -len("/Conv2d_1x1")]
            keras_model.get_layer(keras_name_of_projection(block)).set_weights(
                [weights, values[f"{scope}{layer_scope}/biases"]])
        else:
            conv, bn = ((keras_model.get_layer("conv_7b"), keras_model.get_layer("conv_7b_bn"))
                        if layer_scope == "Conv2d_7b_1x1" else (next(convs), next(batch_norms)))
            conv.set_weights([weights])  # set_weights checks the shapes: a misaligned match fails here
            bn.set_weights([values[f"{scope}{layer_scope}/BatchNorm/{leaf}"]
                            for leaf in ("beta", "moving_mean", "moving_variance")])
    assert next(convs, None) is None and next(batch_norms, None) is None  # every Keras layer was matched

    preprocessed = images01 * 2 - 1
    expected = keras_model(preprocessed, training=False).numpy()
    logits, _ = network(preprocessed)
    spread = float(expected.max() - expected.min())
    assert spread > 0 and np.abs(logits.numpy() - expected).max() < 1e-4 * spread


def test_saved_checkpoint_reproduces_logits_and_aux_logits(saved, model, expected_outputs, images01):
    logits, aux = model.logits_and_aux(images01)
    assert model.info["scope"] == "InceptionResnetV2" and model.info["variables"] == OFFICIAL_VARIABLE_COUNT
    np.testing.assert_allclose(logits.numpy(), expected_outputs[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(aux.numpy(), expected_outputs[1], rtol=0, atol=1e-5)
    assert np.ptp(expected_outputs[0]) > 1e-2 and not np.allclose(expected_outputs[0][0], expected_outputs[0][1])


def test_renamed_ens_adv_copy_loads_with_identical_logits(saved, expected_outputs, images01, tmp_path):
    _, values, _ = saved
    renamed = {"EnsAdvInceptionResnetV2/" + name.split("/", 1)[1]: value for name, value in values.items()}
    renamed["global_step"] = np.int64(0)  # extra entries in a checkpoint are ignored
    prefix = str(tmp_path / "ens_adv_inception_resnet_v2.ckpt")
    # The V2 format the TF1 Saver writes, written eagerly (write_slim_checkpoint's TF1 graph would
    # embed the 240 MB of values as constants, ~20 s).
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(renamed), shape_and_slices=[""] * len(renamed),
                      tensors=[tf.constant(value) for value in renamed.values()])
    model = models.load("ens_adv_inception_resnet_v2", checkpoint=prefix)
    assert model.info["scope"] == "EnsAdvInceptionResnetV2"
    logits, aux = model.logits_and_aux(images01)
    np.testing.assert_allclose(logits.numpy(), expected_outputs[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(aux.numpy(), expected_outputs[1], rtol=0, atol=1e-5)
    # The builder's own random values (seed 0) differ: the load really replaced them.
    assert np.abs(models.load("ens_adv_inception_resnet_v2", random_weights=True)(images01).numpy()
                  - expected_outputs[0]).max() > 1e-2


def test_gradient_inside_tf_function_is_finite_and_nonzero(model, images01):
    @tf.function
    def input_gradient(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits, aux = model.logits_and_aux(images)
            loss = tf.reduce_sum(tf.nn.log_softmax(logits)[:, 0]) + 0.4 * tf.reduce_sum(tf.nn.log_softmax(aux)[:, 0])
        return tape.gradient(loss, images)

    gradient = input_gradient(tf.constant(images01[:1])).numpy()
    assert np.all(np.isfinite(gradient)) and np.count_nonzero(gradient) > 0.5 * gradient.size


@pytest.mark.parametrize("grid, depth, branches, scale, activation", [
    (35, 320, irv2.BLOCK35_BRANCHES, 0.17, tf.nn.relu),
    (17, 1088, irv2.BLOCK17_BRANCHES, 0.10, tf.nn.relu),
    (8, 2080, irv2.BLOCK8_BRANCHES, 0.20, tf.nn.relu),
    (8, 2080, irv2.BLOCK8_BRANCHES, 1.0, None),  # the final Block8
])
def test_residual_block_adds_the_scaled_projection_then_activates(grid, depth, branches, scale, activation):
    """With the projection's weights zeroed, a block is activation(input + scale * projection biases):
    the branches are cut off, so only the residual sum, its scale and the activation remain."""
    store = layers.VariableStore("Test")
    x = tf.random.stateless_normal([1, grid, grid, depth], seed=[1, 2])
    irv2.residual_block(store, x, "block", branches, scale, activation)
    store.by_name["block/Conv2d_1x1/weights"].assign(tf.zeros(store.by_name["block/Conv2d_1x1/weights"].shape))
    biases = tf.random.stateless_normal([depth], seed=[3, 4])
    store.by_name["block/Conv2d_1x1/biases"].assign(biases)
    expected = x + scale * biases
    expected = activation(expected) if activation is not None else expected
    output = irv2.residual_block(store, x, "block", branches, scale, activation)
    np.testing.assert_allclose(output.numpy(), expected.numpy(), rtol=0, atol=1e-6)


def test_trunk_uses_the_published_residual_scales():
    stages = {entry.scope: (entry.block, entry.count, entry.scale, entry.activation)
              for entry in irv2.TRUNK if isinstance(entry, irv2.ResidualStage)}
    assert stages == {"Repeat": ("block35", 10, 0.17, True), "Repeat_1": ("block17", 20, 0.10, True),
                      "Repeat_2": ("block8", 9, 0.20, True), "Block8": ("", 1, 1.0, False)}


def test_other_input_sizes_are_a_one_line_error(model):
    with pytest.raises(ValueError, match=r"^inception_resnet_v2 takes 299x299 inputs, got 224x224"):
        model.network(tf.zeros([1, 224, 224, 3]))


def test_registry_records():
    plain, ens_adv = registry.get("inception_resnet_v2"), registry.get("ens_adv_inception_resnet_v2")
    for spec in (plain, ens_adv):
        assert (spec.architecture, spec.source, spec.preprocessing) == ("inception_resnet_v2", "slim_checkpoint",
                                                                        "inception")
        assert (spec.num_classes, spec.image_size, spec.checkpoint_scope, spec.aux_logits) == \
            (1001, 299, "InceptionResnetV2", True)
        assert spec.default_location == spec.name and spec.licence == "Apache-2.0" and spec.sha256 == ""
    assert plain.url == "http://download.tensorflow.org/models/inception_resnet_v2_2016_08_30.tar.gz"
    assert plain.archive_files == ("inception_resnet_v2_2016_08_30.ckpt",) and plain.reference_top1 == 80.4
    assert ens_adv.url == "http://download.tensorflow.org/models/ens_adv_inception_resnet_v2_2017_08_18.tar.gz"
    assert ens_adv.archive_files == ("ens_adv_inception_resnet_v2.ckpt.data-00000-of-00001",
                                     "ens_adv_inception_resnet_v2.ckpt.index")
    assert ens_adv.reference_top1 == 79.8 and "1705.07204" in ens_adv.paper
