"""timm's port of TF's ensemble-adversarially trained Inception-ResNet-v2, loaded onto our TF-slim port by name, against
timm itself (the test-only oracle, run in its own process by tests/torch_oracle.py, which writes the weights as timm's
safetensors file): the same logits, input gradients and block outputs; the loader's refusals.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfattack.models as models
from tfattack.models.safetensors_file import SafetensorsError
from torch_reference import needs, ours_logits_and_gradient, random_inputs, relative, run_oracle

pytestmark = needs("torch", "timm")

RECORD = "timm_inception_resnet_v2_tf_ens_adv_in1k"


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """timm's model with random weights (batch-norm scales 1, as in every TF port), its file and its outputs."""
    folder = tmp_path_factory.mktemp("irv2")
    x, weights = random_inputs(11, count=2, size=299)
    reference = run_oracle(folder, "timm", "inception_resnet_v2.tf_ens_adv_in1k", x, weights, seed=11,
                           options=["--unit_norm_scale", "--taps=mixed_5b,repeat_1,conv2d_7b"])
    return str(folder / "weights.safetensors"), x, weights, reference


def test_logits_gradients_and_blocks_equal_timms(oracle):
    path, x, weights, reference = oracle
    classifier = models.load(RECORD, checkpoint=path)
    ours, our_gradient = ours_logits_and_gradient(classifier, x, weights)
    assert relative(ours, reference["logits"]) < 1e-4
    error = np.linalg.norm(our_gradient - reference["gradient"]) / np.linalg.norm(reference["gradient"])
    assert error < 3e-2
    # slim's end-point names: the feature-level methods' layers and the aliases work as on the slim checkpoints.
    outputs = classifier.outputs(tf.constant(x), features=["Mixed_5b", "PreAuxLogits", "Conv2d_7b_1x1"])
    for tap, module in [("Mixed_5b", "mixed_5b"), ("PreAuxLogits", "repeat_1"), ("Conv2d_7b_1x1", "conv2d_7b")]:
        assert relative(outputs.features[tap].numpy(), reference[module]) < 1e-4


def _rewritten(path, tmp_path, change):
    import safetensors.numpy
    tensors = safetensors.numpy.load_file(path)
    change(tensors)
    out = str(tmp_path / "changed.safetensors")
    safetensors.numpy.save_file(tensors, out)
    return out


def test_a_batch_norm_scale_that_is_not_one_is_refused(oracle, tmp_path):
    def scale(tensors):
        tensors["repeat.3.branch1.1.bn.weight"] = tensors["repeat.3.branch1.1.bn.weight"] * 1.5
    path = _rewritten(oracle[0], tmp_path, scale)
    with pytest.raises(SafetensorsError, match=r"changed\.safetensors: batch-norm scale\(s\) repeat\.3\.branch1\.1"
                                               r"\.bn\.weight are not 1.*'timm_inception_resnet_v2_tf_ens_adv_in1k'"):
        models.load(RECORD, checkpoint=path)


def test_a_missing_or_mis_shaped_key_is_named(oracle, tmp_path):
    path = _rewritten(oracle[0], tmp_path, lambda tensors: tensors.pop("repeat_2.8.conv2d.bias"))
    with pytest.raises(SafetensorsError) as error:
        models.load(RECORD, checkpoint=path)
    message = str(error.value)
    assert "\n" not in message and "lacks 1 key(s): repeat_2.8.conv2d.bias" in message and path in message

    def truncate(tensors):
        tensors["classif.weight"] = tensors["classif.weight"][:10]
    with pytest.raises(SafetensorsError, match=r"mis-shaped tensor\(s\).*classif\.weight \(10, 1536\) != "
                                               r"\(1000, 1536\)"):
        models.load(RECORD, checkpoint=_rewritten(oracle[0], tmp_path, truncate))


def test_the_record_points_at_timms_hub_file():
    spec = models.get(RECORD)
    assert spec.url == ("https://huggingface.co/timm/inception_resnet_v2.tf_ens_adv_in1k/resolve/main/"
                        "model.safetensors")
    assert (spec.architecture, spec.source, spec.image_size, spec.num_classes, spec.preprocessing) == (
        "inception_resnet_v2", "safetensors", 299, 1000, "inception")
    assert spec.default_location == "timm/inception_resnet_v2.tf_ens_adv_in1k.safetensors"
