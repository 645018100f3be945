"""The model contract itself: registry, checkpoint loading and errors, classifier mapping, ensembles."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfattack
from tfattack.models import checkpoint, layers, loading, registry
from tfattack.models.classifier import Classifier
from tfattack.models.registry import ModelSpec

# --- a tiny slim-style net, registered under test-only names --------------------------------------


def tiny_forward(store, x, num_classes=1001):
    end_points = {}
    net = layers.conv2d(store, x, "Conv2d_1a_3x3", 8, 3, 2, padding="VALID")
    end_points["Conv2d_1a_3x3"] = net
    net = layers.conv2d(store, net, "Conv2d_2a_3x3", 16, 3, padding="SAME")
    net = layers.global_avg_pool(net)
    aux = layers.conv2d(store, net, "AuxLogits/Conv2d_2b_1x1", num_classes, 1, batch_norm=False, activation=None)
    end_points["AuxLogits"] = tf.squeeze(aux, [1, 2])
    logits = layers.conv2d(store, net, "Logits/Conv2d_1c_1x1", num_classes, 1, batch_norm=False, activation=None)
    logits = tf.squeeze(logits, [1, 2])
    end_points["Logits"] = logits
    return logits, end_points


def build_tiny(spec, seed=0):
    return layers.SlimNetwork(lambda store, x: tiny_forward(store, x, spec.num_classes), "TinyNet",
                              spec.image_size, seed=seed)


registry.register_architecture("test_tiny", build_tiny)
TINY = registry.register(ModelSpec(name="test_tiny_net", architecture="test_tiny", source="slim_checkpoint",
                                   image_size=32, preprocessing="inception", num_classes=1001,
                                   checkpoint_scope="TinyNet", aux_logits=True))


def random_checkpoint_values(seed=1, scope="TinyNet"):
    net = build_tiny(TINY)
    rng = np.random.default_rng(seed)
    values = {}
    for name, var in net.variables_by_name.items():
        if name.endswith("moving_variance"):
            values[name] = rng.uniform(0.5, 1.5, var.shape).astype(np.float32)
        else:
            values[name] = rng.standard_normal(var.shape).astype(np.float32) * 0.3
    return {name.replace("TinyNet/", f"{scope}/", 1): v for name, v in values.items()}


def reference_logits(values, images01, scope="TinyNet"):
    """The tiny net computed directly in NumPy/tf.nn from the raw checkpoint values (no folding)."""
    def v(name):
        return values[f"{scope}/{name}"]

    def bn(y, name):
        return (y - v(f"{name}/moving_mean")) / np.sqrt(v(f"{name}/moving_variance") + 0.001) + v(f"{name}/beta")

    x = images01 * 2 - 1
    y = tf.nn.conv2d(x, v("Conv2d_1a_3x3/weights"), 2, "VALID").numpy()
    y = np.maximum(bn(y, "Conv2d_1a_3x3/BatchNorm"), 0)
    y = tf.nn.conv2d(y, v("Conv2d_2a_3x3/weights"), 1, "SAME").numpy()
    y = np.maximum(bn(y, "Conv2d_2a_3x3/BatchNorm"), 0).mean(axis=(1, 2))
    logits = y @ v("Logits/Conv2d_1c_1x1/weights")[0, 0] + v("Logits/Conv2d_1c_1x1/biases")
    aux = y @ v("AuxLogits/Conv2d_2b_1x1/weights")[0, 0] + v("AuxLogits/Conv2d_2b_1x1/biases")
    return logits, aux


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)


def test_load_equals_direct_computation_and_drops_background(tmp_path, images):
    values = random_checkpoint_values()
    prefix = checkpoint.write_slim_checkpoint(values, str(tmp_path / "tiny.ckpt"))
    model = tfattack.models.load("test_tiny_net", checkpoint=prefix)
    logits, aux = model.logits_and_aux(images)
    want_logits, want_aux = reference_logits(values, images)
    assert logits.shape == (3, 1000) and aux.shape == (3, 1000)
    np.testing.assert_allclose(logits.numpy(), want_logits[:, 1:], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(aux.numpy(), want_aux[:, 1:], rtol=1e-4, atol=1e-4)
    assert model.info["scope"] == "TinyNet" and model.image_size == 32


@pytest.mark.parametrize("where", ["prefix", "folder", "index_file", "data_file"])
def test_checkpoint_path_forms(tmp_path, images, where):
    values = random_checkpoint_values()
    prefix = checkpoint.write_slim_checkpoint(values, str(tmp_path / "m" / "tiny.ckpt"))
    path = {"prefix": prefix, "folder": str(tmp_path / "m"), "index_file": prefix + ".index",
            "data_file": prefix + ".data-00000-of-00001"}[where]
    model = tfattack.models.load("test_tiny_net", checkpoint=path)
    np.testing.assert_allclose(model(images).numpy(), reference_logits(values, images)[0][:, 1:], rtol=1e-4, atol=1e-4)


def test_renamed_scope_and_extra_entries_load(tmp_path, images):
    values = random_checkpoint_values(scope="Ens3AdvTinyNet")
    values["global_step"] = np.array(1234, np.int64)
    values["Ens3AdvTinyNet/Conv2d_1a_3x3/weights/Adam"] = np.zeros((3, 3, 3, 8), np.float32)
    values["OtherNet/Logits/weights"] = np.zeros((4, 4), np.float32)
    prefix = checkpoint.write_slim_checkpoint(values, str(tmp_path / "renamed.ckpt"))
    model = tfattack.models.load("test_tiny_net", checkpoint=prefix)
    assert model.info["scope"] == "Ens3AdvTinyNet"
    want = reference_logits(values, images, scope="Ens3AdvTinyNet")[0][:, 1:]
    np.testing.assert_allclose(model(images).numpy(), want, rtol=1e-4, atol=1e-4)


def test_missing_variable_is_named(tmp_path):
    values = random_checkpoint_values()
    del values["TinyNet/Conv2d_2a_3x3/BatchNorm/moving_mean"]
    prefix = checkpoint.write_slim_checkpoint(values, str(tmp_path / "partial.ckpt"))
    with pytest.raises(checkpoint.CheckpointError, match=r"lacks 1 variable.*test_tiny_net.*TinyNet/Conv2d_2a_3x3/BatchNorm/moving_mean"):
        tfattack.models.load("test_tiny_net", checkpoint=prefix)


def test_misshaped_variable_is_named(tmp_path):
    values = random_checkpoint_values()
    values["TinyNet/Conv2d_1a_3x3/weights"] = np.zeros((5, 5, 3, 8), np.float32)
    prefix = checkpoint.write_slim_checkpoint(values, str(tmp_path / "bad.ckpt"))
    with pytest.raises(checkpoint.CheckpointError, match=r"mis-shaped.*Conv2d_1a_3x3/weights \(5, 5, 3, 8\) != \(3, 3, 3, 8\)"):
        tfattack.models.load("test_tiny_net", checkpoint=prefix)


def test_checkpoint_of_another_model_names_its_scopes(tmp_path):
    prefix = checkpoint.write_slim_checkpoint({"vgg_16/fc8/biases": np.zeros(1000, np.float32)}, str(tmp_path / "vgg.ckpt"))
    with pytest.raises(checkpoint.CheckpointError, match=r"holds no variable of model 'test_tiny_net'.*vgg_16"):
        tfattack.models.load("test_tiny_net", checkpoint=prefix)


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    prefix = checkpoint.write_slim_checkpoint(random_checkpoint_values(), str(tmp_path / "cut.ckpt"))
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(checkpoint.CheckpointError) as err:
        tfattack.models.load("test_tiny_net", checkpoint=prefix)
    assert "cut.ckpt" in str(err.value) and "\n" not in str(err.value)


def test_wrong_path_says_how_to_get_it(tmp_path):
    with pytest.raises(loading.ModelNotFoundError, match=r"does not exist.*tfattack-download --models=test_tiny_net"):
        tfattack.models.load("test_tiny_net", checkpoint=str(tmp_path / "nope.ckpt"))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint found in folder"):
        tfattack.models.load("test_tiny_net", checkpoint=str(tmp_path))


def test_search_path_finds_default_location(tmp_path, monkeypatch, images):
    values = random_checkpoint_values()
    checkpoint.write_slim_checkpoint(values, str(tmp_path / "test_tiny_net" / "model.ckpt"))
    monkeypatch.setenv("TFATTACK_MODEL_DIR", os.pathsep.join([str(tmp_path / "empty"), str(tmp_path)]))
    model = tfattack.models.load("test_tiny_net")
    assert model.info["checkpoint"].startswith(str(tmp_path / "test_tiny_net"))
    monkeypatch.setenv("TFATTACK_MODEL_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(loading, "CHECKPOINTS", tmp_path / "empty2")
    with pytest.raises(loading.ModelNotFoundError, match=r"not found \(looked in .*empty"):
        tfattack.models.load("test_tiny_net")


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'inceptoin_v3'; did you mean 'inception_v3'\?; known models: .*test_tiny_net"):
        tfattack.models.load("inceptoin_v3")


def test_classifier_resizes_any_input_size_differentiably(images):
    model = tfattack.models.load("test_tiny_net", random_weights=True)
    big = tf.image.resize(images, [47, 47])
    x = tf.constant(big)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x)[:, 7])
    grad = tape.gradient(loss, x)
    assert grad.shape == x.shape and np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0
    same = model(tf.image.resize(big, [32, 32], antialias=True))
    np.testing.assert_allclose(model(big).numpy(), same.numpy(), rtol=1e-5, atol=1e-5)


def test_classifier_rejects_bad_images():
    model = tfattack.models.load("test_tiny_net", random_weights=True)
    with pytest.raises(ValueError, match=r"must be \[N, H, W, 3\]"):
        model(np.zeros((2, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="divide uint8 pixels by 255"):
        model(np.zeros((2, 32, 32, 3), np.uint8))


def test_output_index_permutes_classes(images):
    spec = dataclasses.replace(TINY, name="test_tiny_permuted", num_classes=1000)
    net = build_tiny(spec)
    permutation = np.random.default_rng(3).permutation(1000)
    plain = Classifier(spec, net)
    net.output_index = permutation
    permuted = Classifier(spec, net)
    np.testing.assert_array_equal(permuted(images).numpy(), plain(images).numpy()[:, permutation])


def test_ensemble_fusions(images):
    a = tfattack.models.load("test_tiny_net", random_weights=True, seed=1)
    b = tfattack.models.load("test_tiny_net", random_weights=True, seed=2)
    la, lb = a(images).numpy(), b(images).numpy()
    single = tfattack.models.Ensemble([a])
    np.testing.assert_allclose(single(images).numpy(), la, rtol=1e-6)
    fused = tfattack.models.Ensemble([a, b], weights=[3, 1])
    np.testing.assert_allclose(fused(images).numpy(), 0.75 * la + 0.25 * lb, rtol=1e-5, atol=1e-5)
    probs = tfattack.models.Ensemble([a, b], fuse="probs")(images).numpy()
    softmax = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
    np.testing.assert_allclose(np.exp(probs), 0.5 * softmax(la) + 0.5 * softmax(lb), rtol=1e-4, atol=1e-7)
    by_loss = tfattack.models.Ensemble([a, b], fuse="loss")
    assert by_loss.fuse == "loss" and len(by_loss.member_logits(images)) == 2


def test_mixed_size_ensemble(images):
    small = tfattack.models.load("test_tiny_net", random_weights=True, seed=1)
    spec48 = dataclasses.replace(TINY, name="test_tiny_48", image_size=48)
    large = Classifier(spec48, build_tiny(spec48, seed=2))
    fused = tfattack.models.Ensemble([small, large])
    x = tf.image.resize(images, [40, 40])
    want = 0.5 * small(x).numpy() + 0.5 * large(x).numpy()
    np.testing.assert_allclose(fused(x).numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(models=[]), "at least one model"),
    (dict(models=["m"], fuse="mean"), "fuse must be one of"),
    (dict(models=["m", "n"], weights=[1]), "2 models but 1 weights"),
    (dict(models=["m"], weights=[-1]), "non-negative"),
])
def test_ensemble_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfattack.models.Ensemble(**kwargs)


def test_nips17_labels_and_class_names():
    names = tfattack.models.class_names()
    assert len(names) == 1000 and names[305] == "dung beetle"  # NIPS'17 TrueLabel 306
    np.testing.assert_array_equal(tfattack.models.nips17_to_index([1, 306, 1000]), [0, 305, 999])
    with pytest.raises(ValueError, match="1..1000"):
        tfattack.models.nips17_to_index([0, 5])
    with pytest.raises(ValueError, match="1..1000"):
        tfattack.models.nips17_to_index([1001])


def test_spec_validation():
    with pytest.raises(ValueError, match="num_classes must be 1000 or 1001"):
        dataclasses.replace(TINY, num_classes=10)
    with pytest.raises(ValueError, match="unknown source"):
        dataclasses.replace(TINY, source="onnx")


def test_runtime_does_not_import_legacy_keras_or_slim():
    code = ("import sys, tfattack, tfattack.models as m; m.available(); "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('tf_keras', 'tf_slim', 'torch')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


@pytest.mark.parametrize("size", [224, 128, 260, 331])
def test_resize_matches_antialiased_bilinear_and_pil(size):
    from PIL import Image
    from tfattack.models.preprocessing import resize_to

    pixels = np.asarray(Image.open(os.path.join(os.path.dirname(__file__), "..", "samples", "images",
                                                "0c7ac4a8c9dfa802.png")).convert("RGB"))
    x = tf.constant(pixels[None].astype(np.float32) / 255)
    ours = resize_to(x, size).numpy()[0]
    np.testing.assert_allclose(ours, tf.image.resize(x, [size, size], antialias=True).numpy()[0], atol=2e-5)
    pil = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR)).astype(np.float32) / 255
    assert np.abs(ours - pil).max() * 255 <= 1.01  # PIL rounds to 8 bits between its two passes
    compiled = tf.function(lambda z: resize_to(z, size), jit_compile=True)
    np.testing.assert_allclose(compiled(x).numpy()[0], ours, atol=1e-5)


def test_top_k_gives_the_softmax_probabilities_of_the_k_largest_logits():
    from tfattack.models import labels
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 1000)) * 5
    logits[1, 7] = 1000.0  # a large logit: the softmax must not overflow
    top = labels.top_k(logits, k=3)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    for row, p in zip(top, probs):
        indices = [i for i, _, _ in row]
        assert indices == list(np.argsort(-p)[:3])
        assert [q for _, _, q in row] == pytest.approx([p[i] for i in indices], rel=1e-12)
        assert [n for _, n, _ in row] == [labels.class_names()[i] for i in indices]
    assert top[1][0][0] == 7 and top[1][0][2] == pytest.approx(1.0)
