"""Input-transformation defenses against direct NumPy/SciPy computations, their specs and the wrapper."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from tfattack import defenses


def eight_bit(seed, shape):
    return (np.random.default_rng(seed).integers(0, 256, shape) / 255.0).astype(np.float32)


def smooth(seed, shape):
    """Photo-like 8-bit images: low-frequency colour gradients (JPEG handles them well)."""
    n, h, w, _ = shape
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    channels = [0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.3, 1.0) * x + rng.uniform(0.3, 1.0) * y + rng.uniform()))
                for _ in range(n * 3)]
    image = np.stack(channels, -1).reshape(h, w, n, 3).transpose(2, 0, 1, 3)
    return (np.round(image * 255) / 255).astype(np.float32)


def test_bits8_is_the_identity_on_8bit_data_and_bits_b_rounds_to_b_bits():
    x = eight_bit(0, (2, 20, 30, 3))
    np.testing.assert_array_equal(defenses.parse("bits:8")(x).numpy(), x)
    for bits in (1, 4, 5):
        levels = 2 ** bits - 1
        out = defenses.parse(f"bits:{bits}")(x).numpy()
        np.testing.assert_allclose(out, np.round(x.astype(np.float64) * levels) / levels, atol=1e-7)
        assert len(np.unique(out)) <= levels + 1


def test_jpeg_changes_the_image_but_stays_close_and_works_per_image():
    x = smooth(1, (3, 64, 48, 3))
    out = defenses.parse("jpeg:75")(x).numpy()
    assert out.shape == x.shape and out.dtype == np.float32
    error = np.abs(out - x).mean()
    assert 0 < error < 0.02
    assert np.abs(defenses.parse("jpeg:10")(x).numpy() - x).mean() > error > np.abs(
        defenses.parse("jpeg:100")(x).numpy() - x).mean()
    np.testing.assert_array_equal(defenses.parse("jpeg:75")(x[1:2]).numpy()[0], out[1])
    # The codec's own round trip at the same quality, one image at a time.
    direct = tf.image.decode_jpeg(tf.image.encode_jpeg(tf.constant(np.round(x[2] * 255).astype(np.uint8)), quality=75))
    np.testing.assert_allclose(out[2], direct.numpy() / 255.0, atol=1e-6)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_median_filter_equals_scipy(kernel):
    x = eight_bit(2, (2, 17, 23, 3))
    expected = scipy.ndimage.median_filter(x, size=(1, kernel, kernel, 1), mode="reflect")
    np.testing.assert_array_equal(defenses.parse(f"median:{kernel}")(x).numpy(), expected)


@pytest.mark.parametrize("sigma", [0.5, 1.3, 2.0])
def test_gaussian_blur_equals_scipy(sigma):
    x = eight_bit(3, (2, 21, 19, 3)).astype(np.float64)
    expected = scipy.ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect", truncate=4.0)
    np.testing.assert_allclose(defenses.parse(f"gauss:{sigma}")(x).numpy(), expected, atol=2e-6)


def test_random_resize_pad_shapes_placement_and_per_image_draws():
    x = np.ones((4, 299, 299, 3), np.float32)
    keys = np.array([11, -5, 2 ** 62, 7], np.int64)
    rp = defenses.parse("rp", seed=3)
    first = rp(x, keys).numpy()
    assert first.shape == (4, 331, 331, 3)
    sides = []
    for image, key in zip(first, keys):
        rows, cols = np.flatnonzero(image[..., 0].any(1)), np.flatnonzero(image[..., 0].any(0))
        side = rows.size
        # One filled square of side in [299, 331), the rest zero padding (Xie et al. 2018).
        assert 299 <= side < 331 and cols.size == side
        assert image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].min() == 1.0
        assert image.sum() == side * side * 3
        # The draws, transcribed: three uniforms from the stateless seed (key, seed << 32 | draw 0).
        u = tf.random.stateless_uniform([3], tf.constant([key, 3 << 32], tf.int64)).numpy()
        assert side == 299 + int(np.floor(u[0] * 32))
        assert (rows[0], cols[0]) == (int(np.floor(u[1] * (331 - side))), int(np.floor(u[2] * (331 - side))))
        sides.append((side, rows[0], cols[0]))
    assert len(set(sides)) > 1  # each image its own draw
    # An image's draw is its own: the same on every call, in any batch, at any position.
    np.testing.assert_array_equal(rp(x, keys).numpy(), first)
    np.testing.assert_array_equal(rp(x[2:3], keys[2:3]).numpy(), first[2:3])
    np.testing.assert_array_equal(rp(x[::-1], keys[::-1]).numpy(), first[::-1])
    assert not np.array_equal(defenses.parse("rp", seed=4)(x, keys).numpy(), first)
    # Without keys an image is keyed by its pixels: identical images, identical draws.
    unkeyed = rp(x).numpy()
    assert all(np.array_equal(image, unkeyed[0]) for image in unkeyed)
    np.testing.assert_array_equal(unkeyed, rp(x, defenses.image_keys(x)).numpy())
    assert defenses.parse("rp")(np.ones((1, 256, 200, 3), np.float32)).shape == (1, 283, 221, 3)


def test_image_keys_follow_the_8_bit_pixels_and_id_keys_the_name():
    x = eight_bit(3, (3, 8, 8, 3))
    keys = defenses.image_keys(x).numpy()
    assert keys.dtype == np.int64 and len(set(keys)) == 3
    np.testing.assert_array_equal(defenses.image_keys(x + 0.4 / 255).numpy(), keys)  # the same 8-bit image
    changed = x.copy()
    changed[1, 0, 0, 0] = (round(changed[1, 0, 0, 0] * 255) ^ 1) / 255  # one pixel one level off
    assert defenses.image_keys(changed).numpy().tolist() != keys.tolist()
    assert defenses.image_keys(changed).numpy()[[0, 2]].tolist() == keys[[0, 2]].tolist()
    assert defenses.id_key("0a1b") == defenses.id_key("0a1b") != defenses.id_key("0a1c")
    assert -2 ** 63 <= defenses.id_key("0a1b") < 2 ** 63


def test_random_resize_pad_is_a_nearest_neighbour_copy_of_the_image():
    x = eight_bit(4, (1, 299, 299, 3))
    out = defenses.parse("rp", seed=0)(x).numpy()[0]
    values_in = set(np.round(x.ravel() * 255).astype(int))
    values_out = set(np.round(out.ravel() * 255).astype(int)) - {0}
    assert values_out <= values_in  # nearest neighbour: no new colours


@pytest.mark.parametrize("spec, message", [
    ("foo", "unknown defense 'foo'"),
    ("jpeg", "unknown defense 'jpeg'"),
    ("rp:3", "unknown defense 'rp:3'"),
    ("jpeg:0", "defense 'jpeg:0': quality must be an integer 1-100, got '0'"),
    ("jpeg:hi", "defense 'jpeg:hi': quality must be an integer 1-100, got 'hi'"),
    ("bits:9", "defense 'bits:9': bits must be an integer 1-8, got '9'"),
    ("median:4", "defense 'median:4': kernel size must be odd, got 4"),
    ("gauss:-1", "defense 'gauss:-1': sigma must be a number > 0, got '-1'"),
    ("rs:0.25", "defense 'rs:0.25': rs takes a sigma and a number of noisy copies, e.g. rs:0.25:100"),
    ("rs:0:10", "defense 'rs:0:10': sigma must be a number > 0, got '0'"),
    ("rs:0.5:0", "defense 'rs:0.5:0': noisy copies must be an integer >= 1, got '0'"),
    ("rs:0.5:10+jpeg:75", "defense 'rs:0.5:10+jpeg:75': rs changes the prediction rule and must come last in a stack"),
    ("jpeg:75+", "defense 'jpeg:75+': a stack has an empty part"),
    ("none+rp", "defense 'none+rp': a stack cannot contain none"),
    ("jpeg:75+bits:9", "defense 'bits:9': bits must be an integer 1-8, got '9'"),
])
def test_bad_specs_give_one_line_listing_the_valid_forms(spec, message):
    with pytest.raises(defenses.DefenseError) as err:
        defenses.parse(spec)
    assert str(err.value) == (f"{message}; valid forms: none, jpeg:QUALITY (integer 1-100), bits:BITS (integer 1-8), "
                              f"rp, median:K (odd integer K >= 1), gauss:SIGMA (number > 0), "
                              f"rs:SIGMA:N (sigma > 0, N >= 1 noisy copies), A+B+... (applied left to right, rs last)")
    assert isinstance(err.value, ValueError)


def test_parse_names_and_lists():
    parsed = defenses.parse_list(["none", " JPEG:75", "bits:4", "rp", "median:3", "gaussian:1.5", ""])
    assert [d.spec for d in parsed] == ["none", "jpeg:75", "bits:4", "rp", "median:3", "gauss:1.5"]
    assert [d.name for d in parsed] == ["", "jpeg75", "bits4", "rp", "median3", "gauss1.5"]
    assert [d.differentiable for d in parsed] == [True, False, False, True, True, True]


class TinyModel:
    """A linear read-out of the mean colour: enough to check the wrapper's call contract."""

    name = "tiny"
    image_size = 8
    differentiable = True

    def __init__(self):
        self.weights = tf.constant(np.random.default_rng(5).standard_normal((3, 1000)).astype(np.float32))

    def __call__(self, images):
        return tf.reduce_mean(images, axis=[1, 2]) @ self.weights


def test_wrap_keeps_the_contract_and_names_the_defense():
    model = TinyModel()
    x = eight_bit(6, (2, 12, 12, 3))
    wrapped = defenses.wrap(model, "median:3")
    assert wrapped.name == "tiny+median3" and wrapped.image_size == 8 and wrapped.differentiable
    np.testing.assert_allclose(wrapped(x).numpy(), model(defenses.parse("median:3")(x)).numpy(), rtol=1e-6)
    assert defenses.wrap(model, "none").name == "tiny"
    jpeg = defenses.wrap(model, defenses.parse("jpeg:75"))
    assert jpeg.name == "tiny+jpeg75" and not jpeg.differentiable
    logits, aux = jpeg.logits_and_aux(x)
    assert logits.shape == (2, 1000) and aux is None
    # Gradients flow through a differentiable defense to the input.
    image = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(defenses.wrap(model, "gauss:1")(image)[:, 0])
    assert np.abs(tape.gradient(loss, image).numpy()).sum() > 0


def test_median3_gradient_routes_each_output_to_one_input():
    # Distinct values (no ties): every output pixel is one input pixel, so the gradient of the sum counts outputs.
    x = tf.constant(np.random.default_rng(3).permutation(2 * 9 * 11 * 3).reshape(2, 9, 11, 3) / 600.0, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(defenses.parse("median:3")(x))
    gradient = tape.gradient(total, x).numpy()
    assert gradient.sum() == x.shape.num_elements() and gradient.min() >= 0
    assert np.array_equal(gradient, np.round(gradient))


def test_a_stack_applies_its_parts_left_to_right_with_the_same_seeded_draws():
    x = smooth(7, (2, 40, 40, 3))
    stack = defenses.parse("jpeg:75+bits:4+rp", seed=3)
    assert (stack.spec, stack.name, stack.differentiable) == ("jpeg:75+bits:4+rp", "jpeg75+bits4+rp", False)
    by_hand, keys = x, defenses.image_keys(x)  # every part keys the stack's input images
    for index, part in enumerate(("jpeg:75", "bits:4", "rp")):  # part k draws from seed + k
        by_hand = defenses.parse(part, seed=3 + index)(by_hand, keys)
    first = stack(x).numpy()
    np.testing.assert_array_equal(first, by_hand.numpy())
    np.testing.assert_array_equal(stack(x).numpy(), first)  # an image's draws are its own, call after call
    wrapped = defenses.wrap(TinyModel(), "bits:4+median:3")
    assert wrapped.name == "tiny+bits4+median3"
    np.testing.assert_allclose(wrapped(x).numpy(), TinyModel()(defenses.parse("median:3")(
        defenses.parse("bits:4")(x))).numpy(), rtol=1e-6)


def test_randomized_smoothing_votes_equal_a_replay_of_its_draws(monkeypatch):
    """Cohen et al.'s prediction: per image, the counts of the model's top-1 over N noisy copies (noise N(0, sigma^2)
    added in [0, 1] units, not clipped). Noise s of image k is replayed from its stateless seed (key k, seed << 32 | s);
    the passes (RS_IMAGES_PER_PASS // batch copies each) do not change the votes."""
    model = TinyModel()
    x = eight_bit(8, (2, 6, 6, 3))
    keys = np.array([41, -9], np.int64)
    sigma, samples, seed = 0.5, 7, 11
    smoothed = defenses.parse(f"rs:{sigma}:{samples}", seed=seed)
    assert (smoothed.spec, smoothed.name, smoothed.differentiable) == ("rs:0.5:7", "rs0.5x7", False)
    monkeypatch.setattr(defenses, "RS_IMAGES_PER_PASS", 6)  # batch 2: 3 copies per pass, passes of 3, 3, 1
    votes = defenses.wrap(model, smoothed)(x, keys).numpy()

    weights = model.weights.numpy()
    expected = np.zeros((2, 1000))
    for k in range(2):
        for s in range(samples):
            noise = tf.random.stateless_normal([6, 6, 3], tf.constant([keys[k], (seed << 32) + s], tf.int64),
                                               stddev=sigma).numpy()
            expected[k, ((x[k] + noise).mean(axis=(0, 1)) @ weights).argmax()] += 1
    np.testing.assert_array_equal(votes, expected)
    assert votes.sum(axis=1).tolist() == [samples, samples]
    monkeypatch.setattr(defenses, "RS_IMAGES_PER_PASS", 64)  # one pass of 7 copies
    np.testing.assert_array_equal(defenses.wrap(model, smoothed)(x, keys).numpy(), votes)
    np.testing.assert_array_equal(defenses.wrap(model, smoothed)(x[1:], keys[1:]).numpy(), votes[1:])
    one = smoothed(x, keys).numpy()  # one noisy copy: draw 0
    np.testing.assert_allclose(one[1], x[1] + tf.random.stateless_normal(
        [6, 6, 3], tf.constant([keys[1], seed << 32], tf.int64), stddev=sigma).numpy(), atol=1e-6)
    logits, aux = defenses.wrap(model, "bits:8+rs:0.5:7").logits_and_aux(x)
    assert logits.shape == (2, 1000) and aux is None


def test_randomized_smoothing_with_tiny_noise_votes_for_the_clean_prediction():
    model = TinyModel()
    x = eight_bit(9, (3, 6, 6, 3))
    votes = defenses.wrap(model, "rs:1e-6:5")(x).numpy()
    clean = model(x).numpy().argmax(axis=1)
    np.testing.assert_array_equal(votes[np.arange(3), clean], [5, 5, 5])
