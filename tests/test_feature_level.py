"""Feature-level objectives (FIA, NAA, ILA, RPA, BFA): NumPy transcriptions of their weights and first step on a tiny network
with one named feature tap, and the contract on a real native network (ResNet-50, random weights)."""

import json
import types

import numpy as np
import pytest
import tensorflow as tf

import real_contract
from tfattack.attacks import AttackConfig, build
from tfattack.attacks.objectives.feature import patch_mask
from tfattack.models.features import FeatureError

H = W = 6
K = 4
EPS = 8 / 255


class TinyFeatureNet(tf.Module):
    """f = relu(x @ A) per pixel (the tap "f"), logits = mean over pixels of f^2 @ B."""

    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.a = rng.normal(size=(3, K)).astype(np.float32)
        self.b = rng.normal(size=(K, 1000)).astype(np.float32)
        self.spec = types.SimpleNamespace(name="tiny", architecture="tiny")

    def feature_tap(self, tap):
        if tap not in ("f", "mid"):
            raise FeatureError(f"model 'tiny' has no feature tap {tap!r}")
        return "f"

    def outputs(self, images, features=()):
        f = tf.nn.relu(tf.einsum("nhwc,ck->nhwk", images, self.a))
        logits = tf.reduce_mean(f * f, axis=[1, 2]) @ self.b
        return types.SimpleNamespace(logits=logits, aux=None, features={t: f for t in features})

    def __call__(self, images):
        return self.outputs(images).logits

    # NumPy transcriptions
    def f(self, x):
        return np.maximum(x @ self.a, 0)

    def logit_gradient_at_f(self, x, labels):
        """d z_y / d f = 2 f B[:, y] / (H W)."""
        return 2 * self.f(x) * self.b[:, labels].T[:, None, None, :] / (H * W)

    def softmax_gradient_at_f(self, x, labels):
        f = self.f(x)
        z = (f * f).mean(axis=(1, 2)) @ self.b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        # d p_y / d z = p_y (e_y - p); d z_j / d f = 2 f B[:, j] / (H W)
        dz = p[np.arange(len(labels)), labels][:, None] * (np.eye(1000)[labels] - p)
        return 2 * f * (dz @ self.b.T)[:, None, None, :] / (H * W)

    def ce_gradient(self, x, labels):
        """d CE(z(x), y) / dx."""
        f = self.f(x)
        z = (f * f).mean(axis=(1, 2)) @ self.b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        df = 2 * f * ((p - np.eye(1000)[labels]) @ self.b.T)[:, None, None, :] / (H * W)
        return (df * (x @ self.a > 0)) @ self.a.T

    def step_direction(self, x, weights):
        """d/dx mean(f(x) * weights) for f = relu(x A)."""
        active = (x @ self.a > 0).astype(np.float32)
        return ((weights * active) @ self.a.T) / weights[0].size


def unit(t):
    return t / np.sqrt((t ** 2).sum(axis=(1, 2, 3), keepdims=True))


@pytest.fixture
def tiny():
    rng = np.random.default_rng(5)
    return TinyFeatureNet(), rng.uniform(0.2, 0.8, (2, H, W, 3)).astype(np.float32), np.array([3, 11])


def first_step(model, x, y, objective, seed=0):
    return build(eps=EPS, steps=1, objective=objective, seed=seed)(model, x, y).numpy()


def test_fia_first_step_equals_its_formula(tiny):
    model, x, y = tiny
    samples, drop, seed = 5, 0.3, 7
    keep = (tf.random.Generator.from_seed(seed).uniform([samples, *x.shape]).numpy() >= drop).astype(np.float32)
    delta = sum(model.logit_gradient_at_f(x * keep[n], y) for n in range(samples))
    weights = -unit(delta)
    expected = np.clip(x + EPS * np.sign(model.step_direction(x, weights)), 0, 1)
    adv = first_step(model, x, y, f"fia:layer=f,samples={samples},drop={drop}", seed)
    np.testing.assert_allclose(adv, expected, atol=1e-6)


def test_naa_first_step_equals_its_formula(tiny):
    model, x, y = tiny
    samples, gamma = 4, 0.5
    attribution = sum(model.softmax_gradient_at_f((1 - k / samples) * x, y) for k in range(samples))
    weights = -unit(attribution)
    attributed = (model.f(x) - model.f(np.zeros_like(x[:1]))) * weights
    # d/dx of mean(relu(A) - gamma relu(-A)) with A = (f - f0) w: the slope is 1 where A > 0 and gamma where A < 0
    slope = np.where(attributed > 0, 1.0, gamma)
    expected = np.clip(x + EPS * np.sign(model.step_direction(x, weights * slope)), 0, 1)
    adv = first_step(model, x, y, f"naa:layer=f,samples={samples},gamma={gamma},noise=0")
    np.testing.assert_allclose(adv, expected, atol=1e-6)


@pytest.mark.parametrize("patch", [1, 3, 4])
def test_rpa_masks_replace_the_share_of_cells_asked_for(patch):
    shape, share = [2, 14, 15, 3], 0.3
    mask = patch_mask(shape, patch, share, tf.constant([4, 2])).numpy()
    changed = mask < 1
    assert np.all((mask > 0) & (mask <= 1))
    if patch == 1:  # a Bernoulli draw per pixel and channel
        assert 0.15 < changed.mean() < 0.45
        return
    rows, cols = 14 // patch, 15 // patch
    assert not changed[:, rows * patch:].any() and not changed[:, :, cols * patch:].any()  # past the last cell: 1
    cells = changed[:, :rows * patch, :cols * patch].reshape(2, rows, patch, cols, patch, 3)
    whole = cells.all(axis=(2, 4))
    assert np.array_equal(whole, cells.any(axis=(2, 4)))  # a cell is replaced as a whole (U(0,1) < 1 almost surely)
    assert np.all(whole.sum(axis=(1, 2, 3)) == int(rows * cols * 3 * share))  # exactly that share, per image
    np.testing.assert_array_equal(mask, patch_mask(shape, patch, share, tf.constant([4, 2])).numpy())


def test_rpa_first_step_equals_its_formula(tiny):
    model, x, y = tiny
    samples, seed, patches = 4, 3, (1, 2)
    base = tf.random.Generator.from_seed(seed).uniform_full_int([2], dtype=tf.int32)
    masks = [patch_mask(list(x.shape), patches[n % 2], 0.3, base + tf.constant([0, n])).numpy() for n in range(samples)]
    weights = -unit(sum(model.softmax_gradient_at_f(x * masks[n], y) for n in range(samples)))
    expected = np.clip(x + EPS * np.sign(model.step_direction(x, weights)), 0, 1)
    adv = first_step(model, x, y, f"rpa:layer=f,samples={samples},patches=1+2", seed)
    np.testing.assert_allclose(adv, expected, atol=1e-6)
    chunked = build(eps=EPS, steps=1, objective=f"rpa:layer=f,samples={samples},patches=1+2", seed=seed,
                    copies_per_pass=3)(model, x, y).numpy()
    np.testing.assert_allclose(chunked, adv, atol=1e-6)  # the masks are a function of the seed and copy only


def test_bfa_first_step_equals_its_formula(tiny):
    model, x, y = tiny
    samples, eta = 3, 0.5
    fitted, total = x.astype(np.float64), 0.0
    for _ in range(samples):
        fitted = x + eta * unit(model.ce_gradient(fitted, y))
        total = total + model.logit_gradient_at_f(fitted, y)
    expected = np.clip(x + EPS * np.sign(model.step_direction(x, -unit(total))), 0, 1)
    adv = first_step(model, x, y, f"bfa:layer=f,samples={samples},eta={eta}")
    np.testing.assert_allclose(adv, expected, atol=1e-6)


def test_chunked_passes_give_the_same_weights(tiny):
    model, x, y = tiny
    whole = build(eps=EPS, steps=2, objective="fia:layer=f,samples=5")(model, x, y).numpy()
    chunked = build(eps=EPS, steps=2, objective="fia:layer=f,samples=5", copies_per_pass=2)(model, x, y).numpy()
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_targeted_unknown_tap_and_no_taps_are_one_line(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="objective 'fia' is an untargeted method"):
        build("fia", steps=1)(model, x, y, target=y)
    with pytest.raises(FeatureError, match="model 'tiny' has no feature tap 'Mixed_5b'"):
        build("fia", steps=1, objective="fia:layer=Mixed_5b")(model, x, y)

    class Plain(tf.Module):
        def __call__(self, images):
            return tf.reduce_mean(images, axis=[1, 2]) @ tf.ones([3, 1000])

    with pytest.raises(ValueError, match="objective 'naa': model .* has no named feature taps"):
        build("naa", steps=1)(Plain(), x, y)


@pytest.mark.parametrize("preset", ["fia", "naa", "ila", "rpa", "bfa"])
def test_presets_keep_the_contract_on_a_real_network(preset):
    resnet = real_contract.resnet()
    cheap = "ila:base_steps=2" if preset == "ila" else f"{preset}:samples=3"
    attack = build(preset, eps=EPS, steps=2, objective=cheap)
    real_contract.check_contract(attack, resnet, real_contract.images(), np.array([3, 7]))
    assert AttackConfig.from_dict(json.loads(json.dumps(attack.config.to_dict()))) == attack.config
    assert attack.config.objective.tap(resnet) == "resnet_v2_50/block2"


@pytest.mark.parametrize("mode", ["margin", "temperature"])
def test_logit_margin_first_targeted_step_equals_its_formula(mode):
    """One targeted step on a linear model: descend CE(z / s, t), s = the stop-gradient top-2 gap or T."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(H * W * 3, 1000)).astype(np.float32) * 0.05
    x = rng.uniform(0.2, 0.8, (2, H, W, 3)).astype(np.float32)
    targets = np.array([5, 9])

    class Linear(tf.Module):
        def __call__(self, images):
            return tf.reshape(images, [images.shape[0], -1]) @ w

    z = x.reshape(2, -1) @ w
    top = np.sort(z, axis=1)[:, ::-1]
    scale = (top[:, 0] - top[:, 1])[:, None] if mode == "margin" else 2.0
    p = np.exp(z / scale - (z / scale).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_loss_d_z = (p - np.eye(1000)[targets]) / scale          # d CE(z / s, t) / d z with s held constant
    gradient = (d_loss_d_z @ w.T).reshape(x.shape)
    expected = np.clip(x - EPS * np.sign(gradient), 0, 1)
    adv = build(eps=EPS, steps=1, objective=f"logit_margin:{mode},temperature=2.0")(Linear(), x, targets,
                                                                                    target=targets).numpy()
    np.testing.assert_allclose(adv, expected, atol=1e-6)


def test_ila_first_step_equals_its_formula(tiny):
    """Guide: 2 MI-FGSM steps on the cross-entropy; then one step up the projection onto the guide's feature change."""
    model, x, y = tiny

    guide, momentum = x.copy(), np.zeros_like(x)
    for _ in range(2):
        g = model.ce_gradient(guide, y)
        momentum = momentum + g / np.abs(g).mean(axis=(1, 2, 3), keepdims=True)
        guide = np.clip(np.clip(guide + EPS / 2 * np.sign(momentum), x - EPS, x + EPS), 0, 1)
    change = model.f(guide) - model.f(x)
    direction = change / (change ** 2).sum(axis=(1, 2, 3), keepdims=True)
    expected = np.clip(x + EPS * np.sign(model.step_direction(x, direction)), 0, 1)
    adv = first_step(model, x, y, "ila:layer=f,base_steps=2")
    np.testing.assert_allclose(adv, expected, atol=1e-6)
    with pytest.raises(ValueError, match="objective 'ila' works in the L-inf ball only"):
        build("ila", steps=1, norm="l2", eps=0.5)(model, x, y)


@pytest.mark.parametrize("flags, message", [
    (["--attack=mi_fgsm", "--objective=fia:layer=Mixed_9z"],
     "--attack=mi_fgsm: model 'efficientnet_lite0' has no feature tap 'Mixed_9z'"),
    (["--attack=mi_fgsm", "--objective=ila", "--norm=l2"],
     "--attack=mi_fgsm: objective 'ila' works in the L-inf ball only"),
    (["--attack=fia", "--targeted"], "--attack=fia: objective 'fia' is an untargeted method"),
])
def test_the_script_checks_feature_objectives_before_any_work(tmp_path, flags, message):
    from test_attack_script import error_line, make_input, run_attack

    images, _ = make_input(tmp_path, 1)
    out = tmp_path / "out"
    result = run_attack(f"--input_dir={images}", f"--output_dir={out}", "--models=efficientnet_lite0",
                        "--num_iter=1", *flags)
    assert result.returncode == 2 and message in error_line(result), result.stderr[-2000:]
    assert not out.exists()
