"""torchvision's ResNet family against torchvision itself, the test-only oracle of requirements-oracles.txt, run in
its own process by tests/torch_oracle.py: the same state-dict keys and shapes; the same logits, input gradients and
stage features for the same weights, written by torch.save in its real formats (zip, and the robustness library's
legacy-format training checkpoint); the loader's errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfattack.models as models
from tfattack.models import loading, registry, torchvision_resnet, torchvision_vgg
from tfattack.models.torch_pickle import TorchPickleError
from torch_reference import needs, ours_logits_and_gradient, random_inputs, reference_shapes, relative
from torch_reference import run_oracle as run_reference

pytestmark = needs("torch", "torchvision")


def run_oracle(tmp_path, architecture, *, seed=0, images=None, robustness=False):
    """(weight file path, images, logit weights, reference arrays) from torchvision in a process of its own."""
    x, weights = random_inputs(seed, count=2 if images is None else len(images))
    x = x if images is None else images
    reference = run_reference(tmp_path, "torchvision", architecture, x, weights, seed=seed,
                              options=["--robustness"] if robustness else [])
    return str(tmp_path / ("weights.ckpt" if robustness else "weights.pth")), x, weights, reference


def torchvision_shapes(architecture):
    return reference_shapes("shapes", architecture)


@pytest.mark.parametrize("architecture", sorted(torchvision_resnet.VARIANTS) + list(torchvision_vgg.ARCHITECTURES)
                         + ["mobilenet_v2"])
def test_state_dict_keys_and_shapes_are_torchvisions(architecture):
    spec = next(s for s in models.specs() if s.architecture == architecture)  # tv_*, or robust_* for Wide-ResNet-50-4
    network = loading.build_network(spec)
    assert network.expected_state_dict_shapes() == torchvision_shapes(architecture)


# ResNet-18 (basic blocks), ResNet-50 (bottlenecks), ResNeXt-50 (grouped 3x3), Wide ResNet-50-2 (wider bottlenecks):
# every code path of the family; ResNet-101/152 differ from ResNet-50 in unit counts only (keys checked above).
# VGG-16-BN: VGG's convolutions, pools and NCHW flatten, plus batch norm (VGG-16/19 differ in counts only).
# MobileNetV2: depthwise convolutions with PyTorch's symmetric padding at stride 2, ReLU6, linear bottlenecks.
@pytest.mark.parametrize("architecture", ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg16_bn",
                                          "mobilenet_v2"])
def test_logits_and_input_gradients_equal_torchvisions(architecture, tmp_path):
    path, x, weights, reference = run_oracle(tmp_path, architecture)
    ours, our_gradient = ours_logits_and_gradient(models.load(f"tv_{architecture}", checkpoint=path), x, weights)
    assert relative(ours, reference["logits"]) < 1e-4
    # A random-weight ResNet's float32 input gradient is ill-conditioned (torch's own float32 and float64 gradients
    # disagree at the percent level, pixel by pixel): compared in L2 norm, where a wrong padding, stride, group
    # or shortcut is off by order one.
    error = np.linalg.norm(our_gradient - reference["gradient"]) / np.linalg.norm(reference["gradient"])
    assert error < 3e-2


def test_stage_features_equal_torchvisions_from_a_robustness_checkpoint(tmp_path):
    path, x, _, reference = run_oracle(tmp_path, "resnet50", seed=3, robustness=True)
    classifier = models.load("robust_resnet50_l2_eps3", checkpoint=path)
    outputs = classifier.outputs(tf.constant(x), features=["early", "mid", "layer2.3", "layer4"])
    assert relative(outputs.logits.numpy(), reference["logits"]) < 1e-4
    for tap, stage in [("early", "layer1"), ("mid", "layer2"), ("layer4", "layer4")]:
        assert relative(outputs.features[tap].numpy(), reference[stage]) < 1e-4
    np.testing.assert_array_equal(outputs.features["mid"].numpy(), outputs.features["layer2.3"].numpy())


def test_a_file_of_another_architecture_is_refused_in_one_line(tmp_path):
    path, *_ = run_oracle(tmp_path, "resnet18", images=np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(TorchPickleError) as error:
        models.load("tv_resnet50", checkpoint=path)
    message = str(error.value)
    assert "\n" not in message and path in message and "'tv_resnet50'" in message
    assert "lacks" in message and "layer1.0.downsample.0.weight" in message and "another ResNet-family" in message


def test_records_say_where_the_published_files_are():
    spec = models.get("tv_resnet50_v2")
    assert spec.url == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" and spec.sha256 == "11ad3fa6"
    assert spec.architecture == "resnet50" and spec.preprocessing == "torchvision" and spec.image_size == 224
    assert {s.name for s in models.specs() if s.name.startswith("tv_")} == {
        "tv_resnet18", "tv_resnet50", "tv_resnet50_v2", "tv_resnet101", "tv_resnet152", "tv_resnext50_32x4d",
        "tv_wide_resnet50_2", "tv_vgg16", "tv_vgg16_bn", "tv_vgg19", "tv_mobilenet_v2", "tv_densenet121",
        "tv_inception_v3"}



def test_vgg_end_points_carry_torchvisions_module_indices():
    # torchvision's vgg16.features: ReLU 15 after conv3_3, ReLU 29 after conv5_3, pool 30; vgg19: ReLU 31 after
    # conv5_2; vgg16_bn: ReLU 36 after conv5_1 (conv, batch norm, ReLU per convolution).
    assert torchvision_vgg.relu_name("vgg16", 3, 3) == "features.15"
    assert torchvision_vgg.relu_name("vgg16", 5, 3) == "features.29"
    assert torchvision_vgg.relu_name("vgg19", 5, 2) == "features.31"
    assert torchvision_vgg.relu_name("vgg16_bn", 5, 1) == "features.36"
    classifier = models.load("tv_vgg16", random_weights=True)
    names = classifier.end_point_names()
    assert {"features.15", "features.29", "features.30", "classifier.1", "classifier.4"} <= set(names)
    assert [classifier.feature_tap(a) for a in ("early", "mid", "late")] == ["features.15", "features.22", "features.29"]


@pytest.mark.parametrize("preset", ["sgm", "linbp", "bpa", "ghost", "ilpd", "fia"])
def test_model_related_and_feature_level_presets_act_on_the_torchvision_layers(preset):
    """Each method finds its paper's layer by torchvision's module name and changes the attack (not plain MI)."""
    from tfattack.attacks import build

    classifier = models.load("tv_resnet18", random_weights=True)
    x = np.random.default_rng(5).uniform(0.1, 0.9, (1, 224, 224, 3)).astype(np.float32)
    labels = np.array([7])
    attack = build(preset, eps=4 / 255, steps=2, step_size=2 / 255)
    adv = attack(classifier, x, labels).numpy()
    assert np.abs(adv - x).max() <= 4 / 255 + 1e-6 and attack.trace_count == 1
    plain = build("mi_fgsm", eps=4 / 255, steps=2, step_size=2 / 255)(classifier, x, labels).numpy()
    assert not np.array_equal(adv, plain)


def test_every_published_robustness_file_has_a_record_on_a_zoo_architecture():
    names = {s.name for s in models.specs() if s.name.startswith("robust_")}
    # L2: ResNet-18/50, Wide-ResNet-50-2/4 at 10 eps each; L-inf: ResNet-18/50, Wide-ResNet-50-2 at 5; MobileNet-v2,
    # ResNeXt-50 and VGG-16-BN at L2 eps 0 and 3 (DenseNet, MNASNet, ShuffleNet: architectures not in the zoo).
    assert len(names) == 4 * 10 + 3 * 5 + 3 * 2
    assert {"robust_resnet50_l2_eps0.1", "robust_resnet50_l2_eps3", "robust_resnet50_linf_eps4.0",
            "robust_resnet18_l2_eps3", "robust_wide_resnet50_2_linf_eps8.0", "robust_mobilenet_l2_eps3",
            "robust_vgg16_bn_l2_eps0", "robust_wide_resnet50_4_l2_eps0.01"} <= names
    for name in names:
        spec = models.get(name)
        assert spec.default_location == f"robust_imagenet/{name[len('robust_'):]}.ckpt" and not spec.url
        assert callable(registry.architecture(spec.architecture))
    assert models.get("robust_resnet50_linf_eps4.0").reference_top1 == 63.86


def test_a_mixed_ensemble_of_slim_torchvision_and_robust_models_fuses_and_compiles_once():
    """An official slim adversarially trained Inception (299 px, [-1, 1], 1001 classes) next to torchvision's and the
    robustness library's ResNet-50s (224 px, mean/std): one attack, one trace, inside the eps ball, and reruns
    reproduce it bit for bit (three members: their gradients meet in `fixed_order.fan_out`, not in an `AddN`
    whose order varied from call to call)."""
    import real_contract
    from tfattack.attacks import build

    members = [models.load(name, random_weights=True)
               for name in ("ens3_adv_inception_v3", "tv_resnet50", "robust_resnet50_l2_eps3")]
    ensemble = models.Ensemble(members)
    x = real_contract.images(count=1)
    real_contract.check_contract(build("ti_di_mi_fgsm", eps=8 / 255, steps=2), ensemble, x, np.array([3]), reruns=3)


def test_timms_vit_joins_the_mixed_ensemble_in_one_trace():
    """The same three with timm's ViT-B/16 (tokens, layer norms, [-1, 1] at 224 px): one attack, one trace, inside
    the eps ball and the image range, and reruns reproduce it bit for bit (before `fixed_order`, 6 of 9 reruns in
    one process came out 0.4-0.5 % of pixels a step apart)."""
    from tfattack.attacks import build
    import real_contract

    ensemble = models.Ensemble([models.load(name, random_weights=True) for name in (
        "ens3_adv_inception_v3", "tv_resnet50", "robust_resnet50_l2_eps3", "timm_vit_base_patch16_224")])
    x = real_contract.images(count=1)
    real_contract.check_contract(build("ti_di_mi_fgsm", eps=8 / 255, steps=2), ensemble, x, np.array([3]), reruns=3)
