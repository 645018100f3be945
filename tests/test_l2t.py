"""L2T (learning to transform): the distribution's update, its sampling and the copy plan against NumPy; every op
family of the pool against a NumPy transcription of the authors' PyTorch op (fed the same random numbers); one
estimate on the analytic linear model against NumPy (gradient through the ops and the learned logits, with the
draws replayed); and the attack: one trace, eps ball, seeds, and its degenerate settings equal to MI-FGSM."""

import math

import numpy as np
import pytest
import scipy.fft
import tensorflow as tf

from tfattack.attacks import ComponentError, build, parse
from tfattack.attacks.estimators import l2t
from tfattack.attacks.loop import Context, make_objective

from analytic import LinearModel


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def numpy_update(theta, ops, losses, rate):
    """The authors' step: theta + lr * d/dtheta of sum_i trace_prob(theta, ops_i) * loss_i / S, with
    trace_prob = prod_l softmax(theta)[ops_il], differentiated by hand: d p_a / d theta = p_a (e_a - p)."""
    p = softmax(theta)
    grad = np.zeros_like(theta)
    for trajectory, loss in zip(ops, losses):
        product = np.prod(p[trajectory])
        for a in trajectory:
            grad += loss * product * (np.eye(len(theta))[a] - p)
    return theta + rate * grad / len(ops)


# ---------------------------------------------------------------- the distribution

def test_update_matches_numpy_and_finite_differences():
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 1, 9)
    ops = np.array([[2, 2], [0, 5], [7, 3]])      # an op drawn twice in a trajectory too
    losses = np.array([2.5, 0.7, 4.1])
    rate = 0.01
    new = l2t.update_logits(tf.constant(theta, tf.float32), tf.constant(ops, tf.int32),
                            tf.constant(losses, tf.float32), rate).numpy()
    expected = numpy_update(theta, ops, losses, rate)
    np.testing.assert_allclose(new, expected, atol=1e-6)
    assert np.abs(expected - theta).max() > 1e-4

    def objective(t):
        return np.mean([np.prod(softmax(t)[o]) * loss for o, loss in zip(ops, losses)])

    h = 1e-6
    numeric = np.array([(objective(theta + h * e) - objective(theta - h * e)) / (2 * h) for e in np.eye(9)])
    np.testing.assert_allclose((expected - theta) / rate, numeric, rtol=1e-6, atol=1e-9)


def test_sample_ops_is_the_inverse_cdf_of_the_softmax():
    rng = np.random.default_rng(1)
    theta = rng.normal(0, 2, 12).astype(np.float32)
    u = rng.uniform(0, 1, (50, 2)).astype(np.float32)
    drawn = l2t.sample_ops(tf.constant(theta), tf.constant(u)).numpy()
    cdf = np.cumsum(tf.nn.softmax(theta).numpy())
    np.testing.assert_array_equal(drawn, np.minimum(np.searchsorted(cdf, u, side="right"), 11))
    assert len(np.unique(drawn)) > 5


def numpy_plan(counts, copies, u):
    """Slot k of a trajectory of C combinations: k mod C, weight 1 / (C * repeats) if C <= copies; else
    floor((k + u) C / copies), weight 1 / copies. Combination -> sub-copies: op 0 the least significant digit."""
    subs, weights = [], []
    for row, offset in zip(counts, u):
        total = int(np.prod(row))
        if total <= copies:
            index = np.arange(copies) % total
            w = 1.0 / (total * np.bincount(index, minlength=total)[index])
        else:
            index = np.minimum(np.floor((np.arange(copies) + offset) * total / copies).astype(int), total - 1)
            w = np.full(copies, 1.0 / copies)
        digits = []
        for c in row:
            digits.append(index % c)
            index = index // c
        subs.append(np.stack(digits, -1))
        weights.append(w)
    return np.array(subs), np.array(weights)


def test_copy_plan():
    counts = np.array([[1, 1], [5, 3], [10, 15], [3, 10], [4, 1]])
    copies = 15
    u = np.random.default_rng(2).uniform(0, 1, len(counts))
    sub, weights = (t.numpy() for t in l2t.copy_plan(tf.constant(counts, tf.int32), copies, tf.constant(u)))
    expected_sub, expected_weights = numpy_plan(counts, copies, u)
    np.testing.assert_array_equal(sub, expected_sub)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-6)
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-6)
    # When the combinations fit, each has total weight 1/C (the authors' mean over all of them).
    combination = sub[1, :, 0] + 5 * sub[1, :, 1]
    np.testing.assert_allclose(np.bincount(combination, weights[1], minlength=15), 1 / 15, rtol=1e-6)
    # Otherwise each combination is drawn with probability copies / C (unbiased): average over u.
    grid = (np.arange(600) + 0.5) / 600
    s, _ = l2t.copy_plan(tf.constant([[10, 15]] * len(grid), tf.int32), copies, tf.constant(grid))
    frequency = np.bincount((s[..., 0] + 10 * s[..., 1]).numpy().ravel(), minlength=150) / len(grid)
    np.testing.assert_allclose(frequency, copies / 150, atol=0.01)


# ---------------------------------------------------------------- the ops, against their PyTorch originals

def grid_sample_nearest(image, theta):
    """torchvision's _gen_affine_grid + grid_sample(mode='nearest', padding_mode='zeros', align_corners=False)
    of [H, W, C] with the 2x3 inverse matrix `theta` (pixels, centred). Exact ties (e.g. the centre column of a
    45-degree rotation, 5.5 +- 1e-16 here) round half to even, as nearbyint does on the exact value."""
    h, w = image.shape[:2]
    x = np.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w)[None, :]
    y = np.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h)[:, None]
    gx = (theta[0, 0] * x + theta[0, 1] * y + theta[0, 2]) / (0.5 * w)
    gy = (theta[1, 0] * x + theta[1, 1] * y + theta[1, 2]) / (0.5 * h)
    ix = np.rint(np.round(((gx + 1) * w - 1) / 2, 9)).astype(int)
    iy = np.rint(np.round(((gy + 1) * h - 1) / 2, 9)).astype(int)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    return np.where(inside[..., None], image[np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)], 0.0)


def inverse_affine(angle, translate):
    """torchvision's _get_inverse_affine_matrix(center=[0, 0], angle, translate, scale=1, shear=0)."""
    rot = math.radians(angle)
    a, b, c, d = math.cos(rot), -math.sin(rot), math.sin(rot), math.cos(rot)
    m = np.array([[d, -b, 0.0], [-c, a, 0.0]])
    m[0, 2] += m[0, 0] * -translate[0] + m[0, 1] * -translate[1]
    m[1, 2] += m[1, 0] * -translate[0] + m[1, 1] * -translate[1]
    return m


def tv_rotate(image, angle):  # transforms.functional.rotate: the matrix of -angle
    return grid_sample_nearest(image, inverse_affine(-angle, (0.0, 0.0)))


def tv_translate(image, t):  # transforms.functional.affine(angle=0, translate=[t, t], scale=1, shear=0)
    return grid_sample_nearest(image, inverse_affine(0.0, (t, t)))


def interpolate(image, out_h, out_w):
    """torch F.interpolate(mode='bilinear', align_corners=False) of [H, W, C] (antialias only matters when
    shrinking, and the authors' one shrink, dim's, has none)."""
    def matrix(n_in, n_out):
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            if n_in == n_out:
                m[i, i] = 1.0
                continue
            src = max(n_in / n_out * (i + 0.5) - 0.5, 0.0)
            i0 = int(src)
            i1 = i0 + (1 if i0 < n_in - 1 else 0)
            m[i, i0] += 1 - (src - i0)
            m[i, i1] += src - i0
        return m
    return np.einsum("ai,ijc,bj->abc", matrix(image.shape[0], out_h), image, matrix(image.shape[1], out_w))


def test_interpolate_transcription_is_bilinear_half_pixel():
    image = np.random.default_rng(3).uniform(0, 1, (7, 9, 3))
    for size in [(12, 15), (4, 5)]:
        reference = tf.image.resize(image, size, method="bilinear", antialias=False).numpy()
        np.testing.assert_allclose(interpolate(image, *size), reference, atol=1e-5)


def get_length(weights, length):  # the authors' blockshuffle.get_length
    shares = np.round(weights / weights.sum() * length).astype(np.int64)
    shares[shares.argmax()] += length - shares.sum()
    return shares


def shuffle_single_dim(x, axis, weights, keys):  # split at random lengths, random.shuffle the strips
    strips = np.split(x, np.cumsum(get_length(weights, x.shape[axis]))[:-1], axis=axis)
    return [strips[i] for i in np.argsort(keys, kind="stable")]


def blockshuffle(image, n, first, lengths, order, sub_lengths, sub_order):
    axes = (0, 1) if first < 0.5 else (1, 0)
    strips = shuffle_single_dim(image, axes[0], lengths[:n], order[:n])
    return np.concatenate([np.concatenate(shuffle_single_dim(strip, axes[1], sub_lengths[u, :n], sub_order[u, :n]),
                                          axis=axes[1]) for u, strip in enumerate(strips)], axis=axes[0])


def dim(image, rate, u):  # the authors' dim with rnd and the pads from the slot's uniforms
    size = image.shape[0]
    canvas = int(size * rate)
    rnd = size + int(np.floor(u[0] * (canvas - size)))
    top, left = (int(np.floor(v * (canvas - rnd))) for v in (u[1], u[2]))
    padded = np.zeros((canvas, canvas, image.shape[2]))
    padded[top:top + rnd, left:left + rnd] = interpolate(image, rnd, rnd)
    return interpolate(padded, size, size)


def crop(image, ratio, i):  # transforms.functional.resized_crop of the centre, back to the image size
    r = ratio + (1 - ratio) * (i + 1) / 5
    size = image.shape[0]
    c = int(size * r)
    o = (size - c) // 2
    return interpolate(image[o:o + c, o:o + c], size, size)


def masked(image, n, u):
    size = image.shape[0]
    points = [round(size / n * i) for i in range(n + 1)]
    r, c = int(np.floor(u[0] * n)), int(np.floor(u[1] * n))
    out = image.copy()
    out[points[r]:points[r + 1], points[c]:points[c + 1]] = 0
    return out


def ssm(image, rho, noise, u, sigma):  # the authors' dct_2d / idct_2d (norm=None) are scipy's default pair
    spectrum = scipy.fft.dctn(image + sigma * noise, type=2, axes=(0, 1))
    return scipy.fft.idctn(spectrum * (u * 2 * rho + 1 - rho), type=2, axes=(0, 1))


STAGE_OPS = ("identity", "rotate180", "rotate30", "sim3", "dim1.3", "blockshuffle3", "blockshuffle4", "admix2_0.4",
             "ide0.1_0.5", "masked3", "ssm0.5", "crop0.3", "affine0.9", "affine0.5")


def expected_slot(name, i, batch, draws, sigma):
    """The authors' op `name`, sub-copy i, on a slot's batch [B, H, W, C], with the slot's random numbers."""
    family, args = l2t.parse_op(name)
    out = []
    for b, image in enumerate(batch):
        if family == "identity":
            out.append(image)
        elif family == "rotate":
            out.append(tv_rotate(image, args[0] / 2 ** i))
        elif family == "sim":
            out.append(image / 2 ** i)
        elif family == "dim":
            out.append(dim(image, args[0], draws))
        elif family == "blockshuffle":
            out.append(blockshuffle(image, args[0], **draws))
        elif family == "admix":
            partner = batch[(b + draws) % len(batch)]
            out.append((image + args[1] * partner) / 2 ** (i // args[0]))
        elif family == "ide":
            out.append(image * (draws[b] >= args[0][i]))
        elif family == "masked":
            out.append(masked(image, args[0], draws))
        elif family == "ssm":
            out.append(ssm(image, args[0], draws["noise"][b], draws["uniforms"][b], sigma))
        elif family == "crop":
            out.append(crop(image, args[0], i))
        elif family == "affine":
            out.append(tv_translate(image, args[0] * (i + 1) / 5))
    return np.stack(out)


def test_every_op_equals_its_numpy_transcription():
    """Each slot its own op (groups of one slot); its random numbers replayed from a generator of the same seed,
    drawn in slot order by the ops that draw."""
    size, batch, sigma = 12, 3, 0.1
    table = l2t.op_table(STAGE_OPS, size, size)
    slots = [(op, i) for op, name in enumerate(STAGE_OPS) for i in range(table.count[op])]
    op, sub = (tf.constant(v, tf.int32) for v in zip(*slots))
    images = np.random.default_rng(4).uniform(0, 1, (len(slots), batch, size, size, 3)).astype(np.float32)
    out = l2t.apply_stage(tf.constant(images), table, op, sub, tf.random.Generator.from_seed(5), sigma).numpy()
    replay = tf.random.Generator.from_seed(5)
    changed = {}
    for n, (o, i) in enumerate(slots):
        name = STAGE_OPS[o]
        draws = l2t.family_draws(l2t.parse_op(name)[0], replay, table, 1, batch, (size, size, 3))
        draws = tf.nest.map_structure(lambda t: t.numpy()[0], draws) if draws is not None else None
        if name == "affine0.5" and i == 4:
            continue  # the exact half-pixel tie, below
        expected = expected_slot(name, i, images[n].astype(np.float64), draws, sigma)
        np.testing.assert_allclose(out[n], expected, atol=2e-5, err_msg=f"{name}, copy {i}")
        changed[name] = max(changed.get(name, 0.0), np.abs(expected - images[n]).max())
    # Every other op acts (affine0.5 only in its last copy, the tie below: t < 0.5 pixel reads the same pixel).
    assert {k for k, v in changed.items() if v < 1e-3} == {"identity", "affine0.5"}, changed
    # Anchors: rotate(180) flips both axes and rotate(90) (its second copy) is np.rot90, counter-clockwise.
    first = slots.index((1, 0))
    np.testing.assert_array_equal(out[first], images[first][:, ::-1, ::-1])
    np.testing.assert_array_equal(out[first + 1], np.rot90(images[first + 1], 1, axes=(1, 2)))
    # affine0.5's last copy translates by exactly half a pixel: one pixel here (documented rounding).
    tie = slots.index((len(STAGE_OPS) - 1, 4))
    np.testing.assert_array_equal(out[tie][:, 1:, 1:], images[tie][:, :-1, :-1])
    assert not out[tie][:, 0].any() and not out[tie][:, :, 0].any()


def test_ops_keep_shapes_on_other_sizes_and_blockshuffle_permutes():
    table = l2t.op_table(l2t.AUTHORS_OPS, 7, 10)   # smaller than some ops' block counts, not square
    count = len(l2t.AUTHORS_OPS)
    op = tf.range(count)
    images = tf.random.uniform([count, 2, 7, 10, 3])
    generator = tf.random.Generator.from_seed(6)
    out = l2t.apply_stage(images, table, op, tf.zeros_like(op), generator, 16 / 255)
    assert out.shape == images.shape and np.isfinite(out.numpy()).all()
    draws = l2t.family_draws("blockshuffle", generator, table, 8, 2, (7, 10, 3))
    for blocks in (3, 12):   # 12 strips of 7 pixels: the negative-length fallback
        source = l2t.shuffle_source(tf.fill([8], blocks), **draws, height=7, width=10).numpy()
        np.testing.assert_array_equal(np.sort(source, axis=1), np.tile(np.arange(70), (8, 1)))


# ---------------------------------------------------------------- one estimate, replayed in NumPy

def ce(model, images, labels):
    logits = images.reshape(len(images), -1) @ model.w + model.b
    top = logits.max(1)
    return np.log(np.exp(logits - top[:, None]).sum(1)) + top - logits[np.arange(len(labels)), labels]


@pytest.mark.parametrize("per_pass", [0, 3])
def test_estimate_equals_numpy(per_pass):
    """Deterministic ops (identity, x/2^i): the gradient is the weighted mean of d CE(f x) / dx = f grad(f x)
    (chain rule through the op), the losses the weighted mean CE, and the logits move as the authors'."""
    model = LinearModel((4, 4, 3), seed=2)
    model.w, model.b = model.w * 2, model.b * 2
    model._w, model._b = tf.constant(model.w, tf.float32), tf.constant(model.b, tf.float32)
    rng = np.random.default_rng(7)
    points = rng.uniform(0.2, 0.8, (3, 2, 4, 4, 3)).astype(np.float32)
    labels = np.array([3, 7])
    names, samples, length, copies, rate = ("identity", "sim2", "sim3"), 3, 2, 4, 5.0
    attack = build("mi_fgsm", estimators=f"l2t:{samples},length={length},copies={copies},lr={rate},"
                                         f"ops={'+'.join(names)}", execution={"copies_per_pass": per_pass})
    config = attack.config
    estimator = config.estimators[0]
    ctx = Context(config, make_objective(model, config), tf.constant(points[0]), tf.constant(labels), None,
                  tf.random.Generator.from_seed(8))
    replay = tf.random.Generator.from_seed(8)
    state = estimator.init(ctx)
    theta = np.zeros(len(names))
    counts = np.array([1, 2, 3])
    for point in points:
        gradient, state = estimator.estimate(ctx, ctx.gradient, tf.constant(point), tf.constant(point), state)
        cdf = np.cumsum(tf.nn.softmax(tf.constant(theta, tf.float32)).numpy())
        ops = np.searchsorted(cdf, replay.uniform([samples, length]).numpy(), side="right")
        sub, weights = numpy_plan(counts[ops], copies, replay.uniform([samples], dtype=tf.float64).numpy())
        expected, losses = 0.0, []
        for i in range(samples):
            loss = 0.0
            for k in range(copies):
                factor = np.prod([0.5 ** s if names[o] != "identity" else 1.0 for o, s in zip(ops[i], sub[i, k])])
                copy = factor * point.astype(np.float64)
                expected = expected + weights[i, k] * factor * model.ce_gradient(copy, labels) / samples
                loss += weights[i, k] * ce(model, copy, labels).mean()
            losses.append(loss)
        theta = numpy_update(theta, ops, np.array(losses), rate)
        np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(state["logits"].numpy(), theta, atol=1e-5)
    assert np.abs(theta).max() > 1e-2   # the distribution did move


# ---------------------------------------------------------------- the attack

@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(9)
    return LinearModel((8, 8, 3)), rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32), np.array([1, 2])


def test_attack_traces_once_stays_in_the_ball_and_follows_the_seed(batch):
    model, clean, labels = batch
    eps = 16 / 255
    attack = build("mi_fgsm", estimators="l2t:1,copies=6", eps=eps, steps=3)   # the authors' whole pool
    first = attack(model, clean, labels, seed=1).numpy()
    again = attack(model, clean, labels, seed=1).numpy()
    other = attack(model, clean, labels, seed=2).numpy()
    assert attack.trace_count == 1
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
    for adv in (first, other):
        assert adv.shape == clean.shape and adv.dtype == np.float32
        assert np.abs(adv - clean).max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert np.abs(adv - clean).max() > eps / 2


@pytest.mark.parametrize("spec, extra", [
    ("l2t:1,copies=1,ops=identity", {}),
    ("l2t:1,copies=1,ops=sim1", {"transforms": "si:2", "filters": "ti:3"}),
    ("l2t:3,copies=5,ops=identity+sim1", {}),
])
def test_degenerate_pool_is_mi_fgsm(batch, spec, extra):
    """A pool whose every op is the identity: the copies are x itself, the result MI-FGSM's (with the config's
    transforms and filters on top: MI-FGSM with them). Exact with one copy; with 15 weighted copies up to
    rounding."""
    model, clean, labels = batch
    reference = build("mi_fgsm", **extra)(model, clean, labels).numpy()
    adv = build("mi_fgsm", estimators=spec, **extra)(model, clean, labels).numpy()
    if "copies=1" in spec:
        np.testing.assert_array_equal(adv, reference)
    else:
        np.testing.assert_allclose(adv, reference, atol=1e-6)
    assert np.abs(reference - clean).max() > 0.05


def test_spec_and_misuse():
    default = parse("estimator", "l2t")[0]
    assert len(default.ops) == 98 and default.ops == l2t.AUTHORS_OPS
    assert sum(l2t.op_copies(*l2t.parse_op(name)) for name in default.ops) == 526   # 28.8 per pair on average
    assert parse("estimator", default.spec())[0] == default
    assert default.evaluations() == 3 * 29
    with pytest.raises(ComponentError, match="unknown op 'spin3'"):
        parse("estimator", "l2t:ops=identity+spin3")
    with pytest.raises(ComponentError, match="dropout probabilities"):
        parse("estimator", "l2t:ops=ide0.1_1.5")
    model, clean, labels = LinearModel((4, 4, 3)), np.full((1, 4, 4, 3), 0.5, np.float32), np.array([0])
    with pytest.raises(Exception, match="l2t': it computes .* use it as the only estimator"):   # at trace time
        build("mi_fgsm", estimators="l2t:1,copies=1,ops=identity,pgn:2")(model, clean, labels)
