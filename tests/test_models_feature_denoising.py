"""Facebook's feature-denoising ResNets against a PyTorch transcription of the release's graph
(tests/feature_denoising_torch.py, run in its own process: no published PyTorch implementation exists and the
release's own code needs TF1 and tensorpack), for weights written in the release's tensorpack npz layout; the
loader's refusals; the records."""

from __future__ import annotations

import numpy as np
import pytest

import tfattack.models as models
from tfattack.models import feature_denoising, preprocessing
from tfattack.models.feature_denoising import TensorpackNpzError
from torch_reference import needs, ours_logits_and_gradient, random_inputs, relative, run_oracle

pytestmark = needs("torch")


# The three networks: the plain ResNet-152 trunk (TF SAME padding, stride on the 3x3); the Gaussian non-local block
# after every group; the ResNeXt 32x8d trunk (grouped 3x3) with the dot-product block after every block.
@pytest.mark.parametrize("architecture", sorted(feature_denoising.VARIANTS))
def test_logits_and_input_gradients_equal_the_release_graphs(architecture, tmp_path):
    x, weights = random_inputs(21, count=1)
    reference = run_oracle(tmp_path, "feature_denoising", architecture, x, weights, seed=21)
    classifier = models.load(architecture, checkpoint=str(tmp_path / "weights.npz"))
    ours, our_gradient = ours_logits_and_gradient(classifier, x, weights)
    assert relative(ours, reference["logits"]) < 1e-4
    error = np.linalg.norm(our_gradient - reference["gradient"]) / np.linalg.norm(reference["gradient"])
    assert error < 3e-2


def _npz(path, arrays):
    np.savez(path, **arrays)
    return str(path)


def test_an_npz_of_another_network_or_shape_is_refused_in_one_line(tmp_path):
    network = models.load("fd_resnet152", random_weights=True).network
    arrays = {f"{name}:0": var.numpy() for name, var in network.store.by_name.items()}
    arrays["global_step:0"] = np.array(5)  # a training run's counter is not a model variable: ignored
    with pytest.raises(TensorpackNpzError) as error:
        models.load("fd_resnet152_denoise", checkpoint=_npz(tmp_path / "r152.npz", arrays))
    message = str(error.value)
    assert "\n" not in message and "r152.npz does not fit model 'fd_resnet152_denoise'" in message
    assert "group0_denoise/conv/W" in message
    arrays["linear/b:0"] = arrays["linear/b:0"][:10]
    with pytest.raises(TensorpackNpzError, match=r"mis-shaped tensor\(s\) for model 'fd_resnet152': linear/b "
                                                 r"\(10,\) != \(1000,\)"):
        models.load("fd_resnet152", checkpoint=_npz(tmp_path / "short.npz", arrays))
    (tmp_path / "page.npz").write_bytes(b"<html>404</html>")
    with pytest.raises(TensorpackNpzError, match=r"model 'fd_resnet152': .*page\.npz is not a readable \.npz file"):
        models.load("fd_resnet152", checkpoint=str(tmp_path / "page.npz"))


def test_records_and_the_releases_input_convention():
    spec = models.get("fd_resnext101_denoise_all")
    assert spec.url.endswith("/releases/download/v0.2/X101-DenoiseAll.npz") and spec.licence == "CC-BY-NC-4.0"
    assert (spec.image_size, spec.num_classes, spec.source) == (224, 1000, "tensorpack_npz")
    assert {s.name for s in models.specs() if s.name.startswith("fd_")} == set(feature_denoising.VARIANTS)
    # BGR, pixel * 2/255 - 1 (the release's image_preprocess on OpenCV images).
    rgb = np.array([[[[0.0, 0.5, 1.0]]]], np.float32)
    np.testing.assert_allclose(preprocessing.get(spec.preprocessing)(rgb).numpy(), [[[[1.0, 0.0, -1.0]]]])


@pytest.mark.parametrize("embed, softmax, size, channels", [
    (True, True, 5, 8),     # ResNetDenoise's Gaussian block
    (False, False, 5, 8),   # ResNeXtDenoiseAll's dot-product block, fewer channels than positions
    (False, False, 2, 8),   # ... more channels than positions: the other association of the same product
])
def test_the_non_local_operation_equals_its_formula(embed, softmax, size, channels):
    """Each position i becomes sum_j w(i, j) x_j: w = softmax_j(theta_i . phi_j / sqrt(C/2)) on embeddings, or
    x_i . x_j / (H W) on the features themselves (Xie et al. 2019, Sec. 4)."""
    import tensorflow as tf

    from tfattack.models.layers import VariableStore

    x = np.random.default_rng(3).normal(size=(2, size, size, channels)).astype(np.float32)
    store = VariableStore("t", seed=4)
    ours = feature_denoising.non_local(store, tf.constant(x), "block", embed=embed, softmax=softmax).numpy()
    flat = x.reshape(2, size * size, channels).astype(np.float64)
    if embed:
        theta = flat @ store.by_name["block/embedding_theta/W"].numpy()[0, 0].astype(np.float64)
        phi = flat @ store.by_name["block/embedding_phi/W"].numpy()[0, 0].astype(np.float64)
        scores = theta @ phi.transpose(0, 2, 1) / np.sqrt(channels // 2)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
    else:
        weights = flat @ flat.transpose(0, 2, 1) / (size * size)
    np.testing.assert_allclose(ours, (weights @ flat).reshape(x.shape), rtol=1e-5, atol=1e-5)
