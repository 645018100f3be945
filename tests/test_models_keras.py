"""Keras-applications models: records against the installed keras sources, legacy .h5 weights, logits
against the keras model itself with keras's own preprocessing, error paths, Keras-cache lookup."""

import inspect
import re
import shutil

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.applications import inception_resnet_v2, inception_v3, resnet, vgg19
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

import tfattack.models as models
from tfattack.models import keras_applications, loading, preprocessing, registry

NAMES = ("keras_resnet50", "keras_vgg19", "keras_inception_v3", "keras_inception_resnet_v2")


def checkpoint_like(model, seed):
    """Random values with BN statistics far from identity, so that loading them really matters."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        shape = tuple(var.shape)
        if var.name == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        elif var.name == "gamma":
            value = rng.uniform(0.8, 1.2, shape)
        elif var.name in ("moving_mean", "beta", "bias"):
            value = rng.standard_normal(shape) * 0.1
        else:
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(1.0 / np.prod(shape[:-1])))
        var.assign(np.asarray(value, np.float32))
    return model


def write_legacy_h5(model, path):
    """The official files' layout, written by keras's legacy writer (layer_names, per-layer weight_names)."""
    with h5py.File(path, "w") as root:
        save_weights_to_hdf5_group(root, model)
    return path


_SAVED = {}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(name) -> (path of a legacy .h5 under the official file name, the keras model it holds)."""
    def make(name):
        if name not in _SAVED:
            spec = registry.get(name)
            model = checkpoint_like(keras_applications.build_keras_model(spec), seed=len(_SAVED) + 1)
            folder = tmp_path_factory.mktemp(name)
            _SAVED[name] = (write_legacy_h5(model, folder / spec.default_location), model)
        return _SAVED[name]
    yield make
    _SAVED.clear()


def images(size, batch=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, size, size, 3)).astype(np.float32)


def assert_logits_close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


# --- records --------------------------------------------------------------------------------------

def test_records_match_the_installed_keras_sources():
    """URL and MD5 of each record are the ones keras.applications downloads and checks."""
    base = resnet.BASE_WEIGHTS_PATH
    expected_urls = {
        "keras_resnet50": f"{base}resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        "keras_vgg19": vgg19.WEIGHTS_PATH,
        "keras_inception_v3": inception_v3.WEIGHTS_PATH,
        "keras_inception_resnet_v2":
            inception_resnet_v2.BASE_WEIGHT_URL + "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
    }
    sources = {"keras_vgg19": vgg19, "keras_inception_v3": inception_v3,
               "keras_inception_resnet_v2": inception_resnet_v2}
    for name in NAMES:
        spec = registry.get(name)
        assert spec.url == expected_urls[name]
        assert spec.default_location == spec.url.rsplit("/", 1)[1] == spec.archive_files[0]
        md5 = keras_applications.FILE_MD5[name]
        if name == "keras_resnet50":
            assert md5 == resnet.WEIGHTS_HASHES["resnet50"][0]
        else:
            # the include_top file's hash is the first one in the builder's source (the notop one follows)
            assert re.findall(r'file_hash="([0-9a-f]{32})"', inspect.getsource(sources[name]))[0] == md5
        assert spec.sha256 == ""  # Keras publishes MD5 only


@pytest.mark.parametrize("name, size, prep, top1", [
    ("keras_resnet50", 224, "caffe_bgr_mean", 74.9), ("keras_vgg19", 224, "caffe_bgr_mean", 71.3),
    ("keras_inception_v3", 299, "inception", 77.9), ("keras_inception_resnet_v2", 299, "inception", 80.3)])
def test_record_fields(name, size, prep, top1):
    spec = registry.get(name)
    assert (spec.source, spec.image_size, spec.preprocessing, spec.num_classes, spec.reference_top1) == (
        "keras_h5", size, prep, 1000, top1)
    assert spec.licence and spec.provenance and spec.paper
    assert registry.architecture(spec.architecture) is keras_applications.build_network


# --- logits ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, keras_preprocess", [
    ("keras_resnet50", keras.applications.resnet50.preprocess_input),
    ("keras_vgg19", keras.applications.vgg19.preprocess_input)])
def test_caffe_models_equal_keras_with_its_own_preprocessing(saved, name, keras_preprocess):
    path, model = saved(name)
    classifier = models.load(name, checkpoint=path)
    assert classifier.info["checkpoint"] == str(path)
    x = images(224)
    got = classifier(x).numpy()
    want = model(keras_preprocess(x * 255.0), training=False).numpy()
    assert_logits_close(got, want)
    assert got.min() < 0  # logits, not probabilities (classifier_activation=None)
    # the BGR flip really happens: RGB order with the same means is another input
    rgb = model(x * 255.0 - np.asarray(preprocessing.CAFFE_BGR_MEANS[::-1], np.float32), training=False).numpy()
    assert np.abs(rgb - want).max() > 100 * 1e-4 * np.abs(want).max()
    # a 299 image is resized (bilinear, antialiased) to 224 inside the classifier
    x299 = images(299, seed=1)
    resized = tf.image.resize(x299, [224, 224], method="bilinear", antialias=True).numpy()
    assert_logits_close(classifier(x299), model(keras_preprocess(resized * 255.0), training=False))


@pytest.mark.parametrize("name", ["keras_inception_v3", "keras_inception_resnet_v2"])
def test_inception_models_round_trip_and_logits(saved, name):
    path, model = saved(name)
    classifier = models.load(name, checkpoint=path)
    loaded = classifier.network.model
    assert len(loaded.weights) == len(model.weights)
    for mine, theirs in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    x = images(299)
    got = classifier(x)
    assert got.shape == (1, 1000)
    assert_logits_close(got, model(keras.applications.inception_v3.preprocess_input(x * 255.0), training=False))


def test_loader_matches_keras_own_h5_loader(saved):
    path, _ = saved("keras_resnet50")
    ours = models.load("keras_resnet50", checkpoint=path).network.model
    theirs = keras.applications.ResNet50(weights=str(path), classifier_activation=None)
    for mine, reference in zip(ours.weights, theirs.weights):
        assert mine.path.split("/")[-2:] == reference.path.split("/")[-2:]
        np.testing.assert_array_equal(mine.numpy(), reference.numpy())


def test_weights_are_matched_by_order_not_name_and_chunked_attributes_are_read(saved, tmp_path):
    """Old official files name layers and arrays differently (Keras 1/2); only order and shape count."""
    _, model = saved("keras_resnet50")
    path = tmp_path / "renamed.h5"
    layer_names = [f"old_layer_{i}".encode() for i in range(len(model.layers))]
    with h5py.File(path, "w") as root:
        half = len(layer_names) // 2  # as Keras writes lists over the HDF5 header limit
        root.attrs["layer_names0"], root.attrs["layer_names1"] = layer_names[:half], layer_names[half:]
        for name, layer in zip(layer_names, model.layers):
            group = root.create_group(name.decode())
            arrays = keras_applications.legacy_weight_order(layer)
            names = [f"{name.decode()}_W_{j}:0".encode() for j in range(len(arrays))]
            group.attrs["weight_names"] = names
            for array_name, var in zip(names, arrays):
                group.create_dataset(array_name.decode(), data=var.numpy())
    loaded = models.load("keras_resnet50", checkpoint=path)
    x = images(224, seed=3)
    assert_logits_close(loaded(x), model(keras.applications.resnet50.preprocess_input(x * 255.0), training=False))


def test_network_is_differentiable_inside_tf_function(saved):
    classifier = models.load("keras_resnet50", checkpoint=saved("keras_resnet50")[0])
    assert classifier.differentiable and classifier.network.differentiable

    def input_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(classifier(x)[:, 7])
        return tape.gradient(loss, x)

    traced = tf.function(input_gradient)
    x = tf.constant(images(224, seed=4))
    eager = input_gradient(x).numpy()
    first, second = traced(x).numpy(), traced(x + 0.01).numpy()
    assert traced.experimental_get_tracing_count() == 1
    assert np.isfinite(first).all() and np.abs(first).max() > 0
    # Same gradient up to float reassociation (the graph fuses ops; ReLU masks may flip at near-zero units).
    relative = np.linalg.norm(first - eager) / np.linalg.norm(eager)
    assert relative < 1e-2
    assert not np.array_equal(first, second)


def test_random_weights_are_deterministic_per_seed():
    classifier = models.load("keras_resnet50", random_weights=True, seed=5)
    logits = classifier(images(224)).numpy()
    assert np.isfinite(logits).all() and logits.std() > 0
    model = classifier.network.model
    before = [w.numpy() for w in model.weights]
    keras_applications.randomise(model, 5)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    keras_applications.randomise(model, 6)
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))


# --- where weights are found ----------------------------------------------------------------------

def test_found_in_the_keras_cache(saved, tmp_path, monkeypatch):
    path, model = saved("keras_resnet50")
    cache = tmp_path / "keras_home" / "models"
    monkeypatch.setattr(loading, "KERAS_CACHE", cache)
    monkeypatch.setattr(loading, "CHECKPOINTS", tmp_path / "no_checkpoints")
    monkeypatch.delenv("TFATTACK_MODEL_DIR", raising=False)
    with pytest.raises(models.ModelNotFoundError, match="resnet50_weights_tf_dim_ordering_tf_kernels.h5"):
        models.load("keras_resnet50")
    cache.mkdir(parents=True)
    (cache / path.name).symlink_to(path)
    classifier = models.load("keras_resnet50")
    assert classifier.info["checkpoint"] == str(cache / path.name)
    x = images(224, seed=6)
    assert_logits_close(classifier(x), model(keras.applications.resnet50.preprocess_input(x * 255.0), training=False))


def test_a_folder_stands_for_the_official_file_inside(saved, tmp_path):
    path, _ = saved("keras_resnet50")
    assert models.load("keras_resnet50", checkpoint=path.parent).info["checkpoint"] == str(path)
    with pytest.raises(models.CheckpointError, match=f"folder {tmp_path} has no resnet50_weights"):
        models.load("keras_resnet50", checkpoint=tmp_path)


# --- bad files ------------------------------------------------------------------------------------

def assert_one_line(err, *parts):
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message


def test_file_of_another_architecture(saved):
    vgg_path, _ = saved("keras_vgg19")
    with pytest.raises(models.CheckpointError) as err:
        models.load("keras_resnet50", checkpoint=vgg_path)
    assert_one_line(err, vgg_path, "'keras_resnet50'", "19 layers with weights", "107")


def test_mis_shaped_array(saved, tmp_path):
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    shutil.copy(saved("keras_resnet50")[0], path)
    with h5py.File(path, "r+") as root:
        del root["predictions"]["predictions/kernel"]
        root["predictions"].create_dataset("predictions/kernel", data=np.zeros((2048, 1001), np.float32))
    with pytest.raises(models.CheckpointError) as err:
        models.load("keras_resnet50", checkpoint=path)
    assert_one_line(err, path, "'keras_resnet50'", "'predictions'", "(2048, 1001)")


def test_truncated_and_non_hdf5_files(saved, tmp_path):
    data = saved("keras_resnet50")[0].read_bytes()
    truncated = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(models.CheckpointError) as err:
        models.load("keras_resnet50", checkpoint=truncated)
    assert_one_line(err, truncated, "'keras_resnet50'", "cannot read")
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    with pytest.raises(models.CheckpointError) as err:
        models.load("keras_vgg19", checkpoint=text)
    assert_one_line(err, text, "'keras_vgg19'", "cannot read")


def test_keras3_weights_file_is_named_as_another_format(tmp_path):
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "tiny.weights.h5"
    tiny.save_weights(path)
    with pytest.raises(models.CheckpointError) as err:
        models.load("keras_inception_v3", checkpoint=path)
    assert_one_line(err, path, "'keras_inception_v3'", "not a legacy Keras .h5 weight file")


def test_missing_file(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="keras_vgg19"):
        models.load("keras_vgg19", checkpoint=tmp_path / "absent.h5")
