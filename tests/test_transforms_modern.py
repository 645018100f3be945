"""The 2022-2024 input transformations (BSR, SIA, SSA, MaskBlock, DeCoWA) against NumPy transcriptions of the
authors' code, given the same random draws; plus layout, seeding, tracing, gradients and end-to-end runs."""

import math
import warnings

import numpy as np
import pytest
import scipy.fft
import tensorflow as tf

from tfattack.attacks import build, components
from tfattack.attacks.components import ComponentError
from tfattack.attacks.transforms import BSR, SIA, SSA, DeCoWA, MaskBlock
from tfattack.attacks.transforms import bsr as bsr_module
from tfattack.attacks.transforms import decowa as decowa_module
from tfattack.attacks.transforms import maskblock as maskblock_module
from tfattack.attacks.transforms import sia as sia_module
from tfattack.attacks.transforms import ssa as ssa_module

from analytic import LinearModel

LINEAR_SIA_OPS = ("vshift", "hshift", "vflip", "hflip", "rotate180", "scale", "dct", "dropout")
PERMUTING_SIA_OPS = ("vshift", "hshift", "vflip", "hflip", "rotate180")


def _images(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0.05, 0.95, size=shape), tf.float32)


def _numpy(draws):
    return {key: np.asarray(value) for key, value in draws.items()}


def _at(draws, k, m):
    return {key: value[k, m] for key, value in draws.items()}


# ----------------------------------------------------------------- NumPy transcriptions of the authors' code

def np_bilinear_zeros(image, y, x):
    """Bilinear samples of image [h, w, c] at float (y, x) arrays, pixels outside the image counting as 0
    (tfa.image.rotate / ImageProjectiveTransform BILINEAR with fill 0; grid_sample with zeros padding)."""
    height, width, _ = image.shape
    out = np.zeros(y.shape + image.shape[2:])
    for index in np.ndindex(*y.shape):
        y0, x0 = math.floor(y[index]), math.floor(x[index])
        fy, fx = y[index] - y0, x[index] - x0
        for ty, wy in ((y0, 1 - fy), (y0 + 1, fy)):
            for tx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                if 0 <= ty < height and 0 <= tx < width:
                    out[index] += wy * wx * image[ty, tx]
    return out


def np_rotate(block, angle):
    """tfa.image.rotate(block, angle), bilinear, zeros outside: output (i, j) reads the block at the point
    rotated about the centre ((h-1)/2, (w-1)/2)."""
    height, width, _ = block.shape
    cy, cx = (height - 1) / 2, (width - 1) / 2
    dy, dx = np.meshgrid(np.arange(height) - cy, np.arange(width) - cx, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    return np_bilinear_zeros(block, cy + sin * dx + cos * dy, cx + cos * dx - sin * dy)


def np_get_length(rand, length):
    """BSR authors' get_length (mi_bsr.py) given its uniform draws."""
    rand_norm = np.round(rand * length / rand.sum()).astype(np.int32)
    rand_norm[rand_norm.argmax()] += length - rand_norm.sum()
    return rand_norm


def np_bsr(image, row_lengths, col_lengths, row_order, col_order, angles):
    """BSR authors' shuffle_rotate (mi_bsr.py): split the rows into strips, the strips into blocks; output strip u
    is source strip row_order[u], its block v is source block col_order[v], each rotated by its own angle."""
    strips = np.split(image, np.cumsum(row_lengths)[:-1], axis=0)
    out = []
    for u, p in enumerate(row_order):
        pieces = np.split(strips[p], np.cumsum(col_lengths)[:-1], axis=1)
        out.append(np.concatenate([np_rotate(pieces[q], angles[u, v]) for v, q in enumerate(col_order)], axis=1))
    return np.concatenate(out, axis=0)


def np_torch_bilinear(size_in, size_out):
    """torch F.interpolate(mode='bilinear', align_corners=False) along one axis, as a [size_out, size_in] matrix."""
    matrix = np.zeros([size_out, size_in])
    for o in range(size_out):
        source = max((o + 0.5) * size_in / size_out - 0.5, 0.0)
        i0 = math.floor(source)
        i1 = min(i0 + 1, size_in - 1)
        matrix[o, i0] += 1 - (source - i0)
        matrix[o, i1] += source - i0
    return matrix


def np_sia_block(block, name, settings, draws):
    """One block transformation of the SIA authors' code (github.com/xiaosen-wang/SIT, attack.py)."""
    h, w, _ = block.shape
    along = lambda matrix, x, axis: np.moveaxis(np.tensordot(matrix, x, axes=([1], [axis])), 0, axis)  # noqa: E731
    if name == "resize":
        small_h, small_w = int(h * settings.resize) + 1, int(w * settings.resize) + 1
        small = along(np_torch_bilinear(w, small_w), along(np_torch_bilinear(h, small_h), block, 0), 1)
        back = along(np_torch_bilinear(small_w, w), along(np_torch_bilinear(small_h, h), small, 0), 1)
        return np.clip(back, 0, 1)
    if name == "vshift":
        return np.roll(block, int(np.floor(draws["vshift"] * h)), axis=0)
    if name == "hshift":
        return np.roll(block, int(np.floor(draws["hshift"] * w)), axis=1)
    if name == "vflip":
        return block[::-1]
    if name == "hflip":
        return block[:, ::-1]
    if name == "rotate180":
        return np.rot90(block, 2, axes=(0, 1))
    if name == "scale":
        return draws["scale"] * block
    if name == "noise":
        return np.clip(block + draws["noise"], 0, 1)
    if name == "dct":
        coefficients = scipy.fft.dctn(block, type=2, norm="ortho", axes=(0, 1))
        coefficients[h - int(h * settings.dct_cut):] = 0
        coefficients[:, w - int(w * settings.dct_cut):] = 0
        return scipy.fft.idctn(coefficients, type=2, norm="ortho", axes=(0, 1))
    if name == "dropout":
        return block * draws["keep"][None, None, :] / (1 - settings.dropout)
    raise ValueError(name)


def np_sia(image, settings, draws):
    """SIA authors' blocktransform: each block replaced by its drawn transformation of itself."""
    out = image.copy()
    rows = np.concatenate([[0], np.cumsum(draws["row_lengths"])])
    cols = np.concatenate([[0], np.cumsum(draws["col_lengths"])])
    for u in range(len(rows) - 1):
        for v in range(len(cols) - 1):
            where = (slice(rows[u], rows[u + 1]), slice(cols[v], cols[v + 1]))
            block_draws = dict(vshift=draws["vshift"][u, v], hshift=draws["hshift"][u, v], scale=draws["scale"][u, v])
            if "noise" in draws:
                block_draws["noise"] = draws["noise"][where]
            if "keep" in draws:
                block_draws["keep"] = draws["keep"][u, v]
            out[where] = np_sia_block(image[where], settings.ops[draws["op"][u, v]], settings, block_draws)
    return out


def np_ssa(image, noise, mask):
    """SSA authors' transform: idct_2d(dct_2d(x + gauss) * mask) (their dct/idct pair round-trips like 'ortho')."""
    coefficients = scipy.fft.dctn(image + noise, type=2, norm="ortho", axes=(0, 1))
    return scipy.fft.idctn(coefficients * mask, type=2, norm="ortho", axes=(0, 1))


def np_maskblock(image, patch):
    """TransferAttack maskblock.py: one copy per patch x patch block (row-block outer loop), that block zeroed."""
    height, width, _ = image.shape
    row_axis, col_axis = list(range(0, height + 1, patch)), list(range(0, width + 1, patch))
    copies = []
    for i, row_end in enumerate(row_axis[1:]):
        for j, col_end in enumerate(col_axis[1:]):
            copy = image.copy()
            copy[row_axis[i]:row_end, col_axis[j]:col_end] = 0
            copies.append(copy)
    return copies


def np_tps_positions(height, width, noise, mesh):
    """DeCoWA's TPS (TransferAttack decowa.py): control grid X -> X + noise on the interior points, solve
    L Q = [Y; 0], evaluate P A + U W at the pixel grid; returns (x, y) in [-1, 1] per pixel."""
    line = np.linspace(-1, 1, mesh)
    yy, xx = np.meshgrid(line, line, indexing="ij")
    source = np.stack([xx.ravel(), yy.ravel()], 1)
    moved = np.zeros([mesh, mesh, 2])
    moved[1:mesh - 1, 1:mesh - 1] = noise.reshape(mesh - 2, mesh - 2, 2)
    target = source + moved.reshape(-1, 2)

    def kernel(a, b):
        squared = ((a[:, None] - b[None]) ** 2).sum(-1)
        return squared * np.log(squared + 1e-9)

    k = len(source)
    system = np.zeros([k + 3, k + 3])
    affine = np.concatenate([np.ones([k, 1]), source], 1)
    system[:k, :k], system[:k, k:], system[k:, :k] = kernel(source, source), affine, affine.T
    solution = np.linalg.solve(system, np.concatenate([target, np.zeros([3, 2])]))
    gy, gx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    positions = np.concatenate([np.ones([len(grid), 1]), grid], 1) @ solution[k:] + kernel(grid, source) @ solution[:k]
    return positions.reshape(height, width, 2)


def np_decowa(image, noise, mesh):
    height, width, _ = image.shape
    positions = np_tps_positions(height, width, noise, mesh)
    rows, cols = (positions[..., 1] + 1) * (height - 1) / 2, (positions[..., 0] + 1) * (width - 1) / 2
    return np_bilinear_zeros(image, rows, cols)


# ----------------------------------------------------------------- the draws-based forms, per transform

def _draw_and_reference(transform, images, seed):
    """(draws, per-(copy, image) NumPy reference function) for `transform`, drawing from a generator at `seed`
    exactly as `apply` does."""
    generator = tf.random.Generator.from_seed(seed)
    if isinstance(transform, BSR):
        draws = _numpy(bsr_module.bsr_draws(generator, images, transform.copies, transform.blocks, transform.max_angle))
        return draws, lambda image, d: np_bsr(image, **d)
    if isinstance(transform, SIA):
        draws = _numpy(sia_module.sia_draws(generator, images, transform.copies, transform.blocks, transform))
        return draws, lambda image, d: np_sia(image, transform, d)
    if isinstance(transform, SSA):
        draws = _numpy(ssa_module.ssa_draws(generator, images, transform.copies, transform.rho, transform.sigma))
        return draws, lambda image, d: np_ssa(image, d["noise"], d["mask"])
    if isinstance(transform, DeCoWA):
        noise = decowa_module.decowa_draws(generator, images, transform.copies, transform.mesh, transform.noise_scale)
        return {"noise": noise.numpy()}, lambda image, d: np_decowa(image, d["noise"], transform.mesh)
    raise TypeError(transform)


RANDOM_CASES = {
    "bsr": BSR(copies=4),
    "bsr_3x3": BSR(blocks=3, copies=3, max_angle=40.0),
    "sia": SIA(copies=6),
    "sia_2x2": SIA(blocks=2, copies=4, ops=("dct", "resize", "dropout", "noise")),
    "ssa": SSA(copies=4),
    "decowa": DeCoWA(copies=4, steps=0),
    "decowa_mesh4": DeCoWA(copies=3, mesh=4, noise_scale=0.5, steps=0),
}


@pytest.mark.parametrize("case", sorted(RANDOM_CASES))
def test_each_copy_equals_the_numpy_transcription_of_its_draws(case):
    transform = RANDOM_CASES[case]
    images = _images((2, 11, 9, 3), seed=1)
    out = transform.apply(images, tf.random.Generator.from_seed(5), 2).numpy()
    draws, reference = _draw_and_reference(transform, images, 5)
    assert out.shape == (transform.count * 2, 11, 9, 3)
    for k in range(transform.count):
        for m in range(2):
            expected = reference(images.numpy()[m].astype(np.float64), _at(draws, k, m))
            np.testing.assert_allclose(out[k * 2 + m], expected, atol=2e-5, err_msg=f"copy {k} of image {m}")


def test_sia_transcription_covers_every_block_transformation():
    transform = SIA(copies=8)
    images = _images((3, 10, 12, 3), seed=2)
    out = transform.apply(images, tf.random.Generator.from_seed(0), 3).numpy()
    draws, reference = _draw_and_reference(transform, images, 0)
    assert set(np.unique(draws["op"])) == set(range(len(transform.ops)))  # all ten appear in these draws
    for k in range(transform.count):
        for m in range(3):
            np.testing.assert_allclose(out[k * 3 + m], reference(images.numpy()[m].astype(np.float64),
                                                                 _at(draws, k, m)), atol=2e-5)


def test_maskblock_equals_transferattack_loops():
    images = _images((3, 8, 8, 3))
    out = MaskBlock(grid=4).apply(images, None, 3).numpy()
    assert out.shape == (16 * 3, 8, 8, 3)
    for m in range(3):
        for k, expected in enumerate(np_maskblock(images.numpy()[m], 2)):  # 2-pixel patches = a 4 x 4 grid
            np.testing.assert_array_equal(out[k * 3 + m], expected)
    np.testing.assert_array_equal(maskblock_module.block_edges(224, 4), [0, 56, 112, 168, 224])
    np.testing.assert_array_equal(maskblock_module.block_edges(299, 4), [0, 75, 150, 224, 299])
    masks = maskblock_module.block_masks(7, 5, 3)
    np.testing.assert_array_equal((1 - masks).sum(0), np.ones([7, 5]))  # the blocks tile the image exactly once


# ----------------------------------------------------------------- pieces of the draws

def test_bsr_block_lengths_are_the_authors_get_length():
    generator = tf.random.Generator.from_seed(3)
    for blocks, size in ((2, 299), (3, 224), (4, 9), (5, 17)):
        weights = generator.uniform([200, blocks])
        lengths = bsr_module.split_lengths(weights, size).numpy()
        for row, w in zip(lengths, weights.numpy().astype(np.float64)):
            np.testing.assert_array_equal(row, np_get_length(w, size))
        assert (lengths.sum(-1) == size).all() and (lengths >= 0).all()


def test_bsr_single_block_is_tf_image_rotation():
    """blocks=1: each copy is the whole image rotated like tfa.image.rotate (ImageProjectiveTransformV3)."""
    images = _images((2, 9, 7, 3))
    transform = BSR(blocks=1, copies=3)
    out = transform.apply(images, tf.random.Generator.from_seed(4), 2)
    angles = _draw_and_reference(transform, images, 4)[0]["angles"].reshape(-1)
    cos, sin = np.cos(angles), np.sin(angles)
    cx, cy = 3.0, 4.0
    matrix = np.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0 * cos, 0 * cos], 1)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.tile(images, [3, 1, 1, 1]), transforms=tf.constant(matrix, tf.float32), output_shape=[9, 7],
        interpolation="BILINEAR", fill_mode="CONSTANT", fill_value=0.0)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(np.degrees(angles)).max() <= 24 and np.abs(np.degrees(angles)).max() > 10


def test_sia_cut_points_are_distinct_and_tile_the_image():
    generator = tf.random.Generator.from_seed(0)
    lengths = sia_module.random_cuts(generator, [500], 6, 3).numpy()
    assert (lengths >= 1).all() and (lengths.sum(-1) == 6).all()
    cuts = {tuple(np.cumsum(row)[:-1]) for row in lengths}
    assert cuts == {(a, b) for a in range(1, 6) for b in range(a + 1, 6)}  # every pair of cut points occurs


def test_ssa_draw_distributions():
    images = _images((4, 16, 16, 3))
    draws = ssa_module.ssa_draws(tf.random.Generator.from_seed(0), images, 20, 0.5, 16 / 255)
    mask = draws["mask"].numpy()
    assert mask.min() >= 0.5 and mask.max() <= 1.5 and abs(mask.mean() - 1) < 0.01
    assert abs(draws["noise"].numpy().std() - 16 / 255) < 0.002


def test_dct_matrix_is_orthonormal_and_matches_scipy():
    for size in (1, 5, 8):
        matrix = ssa_module.dct_matrix(size)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(size), atol=1e-12)
        np.testing.assert_allclose(matrix, scipy.fft.dct(np.eye(size), norm="ortho", axis=0), atol=1e-12)


# ----------------------------------------------------------------- identities, layout, randomness

def test_identity_settings_are_the_identity():
    images = _images((2, 9, 7, 3))
    generator = tf.random.Generator.from_seed(0)
    for transform in (BSR(blocks=1, max_angle=0.0, copies=1), SSA(rho=0.0, sigma=0.0, copies=1),
                      DeCoWA(copies=1, noise_scale=0.0, steps=0)):
        assert transform.is_identity
        np.testing.assert_allclose(transform.apply(images, generator, 2), images, atol=1e-5)
    for transform in (BSR(), SIA(), SSA(), MaskBlock(), DeCoWA(), SIA(blocks=1, copies=1), MaskBlock(grid=1)):
        assert not transform.is_identity  # SIA and MaskBlock have no identity setting


DEFAULTS = {"bsr": BSR(), "sia": SIA(), "ssa": SSA(), "maskblock": MaskBlock(), "decowa": DeCoWA(steps=0)}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_shape_range_and_distinct_copies(name):
    transform = DEFAULTS[name]
    images = _images((3, 12, 10, 3), seed=3)
    out = transform.apply(images, tf.random.Generator.from_seed(1), 3).numpy()
    assert out.shape == (transform.count * 3, 12, 10, 3) and out.dtype == np.float32
    assert np.isfinite(out).all()
    if name in ("bsr", "maskblock", "decowa"):  # convex combinations of pixels and zeros
        assert out.min() >= 0 and out.max() <= 1 + 1e-6
    # Copy k of image m sits at k * M + m (checked against the draws above and in the permutation test below);
    # different copies of the same image differ.
    copies = out.reshape(transform.count, 3, 12, 10, 3)
    for m in range(3):
        flat = copies[:, m].reshape(transform.count, -1)
        assert len({row.tobytes() for row in flat}) == transform.count


def test_permuting_copies_keep_each_images_pixels():
    """Shuffles without rotation (BSR with max_angle 0, SIA with only shifts and flips) permute each image's own
    pixels: the copy-major layout puts copy k of image m at k * M + m."""
    images = _images((3, 10, 8, 3), seed=4)
    for transform in (BSR(blocks=3, max_angle=0.0, copies=5), SIA(copies=5, ops=PERMUTING_SIA_OPS)):
        out = transform.apply(images, tf.random.Generator.from_seed(2), 3).numpy()
        for k in range(5):
            for m in range(3):
                np.testing.assert_array_equal(np.sort(out[k * 3 + m].ravel()), np.sort(images.numpy()[m].ravel()))
                assert not np.array_equal(out[k * 3 + m], images.numpy()[m])


@pytest.mark.parametrize("name", ["bsr", "sia", "ssa", "decowa"])
def test_same_seed_same_copies_other_seed_other_copies(name):
    transform = DEFAULTS[name]
    images = _images((2, 8, 8, 3))
    first = transform.apply(images, tf.random.Generator.from_seed(7), 2).numpy()
    again = transform.apply(images, tf.random.Generator.from_seed(7), 2).numpy()
    other = transform.apply(images, tf.random.Generator.from_seed(8), 2).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_traced_once_and_drawn_afresh_each_call(name):
    transform = DEFAULTS[name]
    images = _images((2, 8, 8, 3))
    traces = []

    @tf.function
    def run(x, generator):
        traces.append(1)
        return transform.apply(x, generator, 2)

    generator = tf.random.Generator.from_seed(0)
    first, second = run(images, generator).numpy(), run(images, generator).numpy()
    assert len(traces) == 1
    if name == "maskblock":  # no randomness: the same copies every call
        np.testing.assert_array_equal(first, second)
    else:
        assert not np.allclose(first, second)


# ----------------------------------------------------------------- gradients

def _jacobian(function, image):
    """Columns f(e_i) - f(0) of an affine NumPy map f (its Jacobian), flattened."""
    base = function(np.zeros_like(image)).ravel()
    columns = []
    for i in range(image.size):
        basis = np.zeros(image.size)
        basis[i] = 1.0
        columns.append(function(basis.reshape(image.shape)).ravel() - base)
    return np.stack(columns, 1)


LINEAR_CASES = {
    "bsr": BSR(blocks=2, copies=2),
    "sia": SIA(blocks=2, copies=3, ops=LINEAR_SIA_OPS),
    "ssa_chain_rule": SSA(copies=2, chain_rule=True),
    "decowa": DeCoWA(copies=2, steps=0),
}


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_gradient_is_the_numpy_transpose(case):
    """For fixed draws these copies are affine in the image: d <w, out> / d x = sum_k J_k^T w_k."""
    transform = LINEAR_CASES[case]
    images = _images((2, 5, 4, 3), seed=5)
    weights = tf.constant(np.random.default_rng(0).normal(size=(transform.count * 2, 5, 4, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(transform.apply(images, tf.random.Generator.from_seed(9), 2) * weights)
    gradient = tape.gradient(total, images).numpy()
    draws, reference = _draw_and_reference(transform, images, 9)
    w = weights.numpy().reshape(transform.count, 2, -1)
    for m in range(2):
        expected = sum(_jacobian(lambda x: reference(x, _at(draws, k, m)), images.numpy()[m]).T @ w[k, m]
                       for k in range(transform.count))
        np.testing.assert_allclose(gradient[m].ravel(), expected, atol=1e-4)


def test_maskblock_gradient_is_the_sum_of_masks():
    images = _images((2, 8, 8, 3))
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(MaskBlock(grid=4).apply(images, None, 2))
    np.testing.assert_allclose(tape.gradient(total, images), np.full([2, 8, 8, 3], 15.0))


def test_ssa_default_gradient_is_straight_through():
    """The authors' code uses the gradient w.r.t. the spectrum copy as the gradient w.r.t. x."""
    images = _images((2, 6, 6, 3))
    weights = tf.constant(np.random.default_rng(1).normal(size=(8, 6, 6, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        out = SSA(copies=4).apply(images, tf.random.Generator.from_seed(0), 2)
        total = tf.reduce_sum(out * weights)
    np.testing.assert_allclose(tape.gradient(total, images), weights.numpy().reshape(4, 2, 6, 6, 3).sum(0), atol=1e-5)
    # The forward value is still the spectrum transformation, not the identity.
    assert np.abs(out.numpy() - np.tile(images.numpy(), [4, 1, 1, 1])).mean() > 0.02


def test_gradients_exist_and_are_finite_for_the_defaults():
    images = _images((2, 8, 8, 3))
    for transform in DEFAULTS.values():
        with tf.GradientTape() as tape:
            tape.watch(images)
            out = transform.apply(images, tf.random.Generator.from_seed(0), 2)
            total = tf.reduce_sum(out * tf.range(8, dtype=tf.float32)[None, None, :, None])
        gradient = tape.gradient(total, images)
        assert gradient is not None and np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).sum() > 0


# ----------------------------------------------------------------- DeCoWA's adaptive step

def test_decowa_noise_step_descends_the_objective():
    """noise <- noise - rho * d objective(warp(x, noise)) / d noise, compared with central finite differences of
    the NumPy TPS transcription, on a linear per-image objective."""
    images = _images((2, 7, 6, 3), seed=6)
    probe = np.random.default_rng(2).normal(size=(7, 6, 3))

    def objective(warped):
        return tf.reduce_sum(warped * tf.constant(probe, tf.float32), axis=[1, 2, 3])

    noise = decowa_module.decowa_draws(tf.random.Generator.from_seed(3), images, 2, 3, 1.0)
    stepped = decowa_module.adapt_noise(images, noise, 3, 0.01, 1, objective).numpy()
    for k in range(2):
        for m in range(2):
            image, start = images.numpy()[m].astype(np.float64), noise.numpy()[k, m].astype(np.float64)
            gradient = np.zeros_like(start)
            for index in np.ndindex(*start.shape):
                step = np.zeros_like(start)
                step[index] = 1e-6
                gradient[index] = ((np_decowa(image, start + step, 3) - np_decowa(image, start - step, 3)) * probe
                                   ).sum() / 2e-6
            np.testing.assert_allclose(stepped[k, m], start - 0.01 * gradient, atol=1e-5)
            assert np.abs(gradient).max() > 0.1


def test_decowa_apply_with_objective_adapts_and_keeps_the_image_gradient():
    images = _images((2, 7, 6, 3), seed=7)
    probe = tf.constant(np.random.default_rng(3).normal(size=(7, 6, 3)), tf.float32)
    transform = DeCoWA(copies=2, rho=0.05)

    def objective(warped):
        return tf.reduce_sum(warped * probe, axis=[1, 2, 3])

    weights = tf.constant(np.random.default_rng(4).normal(size=(4, 7, 6, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        out = transform.apply(images, tf.random.Generator.from_seed(1), 2, objective=objective)
        total = tf.reduce_sum(out * weights)
    gradient = tape.gradient(total, images).numpy()
    noise = decowa_module.decowa_draws(tf.random.Generator.from_seed(1), images, 2, 3, 2.0)
    adapted = decowa_module.adapt_noise(images, noise, 3, 0.05, 1, objective).numpy()
    assert np.abs(adapted - noise.numpy()).max() > 1e-3  # the step moved the noise
    w = weights.numpy().reshape(2, 2, -1)
    for m in range(2):
        image = images.numpy()[m].astype(np.float64)
        for k in range(2):
            np.testing.assert_allclose(out.numpy()[k * 2 + m], np_decowa(image, adapted[k, m], 3), atol=2e-5)
        # The gradient w.r.t. x goes through the warp only (the adapted noise is a constant, as in the authors' code).
        expected = sum(_jacobian(lambda x: np_decowa(x, adapted[k, m], 3), image).T @ w[k, m] for k in range(2))
        np.testing.assert_allclose(gradient[m].ravel(), expected, atol=1e-4)


def test_decowa_without_objective_warns_at_trace_time():
    with pytest.warns(UserWarning, match="not adapted"):
        DeCoWA(copies=2).apply(_images((2, 8, 8, 3)), tf.random.Generator.from_seed(0), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeCoWA(copies=2, steps=0).apply(_images((2, 8, 8, 3)), tf.random.Generator.from_seed(0), 2)


# ----------------------------------------------------------------- components, XLA, end to end

def test_specs_parse_print_and_reject_bad_values():
    parsed = components.parse("transform", "bsr:3,copies=4,sia:blocks=2,ops=vflip+dct,ssa,maskblock:2,decowa:5")
    assert parsed == (BSR(blocks=3, copies=4), SIA(blocks=2, ops=("vflip", "dct")), SSA(), MaskBlock(grid=2),
                      DeCoWA(copies=5))
    for component in parsed:
        assert components.parse_one("transform", component.spec()) == component
        assert component.makes_copies and component.xla_compilable and component.count >= 1
    assert [c.count for c in parsed] == [4, 20, 20, 4, 5]
    for bad in ("sia:ops=vflip+twirl", "sia:ops=vflip+vflip", "bsr:blocks=0", "ssa:rho=-1", "decowa:mesh=1"):
        with pytest.raises(ComponentError):
            components.parse("transform", bad)
    with pytest.raises(ValueError, match="at least 5 pixels"):
        SIA(blocks=5).apply(_images((1, 4, 8, 3)), tf.random.Generator.from_seed(0), 1)


def test_pure_functions_compile_with_xla():
    """xla_compilable: the draws-to-copies functions (gathers, einsums, one-hots) compile and agree with eager."""
    images = _images((2, 8, 8, 3))
    generator = tf.random.Generator.from_seed(0)
    cases = [
        (lambda x, d: bsr_module.block_shuffle_rotate(x, **d), bsr_module.bsr_draws(generator, images, 2, 2, 24.0)),
        (lambda x, d: sia_module.structure_invariant(x, SIA(), **d),
         sia_module.sia_draws(generator, images, 2, 3, SIA())),
        (lambda x, d: decowa_module.tps_warp(x, d["noise"], 3),
         {"noise": decowa_module.decowa_draws(generator, images, 2, 3, 2.0)}),
    ]  # (SSA and MaskBlock are one einsum / one product with constants.)
    for function, draws in cases:
        compiled = tf.function(function, jit_compile=True)
        np.testing.assert_allclose(compiled(images, draws), function(images, draws), atol=1e-5)


@pytest.fixture(scope="module")
def linear_problem():
    rng = np.random.default_rng(1)
    model = LinearModel((8, 8, 3))
    clean = rng.uniform(0.2, 0.8, size=(2, 8, 8, 3)).astype(np.float32)
    return model, clean, np.array([3, 7])


@pytest.mark.parametrize("spec", ["bsr", "sia", "ssa", "maskblock", "decowa", "bsr:3,copies=3,si:2"])
def test_end_to_end_mi_fgsm_with_each_transform(linear_problem, spec):
    model, clean, labels = linear_problem
    attack = build("mi_fgsm", transforms=spec, steps=2)
    expected_copies = int(np.prod([t.count for t in components.parse("transform", spec)]))
    assert attack.config.copies == expected_copies
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decowa: the current loop passes no objective (see its module doc)
        adv = attack(model, clean, labels, seed=3).numpy()
        again = attack(model, clean, labels, seed=3).numpy()
    eps = attack.config.eps
    assert np.abs(adv - clean).max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    np.testing.assert_array_equal(adv, again)  # same seed, same attack
    before = tf.keras.losses.sparse_categorical_crossentropy(labels, model(clean), from_logits=True)
    after = tf.keras.losses.sparse_categorical_crossentropy(labels, model(tf.constant(adv)), from_logits=True)
    assert (after.numpy() > before.numpy()).all()


def test_sia_matrices_are_exact_for_large_blocks():
    """The closed-form DCT low-pass (float32, exact angle reduction) and the resize matrices against NumPy at
    ImageNet sizes, several bands per axis."""
    for size, lengths in ((299, [299]), (224, [100, 124]), (299, [1, 2, 296]), (299, [150, 149])):
        lengths = np.array(lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        band = np.repeat(np.arange(len(lengths)), lengths)
        start, length = tf.constant(starts[band][None], tf.int32), tf.constant(lengths[band][None], tf.int32)
        lowpass = sia_module.dct_lowpass_matrix(start, length, size, 0.4).numpy()[0]
        resize = sia_module.resize_matrix(start, length, size, 0.8).numpy()[0]
        expected_lowpass, expected_resize = np.zeros((size, size)), np.zeros((size, size))
        for s, n in zip(starts, lengths):
            basis = scipy.fft.dct(np.eye(n), norm="ortho", axis=0)
            keep = (np.arange(n) < n - int(n * 0.4)).astype(float)
            expected_lowpass[s:s + n, s:s + n] = basis.T @ (keep[:, None] * basis)
            small = int(n * 0.8) + 1
            expected_resize[s:s + n, s:s + n] = np_torch_bilinear(small, n) @ np_torch_bilinear(n, small)
        np.testing.assert_allclose(lowpass, expected_lowpass, atol=2e-5)
        np.testing.assert_allclose(resize, expected_resize, atol=1e-6)
