"""MaskBlock (Fan et al. 2022): one copy per block of a fixed grid, with that block set to zero.

TransferAttack's maskblock.py (no code from the authors is public) cuts 224x224 images into 56x56 patches, a 4x4
grid, and averages the gradients of the 16 copies. Here the grid is given by its number of blocks per side, so
the number of copies does not depend on the image size (`count` must be static): block edges at
round(i * size / grid), which is 56-pixel patches at 224 and covers the whole image at any size (TransferAttack's
56-pixel patches leave the last 19 rows and columns of a 299 image unmasked). No randomness.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfattack.attacks.components import Transform, param, register


def block_edges(size: int, grid: int) -> np.ndarray:
    """Edges 0 = e_0 < ... < e_grid = size of the blocks along one axis: round(i * size / grid), halves up."""
    return np.floor(np.arange(grid + 1) * size / grid + 0.5).astype(np.int64)


def block_masks(height: int, width: int, grid: int) -> np.ndarray:
    """[grid*grid, H, W] float32: copy k = i * grid + j is zero on block (i, j) (row i, column j), one elsewhere."""
    rows, cols = block_edges(height, grid), block_edges(width, grid)
    masks = np.ones([grid * grid, height, width], np.float32)
    for i in range(grid):
        for j in range(grid):
            masks[i * grid + j, rows[i]:rows[i + 1], cols[j]:cols[j + 1]] = 0.0
    return masks


def mask_blocks(images, grid: int):
    """[grid^2 * M, H, W, C], copy-major: copy k is every image with block k zeroed."""
    masks = tf.constant(block_masks(images.shape[1], images.shape[2], grid), images.dtype)
    out = masks[:, None, :, :, None] * images[None]
    return tf.reshape(out, tf.concat([[-1], images.shape[1:]], 0))


@register
@dataclasses.dataclass(frozen=True)
class MaskBlock(Transform):
    """MaskBlock: grid x grid copies, copy k with block k of a fixed grid set to zero."""

    name = "maskblock"
    positional = "grid"
    paper = "Fan et al., MaskBlock: transferable adversarial examples with Bayes approach, arXiv:2208.06538, 2022"
    grid: int = param(4, "Blocks per side; one copy per block (TransferAttack: 56-pixel patches of a 224 image, "
                         "i.e. 4).", low=1)

    @property
    def count(self) -> int:
        return self.grid * self.grid

    @tf.autograph.experimental.do_not_convert  # static Python control flow only: no conversion needed
    def apply(self, images, generator, batch):
        return mask_blocks(images, self.grid)
