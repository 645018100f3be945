"""Every loader refuses a file of another architecture than its record, with one line naming the model,
the file and the first mismatch (issue 14). Real files in their real formats: the shared TF.js and TFLite
models, and files written by each format's own writer (TFLite converter, Keras's legacy .h5 writer, the
torch.save layout of tests/test_torch_pickle.py)."""

import struct
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattack.models as models
from tfattack.models import efficientnet_lite, registry, tfjs
from test_attack_script import error_line, make_input, run_attack
from test_models_efficientnet_lite import random_state_dict, write_state_dict
from test_models_keras import write_legacy_h5
from test_models_tfjs import REAL_MODELS, requires_real_models, write_tfjs_model
from test_models_tflite import CORAL, convert_quantized, requires_coral, small_classifier

MOBILENET_TFJS = REAL_MODELS / "mobilenet_v1_0.75_224_tfjs" / "model.json"
TINY_DARKNET_TFJS = REAL_MODELS / "tiny_darknet_tfjs" / "model.json"


def refusal(name, path):
    """The one-line message of loading `path` under model `name` (a ValueError: scripts make it a usage
    error); it names both."""
    with pytest.raises(ValueError) as raised:
        models.load(name, checkpoint=str(path))
    message = str(raised.value)
    assert "\n" not in message and f"'{name}'" in message and str(path) in message, message
    return message


# --- TF.js layers ---------------------------------------------------------------------------------

@requires_real_models
@pytest.mark.parametrize("name, path, mismatch", [
    ("mobilenet_v1_075", TINY_DARKNET_TFJS, "is not a mobilenet_v1_075 (layer 'conv1' missing; found layers "
                                            "'conv2d_1', 'batch_normalization_1',"),
    ("tiny_darknet", MOBILENET_TFJS, "is not a tiny_darknet (layer 'conv2d_1' missing; found layers 'conv1', "
                                     "'conv1_bn',")])
def test_tfjs_file_of_another_architecture(name, path, mismatch):
    # Both take 224 inputs and have 1000 classes: only the layers tell them apart.
    assert mismatch in refusal(name, path)


@requires_real_models
def test_tfjs_real_files_are_exactly_their_records():
    """The record's weights are the file's, name for name and shape for shape (the full loads are in
    test_models_tfjs.py); another width of the same architecture is named at its first weight."""
    for name, path in (("mobilenet_v1_075", MOBILENET_TFJS), ("tiny_darknet", TINY_DARKNET_TFJS)):
        spec, content = registry.get(name), tfjs.read_model_json(path)
        tfjs.check_architecture(spec, path, content)
        assert tfjs.ARCHITECTURE_WEIGHTS[spec.architecture](1000) == tfjs.manifest_shapes(content)
    nodes = tfjs._parse_topology(tfjs.read_model_json(MOBILENET_TFJS)["modelTopology"], MOBILENET_TFJS)[0]
    half_width = tfjs.first_weight_mismatch(tfjs.mobilenet_v1_weights(0.5, 1000),
                                            tfjs.manifest_shapes(tfjs.read_model_json(MOBILENET_TFJS)),
                                            [n for n, _ in nodes])
    assert half_width == "weight 'conv1/kernel' is (3, 3, 3, 24), the record needs (3, 3, 3, 16)"


def test_tfjs_class_count(tmp_path):
    layers = [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 224, 224, 3]}},
        {"class_name": "GlobalAveragePooling2D", "config": {"name": "pool"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 10, "activation": "softmax"}},
    ]
    rng = np.random.default_rng(0)
    write_tfjs_model(tmp_path, {"class_name": "Sequential", "config": {"name": "s", "layers": layers}},
                     [("d/kernel", rng.normal(0, 1, (3, 10))), ("d/bias", rng.normal(0, 1, 10))])
    message = refusal("mobilenet_v1_075", tmp_path / "model.json")
    assert message.endswith("model.json has 10 classes, the record says 1000"), message


# --- TFLite ---------------------------------------------------------------------------------------

@requires_coral
@pytest.mark.parametrize("name", ["mobilenet_v2_quant", "mobilenet_v2_quant_int8"])
def test_tflite_file_of_another_architecture(name):
    path = CORAL / "mobilenet_v1_0.75_192_quant.tflite"
    assert f"input is 192x192x3, model '{name}' expects 224x224x3" in refusal(name, path)


def write_tflite(path, function, size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(convert_quantized(function, size=size))
    return path


@pytest.mark.parametrize("name", ["mobilenet_v1_025_128_quant", "mobilenet_v1_025_128_quant_int8"])
def test_tflite_class_count(tmp_path, name):
    kernel = tf.constant(np.random.default_rng(1).normal(0, 0.3, (3, 3, 3, 10)).astype(np.float32))
    path = write_tflite(tmp_path / "ten_classes.tflite",
                        lambda x: tf.nn.softmax(tf.reduce_mean(tf.nn.conv2d(x, kernel, 2, "SAME"), [1, 2])), 128)
    assert refusal(name, path).endswith("ten_classes.tflite has 10 classes, the record says 1001")


def test_tflite_weights_that_do_not_fit_their_tensors(tmp_path):
    """The classifier's weight tensor declared [16, 1001] instead of [1001, 16] (same bytes): the float
    rebuild names the op and tensors before building anything, the interpreter's refusal is one line;
    the file as converted loads in both forms (records of tests/test_models_tflite.py, 16 px, 1001 classes)."""
    good = write_tflite(tmp_path / "small.tflite", lambda x: small_classifier(x), 16)
    data = good.read_bytes()
    declared = struct.pack("<Iii", 2, 1001, 16)   # a flatbuffer int32 vector: length, then the dimensions
    assert data.count(declared) == 1
    bad = tmp_path / "transposed.tflite"
    bad.write_bytes(data.replace(declared, struct.pack("<Iii", 2, 16, 1001)))
    message = refusal("test_tflite_small", bad)
    assert "(FULLY_CONNECTED): weights" in message and "(16x1001) take 1001 features" in message, message
    assert "the TFLite interpreter refuses the graph" in refusal("test_tflite_small_int8", bad)
    for name in ("test_tflite_small", "test_tflite_small_int8"):
        classifier = models.load(name, checkpoint=str(good))
        assert classifier(np.zeros((1, 16, 16, 3), np.float32)).shape == (1, 1000)  # the background class dropped


def test_tflite_folder_is_named(tmp_path):
    message = refusal("mobilenet_v2_quant", tmp_path)
    assert "is a folder; pass the .tflite file" in message


# --- Keras applications (legacy .h5) ---------------------------------------------------------------

def keras_h5(tmp_path, classes):
    """Keras's MobileNetV2 (alpha 0.35, a Dense classifier like the records') in the legacy .h5 layout."""
    model = keras.applications.MobileNetV2(alpha=0.35, weights=None, classes=classes, input_shape=(224, 224, 3))
    return write_legacy_h5(model, tmp_path / f"mobilenet_v2_{classes}.h5")


def test_keras_class_count_is_checked_before_building(tmp_path, monkeypatch):
    path = keras_h5(tmp_path, 10)
    monkeypatch.setattr("tfattack.models.keras_applications.build_keras_model",
                        lambda spec: pytest.fail("built the model before checking the class count"))
    message = refusal("keras_resnet50", path)
    assert "has 10 classes, the record says 1000 (layer 'predictions' holds arrays [(1280, 10), (10,)])" in message


def test_keras_file_of_another_architecture(tmp_path):
    message = refusal("keras_resnet50", keras_h5(tmp_path, 1000))
    assert "does not fit model 'keras_resnet50': it holds" in message and "the model has 107" in message, message


# --- EfficientNet-Lite (torch.save state dicts) -----------------------------------------------------

def test_torch_pickle_class_count(tmp_path):
    network = efficientnet_lite.EfficientNetLite("efficientnet_lite0", num_classes=10)
    path = write_state_dict(tmp_path / "lite0_10.pth", random_state_dict(network, np.random.default_rng(0)))
    message = refusal("efficientnet_lite0", path)
    assert "_fc.weight (10, 1280) != (1000, 1280)" in message, message
    assert message.endswith("(the file has 10 classes, the record says 1000)"), message


@requires_real_models
@pytest.mark.parametrize("path", [TINY_DARKNET_TFJS, TINY_DARKNET_TFJS.parent])
def test_torch_pickle_refuses_other_formats_and_folders(path):
    message = refusal("efficientnet_lite0", path)
    assert message.startswith("model 'efficientnet_lite0': ")
    assert ("not a readable torch.save file" if path.is_file() else "is a folder") in message


# --- through the script ---------------------------------------------------------------------------

@requires_real_models
def test_attack_script_refuses_another_architecture_before_crafting(tmp_path):
    images, _ = make_input(tmp_path, 1)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--models=mobilenet_v1_075",
                        f"--checkpoints=mobilenet_v1_075={TINY_DARKNET_TFJS}", "--attack=mi_fgsm", "--num_iter=1",
                        timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert f"'mobilenet_v1_075': {TINY_DARKNET_TFJS} is not a mobilenet_v1_075 (layer 'conv1' missing" in line
    assert result.stderr.strip().splitlines()[-1] == line and "Traceback" not in result.stderr
    assert "already done" not in result.stderr  # the crafting summary: nothing was attacked
    assert not out.exists() or not list(out.glob("*.png"))
