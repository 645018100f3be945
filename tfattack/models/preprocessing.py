"""Per-model input preprocessing, applied *inside* the classifier.

Every classifier takes float32 RGB in [0, 1]; the functions here map that to what the weights were
trained on. All are differentiable and batched. Keys are referenced by `ModelSpec.preprocessing`.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

# slim's vgg_preprocessing subtracts these RGB channel means from 0..255 pixels (no BGR flip).
VGG_RGB_MEANS = (123.68, 116.78, 103.94)
# Keras-applications "caffe" mode flips RGB to BGR and subtracts these BGR means.
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)
# torchvision's ImageNet normalisation of [0, 1] RGB (timm's "IMAGENET_DEFAULT" too).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def inception(x):
    """slim Inception/ResNet-v2/adv-trained nets and Keras Inception models: [-1, 1]."""
    return x * 2.0 - 1.0


def bgr_inception(x):
    """Facebook's feature-denoising models (OpenCV BGR images): BGR, pixel * 2/255 - 1."""
    return tf.reverse(x, axis=[-1]) * 2.0 - 1.0


def vgg_rgb_mean(x):
    """slim VGG checkpoints: 0..255 RGB minus the RGB means."""
    return x * 255.0 - tf.constant(VGG_RGB_MEANS, x.dtype)


def caffe_bgr_mean(x):
    """Keras ResNet50 / VGG19: 0..255, RGB -> BGR, minus the BGR means."""
    return tf.reverse(x, axis=[-1]) * 255.0 - tf.constant(CAFFE_BGR_MEANS, x.dtype)


def efficientnet_lite(x):
    """EfficientNet-Lite (Google's TF release): (pixel - 127) / 128 with pixel in 0..255."""
    return (x * 255.0 - 127.0) / 128.0


def mobilenet_uint8(x):
    """Quantised MobileNets (TFLite, uint8 in with scale 1/128, zero point 128): pixel/128 - 1."""
    return x * (255.0 / 128.0) - 1.0


def torchvision(x):
    """torchvision and most PyTorch ImageNet models: (x - mean) / std per RGB channel, x in [0, 1]."""
    return (x - tf.constant(IMAGENET_MEAN, x.dtype)) / tf.constant(IMAGENET_STD, x.dtype)


def unit(x):
    """Models trained on pixel / 255 (e.g. Tiny Darknet)."""
    return x


def pixels(x):
    """Models that take 0..255 pixels and normalise inside their own graph (e.g. TFLite uint8 input)."""
    return x * 255.0


PREPROCESSORS = {
    "inception": inception,
    "bgr_inception": bgr_inception,
    "vgg_rgb_mean": vgg_rgb_mean,
    "caffe_bgr_mean": caffe_bgr_mean,
    "efficientnet_lite": efficientnet_lite,
    "mobilenet_uint8": mobilenet_uint8,
    "torchvision": torchvision,
    "unit": unit,
    "pixels": pixels,
}


def get(key: str):
    try:
        return PREPROCESSORS[key]
    except KeyError:
        raise ValueError(f"unknown preprocessing {key!r}; known: {', '.join(sorted(PREPROCESSORS))}") from None


@functools.lru_cache(maxsize=64)
def bilinear_taps(in_size: int, out_size: int):
    """Source indices and weights [out_size, taps] of PIL-style bilinear resampling along one axis.

    Pixel centres at half-integers; when shrinking, the triangle filter is widened by the scale factor
    (antialiasing, as PIL's BILINEAR and tf.image.resize(antialias=True) do); weights sum to 1.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    taps = int(np.ceil(support)) * 2 + 1
    centres = (np.arange(out_size) + 0.5) * scale
    first = np.floor(centres - support + 0.5).astype(np.int64)
    index = first[:, None] + np.arange(taps)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs((index + 0.5 - centres[:, None]) / support))
    weights[(index < 0) | (index >= in_size)] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(index, 0, in_size - 1).astype(np.int32), weights.astype(np.float32)


def _resample_axis(images, axis: int, out_size: int):
    index, weights = bilinear_taps(int(images.shape[axis]), out_size)
    gathered = tf.gather(images, index, axis=axis)  # the tap axis lands right after `axis`
    shape = [1] * (images.shape.rank + 1)
    shape[axis], shape[axis + 1] = weights.shape
    return tf.reduce_sum(gathered * tf.constant(weights.reshape(shape), images.dtype), axis=axis + 1)


def resize_to(images, size: int):
    """Differentiable bilinear resize to size x size; identity when the batch already has that size.

    Downscaling is antialiased like PIL's bilinear (so a 299 image fed to a 224 model sees what a
    PIL-resized evaluation image shows it). Written as a gather of a few taps per output pixel and a
    weighted sum, so it compiles under XLA (tf.image.resize's antialiased kernel does not) and costs
    little next to any network.
    """
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        return tf.image.resize(images, [size, size], method="bilinear", antialias=True)
    if height == size and width == size:
        return images
    if height != size:
        images = _resample_axis(images, 1, size)
    if width != size:
        images = _resample_axis(images, 2, size)
    return images
