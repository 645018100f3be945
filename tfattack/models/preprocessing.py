"""Per-model input preprocessing, applied *inside* the classifier.

Every classifier takes float32 RGB in [0, 1]; the functions here map that to what the weights were
trained on. All are differentiable and batched. Keys are referenced by `ModelSpec.preprocessing`.
"""

from __future__ import annotations

import tensorflow as tf

# slim's vgg_preprocessing subtracts these RGB channel means from 0..255 pixels (no BGR flip).
VGG_RGB_MEANS = (123.68, 116.78, 103.94)
# Keras-applications "caffe" mode flips RGB to BGR and subtracts these BGR means.
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)


def inception(x):
    """slim Inception/ResNet-v2/adv-trained nets and Keras Inception models: [-1, 1]."""
    return x * 2.0 - 1.0


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


def unit(x):
    """Models trained on pixel / 255 (e.g. Tiny Darknet)."""
    return x


def pixels(x):
    """Models that take 0..255 pixels and normalise inside their own graph (e.g. TFLite uint8 input)."""
    return x * 255.0


PREPROCESSORS = {
    "inception": inception,
    "vgg_rgb_mean": vgg_rgb_mean,
    "caffe_bgr_mean": caffe_bgr_mean,
    "efficientnet_lite": efficientnet_lite,
    "mobilenet_uint8": mobilenet_uint8,
    "unit": unit,
    "pixels": pixels,
}


def get(key: str):
    try:
        return PREPROCESSORS[key]
    except KeyError:
        raise ValueError(f"unknown preprocessing {key!r}; known: {', '.join(sorted(PREPROCESSORS))}") from None


def resize_to(images, size: int):
    """Differentiable bilinear resize to size x size; identity when the batch already has that size.

    Downscaling is antialiased (a triangle filter widened by the scale, like PIL's bilinear), so a 299
    image fed to a 224 model sees what PIL-resized evaluation images show it.
    """
    height, width = images.shape[1], images.shape[2]
    if height == size and width == size:
        return images
    antialias = height is None or width is None or height > size or width > size
    return tf.image.resize(images, [size, size], method="bilinear", antialias=antialias)
