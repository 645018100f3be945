"""Test oracle: the official TF-slim nets (tf_slim.nets), run in TF1 graph mode on TF 2.21.

tf-slim 1.1.0 imports `tf_keras.legacy_tf_layers`, which tf_keras 2.21 keeps under
`tf_keras.src.legacy_tf_layers`; aliasing that package and its submodules in sys.modules makes
tf_slim's layers import. Tests only: tfattack itself never imports tf_slim or tf_keras.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import numpy as np


def install_shim():
    legacy = importlib.import_module("tf_keras.src.legacy_tf_layers")
    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy)
    for info in pkgutil.iter_modules(legacy.__path__):
        module = importlib.import_module(f"tf_keras.src.legacy_tf_layers.{info.name}")
        sys.modules.setdefault(f"tf_keras.legacy_tf_layers.{info.name}", module)


def _oracle_net(name):
    install_shim()
    import tf_slim as slim
    from tf_slim.nets import inception_v3, resnet_v2, vgg

    table = {
        "inception_v3": (inception_v3.inception_v3, inception_v3.inception_v3_arg_scope, 1001),
        "resnet_v2_50": (resnet_v2.resnet_v2_50, resnet_v2.resnet_arg_scope, 1001),
        "resnet_v2_101": (resnet_v2.resnet_v2_101, resnet_v2.resnet_arg_scope, 1001),
        "resnet_v2_152": (resnet_v2.resnet_v2_152, resnet_v2.resnet_arg_scope, 1001),
        "vgg_16": (vgg.vgg_16, vgg.vgg_arg_scope, 1000),
        "vgg_19": (vgg.vgg_19, vgg.vgg_arg_scope, 1000),
    }
    return slim, table[name]


def random_value(name, shape, rng):
    """Checkpoint-like random values: BN statistics far from identity so that BN is really tested."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "moving_variance":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf in ("moving_mean", "beta", "biases"):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if leaf == "gamma":
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def run_oracle(name, preprocessed_images, prefix, seed=0):
    """Builds the official slim net `name`, fills it with random values, saves a TF1 V2 checkpoint at
    `prefix` (tf.compat.v1.train.Saver, the official writer) and returns its outputs on the images.

    Returns (logits [N, classes], end_points as numpy dict, {variable name: shape} in creation order).
    `preprocessed_images` are already in the net's input range and size.
    """
    import tensorflow as tf

    slim, (net_fn, arg_scope_fn, num_classes) = _oracle_net(name)
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, preprocessed_images.shape)
        with slim.arg_scope(arg_scope_fn()):
            kwargs = {"is_training": False, "num_classes": num_classes}
            if name.startswith("resnet"):
                kwargs["is_training"] = False
            logits, end_points = net_fn(x, **kwargs)
        variables = tf.compat.v1.global_variables()
        shapes = {v.op.name: v.shape.as_list() for v in variables}
        # Values are fed, not embedded as graph constants (VGG-16 would take ~40 s and 8 GB otherwise).
        feeds = {v.initializer.inputs[1]: random_value(v.op.name, v.shape.as_list(), rng) for v in variables}
        saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V2)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run([v.initializer for v in variables], feeds)
            saver.save(session, prefix, write_meta_graph=False)
            logits_value, points = session.run(
                [logits, {k: v for k, v in end_points.items() if isinstance(v, tf.Tensor)}],
                {x: preprocessed_images})
    if logits_value.ndim == 4:
        logits_value = logits_value[:, 0, 0, :]
    return logits_value, points, shapes
