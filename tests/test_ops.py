"""OPS (Guo et al. CVPR 2025): each basic operator against a NumPy transcription of the authors' (torch) operator,
the pool draws, and the estimate / whole attack against a NumPy transcription of the formula on the analytic
linear model, with the random draws replayed from a generator of the same seed."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfattack.attacks import ComponentError, build, parse
from tfattack.attacks.estimators import OPS
from tfattack.attacks.loop import Context, make_objective
from tfattack.attacks.transforms import ops as pool

from analytic import LinearModel

EPS, STEPS, SEED = 0.05, 3, 0
SMALL = "ops:2,operators=3"          # N = 2 neighbours x M = 3 operators: 7 gradients per step


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(1)
    clean = rng.uniform(0.2, 0.8, size=(2, 8, 8, 3)).astype(np.float32)
    return LinearModel((8, 8, 3)), clean, np.array([3, 7])


# ---------------------------------------------------------------- NumPy transcriptions of the operators

def np_resize(image, height, width):
    """torch F.interpolate(mode='bilinear', align_corners=False) of an [H, W, ...] array, no antialiasing."""
    for axis, size in ((0, height), (1, width)):
        source = image.shape[axis]
        out = []
        for i in range(size):
            s = max((i + 0.5) * source / size - 0.5, 0.0)
            i0 = int(math.floor(s))
            i1 = min(i0 + 1, source - 1)
            lam = s - i0
            out.append((1 - lam) * np.take(image, i0, axis) + lam * np.take(image, i1, axis))
        image = np.stack(out, axis)
    return image


def np_dim(image, rate, u):
    """The authors' dim(rate) on one [H, W, C] image (square: one size), with floor(u * range) for randint."""
    height, width = image.shape[:2]
    canvas_h, canvas_w = max(int(height * rate), height + 1), max(int(width * rate), width + 1)
    rnd_h = height + int(u[0] * (canvas_h - height))
    rnd_w = rnd_h if (height, canvas_h) == (width, canvas_w) else width + int(u[1] * (canvas_w - width))
    top, left = int(u[2] * (canvas_h - rnd_h)), int(u[3] * (canvas_w - rnd_w))
    padded = np.zeros((canvas_h, canvas_w) + image.shape[2:])
    padded[top:top + rnd_h, left:left + rnd_w] = np_resize(image, rnd_h, rnd_w)
    return np_resize(padded, height, width)


def np_rotate(image, angle):
    """torchvision.transforms.functional.rotate(img, angle) on a tensor: the inverse affine matrix of -angle about
    the centre, torch's base grid and normalisation in float32, grid_sample nearest (round half to even), zeros."""
    height, width = image.shape[:2]
    rot = math.radians(-angle)
    theta = np.array([[math.cos(rot), math.sin(rot), 0.0], [-math.sin(rot), math.cos(rot), 0.0]], np.float32)
    xs = np.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, width, dtype=np.float32)
    ys = np.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, height, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(xs, ys)
    base = np.stack([grid_x, grid_y, np.ones_like(grid_x)], -1).reshape(-1, 3)
    normalised = base @ (theta.T / np.array([0.5 * width, 0.5 * height], np.float32))
    col = np.rint(((normalised[:, 0] + 1) * width - 1) / 2).astype(int)
    row = np.rint(((normalised[:, 1] + 1) * height - 1) / 2).astype(int)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    out = np.where(inside[:, None], image[np.clip(row, 0, height - 1), np.clip(col, 0, width - 1)].reshape(
        height * width, -1), 0.0)
    return out.reshape(image.shape)


def np_operator(image, kind, value, u):
    """One basic operator of the authors' list on an [H, W, C] image; u: its 4 uniforms."""
    height, width = image.shape[:2]
    if kind == "identity":
        return image
    if kind == "vflip":
        return image[::-1]
    if kind == "hflip":
        return image[:, ::-1]
    if kind == "vshift":
        return np.roll(image, int(u[0] * height), axis=0)     # torch roll(step, dims=H), step = randint(0, H)
    if kind == "hshift":
        return np.roll(image, int(u[0] * width), axis=1)
    if kind == "rotate":
        return np_rotate(image, value)
    if kind == "scale":
        return image / value
    return np_dim(image, value, u)


def np_composite_matrix(operators, ops, uniforms, size):
    """The composite operator (slot 0 first; the skip id does nothing) as a matrix on one channel of H*W pixels."""
    height, width = size
    matrix = np.eye(height * width)
    for op, u in zip(ops, uniforms):
        if op == len(operators):
            continue
        kind, value = operators[op]
        basis = np.eye(height * width).reshape(height, width, height * width)   # one basis image per channel
        matrix = np_operator(basis, kind, value, u).reshape(height * width, height * width) @ matrix
    return matrix


def tf_apply(images, ops, uniforms, operators):
    return pool.apply_operators(tf.constant(images, tf.float32), tf.constant(ops, tf.int32),
                                tf.constant(uniforms, tf.float32), operators).numpy()


# ---------------------------------------------------------------- operators

@pytest.mark.parametrize("size", [(8, 8), (6, 9)])
def test_each_operator_equals_its_numpy_transcription(size):
    operators = OPS().basic_operators()
    assert len(operators) == 31
    rng = np.random.default_rng(0)
    count = 4
    images = rng.uniform(0, 1, (len(operators) * count,) + size + (3,))
    ops = np.repeat(np.arange(len(operators)), count)[:, None]
    uniforms = rng.uniform(0, 1, (len(ops), 1, pool.UNIFORMS))
    uniforms[::count] = 0.0                       # dim at its smallest size and offset 0, shifts by 0
    uniforms[count - 1::count] = 0.999999         # and at its largest
    out = tf_apply(images, ops, uniforms, operators)
    for k, (image, op, u) in enumerate(zip(images, ops[:, 0], uniforms[:, 0])):
        kind, value = operators[op]
        if size[0] != size[1] and kind == "rotate" and abs(value) == 90:
            continue  # every source coordinate is an exact tie there, which torch breaks by float32 rounding
        np.testing.assert_allclose(out[k], np_operator(image, kind, value, u), atol=2e-6, err_msg=f"{kind} {value}")
    # Rotations by quarter turns are counter-clockwise quarter turns (torchvision's sign).
    square = images[:1] if size[0] == size[1] else None
    if square is not None:
        for angle, expected in ((90.0, np.rot90(square[0])), (-90.0, np.rot90(square[0], -1)),
                                (180.0, square[0, ::-1, ::-1])):
            index = operators.index(("rotate", angle))
            np.testing.assert_allclose(tf_apply(square, [[index]], np.zeros((1, 1, 4)), operators)[0], expected,
                                       atol=1e-7)


def test_composites_apply_slot_after_slot_and_skip_does_nothing():
    operators = OPS().basic_operators()
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (6, 8, 8, 3))
    skip = pool.skip_id(operators)
    ops = rng.integers(0, len(operators), (6, 4))
    ops[0] = skip
    ops[1, 2:] = skip
    uniforms = rng.uniform(0, 1, (6, 4, pool.UNIFORMS))
    out = tf_apply(images, ops, uniforms, operators)
    np.testing.assert_allclose(out[0], images[0], atol=1e-7)
    for k in range(6):
        matrix = np_composite_matrix(operators, ops[k], uniforms[k], (8, 8))
        expected = np.einsum("pq,qc->pc", matrix, images[k].reshape(64, 3)).reshape(8, 8, 3)
        np.testing.assert_allclose(out[k], expected, atol=2e-6)


def test_gradient_goes_through_the_operators():
    """d/dx sum(w * T(x)) = T^T w for every composite (the chain rule of the authors' code)."""
    operators = OPS().basic_operators()
    rng = np.random.default_rng(4)
    images = tf.constant(rng.uniform(0, 1, (5, 8, 8, 3)), tf.float32)
    ops = rng.integers(0, len(operators), (5, 3))
    uniforms = rng.uniform(0, 1, (5, 3, pool.UNIFORMS))
    weights = rng.normal(size=(5, 8, 8, 3))
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(pool.apply_operators(images, tf.constant(ops, tf.int32),
                                                   tf.constant(uniforms, tf.float32), operators) * weights)
    gradient = tape.gradient(total, images).numpy()
    for k in range(5):
        matrix = np_composite_matrix(operators, ops[k], uniforms[k], (8, 8))
        np.testing.assert_allclose(gradient[k], (matrix.T @ weights[k].reshape(64, 3)).reshape(8, 8, 3), atol=1e-5)


# ---------------------------------------------------------------- draws

def test_composites_are_drawn_without_replacement_from_the_level_pools():
    generator = tf.random.Generator.from_seed(5)
    operators = OPS().basic_operators()
    ops, uniforms = pool.draw_composites(generator, [3, 2], operators, (2, 3, 4), 93)   # the whole pool
    ops = ops.numpy()
    assert ops.shape == (3, 2, 93, 4) and uniforms.shape == (3, 2, 93, 4, pool.UNIFORMS)
    levels = (ops != pool.skip_id(operators)).sum(-1)
    for index in np.ndindex(3, 2):
        assert sorted(np.bincount(levels[index])[2:].tolist()) == [31, 31, 31]
    assert ops[ops != 31].min() == 0 and ops[ops != 31].max() == 30
    # Level 1 holds each basic operator once: M = 31 of it is a permutation.
    single, _ = pool.draw_composites(generator, [4], operators, (1,), 31)
    single = single.numpy()
    for row in single:
        assert sorted(row[:, 0].tolist()) == list(range(31))
    assert len({tuple(row[:, 0]) for row in single}) > 1      # and the order is random


def test_neighbour_pool_fills_each_radius():
    ops = OPS(neighbours=50, ratios=(0.5, 1.5), beta=2.0)
    clean = tf.zeros([3, 8, 8, 3])
    noise = ops.neighbour_pool(tf.random.Generator.from_seed(0), clean, EPS).numpy().reshape(2, 50, 3, 8, 8, 3)
    for block, ratio in enumerate((0.5, 1.5)):
        radius = 2.0 * EPS * ratio
        assert np.abs(noise[block]).max() <= radius * (1 + 1e-6)
        assert np.abs(noise[block]).max() > 0.99 * radius
    assert not np.allclose(noise[0, :, 0], noise[0, :, 1])     # per image


def test_neighbours_are_chosen_without_replacement():
    ops = OPS(neighbours=5, operators=2, ratios=(1.0, 2.0))
    chosen = ops.step_draws(tf.random.Generator.from_seed(1), 3)["chosen"].numpy()
    assert chosen.shape == (5, 3) and chosen.min() >= 0 and chosen.max() < 10
    for b in range(3):
        assert len(set(chosen[:, b])) == 5


# ---------------------------------------------------------------- the estimate

def np_estimate(model, labels, x, pool_noise, draws, estimator, batch):
    """Guo et al. 2025 (authors' get_averaged_gradient): (grad(x) + sum_ij T_ij^T grad(T_ij(x + r_i))) / (NM + 1)."""
    operators = estimator.basic_operators()
    n, m = estimator.neighbours, estimator.operators
    total = model.ce_gradient(x, labels)
    for b in range(batch):
        for i in range(n):
            near = x[b] + pool_noise[draws["chosen"][i, b] * batch + b]
            for j in range(m):
                matrix = np_composite_matrix(operators, draws["ops"][i, j, b], draws["uniforms"][i, j, b], (8, 8))
                moved = (matrix @ near.reshape(64, 3)).reshape(1, 8, 8, 3)
                g = model.ce_gradient(moved, labels[b:b + 1])[0]
                total[b] += (matrix.T @ g.reshape(64, 3)).reshape(8, 8, 3)
    return total / (n * m + 1)


def replay(estimator, clean, steps, eps=EPS, seed=SEED):
    """The attack's draws: the pool at the start, then each step's."""
    generator = tf.random.Generator.from_seed(seed)
    noise = estimator.neighbour_pool(generator, tf.constant(clean), eps).numpy().astype(np.float64)
    batch = clean.shape[0]
    draws = [{k: v.numpy() for k, v in estimator.step_draws(generator, batch).items()} for _ in range(steps)]
    return noise, draws


def test_estimate_equals_numpy_transcription(linear):
    model, clean, labels = linear
    config = build("mi_fgsm", estimators=SMALL, eps=EPS).config
    estimator = config.estimators[0]
    ctx = Context(config, make_objective(model, config), tf.constant(clean), tf.constant(labels, tf.int32), None,
                  tf.random.Generator.from_seed(SEED))
    state = estimator.init(ctx)
    noise, draws = replay(estimator, clean, 2)
    x = clean.astype(np.float64)
    for step in range(2):
        point = tf.constant((x + 0.01 * step).astype(np.float32))
        gradient, state = estimator.estimate(ctx, ctx.gradient, point, point, state)
        expected = np_estimate(model, labels, point.numpy().astype(np.float64), noise, draws[step], estimator, 2)
        np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-4, atol=1e-7)
        # The comparison can fail: the operators' terms move the estimate away from the plain gradient.
        plain = model.ce_gradient(point.numpy().astype(np.float64), labels)
        assert np.abs(expected - plain).max() > 0.1 * np.abs(plain).max()


def np_mi_fgsm(clean, estimate, eps=EPS, steps=STEPS):
    x, g = clean.copy(), np.zeros_like(clean)
    for t in range(steps):
        gradient = estimate(t, x)
        g = g + gradient / np.mean(np.abs(gradient), axis=(1, 2, 3), keepdims=True)
        x = np.clip(x + eps / steps * np.sign(g), np.maximum(clean - eps, 0), np.minimum(clean + eps, 1))
    return x


@pytest.fixture(scope="module")
def small_attack(linear):
    """The N = 2, M = 3 attack and its output (all copies in one pass)."""
    model, clean, labels = linear
    attack = build("mi_fgsm", estimators=SMALL, eps=EPS, steps=STEPS)
    return attack, attack(model, clean, labels).numpy()


def test_attack_equals_numpy_transcription(linear, small_attack):
    model, clean, labels = linear
    attack, adv = small_attack
    estimator = attack.config.estimators[0]
    noise, draws = replay(estimator, clean, STEPS)
    x0 = clean.astype(np.float64)
    expected = np_mi_fgsm(x0, lambda t, x: np_estimate(model, labels, x, noise, draws[t], estimator, 2))
    np.testing.assert_allclose(adv, expected, atol=1e-5)
    plain = np_mi_fgsm(x0, lambda t, x: model.ce_gradient(x, labels))
    assert np.abs(expected - plain).max() > EPS / 2


# ---------------------------------------------------------------- the attack's contract

def test_one_trace_static_shapes_eps_ball_and_seed(linear, small_attack):
    model, clean, labels = linear
    attack, first = small_attack
    second = attack(model, clean, labels).numpy()
    assert attack.trace_count == 1
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - clean).max() <= EPS + 1e-6 and first.min() >= 0 and first.max() <= 1
    assert np.abs(first - clean).max() > EPS / 2
    other = attack(model, clean, labels, seed=SEED + 1).numpy()
    assert not np.array_equal(first, other)
    assert attack.trace_count == 1
    # Static shapes: the pool, the draws and the operator stack of a traced step.
    estimator = attack.config.estimators[0]
    generator = tf.random.Generator.from_seed(0)

    @tf.function
    def traced(images):
        noise = estimator.neighbour_pool(generator, images, EPS)
        draws = estimator.step_draws(generator, 2)
        stack = pool.apply_operators(tf.tile(images, [6, 1, 1, 1]), tf.reshape(draws["ops"], [12, 4]),
                                     tf.reshape(draws["uniforms"], [12, 4, pool.UNIFORMS]),
                                     estimator.basic_operators())
        shapes = [t.shape.as_list() for t in (noise, draws["chosen"], draws["ops"], draws["uniforms"], stack)]
        assert shapes == [[24, 8, 8, 3], [2, 2], [2, 3, 2, 4], [2, 3, 2, 4, 4], [12, 8, 8, 3]], shapes
        return stack

    traced(tf.constant(clean))


def test_copies_per_pass_gives_the_same_attack(linear, small_attack):
    """One copy per pass: 7 chunks of one copy of the batch, one after another."""
    model, clean, labels = linear
    bounded = build("mi_fgsm", estimators=SMALL, eps=EPS, steps=STEPS,
                    execution={"copies_per_pass": 1})(model, clean, labels).numpy()
    np.testing.assert_allclose(bounded, small_attack[1], atol=1e-6)


def test_chunks_give_the_same_estimate(linear):
    """All 7 copies at once, or 3 per chunk (the last chunk padded with weight-0 copies): with an SI transform
    inside, chunks of copies_per_pass // 2 copies."""
    model, clean, labels = linear
    estimates = []
    for per_pass in (0, 6):
        config = build("mi_fgsm", estimators=SMALL, eps=EPS, transforms="si:2",
                       execution={"copies_per_pass": per_pass}).config
        ctx = Context(config, make_objective(model, config), tf.constant(clean), tf.constant(labels, tf.int32),
                      None, tf.random.Generator.from_seed(SEED))
        assert config.estimators[0].chunk_size(ctx) == {0: 7, 6: 3}[per_pass]
        point = tf.constant(clean)
        estimates.append(config.estimators[0].estimate(ctx, ctx.gradient, point, point,
                                                       config.estimators[0].init(ctx))[0].numpy())
    for other in estimates[1:]:
        np.testing.assert_allclose(other, estimates[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", ["ops:0", "ops:2,operators=0",
                                  "ops:3,operators=1,beta=0,levels=2,simple=identity,angles=,scales=,dim_rates="])
def test_degenerate_settings_are_mi_fgsm(linear, spec):
    model, clean, labels = linear
    mi = build("mi_fgsm", eps=EPS, steps=STEPS)(model, clean, labels).numpy()
    adv = build("mi_fgsm", estimators=spec, eps=EPS, steps=STEPS)(model, clean, labels).numpy()
    np.testing.assert_allclose(adv, mi, atol=1e-6)
    assert np.abs(mi - clean).max() > EPS / 2


def test_spec_counts_and_validation():
    (default,) = parse("estimator", "ops")
    assert (default.neighbours, default.operators, default.beta, default.levels) == (30, 30, 2.0, (2, 3, 4))
    assert default.evaluations() == 901 and default.stacked_points() == 901
    assert len(default.basic_operators()) == 31
    assert parse("estimator", default.spec()) == (default,)
    assert parse("estimator", "ops:0")[0].evaluations() == 1
    assert build("mi_fgsm", estimators=SMALL).config.gradient_evaluations == 7
    for bad, message in [("ops:2,operators=94", "operators must be <="), ("ops:2,ratios=", "ratios must list"),
                         ("ops:2,levels=0", "levels must be >= 1"), ("ops:2,dim_rates=0.9", "dim_rates must be"),
                         ("ops:2,simple=identity+identity", "twice"), ("ops:2,simple=blur", "unknown value")]:
        with pytest.raises(ComponentError, match=message):
            parse("estimator", bad)
    with pytest.raises(ComponentError, match="must come first"):
        build("mi_fgsm", estimators="pgn,ops")
