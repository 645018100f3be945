"""DeCoWA, deformation-constrained warping (Lin et al. AAAI 2024): copies warped by a thin-plate spline (TPS)
whose control-point noise is first moved one gradient step *down* the attack objective.

Facts from the authors' code (TransferAttack's decowa.py, which the authors' repository points to):
  - control points: a mesh x mesh grid over [-1, 1]^2 (mesh 3); the interior ones (one point for mesh 3) move by
    noise (U[0, 1) - 0.5) * noise_scale (noise_scale 2, so up to +-1, half the image) in normalised coordinates;
  - the warp: a TPS (kernel r^2 log r^2) through (grid point -> noisy point), evaluated at every pixel, then
    bilinear sampling with zero padding (grid_sample);
  - adaptive control: noise <- noise - rho * d objective(warp(x, noise)) / d noise, one step (rho 0.01), with x
    held constant; then the gradient of the objective of warp(x, noise) w.r.t. x, averaged over 20 warps.

The TPS map is linear in the control points and the control grid is fixed, so the map from noise to sampling
positions is one constant matrix (`tps_weights`): no linear solve inside the attack.

The adaptive step needs the model: `apply(..., objective=f)` with f(images) -> per-image objective values (the
loop's `Context.objective`, which tiles the labels to the stack). Without it the warps keep their random noise
(DeCoW without the adaptive control) and a warning says so.

Deviations: (1) the noise is drawn per copy *and image* and stepped on that image's objective, where the authors
share one noise map across the batch and step on the batch-mean loss (so their step per image is rho / batch);
(2) pixel centres are at -1 and 1 both in the TPS grid and in the sampling (align_corners=True), so zero noise is
exactly the identity; the authors' code samples with align_corners=False, a zoom by W / (W - 1) (0.4% at 224).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import ClassVar

import numpy as np
import tensorflow as tf

from tfattack.attacks.components import Transform, param, register
from tfattack.attacks.transforms.bsr import bilinear_copies, copies_shape, copy_major


def control_points(mesh: int) -> np.ndarray:
    """[mesh*mesh, 2] (x, y) grid over [-1, 1]^2, row-major (the authors' grid_points_2d)."""
    line = np.linspace(-1.0, 1.0, mesh)
    y, x = np.meshgrid(line, line, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def interior_index(mesh: int) -> np.ndarray:
    """Indices of the control points that move (not on the border), row-major."""
    return np.array([i * mesh + j for i in range(1, mesh - 1) for j in range(1, mesh - 1)], np.int64)


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return squared * np.log(squared + 1e-9)


@functools.lru_cache(maxsize=None)
def tps_weights(height: int, width: int, mesh: int) -> np.ndarray:
    """[H*W, mesh*mesh]: the TPS through control points X -> Y evaluated at every pixel is tps_weights @ Y
    (float64). Pixel (i, j) sits at x = -1 + 2j/(W-1), y = -1 + 2i/(H-1), row-major."""
    points = control_points(mesh)
    k = len(points)
    system = np.zeros([k + 3, k + 3])
    affine = np.concatenate([np.ones([k, 1]), points], 1)
    system[:k, :k] = _tps_kernel(points, points)
    system[:k, k:] = affine
    system[k:, :k] = affine.T
    ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij")
    pixels = np.stack([xs.ravel(), ys.ravel()], 1)
    basis = np.concatenate([_tps_kernel(pixels, points), np.ones([len(pixels), 1]), pixels], 1)
    return basis @ np.linalg.inv(system)[:, :k]


def decowa_draws(generator, images, copies: int, mesh: int, noise_scale: float):
    """Interior control-point noise [copies, M, (mesh-2)^2, 2] (dx, dy): (U[0, 1) - 0.5) * noise_scale."""
    shape = tf.concat([copies_shape(images, copies), [(mesh - 2) ** 2, 2]], 0)
    return (generator.uniform(shape, dtype=images.dtype) - 0.5) * noise_scale


def tps_warp(images, noise, mesh: int):
    """The warped copies: images [M, H, W, C], noise [copies, M, (mesh-2)^2, 2] -> [copies*M, H, W, C],
    copy-major. Differentiable in the images and in the noise."""
    height, width = images.shape[1], images.shape[2]
    weights = tps_weights(height, width, mesh)
    fixed = tf.constant(weights @ control_points(mesh), tf.float32)                     # [P, 2]
    moving = tf.constant(weights[:, interior_index(mesh)], tf.float32)                   # [P, interior]
    position = fixed + tf.einsum("pi,kmid->kmpd", moving, tf.cast(noise, tf.float32))   # [k, M, P, 2] (x, y)
    x = (position[..., 0] + 1.0) * ((width - 1) / 2.0)
    y = (position[..., 1] + 1.0) * ((height - 1) / 2.0)
    return copy_major(bilinear_copies(images, y, x), height, width)


def adapt_noise(images, noise, mesh: int, rho: float, steps: int, objective):
    """DeCoWA's adaptive control: `steps` steps noise <- noise - rho * d sum(objective(warp(x, noise))) / d noise,
    x held constant; the result carries no gradient (the authors detach it)."""
    fixed = tf.stop_gradient(images)
    for _ in range(steps):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(noise)
            value = tf.reduce_sum(objective(tps_warp(fixed, noise, mesh)))
        noise = tf.stop_gradient(noise - rho * tape.gradient(value, noise))
    return noise


@register
@dataclasses.dataclass(frozen=True)
class DeCoWA(Transform):
    """Deformation-constrained warping: `copies` TPS warps with random control-point noise, each first moved
    `steps` gradient steps of size rho down the attack objective (needs `objective`, see the module doc)."""

    name = "decowa"
    budget_param = "copies"
    positional = "copies"
    paper = ("Lin et al., Boosting adversarial transferability across model genus by deformation-constrained "
             "warping, AAAI 2024")
    needs_objective: ClassVar[bool] = True   # apply() takes objective=, see the module doc
    copies: int = param(20, "Warped copies per gradient evaluation (authors' code: 20).", low=1)
    mesh: int = param(3, "Control points per side; the interior (mesh-2)^2 move (authors' code: 3).", low=2)
    noise_scale: float = param(2.0, "Control-point noise (U[0,1) - 0.5) * noise_scale in [-1, 1] image coordinates "
                                    "(authors' code: 2).", low=0.0)
    rho: float = param(0.01, "Step size of the noise update, down the objective (authors' code: 0.01).", low=0.0)
    steps: int = param(1, "Noise update steps (authors' code: 1).", low=0)

    @property
    def is_identity(self) -> bool:
        still = self.mesh == 2 or (self.noise_scale == 0 and (self.steps == 0 or self.rho == 0))
        return still and self.copies == 1

    @property
    def count(self) -> int:
        return self.copies

    def search_passes(self) -> int:
        return self.steps if self.rho and self.mesh > 2 else 0

    @tf.autograph.experimental.do_not_convert  # static Python control flow only: no conversion needed
    def apply(self, images, generator, batch, objective=None):
        noise = decowa_draws(generator, images, self.copies, self.mesh, self.noise_scale)
        if self.steps and self.rho and self.mesh > 2:
            if objective is None:
                warnings.warn("transform 'decowa': no objective was passed to apply(), so the warp noise is not "
                              "adapted (random warps, DeCoW without the adaptive control)")
            else:
                noise = adapt_noise(images, noise, self.mesh, self.rho, self.steps, objective)
        return tps_warp(images, noise, self.mesh)
