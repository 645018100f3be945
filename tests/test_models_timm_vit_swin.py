"""timm's ViT-B/16, DeiT-S/16 and Swin-T against timm itself (the test-only oracle of requirements-oracles.txt, run
in its own process by tests/torch_oracle.py): the same state-dict keys and shapes; the same logits, input gradients
and block/stage outputs for the same (random) weights, read from the safetensors file timm's state dict was written
to; Swin files in the hub's former layout (with the buffers timm then saved); the loader's errors; the records.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfattack.models as models
from tfattack.models import loading
from tfattack.models import timm_swin
from tfattack.models.safetensors_file import SafetensorsError
from torch_reference import needs, random_inputs, relative, run_oracle

pytestmark = needs("torch", "timm")

# record -> (timm model, images per batch, module outputs the oracle keeps -> our end points or aliases equal to them).
# One image for ViT-B, the slowest; two elsewhere, so that the class token's broadcast and Swin's windows of
# several images are checked.
MODELS = {
    "timm_vit_base_patch16_224": ("vit_base_patch16_224", 1, {"blocks.5": "mid", "norm": "norm"}),
    "timm_deit_small_patch16_224": ("deit_small_patch16_224", 2, {"blocks.2": "early", "blocks.11": "blocks.11"}),
    "timm_swin_tiny_patch4_window7_224": ("swin_tiny_patch4_window7_224", 2,
                                          {"layers.1": "mid", "layers.3": "layers.3", "norm": "norm"}),
}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """One oracle run per model, shared by the tests: record -> (weight file, images, logit weights, reference)."""
    runs = {}

    def run(record):
        if record not in runs:
            model, count, taps = MODELS[record]
            directory = tmp_path_factory.mktemp(record)
            x, weights = random_inputs(7, count=count)
            reference = run_oracle(directory, "timm", model, x, weights, options=[f"--taps={','.join(taps)}"])
            runs[record] = (str(directory / "weights.safetensors"), x, weights, reference)
        return runs[record]

    return run


def file_shapes(path):
    """Key -> shape of every tensor in a safetensors file."""
    from safetensors import safe_open

    with safe_open(path, "np") as file:
        return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}


@pytest.mark.parametrize("record", sorted(MODELS))
def test_state_dict_keys_and_shapes_are_timms(record, oracle):
    # The oracle's file is timm's own state dict (what `timm_shapes` lists), so no further timm process is needed.
    network = loading.build_network(models.get(record))
    assert network.expected_state_dict_shapes() == file_shapes(oracle(record)[0])


@pytest.mark.parametrize("record", sorted(MODELS))
def test_logits_input_gradients_and_taps_equal_timms(record, oracle):
    path, x, weights, reference = oracle(record)
    taps = MODELS[record][2]
    classifier = models.load(record, checkpoint=path)
    x = tf.constant(x)
    with tf.GradientTape() as tape:  # logits, gradient and taps of one forward pass
        tape.watch(x)
        outputs = classifier.outputs(x, features=list(taps.values()))
        total = tf.reduce_sum(outputs.logits * weights)
    assert relative(outputs.logits.numpy(), reference["logits"]) < 1e-4
    # In L2 norm over the batch (as the torchvision ports' test): a wrong token order, window shift or mask is off by
    # order one; these networks have no ReLU kinks, so float32 rounding alone is far below the bound.
    gradient = tape.gradient(total, x).numpy()
    assert np.linalg.norm(gradient - reference["gradient"]) / np.linalg.norm(reference["gradient"]) < 1e-4
    for module, tap in taps.items():
        assert outputs.features[tap].shape == reference[module].shape
        assert relative(outputs.features[tap].numpy(), reference[module]) < 1e-4


HUB_LAYOUT = """
import sys
import timm, torch
from safetensors.torch import load_file, save_file
source, target = sys.argv[1:3]
model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
state = load_file(source)
model.load_state_dict(state)
state.update({k: v.contiguous() for k, v in model.named_buffers()
              if k.endswith(("relative_position_index", "attn_mask"))})
save_file(state, target)
"""


def hub_layout_file(path, tmp_path):
    """The state dict at `path` plus the buffers timm once saved with it (the layout of the hub's Swin files), as
    timm's model computes them."""
    target = str(tmp_path / "hub_layout.safetensors")
    done = subprocess.run([sys.executable, "-c", HUB_LAYOUT, path, target], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def test_a_swin_file_with_timms_former_buffers_loads_and_checks_them(oracle, tmp_path):
    from safetensors.numpy import load_file, save_file

    path, x, _, reference = oracle("timm_swin_tiny_patch4_window7_224")
    target = hub_layout_file(path, tmp_path)
    state = load_file(target)
    masks = sorted(k for k in state if k.endswith("attn_mask"))
    # Stage 3's 7x7 map is a single window: none of its blocks shifts.
    assert masks == [f"layers.{s}.blocks.{b}.attn_mask" for s, b in [(0, 1), (1, 1), (2, 1), (2, 3), (2, 5)]]
    ours = timm_swin.buffers()  # the port's relative position indices and masks are timm's
    assert set(ours) == {k for k in state if k.endswith(("relative_position_index", "attn_mask"))}
    for key, value in ours.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    logits = models.load("timm_swin_tiny_patch4_window7_224", checkpoint=target)(x).numpy()
    assert relative(logits, reference["logits"]) < 1e-4
    state["layers.2.blocks.3.attn_mask"] = state["layers.2.blocks.1.attn_mask"][::-1].copy()
    save_file(state, target)
    with pytest.raises(SafetensorsError) as error:
        models.load("timm_swin_tiny_patch4_window7_224", checkpoint=target)
    message = str(error.value)
    assert "\n" not in message and target in message and "layers.2.blocks.3.attn_mask" in message


def test_a_swin_file_given_to_the_vit_record_is_refused_in_one_line(oracle):
    path, *_ = oracle("timm_swin_tiny_patch4_window7_224")
    with pytest.raises(SafetensorsError) as error:
        models.load("timm_vit_base_patch16_224", checkpoint=path)
    message = str(error.value)
    assert "\n" not in message and path in message and "'timm_vit_base_patch16_224'" in message
    assert "lacks" in message and "cls_token" in message and "another Vision Transformer" in message


def test_records_say_where_timms_files_are_and_how_they_score():
    vit, deit, swin = (models.get(name) for name in MODELS)
    assert vit.url == ("https://huggingface.co/timm/vit_base_patch16_224.augreg_in21k_ft_in1k/resolve/main/"
                       "model.safetensors")
    assert deit.url == "https://huggingface.co/timm/deit_small_patch16_224.fb_in1k/resolve/main/model.safetensors"
    assert swin.url == ("https://huggingface.co/timm/swin_tiny_patch4_window7_224.ms_in1k/resolve/main/"
                        "model.safetensors")
    # timm's ViT-B augreg weights take [-1, 1] inputs (mean = std = 0.5); DeiT and Swin ImageNet's mean/std.
    assert (vit.preprocessing, deit.preprocessing, swin.preprocessing) == ("inception", "torchvision", "torchvision")
    assert (vit.licence, deit.licence, swin.licence) == ("apache-2.0", "apache-2.0", "mit")
    assert all(s.source == "safetensors" and s.image_size == 224 and s.num_classes == 1000 for s in (vit, deit, swin))
    assert all(s.reference_top1 and "timm's results table" in s.reference_note for s in (vit, deit, swin))
