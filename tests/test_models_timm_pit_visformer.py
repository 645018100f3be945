"""timm's PiT-B and Visformer-S against timm itself (the test-only oracle of requirements-oracles.txt, run in its own
process by tests/torch_oracle.py): the same state-dict keys and shapes; the same logits, input gradients and
intermediate features for the same weights, read from the safetensors file timm's state dict was written to; a
file of the other architecture refused.
"""

from __future__ import annotations


import numpy as np
import pytest
import tensorflow as tf

import tfattack.models as models
from tfattack.models import loading
from tfattack.models.safetensors_file import SafetensorsError
from torch_reference import needs, ours_logits_and_gradient, random_inputs, reference_shapes, relative, run_oracle

pytestmark = needs("torch", "timm")

RECORDS = {"pit_b_224": "timm_pit_b_224", "visformer_small": "timm_visformer_small"}
# Modules whose outputs the oracle keeps: a PiT block's tokens and the class token's norm (3-D, as timm gives them);
# Visformer's 14 px stage, a 7 px block and the final batch norm (NCHW maps, stored as NHWC).
TAPS = {"pit_b_224": ("transformers.1.blocks.5", "norm"), "visformer_small": ("stage2", "stage3.1", "norm")}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """model -> (weight file, images, logit weights, reference arrays, our classifier loaded from the file): one
    timm run and one load per model, on demand."""
    runs = {}

    def get(model):
        if model not in runs:
            folder = tmp_path_factory.mktemp(model)
            x, weights = random_inputs(11, count=2)
            # Visformer's batch norms get the images' own statistics: with random ones a random Visformer's
            # activations grow by orders of magnitude per stage until stage 3's softmaxes saturate, and float32
            # rounding alone (ours in float32 against ours in float64) moves the logits beyond any useful tolerance.
            calibrate = ["--calibrate_norms"] if model == "visformer_small" else []
            reference = run_oracle(folder, "timm", model, x, weights, seed=4,
                                   options=[f"--taps={','.join(TAPS[model])}", *calibrate])
            path = str(folder / "weights.safetensors")
            runs[model] = (path, x, weights, reference, models.load(RECORDS[model], checkpoint=path))
        return runs[model]

    return get


@pytest.mark.parametrize("model", sorted(RECORDS))
def test_state_dict_keys_and_shapes_are_timms(model):
    network = loading.build_network(models.get(RECORDS[model]))
    assert network.expected_state_dict_shapes() == reference_shapes("timm_shapes", model)


# PiT: the strided patch convolution, the positional map, the class token through stages whose depthwise
# channel-doubling pooling and token/map round trips must keep the pixels' order; Visformer: the stem, patch
# embeddings, grouped 3x3 convolutions, attention on maps, batch norms everywhere.
@pytest.mark.parametrize("model", sorted(RECORDS))
def test_logits_and_input_gradients_equal_timms(model, oracle):
    _, x, weights, reference, classifier = oracle(model)
    ours, our_gradient = ours_logits_and_gradient(classifier, x, weights)
    assert relative(ours, reference["logits"]) < 1e-4
    # Compared in L2 norm, as the torchvision ports are (pixel by pixel, float32 gradients differ at rounding level).
    # Both networks here are well conditioned (layer norms; calibrated batch norms), so the bound is far below the
    # order-one error of a wrong padding, head split, kernel layout or token order.
    error = np.linalg.norm(our_gradient - reference["gradient"]) / np.linalg.norm(reference["gradient"])
    assert error < 1e-4


def test_pit_taps_equal_timms_blocks_and_stage_maps(oracle):
    _, x, _, reference, classifier = oracle("pit_b_224")
    outputs = classifier.outputs(tf.constant(x), features=["transformers.1.blocks.5", "transformers.1", "norm",
                                                           "late"])
    tokens = reference["transformers.1.blocks.5"]
    assert tokens.shape == (2, 1 + 16 * 16, 512)
    assert relative(outputs.features["transformers.1.blocks.5"].numpy(), tokens) < 1e-4
    # The stage's map (and "late", the end of the 16 px stage): the last block's tokens without the class token,
    # pixels in row-major order (NHWC).
    for tap in ("transformers.1", "late"):
        assert relative(outputs.features[tap].numpy(), tokens[:, 1:].reshape(2, 16, 16, 512)) < 1e-4
    assert relative(outputs.features["norm"].numpy(), reference["norm"]) < 1e-4


def test_visformer_taps_equal_timms_stage_maps(oracle):
    _, x, _, reference, classifier = oracle("visformer_small")
    outputs = classifier.outputs(tf.constant(x), features=["stage2", "stage3.1", "norm", "late"])
    assert reference["stage2"].shape == (2, 14, 14, 384)
    for tap in TAPS["visformer_small"]:
        assert relative(outputs.features[tap].numpy(), reference[tap]) < 1e-4
    assert relative(outputs.features["late"].numpy(), reference["stage2"]) < 1e-4  # "late": the end of stage2


def test_a_visformer_file_is_refused_by_the_pit_record_in_one_line(oracle):
    path = oracle("visformer_small")[0]
    with pytest.raises(SafetensorsError) as error:
        models.load("timm_pit_b_224", checkpoint=path)
    message = str(error.value)
    assert "\n" not in message and path in message and "'timm_pit_b_224'" in message
    assert "lacks" in message and "cls_token" in message and "another timm PiT variant" in message


def test_records_name_timms_hub_files():
    for model, name in RECORDS.items():
        spec = models.get(name)
        assert spec.architecture == model and spec.source == "safetensors" and spec.image_size == 224
        assert spec.url == f"https://huggingface.co/timm/{model}.in1k/resolve/main/model.safetensors"
        assert spec.preprocessing == "torchvision" and spec.licence == "apache-2.0"
