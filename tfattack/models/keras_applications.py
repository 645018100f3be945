"""Keras-applications ImageNet classifiers (ResNet50, VGG19, InceptionV3, InceptionResNetV2) as networks.

The architectures are Keras 3's own `keras.applications` builders, built with `weights=None` and
`classifier_activation=None` so that the network returns logits; the weights are the official
legacy-format `.h5` files Keras downloads into `~/.keras/models`. Those files were written by Keras 1/2:
the root group's `layer_names` attribute lists the layers in model order, each layer's group lists its
arrays in `weight_names` (trainable first, then non-trainable). The array *names* changed between Keras
versions (`conv1_W_1:0` in the 2016 VGG file, `conv1_conv/kernel:0` later), so weights are matched by
order and checked by shape, as Keras itself does.

Hashes: Keras publishes an MD5 per file (in `FILE_MD5`, not in `ModelSpec.sha256`, which is SHA-256
only). Loading does not hash the file (a 549 MB VGG19 file on every load, and self-made test files
carry the official names); `tfattack.models.download` checks the MD5 when it fetches a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf

from tfattack.models import loading, registry
from tfattack.models.checkpoint import CheckpointError
from tfattack.models.registry import ModelSpec

WEIGHTS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_KERAS_LICENCE = "Keras code Apache-2.0"


@dataclasses.dataclass(frozen=True)
class _KerasModel:
    """One Keras-applications model: its builder and the facts about its official weight file."""

    name: str
    builder: str          # attribute of keras.applications
    image_size: int
    preprocessing: str
    url_folder: str       # folder under WEIGHTS_BASE_URL
    file_name: str
    md5: str              # as listed in keras/src/applications/<family>.py
    size_mb: int          # "Size (MB)" column of the keras.io applications table
    top1: float           # "Top-1 Accuracy" column of the same table
    licence: str
    provenance: str
    paper: str


_MODELS = (
    _KerasModel(
        "keras_resnet50", "ResNet50", 224, "caffe_bgr_mean", "resnet/",
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "2cb95161c43110f7111970584f804107", 98, 74.9,
        f"MIT (weights ported from Kaiming He's Caffe release, per the Keras deep-learning-models README); {_KERAS_LICENCE}",
        "Keras applications; ResNet-50 weights converted from Kaiming He's original Caffe model",
        "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 (arXiv:1512.03385)"),
    _KerasModel(
        "keras_vgg19", "VGG19", 224, "caffe_bgr_mean", "vgg19/",
        "vgg19_weights_tf_dim_ordering_tf_kernels.h5", "cbe5617147190e668d6c5d5026f83318", 549, 71.3,
        f"CC BY 4.0 (weights ported from the Oxford VGG release, per the Keras deep-learning-models README); {_KERAS_LICENCE}",
        "Keras applications; VGG-19 weights converted from the Oxford Visual Geometry Group's Caffe model",
        "Simonyan, Zisserman. Very Deep Convolutional Networks for Large-Scale Image Recognition. ICLR 2015 "
        "(arXiv:1409.1556)"),
    _KerasModel(
        "keras_inception_v3", "InceptionV3", 299, "inception", "inception_v3/",
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5", "9a0d58056eeedaa3f26cb7ebd46da564", 92, 77.9,
        f"MIT (weights trained by the Keras authors, per the Keras deep-learning-models README); {_KERAS_LICENCE}",
        "Keras applications; Inception-v3 weights trained by the Keras authors",
        "Szegedy et al. Rethinking the Inception Architecture for Computer Vision. CVPR 2016 (arXiv:1512.00567)"),
    _KerasModel(
        "keras_inception_resnet_v2", "InceptionResNetV2", 299, "inception", "inception_resnet_v2/",
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5", "e693bd0210a403b3192acc6073ad2e96", 215, 80.3,
        f"Apache-2.0 (weights converted from the TF-slim checkpoint, per the Keras module docstring); {_KERAS_LICENCE}",
        "Keras applications; Inception-ResNet-v2 weights converted from the TF-slim model zoo checkpoint",
        "Szegedy, Ioffe, Vanhoucke, Alemi. Inception-v4, Inception-ResNet and the Impact of Residual Connections "
        "on Learning. AAAI 2017 (arXiv:1602.07261)"),
)
_BY_NAME = {m.name: m for m in _MODELS}

# Published digests and approximate sizes, keyed by registry name (read by tfattack.models.download).
FILE_MD5: Dict[str, str] = {m.name: m.md5 for m in _MODELS}
FILE_SIZE_MB: Dict[str, int] = {m.name: m.size_mb for m in _MODELS}


def _spec(model: _KerasModel) -> ModelSpec:
    return ModelSpec(
        name=model.name, architecture=model.name, source="keras_h5", image_size=model.image_size,
        preprocessing=model.preprocessing, num_classes=1000,
        url=f"{WEIGHTS_BASE_URL}{model.url_folder}{model.file_name}", archive_files=(model.file_name,),
        default_location=model.file_name, licence=model.licence, provenance=model.provenance,
        reference_top1=model.top1,
        reference_note="ImageNet validation top-1, single centre crop, keras.io applications table",
        paper=model.paper)


FAMILY = "Keras applications"
SPECS = tuple(_spec(m) for m in _MODELS)


class KerasApplicationNetwork(tf.Module):
    """A `keras.applications` model as a network: `network(x) -> (logits [N, 1000], {})`.

    `x` is already preprocessed and at `image_size`; the model runs in inference mode (BN statistics
    from the weights), inside or outside `tf.function`, and is differentiable in its input.
    """

    differentiable = True
    # Keras builds its own ReLUs and additions: tfattack.backward's policies and feature taps cannot reach them.
    introspectable = False

    def __init__(self, model, image_size: int, name: str):
        super().__init__(name=name)
        self.model = model
        self.image_size = image_size

    def __call__(self, x):
        return self.model(x, training=False), {}


def build_keras_model(spec: ModelSpec):
    """The Keras 3 architecture of `spec`, untrained, with a linear top (logits)."""
    import keras

    builder = getattr(keras.applications, _BY_NAME[spec.architecture].builder)
    return builder(include_top=True, weights=None, classes=1000, classifier_activation=None,
                   input_shape=(spec.image_size, spec.image_size, 3))


def layers_with_weights(model) -> list:
    return [layer for layer in model.layers if layer.weights]


def legacy_weight_order(layer) -> list:
    """The order a layer's arrays have in a legacy `.h5` file: trainable first, then non-trainable."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def randomise(model, seed: int = 0):
    """Deterministic random weights (Keras's own initialisers would draw from an unseeded global seed).

    Kernels normal with variance 1/fan-in (He's 2/fan-in, with identity BN statistics, drives ResNet50's
    logits to ~1e5); biases, BN shifts and means 0; BN scales and variances 1. Finite, varied logits
    for tests and speed benchmarks, nothing more.
    """
    rng = np.random.default_rng(seed)
    for layer in layers_with_weights(model):
        for var in legacy_weight_order(layer):
            shape = tuple(var.shape)
            leaf = var.name.rsplit("/", 1)[-1]
            if leaf in ("gamma", "moving_variance"):
                value = np.ones(shape, np.float32)
            elif len(shape) < 2:
                value = np.zeros(shape, np.float32)
            else:
                value = rng.standard_normal(shape, dtype=np.float32)
                value *= np.float32(np.sqrt(1.0 / np.prod(shape[:-1])))
            var.assign(value)
    return model


def build_network(spec: ModelSpec, seed: int = 0) -> KerasApplicationNetwork:
    return KerasApplicationNetwork(randomise(build_keras_model(spec), seed), spec.image_size, spec.name)


def _read_name_list(group, attribute: str) -> List[str]:
    # Keras splits a long list over `<attribute>0`, `<attribute>1`, ... when it exceeds the HDF5 header limit.
    if attribute in group.attrs:
        chunks = [group.attrs[attribute]]
    else:
        chunks, index = [], 0
        while f"{attribute}{index}" in group.attrs:
            chunks.append(group.attrs[f"{attribute}{index}"])
            index += 1
    return [n.decode("utf8") if hasattr(n, "decode") else str(n) for chunk in chunks for n in chunk]


@contextlib.contextmanager
def open_legacy_h5(path: str, model_name: str):
    """Yields [(layer name, [h5py datasets in file order])] for the layers of a legacy Keras `.h5` weight file
    that hold weights, in the file's model order. Anything unreadable becomes a one-line CheckpointError."""
    import h5py

    where = f"weight file {path} for model {model_name!r}"
    try:
        with h5py.File(path, "r") as root:
            if "layer_names" not in root.attrs and "layer_names0" not in root.attrs and "model_weights" in root:
                root = root["model_weights"]  # a whole-model .h5 (model.save) keeps its weights here
            layer_names = _read_name_list(root, "layer_names")
            if not layer_names:
                raise CheckpointError(f"{where} is not a legacy Keras .h5 weight file (no 'layer_names' attribute; "
                                      f"Keras 3 '.weights.h5' files are another format)")
            layers = [(name, [root[name][weight] for weight in _read_name_list(root[name], "weight_names")])
                      for name in layer_names]
            yield [(name, datasets) for name, datasets in layers if datasets]
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read {where}: {first_line} (truncated or not an HDF5 file?)") from None


def read_legacy_h5_shapes(path: str, model_name: str) -> List[tuple]:
    """[(layer name, [array shapes])] of a legacy Keras `.h5` weight file, without reading the arrays."""
    with open_legacy_h5(path, model_name) as saved:
        return [(name, [tuple(d.shape) for d in datasets]) for name, datasets in saved]


def match_saved_layers(model, saved_shapes: List[tuple], path: str, model_name: str) -> List[list]:
    """The model's variables for each saved layer, in file order (Keras's rule: by order, checked by shape)."""
    where = f"weight file {path} does not fit model {model_name!r}"
    targets = layers_with_weights(model)
    if len(saved_shapes) != len(targets):
        raise CheckpointError(f"{where}: it holds {len(saved_shapes)} layers with weights, the model has "
                              f"{len(targets)} (the file of another architecture?)")
    matched = []
    for layer, (saved_name, shapes) in zip(targets, saved_shapes):
        variables = legacy_weight_order(layer)
        expected = [tuple(v.shape) for v in variables]
        if list(shapes) != expected:
            raise CheckpointError(f"{where}: saved layer {saved_name!r} has arrays {list(shapes)}, model layer "
                                  f"{layer.name!r} expects {expected} (the file of another architecture?)")
        matched.append(variables)
    return matched


def load_legacy_h5_weights(model, path: str, model_name: str) -> int:
    """Fills `model` from a legacy `.h5` file, one array at a time; returns the count of arrays."""
    with open_legacy_h5(path, model_name) as saved:
        shapes = [(name, [tuple(d.shape) for d in datasets]) for name, datasets in saved]
        matched = match_saved_layers(model, shapes, path, model_name)
        count = 0
        for variables, (_, datasets) in zip(matched, saved):
            for var, dataset in zip(variables, datasets):
                var.assign(np.asarray(dataset, np.float32))
                count += 1
    return count


def resolve_weight_file(spec: ModelSpec, path: str) -> str:
    """A weight file path; a folder stands for the official file name inside it."""
    if os.path.isdir(path):
        inside = os.path.join(path, spec.default_location)
        if not os.path.isfile(inside):
            raise CheckpointError(f"folder {path} has no {spec.default_location} for model {spec.name!r}; "
                                  f"{loading.how_to_get(spec)}")
        return inside
    return path


def check_classes(spec: ModelSpec, saved_shapes: List[tuple], path: str):
    """Refuses a file whose classifier (the last layer, a Dense: kernel [features, classes] and bias) has
    another class count than the record, from the file alone."""
    if not saved_shapes:
        return
    name, shapes = saved_shapes[-1]
    is_dense = len(shapes) == 2 and len(shapes[0]) == 2 and len(shapes[1]) == 1
    if is_dense and shapes[0][1] != spec.num_classes:
        raise CheckpointError(f"model {spec.name!r}: weight file {path} has {shapes[0][1]} classes, the record says "
                              f"{spec.num_classes} (layer {name!r} holds arrays {list(shapes)})")


def load_keras_h5(spec: ModelSpec, path: str):
    """Loader for source "keras_h5": builds the architecture and reads the legacy `.h5` weights into it."""
    path = resolve_weight_file(spec, path)
    # A file that is not weights, or not of this class count, fails before the model is built.
    check_classes(spec, read_legacy_h5_shapes(path, spec.name), path)
    model = build_keras_model(spec)
    count = load_legacy_h5_weights(model, path, spec.name)
    network = KerasApplicationNetwork(model, spec.image_size, spec.name)
    return network, {"checkpoint": path, "format": "keras legacy h5", "arrays": count}


for _spec_record in SPECS:
    registry.register(_spec_record)
    registry.register_architecture(_spec_record.architecture, build_network)
loading.register_loader("keras_h5", load_keras_h5)
