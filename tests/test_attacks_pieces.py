"""Each attack piece on its own: NumPy transcriptions of the papers' formulas, identities, exactness."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from hypothesis import given, settings, strategies as st

from tfattack.attacks import AttackConfig, build, gradient_ops, losses, quantize, to_uint8
from tfattack.attacks.estimators import classic as vt_module
from tfattack.attacks.legacy import from_flat
from tfattack.attacks.loop import expand_copies
from tfattack.attacks.transforms import augment as augment_module, classic
from tfattack.attacks.transforms.augment import Augment, augment
from tfattack.attacks.loop import make_gradient_estimator, make_objective
from tfattack.attacks.projection import project

from analytic import CLASSES, LinearModel


def reference_attack(model, clean, labels, eps, steps, momentum=0.0, nesterov=False, si_copies=1,
                     admix_strength=0.0, admix_copies=1, vt_samples=0, vt_offset=None):
    """Plain NumPy transcription of MI/NI (Dong 2018, Lin 2020), SI (Lin 2020), Admix (Wang 2021), VT (Wang & He 2021).

    Batch of two images, so Admix's "other image" is the other one. VT neighbours are x + vt_offset.
    """
    alpha = eps / steps
    partner = clean[::-1]  # placeholder, replaced per step by the other *current* image

    def gradient(x):
        partner = x[::-1]
        total = np.zeros_like(x)
        mixes = [x + admix_strength * partner for _ in range(admix_copies)] if admix_strength else [x]
        for mixed in mixes:
            for i in range(si_copies):
                gamma = 1.0 / 2 ** i
                total += gamma * model.ce_gradient(gamma * mixed, labels)
        return total / (len(mixes) * si_copies)

    del partner
    adv, g, v = clean.copy(), np.zeros_like(clean), np.zeros_like(clean)
    for _ in range(steps):
        point = adv + alpha * momentum * g if nesterov else adv
        grad = gradient(point)
        current = grad
        if vt_samples:
            current = grad + v
            v = np.mean([gradient(adv + vt_offset) for _ in range(vt_samples)], axis=0) - grad
        g = momentum * g + current / np.mean(np.abs(current), axis=(1, 2, 3), keepdims=True)
        adv = adv + alpha * np.sign(g)
        adv = np.clip(adv, np.maximum(clean - eps, 0), np.minimum(clean + eps, 1))
    return adv


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(1)
    model = LinearModel((4, 4, 3))
    clean = rng.uniform(0.2, 0.8, size=(2, 4, 4, 3)).astype(np.float32)
    labels = np.array([3, 7])
    return model, clean, labels


UPDATE_CASES = {
    "i_fgsm": dict(),
    "mi_fgsm": dict(momentum=1.0),
    "ni_fgsm": dict(momentum=1.0, nesterov=True),
    "si_ni_fgsm": dict(momentum=1.0, nesterov=True, si_copies=3),
    "admix": dict(momentum=1.0, si_copies=2, admix_strength=0.2, admix_copies=2),
    "mi_decay_half": dict(momentum=0.5),
}


@pytest.mark.parametrize("case", sorted(UPDATE_CASES))
def test_update_rules_equal_numpy_transcription(linear, case):
    model, clean, labels = linear
    pieces = UPDATE_CASES[case]
    attack = build(eps=0.05, steps=6, **pieces)
    adv = attack(model, clean, labels).numpy()
    expected = reference_attack(model, clean.astype(np.float64), labels, 0.05, 6, **pieces)
    np.testing.assert_allclose(adv, expected, atol=1e-5)
    # The comparison can fail: the plain I-FGSM trajectory differs from each other rule here.
    if pieces:
        plain = reference_attack(model, clean.astype(np.float64), labels, 0.05, 6)
        assert np.abs(plain - expected).max() > 1e-3


@pytest.mark.parametrize("nesterov", [False, True], ids=["vmi", "vni"])
def test_variance_tuning_equals_numpy_transcription(linear, monkeypatch, nesterov):
    model, clean, labels = linear
    offset = 0.05 * 1.5 * np.where(np.arange(clean[0].size).reshape(clean.shape[1:]) % 3 == 0, 1.0, -1.0)
    # Fixed neighbours make the VT recursion checkable; the sampler itself is tested below.
    monkeypatch.setattr(vt_module, "vt_neighbour",
                        lambda images, generator, radius: images + tf.constant(offset, images.dtype))
    attack = build(eps=0.05, steps=6, momentum=1.0, nesterov=nesterov, vt_samples=3, vt_beta=1.5)
    adv = attack(model, clean, labels).numpy()
    expected = reference_attack(model, clean.astype(np.float64), labels, 0.05, 6, momentum=1.0, nesterov=nesterov,
                                vt_samples=3, vt_offset=offset)
    np.testing.assert_allclose(adv, expected, atol=1e-5)
    without_vt = reference_attack(model, clean.astype(np.float64), labels, 0.05, 6, momentum=1.0, nesterov=nesterov)
    assert np.abs(without_vt - expected).max() > 1e-3


def test_vt_neighbours_are_uniform_in_the_box():
    generator = tf.random.Generator.from_seed(3)
    images = tf.zeros([2, 16, 16, 3])
    offsets = gradient_ops.vt_neighbour(images, generator, 0.1).numpy()
    assert offsets.min() >= -0.1 and offsets.max() <= 0.1
    assert offsets.min() < -0.09 and offsets.max() > 0.09  # fills the box
    assert abs(offsets.mean()) < 0.01


def test_fgsm_is_one_step_of_size_eps(linear):
    model, clean, labels = linear
    adv = build("fgsm", eps=0.03)(model, clean, labels).numpy()
    expected = np.clip(clean + 0.03 * np.sign(model.ce_gradient(clean.astype(np.float64), labels)), 0, 1)
    np.testing.assert_allclose(adv, expected, atol=1e-6)


def test_targeted_descends_the_target_loss(linear):
    model, clean, labels = linear
    targets = np.array([500, 9])
    adv = build("fgsm", eps=0.03)(model, clean, labels, target=targets).numpy()
    expected = np.clip(clean - 0.03 * np.sign(model.ce_gradient(clean.astype(np.float64), targets)), 0, 1)
    np.testing.assert_allclose(adv, expected, atol=1e-6)


# ---------------------------------------------------------------- the gradient reaching the update

class TinyConvNet(tf.Module):
    """A smooth (tanh) conv net with random weights, for finite differences."""

    def __init__(self, seed=0, classes=CLASSES):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.conv = tf.constant(rng.normal(0, 0.5, [3, 3, 3, 4]), tf.float32)
        self.dense = tf.constant(rng.normal(0, 0.5, [4, classes]), tf.float32)

    def __call__(self, images):
        hidden = tf.tanh(tf.nn.conv2d(images, self.conv, 1, "SAME"))
        return tf.reduce_mean(hidden, axis=[1, 2]) @ self.dense * 4.0


def test_gradient_reaching_update_equals_finite_differences():
    model = TinyConvNet()
    config = from_flat(dict(si_copies=2, ti_kernel=3, ti_nsig=1.0))
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(1, 5, 5, 3))
    labels = tf.constant([4])
    objective = make_objective(model, config)
    estimate = make_gradient_estimator(model, config)
    generator = tf.random.Generator.from_seed(0)
    gradient = estimate(tf.constant(x, tf.float32), labels, None, generator).numpy()[0]

    def mean_over_copies(values):  # SI copies x, x/2 (deterministic)
        batch = tf.constant(np.concatenate([values, values / 2]), tf.float32)
        return float(tf.reduce_sum(objective(batch, tf.constant([4, 4]), None))) / 2

    h = 1e-2
    numeric = np.zeros_like(x[0])
    for index in np.ndindex(*x.shape[1:]):
        up, down = x.copy(), x.copy()
        up[(0,) + index] += h
        down[(0,) + index] -= h
        numeric[index] = (mean_over_copies(up) - mean_over_copies(down)) / (2 * h)
    kernel = gradient_ops.gaussian_kernel(3, 1.0)
    smoothed = np.stack([scipy.ndimage.convolve(numeric[..., c], kernel, mode="constant") for c in range(3)], -1)
    np.testing.assert_allclose(gradient, smoothed, rtol=2e-2, atol=2e-4)


@pytest.mark.parametrize("per_pass", [1, 2, 4])
@pytest.mark.parametrize("pieces", [dict(si_copies=3, admix_strength=0.2, admix_copies=2, diversity_prob=0.7),
                                    dict(si_copies=2, num_copies=3, augmentations=("flip", "noise", "jpeg")),
                                    dict(si_copies=5, loss="cw")])
def test_copies_per_pass_gives_the_same_gradient(pieces, per_pass):
    """The chunked estimate (a few copies per pass, then back through the copy transforms) equals the
    one-pass estimate: same random draws, same copies, same chain rule; targeted and untargeted."""
    model = TinyConvNet()
    x = tf.constant(np.random.default_rng(1).uniform(0.1, 0.9, size=(2, 6, 6, 3)), tf.float32)
    for labels, targets in ((tf.constant([4, 1]), None), (tf.constant([4, 1]), tf.constant([2, 3]))):
        whole, chunked = (make_gradient_estimator(model, from_flat(dict(ti_kernel=3, copies_per_pass=n, **pieces)))
                          for n in (0, per_pass))
        expected = whole(x, labels, targets, tf.random.Generator.from_seed(5)).numpy()
        got = tf.function(chunked)(x, labels, targets, tf.random.Generator.from_seed(5)).numpy()
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_copies_per_pass_must_be_a_count():
    with pytest.raises(ValueError, match="copies_per_pass must be an integer >= 0"):
        build(copies_per_pass=-1)


# ---------------------------------------------------------------- TI and the perturbation blur

def test_gaussian_kernel_matches_its_formula():
    for size, nsig in [(7, 3.0), (15, 3.0), (5, 2.0)]:
        grid = np.linspace(-nsig, nsig, size)
        expected = np.outer(np.exp(-grid ** 2 / 2), np.exp(-grid ** 2 / 2))
        np.testing.assert_allclose(gradient_ops.gaussian_kernel(size, nsig), expected / expected.sum(), rtol=1e-5)
    np.testing.assert_array_equal(gradient_ops.gaussian_kernel(1), [[1.0]])


@pytest.mark.parametrize("size", [3, 7, 15])
def test_ti_smoothing_equals_explicit_convolution(size):
    gradient = np.random.default_rng(size).normal(size=(2, 20, 18, 3)).astype(np.float32)
    kernel = gradient_ops.gaussian_kernel(size, 3.0)
    smoothed = gradient_ops.smooth(tf.constant(gradient), kernel).numpy()
    expected = np.zeros_like(gradient)
    for n in range(2):
        for c in range(3):
            expected[n, :, :, c] = scipy.ndimage.convolve(gradient[n, :, :, c], kernel, mode="constant")
    np.testing.assert_allclose(smoothed, expected, atol=1e-5)


def test_ti_one_by_one_is_identity():
    gradient = tf.random.normal([2, 6, 6, 3])
    assert gradient_ops.smooth(gradient, gradient_ops.gaussian_kernel(1)) is gradient


def test_l1_normalisation_is_per_image_and_keeps_zeros():
    gradient = tf.constant(np.stack([np.full((2, 2, 3), 2.0), np.zeros((2, 2, 3))]), tf.float32)
    normalised = gradient_ops.normalize_l1(gradient).numpy()
    np.testing.assert_allclose(normalised[0], 1.0)
    np.testing.assert_array_equal(normalised[1], 0.0)


def test_perturbation_blur_smooths_and_stays_in_the_ball(linear):
    model, clean, labels = linear
    blurred = build("mi_fgsm", eps=0.05, steps=3, delta_blur_kernel=3)(model, clean, labels).numpy()
    plain = build("mi_fgsm", eps=0.05, steps=3)(model, clean, labels).numpy()
    assert np.abs(blurred - clean).max() <= 0.05 + 1e-6
    assert np.abs(blurred - plain).max() > 1e-3


# ---------------------------------------------------------------- input transforms

def _images(shape=(2, 16, 16, 3), seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(size=shape), tf.float32)


def test_identity_settings_are_identity():
    images = _images()
    generator = tf.random.Generator.from_seed(0)
    assert classic.diverse_input(images, generator, 0.0) is images
    np.testing.assert_array_equal(classic.scale_copies(images, 1), images)
    admixed = classic.admix_copies(images, generator, 3, 0.0)
    np.testing.assert_array_equal(admixed, tf.concat([images] * 3, 0))
    copies, count = expand_copies(images, generator, AttackConfig(), 2)
    assert count == 1
    np.testing.assert_array_equal(copies, images)


def test_scale_copies_are_powers_of_two():
    images = _images()
    copies = classic.scale_copies(images, 5).numpy().reshape(5, 2, 16, 16, 3)
    for i in range(5):
        np.testing.assert_allclose(copies[i], images.numpy() / 2 ** i)


def test_admix_mixes_in_another_image_of_the_batch():
    images = _images((4, 8, 8, 3))
    mixed = classic.admix_copies(images, tf.random.Generator.from_seed(0), 6, 0.2).numpy()
    x = images.numpy()
    for copy in mixed.reshape(6, 4, 8, 8, 3):
        other = (copy - x) / 0.2
        shift = [k for k in range(1, 4) if np.allclose(other, np.roll(x, k, axis=0), atol=1e-5)]
        assert len(shift) == 1  # a rolled batch: every image gets a different one


def test_expand_copies_counts_admix_si_and_views():
    config = from_flat(dict(admix_strength=0.2, admix_copies=3, si_copies=5, num_copies=2, diversity_prob=0.5))
    copies, count = expand_copies(_images((2, 8, 8, 3)), tf.random.Generator.from_seed(0), config, 2)
    assert count == 30 and copies.shape == (60, 8, 8, 3)


def test_diverse_input_equals_resize_and_pad_with_the_same_draws():
    images = _images((2, 32, 32, 3))
    for seed in range(4):
        output = classic.diverse_input(images, tf.random.Generator.from_seed(seed), 1.0).numpy()
        draws = tf.random.Generator.from_seed(seed)  # replay the draws in the documented order
        canvas = int(32 * 330 / 299)
        rnd = int(draws.uniform([], 32, canvas, dtype=tf.int32))
        top = int(draws.uniform([], 0, canvas - rnd, dtype=tf.int32))
        left = int(draws.uniform([], 0, canvas - rnd, dtype=tf.int32))
        resized = tf.image.resize(images, [rnd, rnd], method="nearest")
        padded = tf.pad(resized, [[0, 0], [top, canvas - rnd - top], [left, canvas - rnd - left], [0, 0]])
        expected = tf.image.resize(padded, [32, 32], method="bilinear").numpy()
        np.testing.assert_allclose(output, expected, atol=1e-6)


def test_diverse_input_probability_is_per_batch():
    images = _images((2, 16, 16, 3))
    generator = tf.random.Generator.from_seed(0)
    changed = [not np.array_equal(classic.diverse_input(images, generator, 0.5), images) for _ in range(200)]
    assert 0.35 < np.mean(changed) < 0.65


AUGMENTATION_IDENTITIES = {
    "noise": dict(noise_std=0.0),
    "brighten": dict(brightness_delta=0.0),
    "rotate": dict(rotate_degrees=0.0),
    "translate": dict(translate_fraction=0.0),
    "scale": dict(scale_range=(1.0, 1.0)),
    "dct_lowpass": dict(dct_keep=1.0),
    "dropout": dict(dropout_rate=0.0),
    "gaussian_filter": dict(filter_kernel=1),
}


@pytest.mark.parametrize("name", sorted(augment_module.AUGMENTATION_FUNCTIONS))
def test_augmentation_shape_range_gradient_and_identity(name):
    images = _images((3, 16, 16, 3))
    config = Augment(ops=(name,))
    with tf.GradientTape() as tape:
        tape.watch(images)
        output = augment(images, tf.random.Generator.from_seed(0), config)
        total = tf.reduce_sum(output * tf.range(16, dtype=tf.float32)[None, None, :, None])
    gradient = tape.gradient(total, images)
    assert output.shape == images.shape and output.dtype == tf.float32
    assert float(tf.reduce_min(output)) >= -1e-6 and float(tf.reduce_max(output)) <= 1 + 1e-6
    assert gradient is not None and np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).sum() > 0
    assert not np.allclose(output, images, atol=1e-4)  # the default strength does something
    if name in AUGMENTATION_IDENTITIES:
        same = augment(images, tf.random.Generator.from_seed(0),
                                        Augment(ops=(name,), **AUGMENTATION_IDENTITIES[name]))
        np.testing.assert_allclose(same, images, atol=2e-5)
    never = augment(images, tf.random.Generator.from_seed(0),
                                     Augment(ops=(name,), prob=0.0))
    np.testing.assert_array_equal(never, images)


def test_straight_through_augmentations_pass_the_gradient_unchanged():
    images = _images((2, 16, 16, 3))
    for name in ("jpeg", "bit_depth"):
        with tf.GradientTape() as tape:
            tape.watch(images)
            output = augment(images, tf.random.Generator.from_seed(0), Augment(ops=(name,)))
        np.testing.assert_array_equal(tape.gradient(output, images), np.ones(images.shape))
    squeezed = augment(images, None, Augment(ops=("bit_depth",), bit_depth=2)).numpy()
    assert set(np.round(np.unique(squeezed) * 3, 4)) <= {0.0, 1.0, 2.0, 3.0}


def test_dct_lowpass_removes_high_frequencies():
    rows = np.arange(16)
    high = np.cos(np.pi * (rows + 0.5) * 12 / 16)  # DCT-II basis 12 of 16: above the kept half
    low = np.cos(np.pi * (rows + 0.5) * 3 / 16)
    image = 0.5 + 0.2 * high[:, None] + 0.2 * low[None, :]
    batch = tf.constant(np.tile(image[None, :, :, None], [1, 1, 1, 3]), tf.float32)
    output = augment(batch, None, Augment(ops=("dct_lowpass",))).numpy()
    expected = np.tile((0.5 + 0.2 * low[None, :])[None, :, :, None], [1, 16, 1, 3])
    np.testing.assert_allclose(output, expected, atol=1e-5)


def test_augment_one_mode_picks_one_per_image():
    images = _images((8, 16, 16, 3))
    config = Augment(ops=("flip", "darken"), mode="one", brightness_delta=0.5)
    output = augment(images, tf.random.Generator.from_seed(1), config).numpy()
    x = images.numpy()
    for image, result in zip(x, output):
        flipped = np.allclose(result, image) or np.allclose(result, image[:, ::-1])
        darkened = np.all(result <= image + 1e-6)
        assert flipped or darkened


# ---------------------------------------------------------------- losses

def _np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_losses_equal_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 10)).astype(np.float32)
    y = np.array([1, 2, 3, 4])
    t = np.array([5, 6, 7, 8])
    logits = tf.constant(z)
    rows = np.arange(4)
    ce = -np.log(_np_softmax(z)[rows, y])
    np.testing.assert_allclose(losses.cross_entropy(logits, y), ce, rtol=1e-5)
    smooth = np.full((4, 10), 0.1 / 10)
    smooth[rows, y] += 0.9
    np.testing.assert_allclose(losses.cross_entropy(logits, y, 0.1), -(smooth * np.log(_np_softmax(z))).sum(1), rtol=1e-5)
    others = np.where(np.eye(10)[y] > 0, -np.inf, z).max(1)
    np.testing.assert_allclose(losses.margin(logits, y), others - z[rows, y], rtol=1e-5)
    np.testing.assert_allclose(losses.negative_logit(logits, y), -z[rows, y])
    # Poincare + triplet (Li et al. CVPR 2020)
    u = z / np.abs(z).sum(1, keepdims=True)
    v = np.clip(np.eye(10)[t] - 1e-5, 0, 1)
    d_p = np.arccosh(1 + 2 * ((u - v) ** 2).sum(1) / ((1 - (u ** 2).sum(1)) * (1 - (v ** 2).sum(1))))
    cos = lambda k: 1 - np.abs(z[rows, k]) / np.linalg.norm(z, axis=1)
    po_trip = d_p + 0.01 * np.maximum(cos(t) - cos(y) + 0.007, 0)
    np.testing.assert_allclose(losses.po_trip_targeted(logits, y, t, 0.01, 0.007), po_trip, rtol=1e-4)


@pytest.mark.parametrize("name", ["ce", "cw", "logit", "po_trip"])
def test_objective_directions(name):
    z = tf.constant(np.random.default_rng(1).normal(size=(3, 10)), tf.float32)
    y, t = tf.constant([0, 1, 2]), tf.constant([3, 4, 5])
    objective = from_flat(dict(loss=name)).objective
    untargeted = objective.value(z, y, None).numpy()
    targeted = objective.value(z, y, t).numpy()
    assert untargeted.shape == targeted.shape == (3,)
    # Raising the target logit raises the targeted objective; raising the true logit lowers the untargeted one.
    bump = lambda k: z + 3.0 * tf.one_hot(k, 10)
    assert np.all(objective.value(bump(t), y, t).numpy() > targeted)
    if name != "po_trip":
        assert np.all(objective.value(bump(y), y, None).numpy() < untargeted)


# ---------------------------------------------------------------- projection and 8-bit quantisation

def test_project_is_the_intersection_of_ball_and_box():
    clean = tf.constant([[0.0, 0.5, 1.0, 0.02]])
    images = tf.constant([[-1.0, 0.9, 2.0, 0.0]])
    np.testing.assert_allclose(project(images, clean, 0.1), [[0.0, 0.6, 1.0, 0.0]], atol=1e-7)


def _check_quantized(adv, clean, eps):
    result = quantize(adv, clean, eps)
    pixels = np.round(result.astype(np.float64) * 255)
    assert result.dtype == np.float32 and result.shape == np.shape(adv)
    np.testing.assert_allclose(result * 255, pixels, atol=1e-4)  # on the 8-bit grid
    assert pixels.min() >= 0 and pixels.max() <= 255
    budget = np.round(eps * 255)
    assert np.abs(pixels - np.round(np.asarray(clean, np.float64) * 255)).max() <= budget
    np.testing.assert_array_equal(to_uint8(result), pixels.astype(np.uint8))
    return result


def test_quantize_worst_cases():
    clean = np.array([0, 1, 128, 254, 255, 100, 100, 100], np.float64) / 255
    eps = 16 / 255
    # Just past the budget by less than half a level rounds back outside: quantize must pull it in.
    adv = clean + eps + 0.49 / 255
    adv[5] = clean[5] - eps - 0.499 / 255
    adv[6] = clean[6] + 10 * eps
    adv[7] = clean[7] + eps - 0.5 / 255
    result = _check_quantized(adv.astype(np.float32), clean, eps)
    assert np.round(result[6] * 255) == 116 and np.round(result[5] * 255) == 84
    # A budget that is not a whole number of levels (15.6 -> 16 levels, the validator's rounding).
    _check_quantized((clean + 15.6 / 255).astype(np.float32), clean, 15.6 / 255)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 32))
def test_quantize_random_arrays(seed, eps_pixels):
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 256, size=(2, 5, 5, 3)) / 255
    eps = eps_pixels / 255
    adv = clean + rng.uniform(-2 * eps, 2 * eps, size=clean.shape)
    _check_quantized(adv.astype(np.float32), clean, eps)


def test_quantize_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        quantize(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 3, 3)), 0.1)
