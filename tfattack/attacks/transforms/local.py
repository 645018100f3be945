"""Local copies for self-universality (SU, Wei et al. CVPR 2023): a random resized crop of the *clean* image plus the
whole current perturbation, next to the adversarial image itself.

    copies = [x_t ;  crop(x) + (x_t - x)]          crop: area `scale` of the image, aspect ratio in [3/4, 4/3],
                                                    resized back to H x W

The perturbation has to work on a different region of the image too, which is what makes it universal across the
image's own content. The crop is drawn per image (the authors' torchvision transform draws one for the batch) and
sampled bilinearly from its box (TF's crop_and_resize, not torchvision's antialiased resize).
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from tfattack.attacks.components import Transform, param, register


def crop_boxes(generator, count: int, height: int, width: int, scale: float):
    """[count, 4] normalised boxes (y1, x1, y2, x2) of random crops of `scale` x the image's area, aspect ratio
    log-uniform in [3/4, 4/3] (torchvision's RandomResizedCrop), placed uniformly; corners at pixel centres."""
    ratio = tf.exp(generator.uniform([count], math.log(3 / 4), math.log(4 / 3)))
    area = scale * height * width
    crop_h = tf.clip_by_value(tf.round(tf.sqrt(area / ratio)), 1.0, float(height))
    crop_w = tf.clip_by_value(tf.round(tf.sqrt(area * ratio)), 1.0, float(width))
    top = tf.floor(generator.uniform([count]) * (height - crop_h + 1))
    left = tf.floor(generator.uniform([count]) * (width - crop_w + 1))
    return tf.stack([top / (height - 1), left / (width - 1),
                     (top + crop_h - 1) / (height - 1), (left + crop_w - 1) / (width - 1)], axis=1)


@register
@dataclasses.dataclass(frozen=True)
class LocalCrop(Transform):
    """Two copies per image: the adversarial image, and a random crop of the clean image carrying the whole
    perturbation. It must be the first transform and the only copy maker (its second copy is built from the
    perturbation itself)."""

    name = "local_crop"
    positional = "scale"
    paper = "Wei et al., Enhancing the self-universality for transferable targeted attacks, CVPR 2023"
    needs_clean = True
    xla_compilable = False  # CropAndResize
    scale: float = param(0.1, "Area of the crop as a share of the image (paper and code: 0.1).", above=0.0, high=1.0)

    @property
    def count(self) -> int:
        return 2

    def check_config(self, config) -> None:
        makers, _ = config.split_transforms()
        if not makers or makers[0] is not self or len(makers) > 1:
            raise self.error("must be the first transform and the only copy maker (it adds the perturbation to a "
                             "crop of the clean image); put view transforms such as di after it")

    def apply(self, images, generator, batch, clean=None):
        groups = images.shape[0] // clean.shape[0]
        clean = tf.tile(clean, [groups, 1, 1, 1])
        count, height, width = images.shape[0], images.shape[1], images.shape[2]
        boxes = crop_boxes(generator, count, height, width, self.scale)
        local = tf.image.crop_and_resize(clean, boxes, tf.range(count), [height, width])
        return tf.concat([images, local + (images - clean)], axis=0)
