"""TFLite: the flatbuffer reader against the interpreter, the float rebuild against the interpreter, the black box."""

import importlib.util
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

import tfattack
from tfattack.models import registry, tflite, tflite_reader
from tfattack.models.registry import ModelSpec
from test_models_tfjs import REAL_MODELS, dev_images

CORAL = REAL_MODELS / "coral_tflite"
requires_coral = pytest.mark.skipif(not CORAL.is_dir(), reason=f"needs the shared TFLite models at {CORAL}")
SIZE = 16


def convert_quantized(function, size=SIZE):
    """Full-integer TFLite conversion (uint8 in/out, int8 per-channel inside) of a [1, size, size, 3] function."""
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]

    concrete = tf.function(function, input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete.get_concrete_function()], concrete)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()


def small_classifier_weights():
    rng = np.random.default_rng(1)
    normal = lambda shape, s=0.3: tf.constant(rng.normal(0, s, shape).astype(np.float32))  # noqa: E731
    return {"conv": normal((3, 3, 3, 8)), "conv_b": normal(8, 0.1), "dw": normal((3, 3, 8, 1)),
            "project": normal((1, 1, 8, 8)), "fc": normal((16, 1001)), "fc_b": normal(1001, 0.1)}


def small_classifier(x, w=small_classifier_weights()):
    """MobileNet-like pieces: conv+ReLU6, depthwise, hard-swish, residual add, pools, concat, pad,
    a squeeze-excite style MEAN+LOGISTIC+MUL, global mean, fully connected, softmax."""
    y = tf.nn.relu6(tf.nn.conv2d(x, w["conv"], 2, "SAME") + w["conv_b"])
    z = tf.nn.depthwise_conv2d(y, w["dw"], [1, 1, 1, 1], "SAME")
    z = z * tf.nn.relu6(z + 3.0) / 6.0
    y = y + tf.nn.conv2d(z, w["project"], 1, "SAME")
    y = tf.concat([tf.nn.max_pool2d(y, 2, 2, "VALID"), tf.nn.avg_pool2d(y, 2, 2, "VALID")], -1)
    y = tf.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]])
    y = y * tf.math.sigmoid(tf.reduce_mean(y, [1, 2], keepdims=True))
    return tf.nn.softmax(tf.matmul(tf.reduce_mean(y, [1, 2]), w["fc"]) + w["fc_b"])


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "small_quant.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(convert_quantized(lambda x: small_classifier(x)))
    return path


def interpreter(path, builtin_kernels=False, **options):
    """The runtime the black box uses (LiteRT when installed); `builtin_kernels`: without the default
    delegates and with every intermediate tensor kept, as the black box runs it."""
    runtime, op_resolver = tflite.interpreter_classes()
    if builtin_kernels:
        options.update(experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=op_resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback, tf.lite.Interpreter, announces its move to LiteRT
        result = runtime(model_path=str(path), **options)
    result.allocate_tensors()
    return result


def test_reader_matches_interpreter_tensor_details(small_tflite):
    model = tflite_reader.read_tflite(small_tflite)
    assert [op.name for op in model.operators] == [
        "QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "CONV_2D", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D",
        "CONCATENATION", "PAD", "MEAN", "LOGISTIC", "MUL", "MEAN", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"]
    oracle = interpreter(small_tflite)
    details = oracle.get_tensor_details()
    assert len(details) == len(model.tensors)
    per_channel = 0
    for detail in details:
        tensor = model.tensors[detail["index"]]
        assert tensor.name == detail["name"] and tensor.shape == tuple(detail["shape"])
        assert np.dtype(tensor.dtype) == np.dtype(detail["dtype"]), tensor.name
        scales = detail["quantization_parameters"]["scales"]
        if tensor.quantization is None:
            assert scales.size == 0, tensor.name
        else:
            np.testing.assert_array_equal(tensor.quantization.scale, scales)
            np.testing.assert_array_equal(tensor.quantization.zero_point, detail["quantization_parameters"]["zero_points"])
            assert tensor.quantization.dimension == detail["quantization_parameters"]["quantized_dimension"]
            per_channel += scales.size > 1
        if tensor.data is not None:
            np.testing.assert_array_equal(tensor.data, oracle.get_tensor(detail["index"]), err_msg=tensor.name)
    assert per_channel >= 3  # the converter quantises conv/depthwise/fc weights per channel
    conv = model.operators[1]
    assert conv.options["stride_h"] == conv.options["stride_w"] == 2 and conv.options["fused_activation_function"] == 3


def test_reader_errors_name_the_file(tmp_path, small_tflite):
    not_tflite = tmp_path / "model.tflite"
    not_tflite.write_bytes(b"\x00" * 64)
    with pytest.raises(tflite_reader.TFLiteFormatError, match=r"model\.tflite is not a TFLite model"):
        tflite_reader.read_tflite(not_tflite)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(small_tflite.read_bytes()[:5000])
    with pytest.raises(tflite_reader.TFLiteFormatError, match=r"cut\.tflite is truncated or corrupt"):
        tflite_reader.read_tflite(cut)
    with pytest.raises(FileNotFoundError, match="nope.tflite does not exist"):
        tflite_reader.read_tflite(tmp_path / "nope.tflite")


def test_reader_without_the_schema_module_says_so_in_one_line(monkeypatch, small_tflite):
    name = tflite_reader.schema().__name__  # imported, then hidden from the import system
    package, _, module = name.rpartition(".")
    monkeypatch.delattr(sys.modules[package], module)
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"^reading \.tflite files needs TensorFlow's TFLite schema module "
                                          r"tensorflow\.lite\.python\.schema_py_generated, [^\n]*$"):
        tflite_reader.read_tflite(small_tflite)

# Test-only records over the self-made file (16 px, 1001 classes), in both forms.
for _source, _suffix in (("tflite_float", ""), ("tflite_interpreter", "_int8")):
    registry.register(ModelSpec(name=f"test_tflite_small{_suffix}", architecture="test_tflite_small", source=_source,
                                image_size=SIZE, preprocessing="pixels", num_classes=1001))
registry.register_architecture("test_tflite_small", tflite._needs_file)


def pixel_images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3)).astype(np.float32) / 255.0


def test_float_rebuild_agrees_with_interpreter_on_self_made_model(small_tflite):
    float_model = tfattack.models.load("test_tflite_small", checkpoint=str(small_tflite))
    int8_model = tfattack.models.load("test_tflite_small_int8", checkpoint=str(small_tflite))
    assert float_model.differentiable and not int8_model.differentiable
    assert float_model.network.dropped_softmax and int8_model.network.logits_kind == "pre_softmax"
    assert float_model.info["arithmetic"] == float_model.network.arithmetic == "integer"
    images = pixel_images(24)
    exact = int8_model(images).numpy()
    step = float(int8_model.network.logits_tensor.quantization.scale[0])
    rebuilt = float_model(images).numpy()
    # Logits on the grid (pre-softmax tensor is int8). This graph has ops without an integer form
    # (HARD_SWISH, LOGISTIC, MUL, MEAN run in float, rounded to the grid): within 3 steps here.
    assert np.abs(rebuilt - exact).max() <= 3 * step + 1e-6, np.abs(rebuilt - exact).max() / step
    float_model.network.arithmetic = "grid"
    grid = float_model(images).numpy()
    # Without rounding (pure float between clamps) the rebuild drifts further but still ranks alike.
    float_model.network.arithmetic = "float"
    unrounded = float_model(images).numpy()
    float_model.network.arithmetic = "integer"
    assert np.abs(grid - exact).max() <= 3 * step + 1e-6, np.abs(grid - exact).max() / step
    assert np.abs(unrounded - exact).max() <= 6 * step, np.abs(unrounded - exact).max() / step
    assert np.mean(np.argmax(rebuilt, 1) == np.argmax(exact, 1)) >= 0.9


def test_float_rebuild_equals_interpreter_op_by_op(small_tflite):
    """Every intermediate tensor of the rebuild vs the interpreter's, fed the interpreter's own inputs."""
    model = tflite_reader.read_tflite(small_tflite)
    network = tflite.TFLiteFloatNetwork(model, arithmetic="grid")
    oracle = interpreter(small_tflite, builtin_kernels=True)
    pixels = np.random.default_rng(3).integers(0, 256, (1, SIZE, SIZE, 3)).astype(np.uint8)
    oracle.set_tensor(model.inputs[0], pixels)
    oracle.invoke()
    _, end_points = network(tf.constant(pixels, tf.float32))
    for op in model.operators[:-2]:  # up to the softmax, which the rebuild drops
        out = model.tensors[op.outputs[0]]
        want = tflite.dequantize(out, oracle.get_tensor(out.index))
        got = end_points[out.name].numpy()
        # Single ops are exact up to the integer kernels' rounding; errors compound along the graph.
        assert np.abs(got - want).max() <= 3 * out.quantization.scale[0] + 1e-6, (op.name, np.abs(got - want).max() / out.quantization.scale[0])


def run_with_preserved_tensors(path, pixels):
    oracle = interpreter(path, builtin_kernels=True)
    oracle.set_tensor(oracle.get_input_details()[0]["index"], pixels)
    oracle.invoke()
    return oracle


def test_integer_ops_are_bit_exact_op_by_op(small_tflite):
    """Each op with an integer form, fed the interpreter's own input tensors, gives its output tensor exactly."""
    model = tflite_reader.read_tflite(small_tflite)
    network = tflite.TFLiteFloatNetwork(model, arithmetic="integer")
    assert [model.operators[i].name for i in network.integer_ops] == [
        "QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED"]
    checked = 0
    for seed in range(4):
        pixels = np.random.default_rng(seed).integers(0, 256, (1, SIZE, SIZE, 3)).astype(np.uint8)
        oracle = run_with_preserved_tensors(small_tflite, pixels)
        read = lambda i: tf.constant(tflite.dequantize(model.tensors[i], oracle.get_tensor(i)))  # noqa: E731
        for op, (_, inputs, constants, output, _, _, integer) in zip(network._ops_needed(), network._steps):
            if integer is None:
                continue
            got = integer([constants[i] if i in constants else read(i) for i in inputs]).numpy()
            want = tflite.dequantize(output, oracle.get_tensor(output.index))
            np.testing.assert_array_equal(got, want, err_msg=f"op {op.index} {op.name}, seed {seed}")
            checked += 1
    assert checked == 4 * 7


def coral_like_classifier(x, w=small_classifier_weights()):
    """Only ops with an integer form: conv+ReLU6, depthwise (no activation: negative halves occur),
    1x1 conv, residual add, average pool, fully connected, softmax."""
    y = tf.nn.relu6(tf.nn.conv2d(x, w["conv"], 2, "SAME") + w["conv_b"])
    z = tf.nn.depthwise_conv2d(y, w["dw"], [1, 1, 1, 1], "SAME")
    y = y + tf.nn.conv2d(z, w["project"], 1, "SAME")
    y = tf.nn.avg_pool2d(y, 3, 2, "SAME")
    return tf.nn.softmax(tf.matmul(tf.reshape(y, [-1, 4 * 4 * 8]), w["fc_wide"]) + w["fc_b"])


def test_integer_rebuild_is_bit_exact_end_to_end(tmp_path):
    weights = dict(small_classifier_weights())
    weights["fc_wide"] = tf.constant(np.random.default_rng(4).normal(0, 0.3, (128, 1001)).astype(np.float32))
    path = tmp_path / "coral_like.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(convert_quantized(lambda x: coral_like_classifier(x, weights)))
    model = tflite_reader.read_tflite(path)
    network = tflite.TFLiteFloatNetwork(model, arithmetic="integer")
    needed = [op.name for op in network._ops_needed()]
    assert [model.operators[i].name for i in network.integer_ops] == [
        n for n in needed if n not in ("RESHAPE",)], needed
    black_box = tflite.TFLiteInterpreterNetwork(path, model)
    pixels = np.random.default_rng(6).integers(0, 256, (24, SIZE, SIZE, 3)).astype(np.float32)
    want = black_box.run(pixels)
    got = tf.function(lambda x: network(x)[0])(tf.constant(pixels)).numpy()
    np.testing.assert_array_equal(got, want)
    network.arithmetic = "grid"  # the float ops rounded to the grid are not exact: the comparison has teeth
    assert np.abs(network(tf.constant(pixels))[0].numpy() - want).max() > 0


def test_interpreter_quantizes_input_like_a_png(small_tflite):
    network = tfattack.models.load("test_tflite_small_int8", checkpoint=str(small_tflite)).network
    oracle = interpreter(small_tflite)
    images = pixel_images(2, seed=5)
    nudged = images + np.float32(0.4 / 255)  # rounds back to the same bytes
    got = network.run(nudged * 255)
    for image, row in zip(images, got):
        oracle.set_tensor(0, np.round(image * 255).astype(np.uint8)[None])
        oracle.invoke()
        probabilities = tflite.dequantize(network.model.tensors[network.model.outputs[0]],
                                          oracle.get_tensor(network.model.outputs[0]))[0]
        # the returned logits give the interpreter's own (uint8) softmax output back
        np.testing.assert_allclose(tf.nn.softmax(row).numpy(), probabilities, atol=1 / 256 + 1e-3)


def test_interpreter_refuses_gradients(small_tflite):
    model = tfattack.models.load("test_tflite_small_int8", checkpoint=str(small_tflite))
    x = tf.constant(pixel_images(1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x))
    with pytest.raises(tflite.NotDifferentiableError, match=r"'test_tflite_small_int8' runs the TFLite interpreter.*without gradients"):
        tape.gradient(loss, x)

    @tf.function(autograph=False)  # (autograph would re-wrap the error as a StagingError carrying the message)
    def gradient(images):
        with tf.GradientTape() as inner:
            inner.watch(images)
            value = tf.reduce_sum(model(images))
        return inner.gradient(value, images)

    with pytest.raises(tflite.NotDifferentiableError):
        gradient(x)
    np.testing.assert_array_equal(tf.function(model)(x).numpy(), model(x).numpy())  # runs traced too


def test_interpreter_is_litert_when_installed(small_tflite):
    expected = "ai_edge_litert" if importlib.util.find_spec("ai_edge_litert") else "tensorflow"
    network = tfattack.models.load("test_tflite_small_int8", checkpoint=str(small_tflite)).network
    assert type(network._interpreter).__module__.split(".")[0] == expected


def test_interpreter_falls_back_to_tensorflow_without_litert(monkeypatch, small_tflite):
    model = tflite_reader.read_tflite(small_tflite)
    pixels = np.random.default_rng(8).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.float32)
    default = tflite.TFLiteInterpreterNetwork(small_tflite, model).run(pixels)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # makes its import fail
    assert tflite.interpreter_classes() == (tf.lite.Interpreter, tf.lite.experimental.OpResolverType)
    fallback = tflite.TFLiteInterpreterNetwork(small_tflite, model)
    assert type(fallback._interpreter).__module__.startswith("tensorflow.")
    # Both runtimes run TFLite's built-in integer kernels: the same logits, read from the same tensor.
    np.testing.assert_array_equal(fallback.run(pixels), default)
    assert fallback.logits_kind == "pre_softmax"

def test_float_rebuild_has_gradients(small_tflite):
    model = tfattack.models.load("test_tflite_small", checkpoint=str(small_tflite))
    x = tf.constant(pixel_images(2, seed=7))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits([3, 500], model(x)))
    gradient = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0


def test_unsupported_op_is_named(tmp_path):
    path = tmp_path / "leaky.tflite"
    kernel = tf.constant(np.random.default_rng(2).normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(convert_quantized(
            lambda x: tf.nn.softmax(tf.reduce_mean(tf.nn.leaky_relu(tf.nn.conv2d(x, kernel, 1, "SAME")), [1, 2]))))
    with pytest.raises(tflite.UnsupportedOpError, match=r"leaky\.tflite: op \d+ is LEAKY_RELU, which the float rebuild does not support"):
        tflite.TFLiteFloatNetwork(tflite_reader.read_tflite(path))


def test_random_weights_and_wrong_size_are_refused(small_tflite):
    with pytest.raises(ValueError, match=r"'mobilenet_v2_quant'.*graph in its \.tflite file"):
        tfattack.models.load("mobilenet_v2_quant", random_weights=True)
    with pytest.raises(tflite_reader.TFLiteFormatError, match=r"input is 16x16x3, model 'mobilenet_v2_quant_int8' expects 224x224x3"):
        tfattack.models.load("mobilenet_v2_quant_int8", checkpoint=str(small_tflite))


def test_records_point_at_the_coral_files():
    names = [s.name for s in registry.specs() if s.source in ("tflite_float", "tflite_interpreter")
             and not s.name.startswith("test_")]
    assert sorted(names) == sorted(n + suffix for n in ("mobilenet_v2_quant", "mobilenet_v1_075_192_quant",
                                                        "mobilenet_v1_05_160_quant", "mobilenet_v1_025_128_quant")
                                   for suffix in ("", "_int8"))
    for name in names:
        spec = registry.get(name)
        assert spec.default_location == f"coral_tflite/{spec.archive_files[0]}" and spec.num_classes == 1001
        assert str(spec.image_size) in spec.archive_files[0] and len(spec.sha256) == 64


@requires_coral
@pytest.mark.parametrize("name", ["mobilenet_v2_quant", "mobilenet_v1_075_192_quant", "mobilenet_v1_05_160_quant",
                                  "mobilenet_v1_025_128_quant"])
def test_real_float_rebuild_agrees_with_interpreter(name, monkeypatch):
    """The registered rebuild (integer arithmetic) against the int8 interpreter on the first 200 DEV images.

    Measured: identical logits on all 200 images for each of the four files (0 steps apart, top-1 100 %;
    the "grid" rebuild agrees on 94-99.5 % of top-1s here, up to 9 steps apart; see
    scripts/tflite_agreement.py). Asserted: exact top-1 agreement >= 98 % and every logit within one
    quantisation step, which leaves room for a TFLite build whose kernels round a tie the other way
    (see `multiply_by_quantized_multiplier`).
    """
    import hashlib
    monkeypatch.setenv("TFATTACK_MODEL_DIR", str(REAL_MODELS))
    rebuilt, exact = tfattack.models.load(name), tfattack.models.load(f"{name}_int8")
    assert rebuilt.info["arithmetic"] == "integer"
    assert hashlib.sha256(open(rebuilt.info["checkpoint"], "rb").read()).hexdigest() == rebuilt.spec.sha256
    count = 200
    images, _ = dev_images(count)
    forward = tf.function(rebuilt)
    a = np.concatenate([forward(images[i:i + 25]).numpy() for i in range(0, count, 25)])
    b = np.concatenate([exact(images[i:i + 25]).numpy() for i in range(0, count, 25)])
    step = float(exact.network.logits_tensor.quantization.scale[0])
    assert np.mean(np.argmax(a, 1) == np.argmax(b, 1)) >= 0.98
    assert np.abs(a - b).max() <= 1.01 * step, np.abs(a - b).max() / step
    x = tf.constant(images[:2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(np.argmax(b[:2], 1), rebuilt(x)))
    gradient = tape.gradient(loss, x).numpy()
    # The straight-through gradient is the float graph's: finite, and non-zero almost everywhere.
    assert np.all(np.isfinite(gradient)) and np.mean(gradient != 0) > 0.5
    ensemble = tfattack.models.Ensemble([rebuilt, exact])
    assert not ensemble.differentiable
    np.testing.assert_allclose(ensemble(images[:2]).numpy(), (a[:2] + b[:2]) / 2, rtol=1e-4, atol=1e-4)
