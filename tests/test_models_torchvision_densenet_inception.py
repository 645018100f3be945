"""torchvision's DenseNet-121 and Inception-v3, and timm's InceptionV3 (its port of Google's adversarially trained
Inception-v3), against torchvision and timm themselves (the test-only oracles of requirements-oracles.txt, run in
their own process by tests/torch_oracle.py): the same state-dict keys and shapes as the references' own files; the
same logits and input gradients for the same random weights, read from the files the references wrote in their
real formats (torch.save zip; timm's safetensors); block outputs equal to the reference modules' outputs; the old
key layout of torchvision's published DenseNet file; the loader's errors.

The torchvision oracle saves stage outputs for ResNets only. Inception's block taps are compared with timm's
InceptionV3, which has torchvision's modules and names (its blocks are the code this port shares between the two
architectures); DenseNet's blocks and transitions with timm's densenet121, whose state dict has torchvision's keys
and whose blocks and transitions compute torchvision's (norm + ReLU fused in one module): the taps below are
outputs of modules of the same names and contents. torchvision's own DenseNet and Inception are checked through
their logits and input gradients.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

import tfattack.models as models
# Imported for their records too (tv_densenet121; tv_inception_v3, timm_inception_v3_tf_adv_in1k).
from tfattack.models import loading, safetensors_file, torch_pickle, torchvision_densenet, torchvision_inception
from tfattack.models.torch_layers import StateDictMismatchError
from tfattack.models.torch_pickle import TorchPickleError
from torch_reference import needs, ours_logits_and_gradient, random_inputs, relative, run_oracle
from test_torch_pickle import FakeStorage, FakeTensor, write_legacy

pytestmark = needs("torch", "torchvision")
needs_timm = needs("timm", "safetensors")

# record -> (oracle family, reference model, image size, images, its weight file, taps the oracle saves)
REFERENCES = {
    "tv_densenet121": ("torchvision", "densenet121", 224, 2, "weights.pth", ()),
    "tv_inception_v3": ("torchvision", "inception_v3", 299, 1, "weights.pth", ()),
    "timm_inception_v3_tf_adv_in1k": ("timm", "inception_v3.tf_adv_in1k", 299, 1, "weights.safetensors",
                                      ("Pool2", "Mixed_5b", "Mixed_6e", "Mixed_7c")),
    "timm_densenet121": ("timm", "densenet121", 224, 1, "weights.safetensors",
                         ("features.denseblock1", "features.transition2", "features.denseblock3")),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """record -> (weight file, images, logit weights, reference arrays): one oracle run per reference model."""
    runs = {}

    def get(record):
        if record not in runs:
            family, model, size, count, file_name, taps = REFERENCES[record]
            folder = tmp_path_factory.mktemp(record)
            seed = list(REFERENCES).index(record)
            x, weights = random_inputs(seed, count=count, size=size)
            arrays = run_oracle(folder, family, model, x, weights, seed=seed,
                                options=[f"--taps={','.join(taps)}"] if taps else [])
            runs[record] = str(folder / file_name), x, weights, arrays
        return runs[record]

    return get


@pytest.fixture(scope="module")
def loaded(reference):
    """record -> its classifier loaded from the reference's file by `models.load` (once per module)."""
    classifiers = {}

    def get(record):
        if record not in classifiers:
            classifiers[record] = models.load(record, checkpoint=reference(record)[0])
        return classifiers[record]

    return get


def read_reference_file(path):
    if path.endswith(".safetensors"):
        return safetensors_file.read_state_dict(path)
    return torch_pickle.read_model_state_dict(path)


@pytest.mark.parametrize("record", ["tv_densenet121", "tv_inception_v3",
                                    pytest.param("timm_inception_v3_tf_adv_in1k", marks=needs_timm)])
def test_state_dict_keys_and_shapes_are_the_references(record, reference):
    path, *_ = reference(record)
    theirs = {k: tuple(v.shape) for k, v in read_reference_file(path).items() if not k.endswith("num_batches_tracked")}
    ours = loading.build_network(models.get(record)).expected_state_dict_shapes()
    assert ours == theirs
    # torchvision's file holds the auxiliary head that eval mode does not run; timm's tf_adv port has none.
    assert ("AuxLogits.fc.weight" in ours) == (record == "tv_inception_v3")


@pytest.mark.parametrize("record", ["tv_densenet121", "tv_inception_v3",
                                    pytest.param("timm_inception_v3_tf_adv_in1k", marks=needs_timm)])
def test_logits_and_input_gradients_equal_the_references(record, reference, loaded):
    # tv_inception_v3: the oracle feeds ImageNet mean/std-normalised images to torchvision's inception_v3 built
    # with transform_input=True, as its published weights are; timm's model gets its own mean = std = 0.5.
    path, x, weights, arrays = reference(record)
    ours, our_gradient = ours_logits_and_gradient(loaded(record), x, weights)
    assert relative(ours, arrays["logits"]) < 1e-4
    # Compared in L2 norm: a random-weight network's float32 input gradient is ill-conditioned pixel by pixel,
    # while a wrong padding, pool divisor, branch order or input transform is off by order one. DenseNet's is
    # the better conditioned and is held tighter; Inception's keeps the ResNets' bound.
    error = np.linalg.norm(our_gradient - arrays["gradient"]) / np.linalg.norm(arrays["gradient"])
    assert error < (5e-3 if record == "tv_densenet121" else 3e-2)


@needs_timm
def test_inception_blocks_equal_timms_modules(reference, loaded):
    _, x, _, arrays = reference("timm_inception_v3_tf_adv_in1k")
    classifier = loaded("timm_inception_v3_tf_adv_in1k")
    assert [classifier.feature_tap(alias) for alias in ("early", "mid", "late")] == ["Mixed_5b", "Mixed_6b",
                                                                                     "Mixed_6e"]
    outputs = classifier.outputs(tf.constant(x), features=["Pool2", "early", "late", "Mixed_7c"])
    for tap, module in [("Pool2", "Pool2"), ("early", "Mixed_5b"), ("late", "Mixed_6e"), ("Mixed_7c", "Mixed_7c")]:
        assert relative(outputs.features[tap].numpy(), arrays[module]) < 1e-4, tap


@needs_timm
def test_densenet_blocks_and_transitions_equal_timms_modules(reference):
    # timm's densenet121 writes a state dict with torchvision's keys (its own weights, safetensors); our network
    # takes it as it is, and the image is normalised by hand with the ImageNet mean/std both use.
    path, x, _, arrays = reference("timm_densenet121")
    network = loading.build_network(models.get("tv_densenet121"))
    network.load_state_dict(safetensors_file.read_state_dict(path), path, "tv_densenet121")
    normalised = (x - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])
    logits, end_points = network(tf.constant(normalised))
    assert relative(logits.numpy(), arrays["logits"]) < 1e-4
    for name in REFERENCES["timm_densenet121"][-1]:
        assert relative(end_points[name].numpy(), arrays[name]) < 1e-4, name


def old_layout_key(key):
    """The key as torchvision's published densenet121-a639ec97.pth spells it: dense layers' `norm1`, `conv2` ...
    were modules `norm.1`, `conv.2` (torchvision's densenet.py: "previous _DenseLayer has keys 'norm.1', 'relu.1',
    'conv.1', 'norm.2', 'relu.2', 'conv.2'")."""
    return re.sub(r"(\.denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)


def test_the_published_densenet_key_layout_loads_the_same_weights(reference, loaded, tmp_path):
    """The oracle's file re-written with the old keys, as the 2017 file is: torch's legacy layout (written by
    test_torch_pickle's writer, which follows torch's records) and no num_batches_tracked (torch of 2017 kept
    none)."""
    path, x, weights, arrays = reference("tv_densenet121")
    state = {old_layout_key(k): v for k, v in torch_pickle.read_model_state_dict(path).items()
             if not k.endswith("num_batches_tracked")}
    assert "features.denseblock4.denselayer16.conv.2.weight" in state and "features.transition3.norm.weight" in state
    assert not any(re.search(r"denselayer\d+\.(norm|conv)[12]\.", k) for k in state)
    fake = {k: FakeTensor(FakeStorage(str(i), "FloatStorage", v.ravel()), 0, v.shape,
                          tuple(s // v.itemsize for s in v.strides)) for i, (k, v) in enumerate(state.items())}
    old_path = str(write_legacy(tmp_path / "densenet121-old-keys.pth", fake))
    classifier = models.load("tv_densenet121", checkpoint=old_path)
    assert relative(classifier(tf.constant(x)).numpy(), arrays["logits"]) < 1e-4

    # One key in both spellings is refused, naming it (before anything is assigned).
    both = dict(torch_pickle.read_model_state_dict(path))
    both["features.denseblock2.denselayer3.norm.2.bias"] = both["features.denseblock2.denselayer3.norm2.bias"]
    with pytest.raises(StateDictMismatchError, match=r"features\.denseblock2\.denselayer3\.norm2\.bias twice"):
        loaded("tv_densenet121").network.load_state_dict(both, "both.pth", "tv_densenet121")


def test_a_resnet_file_is_refused_by_densenet_in_one_line(tmp_path):
    x, weights = random_inputs(0, count=1, size=32)
    run_oracle(tmp_path, "torchvision", "resnet18", x, weights)
    path = str(tmp_path / "weights.pth")
    with pytest.raises(TorchPickleError) as error:
        models.load("tv_densenet121", checkpoint=path)
    message = str(error.value)
    assert "\n" not in message and path in message and "'tv_densenet121'" in message
    assert "lacks" in message and "features.conv0.weight" in message
    assert "unexpected" in message and "bn1.running_var" in message
    assert "another DenseNet variant" in message


def test_inception_runs_in_bfloat16_near_float32(reference, loaded):
    # The aux head's variables are declared on the float32 store only; a bfloat16 forward must not need them.
    _, x, _, arrays = reference("tv_inception_v3")
    logits = loaded("tv_inception_v3").with_compute_dtype("bfloat16")(tf.constant(x)).numpy()
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    assert 0 < relative(logits, arrays["logits"]) < 0.1


def test_records_say_where_the_published_files_are():
    densenet, inception, timm = (models.get(n) for n in ("tv_densenet121", "tv_inception_v3",
                                                          "timm_inception_v3_tf_adv_in1k"))
    assert densenet.url == "https://download.pytorch.org/models/densenet121-a639ec97.pth"
    assert densenet.sha256 == "a639ec97" and densenet.image_size == 224 and densenet.reference_top1 == 74.434
    assert inception.url == "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
    assert inception.sha256 == "0cc3c7bd" and inception.image_size == 299 and inception.source == "torch_pickle"
    assert inception.preprocessing == "torchvision" and inception.reference_top1 == 77.294
    assert timm.url == "https://huggingface.co/timm/inception_v3.tf_adv_in1k/resolve/main/model.safetensors"
    assert timm.source == "safetensors" and timm.preprocessing == "inception" and timm.image_size == 299
    assert timm.num_classes == 1000 and "Kurakin" in timm.paper
    # Not the slim port's architecture: PyTorch's pools (and torchvision's input transform).
    assert {inception.architecture, timm.architecture} <= set(torchvision_inception.VARIANTS)
    assert not torchvision_inception.VARIANTS[timm.architecture].transform_input
    assert densenet.architecture in torchvision_densenet.BLOCK_LAYERS
    classifier = models.load("tv_densenet121", random_weights=True)
    assert [classifier.feature_tap(a) for a in ("early", "mid", "late")] == [
        "features.denseblock1", "features.denseblock2", "features.denseblock3"]
    assert {"features.pool0", "features.transition3", "features.denseblock4", "features.norm5"} <= set(
        classifier.end_point_names())


def test_sgm_on_densenet_equals_its_authors_relu_hooks(tmp_path):
    """SGM's official code multiplies the gradient through every ReLU module outside the transitions by sqrt(gamma):
    the two of each dense layer (gamma on the layer's new features) and the stem's (a constant factor). Ours decays
    the new features' gradient at each dense concatenation: the same gradient up to that constant."""
    from tfattack import backward

    gamma = 0.5
    x, weights = random_inputs(17, count=1)
    reference = run_oracle(tmp_path, "torchvision", "densenet121", x, weights, seed=17,
                           options=[f"--sgm_gamma={gamma}"])
    classifier = models.load("tv_densenet121", checkpoint=str(tmp_path / "weights.pth"))
    with backward.policy(backward.Policy(residual_gradient=gamma)):
        _, ours = ours_logits_and_gradient(classifier, x, weights)
    _, plain = ours_logits_and_gradient(classifier, x, weights)
    expected = reference["gradient"]
    error = np.linalg.norm(ours * gamma ** 0.5 - expected) / np.linalg.norm(expected)
    assert error < 5e-3  # the plain gradient's own float32 agreement bound on this network
    assert np.linalg.norm(plain * gamma ** 0.5 - expected) / np.linalg.norm(expected) > 0.1  # SGM changed it
