"""Model-related methods (role `backward`: SGM, BPA) inside the attack loop, on real native networks."""

import json

import numpy as np
import pytest
import tensorflow as tf

import tfattack
from tfattack import backward
from tfattack.attacks import AttackConfig, build, quantize
from tfattack.attacks.loop import surrogate_policy

EPS = 8 / 255


@pytest.fixture(scope="module")
def resnet():
    return tfattack.models.load("resnet_v2_50", random_weights=True)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    pixels = np.round(rng.uniform(25, 230, (2, 299, 299, 3))) / 255  # on the 8-bit grid, as decoded PNGs are
    return pixels.astype(np.float32), np.array([3, 7])


def gradient_under(model, x, y, policy):
    x = tf.constant(x)
    with backward.policy(policy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x)))
    return tape.gradient(loss, x).numpy()


@pytest.mark.parametrize("spec, policy", [
    ("sgm:0.3", backward.Policy(residual_gradient=0.3)),
    ("bpa", backward.Policy(relu="silu", max_pool="softmax", max_pool_temperature=10.0,
                            linear_from="resnet_v2_50/block3/unit_1/bottleneck_v2")),
    ("linbp", backward.Policy(relu="linear", renormalize=True,
                              linear_from="resnet_v2_50/block3/unit_1/bottleneck_v2")),
])
def test_one_step_follows_the_policy_gradient(resnet, images, spec, policy):
    x, y = images
    adv = build(eps=EPS, steps=1, backward=spec)(resnet, x, y).numpy()
    expected = np.clip(x + EPS * np.sign(gradient_under(resnet, x, y, policy)), 0, 1)
    assert np.mean(np.isclose(adv, expected, atol=1e-6)) > 0.999  # signs of near-zero entries may flip
    plain = np.clip(x + EPS * np.sign(gradient_under(resnet, x, y, None)), 0, 1)
    assert np.mean(np.isclose(adv, plain, atol=1e-6)) < 0.99  # the policy really changed the step


def test_the_policy_resolves_each_members_default_layer(resnet):
    lite = tfattack.models.load("efficientnet_lite0", random_weights=True)
    ensemble = tfattack.models.Ensemble([resnet, lite])
    policy = surrogate_policy(ensemble, build("bpa").config)
    assert policy.linear_from == ("resnet_v2_50/block3/unit_1/bottleneck_v2", lite.feature_tap("mid"))
    assert surrogate_policy(resnet, build("mi_fgsm").config) is None
    assert surrogate_policy(resnet, build("mi_fgsm", backward="sgm:1.0").config) is None  # the identity


def test_a_surrogate_without_what_the_policy_needs_is_one_line():
    vgg = tfattack.models.load("vgg_16", random_weights=True)
    with pytest.raises(ValueError, match=r"^backward 'sgm': model 'vgg_16' has no residual additions or DenseNet "
                                         r"concatenations it can act on"):
        build("sgm", steps=1)(vgg, np.zeros((1, 224, 224, 3), np.float32), [1])

    class Plain(tf.Module):
        def __call__(self, x):
            return tf.reduce_mean(x, axis=[1, 2]) @ tf.ones([3, 1000])

    with pytest.raises(ValueError, match="has no ReLUs or max pools it can act on"):
        build("bpa", steps=1)(Plain(), np.zeros((1, 8, 8, 3), np.float32), [1])


@pytest.mark.parametrize("preset", ["sgm", "bpa", "linbp"])
def test_presets_keep_the_contract(resnet, images, preset):
    x, y = images
    attack = build(preset, eps=EPS, steps=2)
    first, second = attack(resnet, x, y).numpy(), attack(resnet, x, y).numpy()
    np.testing.assert_array_equal(first, second)
    assert attack.trace_count == 1
    assert np.abs(first - x).max() <= EPS + 1e-6 and first.min() >= 0 and first.max() <= 1
    legal = quantize(first, x, EPS, "linf")
    assert np.abs(np.round(legal * 255) - np.round(x * 255)).max() <= 8
    config = AttackConfig.from_dict(json.loads(json.dumps(attack.config.to_dict())))
    assert config == attack.config and config.backward == tfattack.attacks.PRESETS[preset].backward


def test_backward_components_compose_and_disagreements_are_named(resnet):
    policy = surrogate_policy(resnet, build("mi_fgsm", backward="sgm:0.5,bpa").config)
    assert policy.residual_gradient == 0.5 and policy.relu == "silu"
    with pytest.raises(ValueError, match="backward components disagree on residual_gradient"):
        surrogate_policy(resnet, build("mi_fgsm", backward="sgm:0.5,sgm:0.3").config)


def test_the_script_takes_backward_specs_and_refuses_a_surrogate_without_residuals(tmp_path):
    from test_attack_script import error_line, make_input, run_attack

    images, _ = make_input(tmp_path, 1)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--models=resnet_v2_50", "--random_weights",
                        "--attack=mi_fgsm", "--backward=sgm:0.5", "--num_iter=1", "--max_epsilon=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["attack_config"]["backward"] == "sgm:gamma=0.5"
    refused = run_attack(f"--input_dir={images}", f"--output_dir={tmp_path / 'vgg'}", "--models=vgg_16",
                         "--random_weights", "--attack=sgm", "--num_iter=1")
    assert refused.returncode == 2
    assert error_line(refused) == ("attack.py: error: --attack=sgm: backward 'sgm': model 'vgg_16' has no residual "
                                   "additions or DenseNet concatenations it can act on (native networks route them "
                                   "through tfattack.backward)")
    assert not (tmp_path / "vgg").exists()


def test_keras_applications_say_they_cannot_honour_a_policy_or_give_taps():
    from tfattack.models.features import FeatureError

    keras_model = tfattack.models.load("keras_resnet50", random_weights=True)
    assert keras_model.introspectable is False
    with pytest.raises(ValueError, match=r"^backward 'sgm': 'keras_resnet50' is built by Keras, whose layers do not "
                                         r"route through tfattack.backward"):
        surrogate_policy(keras_model, build("sgm").config)
    with pytest.raises(FeatureError, match="model 'keras_resnet50' has no feature taps"):
        keras_model.feature_tap("mid")
