"""TF.js layers models: the reader against keras 3 on self-written models, error paths, the real shared models."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattack
from tfattack.models import labels, loading, registry, tfjs
from tfattack.models.registry import ModelSpec

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_MODELS = SHARED / "real_models"
requires_real_models = pytest.mark.skipif(not (REAL_MODELS / "tiny_darknet_tfjs").is_dir(),
                                          reason=f"needs the shared real models at {REAL_MODELS}")


def dev_images(count):
    """The first `count` NIPS'17 DEV images (CSV order) as float [0, 1] and standard labels."""
    from PIL import Image
    with open(SHARED / "nips17_dev" / "dev_dataset.csv") as f:
        rows = list(csv.DictReader(f))[:count]
    images = np.stack([np.asarray(Image.open(SHARED / "nips17_dev" / "images" / f"{r['ImageId']}.png").convert("RGB"))
                       for r in rows])
    return images.astype(np.float32) / 255.0, tfattack.models.nips17_to_index([int(r["TrueLabel"]) for r in rows])


# --- writing TF.js layers models the way the converter does ---------------------------------------


def k2_layer(class_name, name, inbound, **config):
    """A layer entry in the Keras 2 functional config format that TF.js layers models carry."""
    return {"class_name": class_name, "name": name, "config": dict(config, name=name),
            "inbound_nodes": [[[src, 0, 0, {}] for src in inbound]] if inbound else []}


def uint8_quantize(values):
    """TF.js converter style affine uint8 quantisation: returns (q, scale, min)."""
    low, high = float(values.min()), float(values.max())
    scale = (high - low) / 255.0
    return np.round((values - low) / scale).astype(np.uint8), scale, low


def write_tfjs_model(folder, topology, weights, quantize=None, shard_split=None):
    """Writes model.json + shards. `weights`: [(name, array)], one group of shards.

    quantize: {name: "uint8" | "float16"}; shard_split: byte count at which the group's data is cut into
    a second shard file. Returns the dequantised values (what a correct reader must produce).
    """
    quantize = quantize or {}
    entries, chunks, expected = [], [], {}
    for name, value in weights:
        value = np.asarray(value, np.float32)
        entry = {"name": name, "shape": list(value.shape), "dtype": "float32"}
        if quantize.get(name) == "uint8":
            q, scale, low = uint8_quantize(value)
            entry["quantization"] = {"dtype": "uint8", "scale": scale, "min": low, "original_dtype": "float32"}
            chunks.append(q.tobytes())
            expected[name] = (q.astype(np.float64) * scale + low).astype(np.float32)
        elif quantize.get(name) == "float16":
            half = value.astype("<f2")
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            chunks.append(half.tobytes())
            expected[name] = half.astype(np.float32)
        else:
            chunks.append(value.astype("<f4").tobytes())
            expected[name] = value
        entries.append(entry)
    data = b"".join(chunks)
    cut = [0, shard_split, len(data)] if shard_split else [0, len(data)]
    paths = [f"group1-shard{i + 1}of{len(cut) - 1}" for i in range(len(cut) - 1)]
    folder.mkdir(parents=True, exist_ok=True)
    for path, start, end in zip(paths, cut[:-1], cut[1:]):
        (folder / path).write_bytes(data[start:end])
    content = {"modelTopology": {"keras_version": "2.1.4", "backend": "tensorflow", "model_config": topology},
               "weightsManifest": [{"paths": paths, "weights": entries}]}
    (folder / "model.json").write_text(json.dumps(content))
    return expected


SIZE = 9


def functional_topology():
    """Every layer type the reader supports that the real models use, plus merges; ends in a softmax."""
    L = k2_layer
    layers = [
        L("InputLayer", "input_1", [], batch_input_shape=[None, SIZE, SIZE, 3], dtype="float32"),
        L("ZeroPadding2D", "pad", ["input_1"], padding=[[1, 0], [1, 0]], data_format="channels_last"),
        L("Conv2D", "conv1", ["pad"], filters=6, kernel_size=[3, 3], strides=[2, 2], padding="valid",
          use_bias=False, activation="linear", dilation_rate=[1, 1], data_format="channels_last"),
        L("BatchNormalization", "conv1_bn", ["conv1"], axis=-1, epsilon=0.001, center=True, scale=True),
        L("ReLU", "conv1_relu", ["conv1_bn"], max_value=6.0),
        L("DepthwiseConv2D", "conv_dw", ["conv1_relu"], kernel_size=[3, 3], strides=[1, 1], padding="same",
          depth_multiplier=2, use_bias=True, activation="relu6", data_format="channels_last"),
        L("LeakyReLU", "leaky", ["conv_dw"], alpha=0.1),
        L("Conv2D", "conv_pw", ["conv1_relu"], filters=12, kernel_size=[1, 1], strides=[1, 1], padding="same",
          use_bias=True, activation="relu", dilation_rate=[1, 1], data_format="channels_last"),
        L("Add", "add", ["leaky", "conv_pw"]),
        L("MaxPooling2D", "max_pool", ["add"], pool_size=[2, 2], strides=[2, 2], padding="same",
          data_format="channels_last"),
        L("AveragePooling2D", "avg_pool", ["add"], pool_size=[3, 3], strides=[2, 2], padding="same",
          data_format="channels_last"),
        L("Concatenate", "concat", ["max_pool", "avg_pool"], axis=-1),
        L("Activation", "concat_act", ["concat"], activation="sigmoid"),
        L("GlobalAveragePooling2D", "gap", ["concat_act"], data_format="channels_last"),
        L("Reshape", "reshape_1", ["gap"], target_shape=[1, 1, 24]),
        L("Dropout", "dropout", ["reshape_1"], rate=0.001),
        L("Flatten", "flatten", ["dropout"]),
        L("Dense", "logits", ["flatten"], units=10, use_bias=True, activation="linear"),
        L("Activation", "act_softmax", ["logits"], activation="softmax"),
        L("Reshape", "reshape_2", ["act_softmax"], target_shape=[10]),
    ]
    return {"class_name": "Model", "config": {"name": "test", "layers": layers, "input_layers": [["input_1", 0, 0]],
                                              "output_layers": [["reshape_2", 0, 0]]}}


def functional_weights(rng):
    return [
        ("conv1/kernel", rng.normal(0, 0.5, (3, 3, 3, 6))),
        ("conv1_bn/gamma", rng.uniform(0.5, 1.5, 6)), ("conv1_bn/beta", rng.normal(0, 0.3, 6)),
        ("conv1_bn/moving_mean", rng.normal(0, 0.3, 6)), ("conv1_bn/moving_variance", rng.uniform(0.5, 2, 6)),
        ("conv_dw/depthwise_kernel", rng.normal(0, 0.5, (3, 3, 6, 2))), ("conv_dw/bias", rng.normal(0, 0.3, 12)),
        ("conv_pw/kernel", rng.normal(0, 0.5, (1, 1, 6, 12))), ("conv_pw/bias", rng.normal(0, 0.3, 12)),
        ("logits/kernel", rng.normal(0, 0.5, (24, 10))), ("logits/bias", rng.normal(0, 0.3, 10)),
    ]


def keras_reference(weights):
    """The same network in keras 3, without the final softmax (the reader must return logits)."""
    x = inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.ZeroPadding2D(((1, 0), (1, 0)))(x)
    conv1 = keras.layers.Conv2D(6, 3, strides=2, padding="valid", use_bias=False)
    bn = keras.layers.BatchNormalization(epsilon=0.001)
    x = keras.layers.ReLU(max_value=6.0)(bn(conv1(x)))
    dw = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu6")
    pw = keras.layers.Conv2D(12, 1, padding="same", activation="relu")
    x = keras.layers.Add()([keras.layers.LeakyReLU(negative_slope=0.1)(dw(x)), pw(x)])
    x = keras.layers.Concatenate()([keras.layers.MaxPooling2D(2, 2, padding="same")(x),
                                    keras.layers.AveragePooling2D(3, 2, padding="same")(x)])
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Activation("sigmoid")(x))
    dense = keras.layers.Dense(10)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(keras.layers.Reshape((1, 1, 24))(x))))
    w = weights
    conv1.set_weights([w["conv1/kernel"]])
    bn.set_weights([w[f"conv1_bn/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")])
    dw.set_weights([w["conv_dw/depthwise_kernel"], w["conv_dw/bias"]])
    pw.set_weights([w["conv_pw/kernel"], w["conv_pw/bias"]])
    dense.set_weights([w["logits/kernel"], w["logits/bias"]])
    return model


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)


def test_functional_model_equals_keras_with_quantized_weights_and_split_shards(tmp_path, images):
    weights = functional_weights(np.random.default_rng(1))
    expected = write_tfjs_model(tmp_path, functional_topology(), weights,
                                quantize={"conv_pw/kernel": "uint8", "logits/kernel": "float16"}, shard_split=1000)
    assert len(list(tmp_path.glob("group1-shard*"))) == 2
    read = tfjs.read_weights(tmp_path)
    assert sorted(read) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)
    # The quantised weights really are approximations (the test would not see a reader skipping dequantisation).
    assert not np.array_equal(expected["conv_pw/kernel"], dict(weights)["conv_pw/kernel"].astype(np.float32))

    network = tfjs.TfjsLayersNetwork(tmp_path / "model.json")
    assert network.dropped_softmax == "act_softmax"
    assert network.input_shape == [SIZE, SIZE, 3]
    assert sorted(network.variables_by_name) == sorted(expected)
    logits, end_points = network(tf.constant(images))
    want = keras_reference(expected)(images).numpy()
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-5, atol=1e-5)
    assert end_points["conv_dw"].shape == (2, 4, 4, 12) and end_points["Logits"] is logits
    assert not np.allclose(np.sum(np.exp(logits.numpy()), 1), 1.0)  # logits, not probabilities


def test_network_computes_in_its_input_dtype(tmp_path, images):
    """bfloat16 input: convolutions, batch norm and dense run in bfloat16 on the float32 variables."""
    write_tfjs_model(tmp_path, functional_topology(), functional_weights(np.random.default_rng(1)))
    network = tfjs.TfjsLayersNetwork(tmp_path)
    graph = tf.function(network).get_concrete_function(tf.TensorSpec(images.shape, tf.bfloat16)).graph
    convs = {op.get_attr("T") for op in graph.get_operations() if op.type in ("Conv2D", "DepthwiseConv2dNative")}
    assert convs == {tf.bfloat16} and "bfloat16" in network.compute_dtypes
    expected = network(tf.constant(images))[0].numpy()
    got = network(tf.constant(images, tf.bfloat16))[0]
    assert got.dtype == tf.bfloat16
    error = np.abs(tf.cast(got, tf.float32).numpy() - expected).max() / np.abs(expected).max()
    assert 0 < error < 0.05
    assert all(v.dtype == tf.float32 for v in network.variables_by_name.values())


def test_sequential_model_with_dense_softmax(tmp_path, images):
    rng = np.random.default_rng(2)
    layers = [
        {"class_name": "Conv2D", "config": {"name": "c", "batch_input_shape": [None, SIZE, SIZE, 3], "filters": 4,
                                            "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
                                            "use_bias": True, "activation": "tanh"}},
        {"class_name": "GlobalMaxPooling2D", "config": {"name": "pool"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 5, "activation": "softmax"}},
    ]
    weights = [("c/kernel", rng.normal(0, 0.5, (3, 3, 3, 4))), ("c/bias", rng.normal(0, 0.1, 4)),
               ("d/kernel", rng.normal(0, 1, (4, 5))), ("d/bias", rng.normal(0, 0.1, 5))]
    expected = write_tfjs_model(tmp_path, {"class_name": "Sequential", "config": layers}, weights)
    network = tfjs.TfjsLayersNetwork(tmp_path)
    assert network.dropped_softmax == "d"
    reference = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, 2, "same", activation="tanh"),
                                  keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(5)])
    reference.set_weights([expected[n] for n, _ in weights])
    np.testing.assert_allclose(network(tf.constant(images))[0].numpy(), reference(images).numpy(), rtol=1e-5, atol=1e-5)


def test_model_without_softmax_keeps_its_output(tmp_path, images):
    topology = functional_topology()
    topology["config"]["layers"] = topology["config"]["layers"][:-2]
    topology["config"]["output_layers"] = [["logits", 0, 0]]
    write_tfjs_model(tmp_path, topology, functional_weights(np.random.default_rng(1)))
    network = tfjs.TfjsLayersNetwork(tmp_path)
    assert network.dropped_softmax is None and network(tf.constant(images))[0].shape == (2, 10)


def test_unsupported_layer_names_type_and_file(tmp_path):
    topology = functional_topology()
    topology["config"]["layers"][12]["class_name"] = "Conv2DTranspose"
    write_tfjs_model(tmp_path, topology, functional_weights(np.random.default_rng(1)))
    with pytest.raises(tfjs.TfjsModelError, match=r"model\.json: layer 'concat_act' has unsupported type 'Conv2DTranspose'"):
        tfjs.TfjsLayersNetwork(tmp_path)


def test_missing_shard_is_named(tmp_path):
    write_tfjs_model(tmp_path, functional_topology(), functional_weights(np.random.default_rng(1)), shard_split=500)
    (tmp_path / "group1-shard2of2").unlink()
    with pytest.raises(loading.ModelNotFoundError, match=r"weight shard 'group1-shard2of2' \(group 1\) is missing"):
        tfjs.TfjsLayersNetwork(tmp_path)


def test_truncated_shard_and_missing_weight_are_one_line_errors(tmp_path):
    write_tfjs_model(tmp_path, functional_topology(), functional_weights(np.random.default_rng(1)))
    shard = tmp_path / "group1-shard1of1"
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(tfjs.TfjsModelError, match=r"too few for weight 'logits/bias'") as err:
        tfjs.TfjsLayersNetwork(tmp_path)
    assert "\n" not in str(err.value)
    weights = [w for w in functional_weights(np.random.default_rng(1)) if w[0] != "conv_pw/bias"]
    write_tfjs_model(tmp_path / "b", functional_topology(), weights)
    with pytest.raises(tfjs.TfjsModelError, match=r"layer 'conv_pw' \(Conv2D\): weight 'conv_pw/bias' is not in"):
        tfjs.TfjsLayersNetwork(tmp_path / "b")
    with pytest.raises(loading.ModelNotFoundError, match="does not exist"):
        tfjs.TfjsLayersNetwork(tmp_path / "nowhere")


# A test-only record: the self-written model above, with 1000 outputs in a non-standard class order.
DARKNET_TEST = registry.register(ModelSpec(name="test_tfjs_darknet_order", architecture="test_tfjs_darknet_order",
                                           source="tfjs_layers", image_size=SIZE, preprocessing="unit",
                                           num_classes=1000, class_order="darknet"))
registry.register_architecture("test_tfjs_darknet_order", tfjs._needs_topology)


def test_load_maps_darknet_class_order(tmp_path, images):
    rng = np.random.default_rng(3)
    layers = [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, SIZE, SIZE, 3]}},
        {"class_name": "GlobalAveragePooling2D", "config": {"name": "pool"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 1000, "activation": "linear"}},
    ]
    weights = [("d/kernel", rng.normal(0, 1, (3, 1000))), ("d/bias", rng.normal(0, 1, 1000))]
    write_tfjs_model(tmp_path, {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}, weights)
    order = rng.permutation(1000)
    wnids = labels.wnids()
    (tmp_path / tfjs.DARKNET_WNIDS).write_text("\n".join(wnids[i] for i in order) + "\n")
    model = tfattack.models.load("test_tfjs_darknet_order", checkpoint=str(tmp_path / "model.json"))
    x = (images + 1) / 2
    raw = model.network(tf.constant(x))[0].numpy()
    # Output column j holds wnid order[j], i.e. standard class order[j].
    np.testing.assert_array_equal(model(x).numpy()[:, order], raw)
    (tmp_path / tfjs.DARKNET_WNIDS).write_text("\n".join(wnids[:999]) + "\n")
    with pytest.raises(tfjs.TfjsModelError, match="expected the 1000 ImageNet wnids, got 999 lines"):
        tfattack.models.load("test_tfjs_darknet_order", checkpoint=str(tmp_path))


def test_random_weights_are_refused_clearly():
    with pytest.raises(ValueError, match=r"'tiny_darknet'.*defined by its TF\.js model\.json"):
        tfattack.models.load("tiny_darknet", random_weights=True)


def test_wrong_input_size_is_named(tmp_path):
    write_tfjs_model(tmp_path, functional_topology(), functional_weights(np.random.default_rng(1)))
    with pytest.raises(tfjs.TfjsModelError, match=r"input is 9x9x3, model 'mobilenet_v1_075' expects 224x224x3"):
        tfattack.models.load("mobilenet_v1_075", checkpoint=str(tmp_path))


@requires_real_models
@pytest.mark.parametrize("name", ["mobilenet_v1_075", "tiny_darknet"])
def test_real_model_top1_on_100_dev_images(name, monkeypatch):
    monkeypatch.setenv("TFATTACK_MODEL_DIR", str(REAL_MODELS))
    model = tfattack.models.load(name)
    assert Path(model.info["checkpoint"]).parent.name == registry.get(name).default_location
    images, truth = dev_images(100)
    predictions = np.concatenate([np.argmax(model(images[i:i + 20]).numpy(), 1) for i in range(0, 100, 20)])
    top1 = 100 * np.mean(predictions == truth)
    # README: 80.3 % / 67.8 % on all 1000 images; measured 82 % / 69 % on these 100.
    assert abs(top1 - registry.get(name).reference_top1) <= 5, top1
    with tf.GradientTape() as tape:
        x = tf.constant(images[:1])
        tape.watch(x)
        loss = tf.reduce_max(model(x))
    gradient = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
    other = tfattack.models.load({"mobilenet_v1_075": "tiny_darknet", "tiny_darknet": "mobilenet_v1_075"}[name])
    ensemble = tfattack.models.Ensemble([model, other])
    np.testing.assert_allclose(ensemble(images[:2]).numpy(), (model(images[:2]) + other(images[:2])).numpy() / 2,
                               rtol=1e-5, atol=1e-4)


# --- batch norms folded into the convolutions before them ------------------------------------------


def folding_topology():
    """A depthwise convolution (multiplier 2, bias) and a convolution, each without an activation and followed by a
    batch norm: both fold. A batch norm after a ReLU does not."""
    L = k2_layer
    layers = [
        L("InputLayer", "input_1", [], batch_input_shape=[None, SIZE, SIZE, 3], dtype="float32"),
        L("DepthwiseConv2D", "dw", ["input_1"], kernel_size=[3, 3], strides=[2, 2], padding="same",
          depth_multiplier=2, use_bias=True, activation="linear", data_format="channels_last"),
        L("BatchNormalization", "dw_bn", ["dw"], axis=-1, epsilon=0.001, center=True, scale=True),
        L("ReLU", "dw_relu", ["dw_bn"], max_value=6.0),
        L("Conv2D", "pw", ["dw_relu"], filters=5, kernel_size=[1, 1], strides=[1, 1], padding="same",
          use_bias=False, activation="linear", dilation_rate=[1, 1], data_format="channels_last"),
        L("BatchNormalization", "pw_bn", ["pw"], axis=-1, epsilon=0.001, center=False, scale=True),
        L("ReLU", "pw_relu", ["pw_bn"]),
        L("BatchNormalization", "after_relu_bn", ["pw_relu"], axis=-1, epsilon=0.001, center=True, scale=False),
        L("GlobalAveragePooling2D", "gap", ["after_relu_bn"], data_format="channels_last"),
        L("Dense", "logits", ["gap"], units=4, use_bias=True, activation="linear"),
    ]
    return {"class_name": "Model", "config": {"name": "folding", "layers": layers,
                                              "input_layers": [["input_1", 0, 0]], "output_layers": [["logits", 0, 0]]}}


def folding_weights(rng):
    def batch_norm(name, channels, center=True, scale=True):
        return ([(f"{name}/gamma", rng.uniform(0.5, 1.5, channels))] if scale else []) + (
            [(f"{name}/beta", rng.normal(0, 0.3, channels))] if center else []) + [
            (f"{name}/moving_mean", rng.normal(0, 0.3, channels)),
            (f"{name}/moving_variance", rng.uniform(0.3, 2, channels))]
    return ([("dw/depthwise_kernel", rng.normal(0, 0.5, (3, 3, 3, 2))), ("dw/bias", rng.normal(0, 0.3, 6))]
            + batch_norm("dw_bn", 6) + [("pw/kernel", rng.normal(0, 0.5, (1, 1, 6, 5)))]
            + batch_norm("pw_bn", 5, center=False) + batch_norm("after_relu_bn", 5, scale=False)
            + [("logits/kernel", rng.normal(0, 0.5, (5, 4))), ("logits/bias", rng.normal(0, 0.3, 4))])


def feature_map_multiplies(network, input_size, edit=None):
    """The elementwise multiplies over feature maps in `network`'s traced forward pass (batch norms, and ReLUs with
    a slope), with `edit` in force."""
    from tfattack import edits
    batch = 7  # feature maps have it first; kernels do not

    def forward(x):
        with edits.editing(edit):
            edits.begin_forward(input_size)
            return network(x)[0]

    graph = tf.function(forward).get_concrete_function(tf.TensorSpec([batch, input_size, input_size, 3])).graph
    return [op.name for op in graph.get_operations() if op.type == "Mul" and op.outputs[0].shape.rank == 4
            and op.outputs[0].shape[0] == batch and op.outputs[0].shape[-1] > 3]


def test_traced_network_folds_a_batch_norm_into_the_convolution_before_it(tmp_path, images):
    write_tfjs_model(tmp_path, folding_topology(), folding_weights(np.random.default_rng(4)))
    network = tfjs.TfjsLayersNetwork(tmp_path)
    assert network._folds == {("dw_bn", 0): ("dw", 0), ("pw_bn", 0): ("pw", 0)}
    eager_logits, eager_points = network(tf.constant(images))  # eagerly: every layer as written (Keras' semantics)

    @tf.function
    def traced(x):
        logits, points = network(x)
        return logits, points["dw"], points["dw_bn"], points["pw_bn"]

    logits, dw, dw_bn, pw_bn = traced(tf.constant(images))
    for got, want in ((logits, eager_logits), (dw, eager_points["dw"]), (dw_bn, eager_points["dw_bn"]),
                      (pw_bn, eager_points["pw_bn"])):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    with tf.GradientTape(persistent=True) as tape:
        x = tf.constant(images)
        tape.watch(x)
        eager_loss = tf.reduce_sum(network(x)[0] * [1.0, -2.0, 0.5, 3.0])
    expected_gradient = tape.gradient(eager_loss, x).numpy()

    @tf.function
    def gradient(x):
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(network(x)[0] * [1.0, -2.0, 0.5, 3.0])
        return inner.gradient(loss, x)

    np.testing.assert_allclose(gradient(tf.constant(images)).numpy(), expected_gradient, rtol=1e-5, atol=1e-5)
    from tfattack import edits
    as_written = feature_map_multiplies(network, SIZE, edits.Recorder())  # an edit in force: nothing folded
    assert len(feature_map_multiplies(network, SIZE)) == len(as_written) - 2  # after_relu_bn has nothing to fold into


def test_an_edit_sees_the_layer_outputs_between_convolution_and_batch_norm(tmp_path, images):
    """With an edit in force (Ghost, CFM), the layers run as written: its layer outputs are the convolutions' own."""
    from tfattack import edits
    write_tfjs_model(tmp_path, folding_topology(), folding_weights(np.random.default_rng(4)))
    network = tfjs.TfjsLayersNetwork(tmp_path)

    def recorded(x):
        recorder = edits.Recorder()
        with edits.editing(recorder):
            edits.begin_forward(SIZE)
            logits = network(x)[0]
        return logits, recorder

    _, recorder = recorded(tf.constant(images))
    np.testing.assert_allclose(recorder.outputs[(0, 0)].numpy(), network(tf.constant(images))[1]["dw"].numpy())


@requires_real_models
@pytest.mark.parametrize("name", ["mobilenet_v1_075", "tiny_darknet"])
def test_real_models_fold_every_batch_norm_when_traced(name, monkeypatch):
    monkeypatch.setenv("TFATTACK_MODEL_DIR", str(REAL_MODELS))
    model = tfattack.models.load(name)
    images, _ = dev_images(2)
    eager = model(images).numpy()
    traced = tf.function(model)(tf.constant(images)).numpy()
    np.testing.assert_allclose(traced, eager, rtol=0, atol=1e-4 * np.abs(eager).max())
    assert np.array_equal(np.argmax(traced, 1), np.argmax(eager, 1))
    from tfattack import edits
    network = model.network
    folds = len(network._folds)
    # every convolution but the classifier
    assert folds == {"mobilenet_v1_075": 1 + 2 * 13, "tiny_darknet": len(tfjs.TINY_DARKNET_CONVS)}[name]
    as_written = feature_map_multiplies(network, 224, edits.Recorder())
    assert len(feature_map_multiplies(network, 224)) == len(as_written) - folds
