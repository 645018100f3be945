"""TensorFlow.js *layers* models (`model.json` + binary weight shards) rebuilt natively in TF2.

A TF.js layers model is a Keras model saved for the browser: `model.json` holds
`modelTopology` (the Keras model config: `Sequential` or functional `Model`, Keras 2 or Keras 3
node format) and `weightsManifest`, a list of groups `{paths, weights}`. Each group's shard files,
concatenated in order, hold its weights back to back; a weight is `{name, shape, dtype}` plus an
optional `quantization` `{dtype: uint8|uint16|float16, scale, min, original_dtype}` (stored as the
quantised dtype; real value = q * scale + min for uint8/uint16, a plain cast for float16).

The network is rebuilt with `tf.nn` from the topology (the layer table `LAYER_BUILDERS` lists the
supported Keras layers with Keras semantics: 'same'/'valid' padding, inference-mode batch norm and
dropout). Attacks need logits, so a trailing softmax is removed: walking back from the model's output
through shape-only layers (Reshape, Flatten, Dropout, linear Activation), a softmax `Activation` /
`Softmax` layer found there becomes the identity, or a Dense/Conv layer's own `activation: softmax`
becomes linear; `network.dropped_softmax` names the layer (None when the model already ends in logits).
Traced without an edit, a batch norm that follows a convolution without an activation is folded into it, as the
other families fold theirs (see `TfjsLayersNetwork.__call__`).

Records here: Google's MobileNet v1 0.75 (tfjs-models) and ml5's Tiny Darknet, whose 1000 outputs are in
darknet's class order (the wnid list ships with the model; `network.output_index` maps it).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import labels, layers, loading, registry
from tfattack.models.checkpoint import naming_model
from tfattack.models.registry import ModelSpec
from tfattack.names import first_few

MODEL_JSON = "model.json"
DARKNET_WNIDS = "darknet_imagenet1k_wnids_darknet_order.txt"

# Bytes per element of the dtypes a manifest may store.
STORED_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16,
                 "float16": np.float16, "bool": np.bool_}

# Layers that only move values around: a softmax followed by these still ends the model.
SHAPE_ONLY_LAYERS = ("Reshape", "Flatten", "Dropout", "SpatialDropout2D")


class TfjsModelError(ValueError):
    """A model.json or its shards do not describe a network this reader can build."""


# --- model.json and the weight shards ---------------------------------------------------------------


def model_json_path(path) -> Path:
    """`path` is a model.json or the folder holding one."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / MODEL_JSON
    if not path.is_file():
        raise loading.ModelNotFoundError(f"TF.js layers model {path} does not exist")
    return path


def read_model_json(path) -> dict:
    path = model_json_path(path)
    try:
        content = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TfjsModelError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(content, dict) or "modelTopology" not in content or "weightsManifest" not in content:
        raise TfjsModelError(f"{path} is not a TF.js layers model (needs 'modelTopology' and 'weightsManifest'; "
                             f"a graph model from tf.saved_model is not supported)")
    return content


def _dequantize(raw: np.ndarray, quantization: dict, name: str, path: Path) -> np.ndarray:
    stored = quantization.get("dtype")
    original = quantization.get("original_dtype", "float32")
    if stored == "float16":
        return raw.astype(np.float32)
    if stored in ("uint8", "uint16"):
        if "scale" not in quantization or "min" not in quantization:
            raise TfjsModelError(f"{path}: weight {name!r} is {stored}-quantised but lacks 'scale' or 'min'")
        values = raw.astype(np.float64) * float(quantization["scale"]) + float(quantization["min"])
        return np.round(values).astype(np.int32) if original == "int32" else values.astype(np.float32)
    raise TfjsModelError(f"{path}: weight {name!r} has unknown quantization dtype {stored!r}")


def read_weights(path) -> Dict[str, np.ndarray]:
    """All weights of a TF.js layers model by manifest name (":0" suffixes dropped), as float32/int32."""
    json_path = model_json_path(path)
    manifest = read_model_json(json_path)["weightsManifest"]
    weights: Dict[str, np.ndarray] = {}
    for group_index, group in enumerate(manifest, start=1):
        shards = [json_path.parent / p for p in group.get("paths", [])]
        for shard in shards:
            if not shard.is_file():
                raise loading.ModelNotFoundError(f"{json_path}: weight shard {shard.name!r} (group {group_index}) "
                                                 f"is missing from {shard.parent}")
        data = b"".join(shard.read_bytes() for shard in shards)
        offset = 0
        for entry in group.get("weights", []):
            name = str(entry["name"]).removesuffix(":0")
            quantization = entry.get("quantization") or {}
            dtype_name = quantization.get("dtype", entry.get("dtype", "float32"))
            if dtype_name not in STORED_DTYPES:
                raise TfjsModelError(f"{json_path}: weight {name!r} has unsupported dtype {dtype_name!r}")
            dtype = np.dtype(STORED_DTYPES[dtype_name]).newbyteorder("<")
            shape = tuple(int(s) for s in entry["shape"])
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if offset + size > len(data):
                raise TfjsModelError(f"{json_path}: shards of group {group_index} ({', '.join(s.name for s in shards)}) "
                                     f"hold {len(data)} bytes, too few for weight {name!r} (truncated file?)")
            raw = np.frombuffer(data, dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
            offset += size
            value = _dequantize(raw, quantization, name, json_path) if quantization else raw
            weights[name] = value.astype(np.int32 if value.dtype.kind in "iu" else np.float32)
        if offset != len(data):
            raise TfjsModelError(f"{json_path}: shards of group {group_index} hold {len(data)} bytes but its "
                                 f"weights take {offset} (manifest and shards disagree)")
    return weights


# --- the layer table --------------------------------------------------------------------------------

ACTIVATIONS: Dict[str, Callable] = {
    "linear": tf.identity,
    "relu": backward.relu,
    "relu6": backward.relu6,
    "softmax": tf.nn.softmax,
    "sigmoid": tf.math.sigmoid,
    "tanh": tf.math.tanh,
    "elu": tf.nn.elu,
    "swish": tf.nn.silu,
    "silu": tf.nn.silu,
}


class _LayerContext:
    """What a layer builder may ask for: its config and its weights (by Keras weight name)."""

    def __init__(self, name: str, class_name: str, config: dict, weights: Dict[str, np.ndarray], path: Path,
                 created: Dict[str, tf.Variable]):
        self.name, self.class_name, self.config, self.path = name, class_name, config, path
        self._weights = weights
        self._created = created  # every variable made, by manifest name

    def error(self, message: str) -> TfjsModelError:
        return TfjsModelError(f"{self.path}: layer {self.name!r} ({self.class_name}): {message}")

    def weight(self, key: str) -> tf.Variable:
        name = f"{self.name}/{key}"
        if name not in self._weights:
            raise self.error(f"weight {name!r} is not in the weights manifest")
        self._created[name] = tf.Variable(self._weights[name], trainable=False, name=name.replace(":", "_"))
        return self._created[name]

    def activation(self, key: str = "activation") -> Callable:
        name = self.config.get(key) or "linear"
        if isinstance(name, dict):  # Keras 3 may serialise an activation as a config dict
            name = name.get("config", {}).get("name", name.get("class_name"))
        try:
            return ACTIVATIONS[name]
        except KeyError:
            raise self.error(f"unsupported activation {name!r}; supported: {', '.join(ACTIVATIONS)}") from None

    def channels_last(self):
        if self.config.get("data_format", "channels_last") != "channels_last":
            raise self.error(f"data_format {self.config['data_format']!r} is not supported (channels_last only)")

    def padding(self) -> str:
        padding = str(self.config.get("padding", "valid")).upper()
        if padding not in ("SAME", "VALID"):
            raise self.error(f"unsupported padding {padding.lower()!r}")
        return padding

    def pair(self, key: str, default=None) -> Tuple[int, int]:
        value = self.config.get(key, default)
        if value is None:
            value = default
        return (int(value), int(value)) if isinstance(value, (int, float)) else (int(value[0]), int(value[1]))


def _single(inputs, ctx: _LayerContext):
    if len(inputs) != 1:
        raise ctx.error(f"expects one input, got {len(inputs)}")
    return inputs[0]


def _like(x, weight):
    """`weight` in the activations' dtype (the network computes in its input's dtype; variables stay float32)."""
    return None if weight is None else tf.cast(weight, x.dtype)


class _Convolution:
    """Conv2D (kernel [kh, kw, cin, cout]) and DepthwiseConv2D (depthwise_kernel [kh, kw, cin, multiplier]); one
    without an activation can take the batch norm that follows it into its kernel (`folded`)."""

    def __init__(self, ctx, kernel_key: str, convolve: Callable):
        ctx.channels_last()
        self.ctx, self.convolve, self.depthwise = ctx, convolve, kernel_key == "depthwise_kernel"
        self.kernel = ctx.weight(kernel_key)
        self.bias = ctx.weight("bias") if ctx.config.get("use_bias", True) else None
        self.strides, self.dilations = ctx.pair("strides", 1), ctx.pair("dilation_rate", 1)
        self.padding, self.activation = ctx.padding(), ctx.activation()
        self.linear = self.activation is ACTIVATIONS["linear"]

    def __call__(self, inputs):
        x = _single(inputs, self.ctx)
        y = self.convolve(x, _like(x, self.kernel), self.strides, self.padding, self.dilations)
        return self.activation(edits.layer_output(y if self.bias is None else tf.nn.bias_add(y, _like(x, self.bias))))

    def folded(self, inputs, batch_norm: "_BatchNormalization"):
        """This (linear) convolution and `batch_norm` after it as one convolution with a bias."""
        x = _single(inputs, self.ctx)
        multiplier, offset = batch_norm.multiplier_offset()
        kernel = layers.fold_into_kernel(self.kernel, multiplier, depthwise=self.depthwise)
        if self.bias is not None:
            offset = self.bias * multiplier + offset
        y = self.convolve(x, _like(x, kernel), self.strides, self.padding, self.dilations)
        return tf.nn.bias_add(y, _like(x, offset))


def _convolution(kernel_key: str, convolve: Callable):
    return lambda ctx: _Convolution(ctx, kernel_key, convolve)


def _conv2d(x, kernel, strides, padding, dilations):
    return tf.nn.conv2d(x, kernel, strides, padding, dilations=dilations)


def _depthwise_conv2d(x, kernel, strides, padding, dilations):
    return tf.nn.depthwise_conv2d(x, kernel, [1, *strides, 1], padding, dilations=dilations)


def _dense(ctx):
    kernel = ctx.weight("kernel")
    bias = ctx.weight("bias") if ctx.config.get("use_bias", True) else None
    activation = ctx.activation()

    def apply(inputs):
        x = _single(inputs, ctx)
        y = tf.tensordot(x, _like(x, kernel), axes=1)
        return activation(edits.layer_output(y if bias is None else y + _like(x, bias)))
    return apply


class _BatchNormalization:
    """Inference-mode BatchNormalization over the channels (channels_last)."""

    def __init__(self, ctx):
        axis = ctx.config.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if axis not in (-1, 3):
            raise ctx.error(f"batch norm over axis {axis} is not supported (channels_last only)")
        self.ctx, self.epsilon = ctx, float(ctx.config.get("epsilon", 1e-3))
        self.gamma = ctx.weight("gamma") if ctx.config.get("scale", True) else None
        self.beta = ctx.weight("beta") if ctx.config.get("center", True) else None
        self.mean, self.variance = ctx.weight("moving_mean"), ctx.weight("moving_variance")

    def multiplier_offset(self):
        """(multiplier, offset) with batch_norm(x) = x * multiplier + offset, float32."""
        return layers.batch_norm_multiplier_offset(1.0 if self.gamma is None else self.gamma,
                                                   0.0 if self.beta is None else self.beta, self.mean, self.variance,
                                                   self.epsilon)

    def __call__(self, inputs):
        multiplier, offset = self.multiplier_offset()
        x = _single(inputs, self.ctx)
        return x * _like(x, multiplier) + _like(x, offset)


def _activation(ctx):
    activation = ctx.activation()
    return lambda inputs: activation(_single(inputs, ctx))


def _relu(ctx):
    max_value = ctx.config.get("max_value")
    slope = float(ctx.config.get("negative_slope", 0.0) or 0.0)
    threshold = float(ctx.config.get("threshold", 0.0) or 0.0)

    def apply(inputs):
        x = _single(inputs, ctx)
        y = tf.where(x >= threshold, x, slope * (x - threshold))
        return y if max_value is None else tf.minimum(y, float(max_value))
    return apply


def _leaky_relu(ctx):
    # Keras 2 calls the slope `alpha`, Keras 3 `negative_slope`; both default to 0.3.
    slope = float(ctx.config.get("negative_slope", ctx.config.get("alpha", 0.3)))
    return lambda inputs: tf.nn.leaky_relu(_single(inputs, ctx), alpha=slope)


def _softmax(ctx):
    axis = ctx.config.get("axis", -1)
    return lambda inputs: tf.nn.softmax(_single(inputs, ctx), axis=axis)


def _zero_padding2d(ctx):
    ctx.channels_last()
    padding = ctx.config.get("padding", 1)
    if isinstance(padding, (int, float)):
        rows = cols = (int(padding), int(padding))
    elif all(isinstance(p, (int, float)) for p in padding):
        rows, cols = (int(padding[0]),) * 2, (int(padding[1]),) * 2
    else:
        rows, cols = tuple(int(p) for p in padding[0]), tuple(int(p) for p in padding[1])
    paddings = [[0, 0], list(rows), list(cols), [0, 0]]
    return lambda inputs: tf.pad(_single(inputs, ctx), paddings)


def _pooling2d(pool):
    def build(ctx):
        ctx.channels_last()
        size = ctx.pair("pool_size", 2)
        strides = ctx.pair("strides", size)
        padding = ctx.padding()
        # Keras's 'same' average pooling divides by the count of real inputs, as tf.nn.avg_pool2d does.
        return lambda inputs: pool(_single(inputs, ctx), size, strides, padding)
    return build


def _global_pooling2d(reduce):
    def build(ctx):
        ctx.channels_last()
        keepdims = bool(ctx.config.get("keepdims", False))
        return lambda inputs: reduce(_single(inputs, ctx), axis=[1, 2], keepdims=keepdims)
    return build


def _reshape(ctx):
    target = [int(s) for s in ctx.config["target_shape"]]
    return lambda inputs: tf.reshape(_single(inputs, ctx), [-1, *target])


def _flatten(ctx):
    def apply(inputs):
        x = _single(inputs, ctx)
        return tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    return apply


def _identity(ctx):
    return lambda inputs: _single(inputs, ctx)


def _merge(combine):
    def build(ctx):
        def apply(inputs):
            if len(inputs) < 2:
                raise ctx.error(f"merges at least two inputs, got {len(inputs)}")
            return combine(inputs)
        return apply
    return build


def _multiply(inputs):
    out = inputs[0]
    for x in inputs[1:]:
        out = out * x
    return out


def _concatenate(ctx):
    axis = int(ctx.config.get("axis", -1))
    return _merge(lambda inputs: tf.concat(inputs, axis=axis))(ctx)


# Keras layer class name -> builder(ctx) -> apply(list of input tensors) -> output tensor.
LAYER_BUILDERS: Dict[str, Callable] = {
    "Conv2D": _convolution("kernel", _conv2d),
    "DepthwiseConv2D": _convolution("depthwise_kernel", _depthwise_conv2d),
    "Dense": _dense,
    "BatchNormalization": _BatchNormalization,
    "Activation": _activation,
    "ReLU": _relu,
    "LeakyReLU": _leaky_relu,
    "Softmax": _softmax,
    "ZeroPadding2D": _zero_padding2d,
    "MaxPooling2D": _pooling2d(backward.max_pool),
    "AveragePooling2D": _pooling2d(tf.nn.avg_pool2d),
    "GlobalAveragePooling2D": _global_pooling2d(tf.reduce_mean),
    "GlobalMaxPooling2D": _global_pooling2d(tf.reduce_max),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Dropout": _identity,            # inference mode
    "SpatialDropout2D": _identity,
    "Add": _merge(tf.add_n),
    "Multiply": _merge(_multiply),
    "Average": _merge(lambda inputs: tf.add_n(inputs) / len(inputs)),
    "Concatenate": _concatenate,
}


# --- the topology -------------------------------------------------------------------------------


class _Node:
    """One call of a layer: its name, class, config and the (layer, node, tensor) refs it reads."""

    def __init__(self, name, class_name, config, inputs):
        self.name, self.class_name, self.config, self.inputs = name, class_name, config, inputs


def _keras_history_refs(args) -> List[Tuple[str, int, int]]:
    """Keras 3 node args: nested lists/dicts whose `__keras_tensor__` entries carry `keras_history`."""
    refs = []
    if isinstance(args, dict):
        history = args.get("config", {}).get("keras_history") if args.get("class_name") == "__keras_tensor__" else None
        if history is not None:
            return [(str(history[0]), int(history[1]), int(history[2]))]
        for value in args.values():
            refs += _keras_history_refs(value)
    elif isinstance(args, (list, tuple)):
        for value in args:
            refs += _keras_history_refs(value)
    return refs


def _node_inputs(node, path) -> List[Tuple[str, int, int]]:
    if isinstance(node, dict):        # Keras 3: {"args": [...], "kwargs": {...}}
        return _keras_history_refs(node.get("args", []))
    refs = []                         # Keras 2: [[layer_name, node_index, tensor_index, kwargs], ...]
    for ref in node:
        if not isinstance(ref, (list, tuple)) or len(ref) < 3:
            raise TfjsModelError(f"{path}: cannot read inbound node {ref!r}")
        refs.append((str(ref[0]), int(ref[1]), int(ref[2])))
    return refs


def _parse_topology(topology: dict, path: Path):
    """Returns (nodes by (layer, node_index), input refs, output refs, input shape [H, W, C])."""
    model_config = topology.get("model_config", topology)
    class_name = model_config.get("class_name")
    config = model_config.get("config")
    layers = config if isinstance(config, list) else (config or {}).get("layers")
    if class_name not in ("Sequential", "Model", "Functional") or not layers:
        raise TfjsModelError(f"{path}: modelTopology is a {class_name!r}, expected a Keras Sequential or Model with layers")
    nodes: Dict[Tuple[str, int], _Node] = {}
    if class_name == "Sequential":
        # A chain; the first layer is an InputLayer or carries batch_input_shape.
        first = layers[0].get("config", {})
        input_shape = first.get("batch_input_shape") or first.get("batch_shape")
        if layers[0]["class_name"] != "InputLayer":
            nodes[("input", 0)] = _Node("input", "InputLayer", {}, [])
        previous = None if layers[0]["class_name"] == "InputLayer" else ("input", 0, 0)
        for layer in layers:
            cfg = layer.get("config", {})
            name = cfg.get("name") or layer.get("name")
            nodes[(name, 0)] = _Node(name, layer["class_name"], cfg, [previous] if previous else [])
            previous = (name, 0, 0)
        first_name = next(iter(nodes))[0]
        inputs, outputs = [(first_name, 0, 0)], [previous]
    else:
        input_shape = None
        for layer in layers:
            cfg = layer.get("config", {})
            name = layer.get("name") or cfg.get("name")
            if layer["class_name"] == "InputLayer":
                input_shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
                nodes[(name, 0)] = _Node(name, "InputLayer", cfg, [])
                continue
            for index, node in enumerate(layer.get("inbound_nodes", [])):
                nodes[(name, index)] = _Node(name, layer["class_name"], cfg, _node_inputs(node, path))
        inputs = [(str(r[0]), int(r[1]), int(r[2])) for r in config["input_layers"]]
        outputs = [(str(r[0]), int(r[1]), int(r[2])) for r in config["output_layers"]]
        if len(inputs) != 1 or len(outputs) != 1:
            raise TfjsModelError(f"{path}: a classifier has one input and one output, the model has "
                                 f"{len(inputs)} and {len(outputs)}")
    if not input_shape or len(input_shape) != 4:
        raise TfjsModelError(f"{path}: the input layer has no [batch, height, width, channels] shape ({input_shape})")
    return nodes, inputs[0], outputs[0], [int(s) if s is not None else None for s in input_shape[1:]]


def _drop_trailing_softmax(nodes, output, path) -> Optional[str]:
    """Turns a softmax at the end of the model (before shape-only layers) into the identity."""
    key = (output[0], output[1])
    while key in nodes:
        node = nodes[key]
        is_linear_activation = node.class_name == "Activation" and node.config.get("activation") == "linear"
        if node.class_name in SHAPE_ONLY_LAYERS or is_linear_activation:
            if len(node.inputs) != 1:
                return None
            key = node.inputs[0][:2]
            continue
        if node.class_name == "Softmax" or (node.class_name == "Activation" and node.config.get("activation") == "softmax"):
            node.class_name = "Dropout"  # the identity layer
            return node.name
        if node.config.get("activation") == "softmax":
            node.config = dict(node.config, activation="linear")
            return node.name
        return None
    return None


class TfjsLayersNetwork(tf.Module):
    """A TF.js layers model as `network(x) -> (logits, end_points)`; end points are keyed by layer name.

    Attributes: `input_shape` ([H, W, C] from the topology), `dropped_softmax` (the layer whose softmax was
    removed so that the output is logits, or None), `variables_by_name` (manifest name -> variable),
    `output_index` (None; set by loaders whose class order is not the standard one).
    """

    differentiable = True
    output_index = None
    compute_dtypes = layers.COMPUTE_DTYPES  # each layer casts its weights to the activations' dtype

    def __init__(self, path, name: Optional[str] = None):
        json_path = model_json_path(path)
        super().__init__(name=name or "tfjs_layers")
        self.path = json_path
        content = read_model_json(json_path)
        nodes, self._input, self._output, self.input_shape = _parse_topology(content["modelTopology"], json_path)
        self.dropped_softmax = _drop_trailing_softmax(nodes, self._output, json_path)
        weights = read_weights(json_path)
        self._order = self._topological_order(nodes)
        self._apply = {}
        created: Dict[str, tf.Variable] = {}
        for key in self._order:
            node = nodes[key]
            if node.class_name == "InputLayer":
                continue
            try:
                builder = LAYER_BUILDERS[node.class_name]
            except KeyError:
                raise TfjsModelError(f"{json_path}: layer {node.name!r} has unsupported type {node.class_name!r}; "
                                     f"supported: {', '.join(sorted(LAYER_BUILDERS))}") from None
            self._apply[key] = builder(_LayerContext(node.name, node.class_name, node.config, weights, json_path, created))
        self._inputs_of = {key: nodes[key].inputs for key in self._order}
        self.variables_by_name = created
        self._folds = self._batch_norms_to_fold(nodes)

    def _batch_norms_to_fold(self, nodes) -> Dict[Tuple[str, int], Tuple[str, int]]:
        """{batch-norm node: the convolution node it folds into}: the batch norms whose one input is a convolution
        without an activation that nothing else reads."""
        readers: Dict[Tuple[str, int], int] = {}
        for key in self._order:
            for ref in self._inputs_of[key]:
                readers[ref[:2]] = readers.get(ref[:2], 0) + 1
        folds = {}
        for key in self._order:
            if not isinstance(self._apply.get(key), _BatchNormalization) or len(self._inputs_of[key]) != 1:
                continue
            source = self._inputs_of[key][0][:2]
            convolution = self._apply.get(source)
            if (isinstance(convolution, _Convolution) and convolution.linear and readers[source] == 1
                    and source != self._output[:2]):
                folds[key] = source
        return folds

    def _topological_order(self, nodes) -> List[Tuple[str, int]]:
        order, state = [], {}
        stack = [(self._output[0], self._output[1])]
        while stack:  # iterative depth-first search from the output: each node after its inputs
            key = stack[-1]
            if key not in nodes:
                raise TfjsModelError(f"{self.path}: the topology refers to layer {key[0]!r} node {key[1]}, which it lacks")
            if state.get(key) == "done":
                stack.pop()
                continue
            pending = [ref[:2] for ref in nodes[key].inputs if state.get(ref[:2]) != "done"]
            if state.get(key) == "open" or not pending:
                state[key] = "done"
                order.append(key)
                stack.pop()
                continue
            state[key] = "open"
            stack.extend(pending)
        return order

    def __call__(self, x):
        # Traced without an edit, a batch norm after a convolution is folded into it (`layers.fold_into_kernel`).
        # The convolution's own output stays an end point (a feature tap may read it); a traced graph drops it when
        # nothing does. Eagerly, or with an edit (Ghost, CFM) whose layer outputs sit between the two, both run as
        # written.
        folding = bool(self._folds) and not edits.active() and not tf.executing_eagerly()
        outputs = {}
        end_points = backward.EndPoints()
        for key in self._order:
            if key == self._input[:2]:
                outputs[key] = x
                continue
            if folding and key in self._folds:
                source = self._folds[key]
                y = self._apply[source].folded([outputs[ref[:2]] for ref in self._inputs_of[source]], self._apply[key])
            else:
                y = self._apply[key]([outputs[ref[:2]] for ref in self._inputs_of[key]])
            outputs[key] = edits.end_point(end_points, key[0] if key[1] == 0 else f"{key[0]}:{key[1]}", y)
        logits = outputs[self._output[:2]]
        end_points["Logits"] = logits
        return logits, end_points


# --- registry records and the loader ---------------------------------------------------------------


def darknet_output_index(folder) -> np.ndarray:
    """Raw output column of each standard class, from darknet's wnid list (one wnid per output, in order)."""
    path = Path(folder) / DARKNET_WNIDS
    if not path.is_file():
        raise loading.ModelNotFoundError(f"{path} is missing: a darknet-order model needs its wnid list next to model.json")
    darknet = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    column = {wnid: i for i, wnid in enumerate(darknet)}
    standard = labels.wnids()
    missing = [w for w in standard if w not in column]
    if len(darknet) != len(standard) or missing:
        raise TfjsModelError(f"{path}: expected the {len(standard)} ImageNet wnids, got {len(darknet)} lines"
                             + (f", lacking {missing[:3]}" if missing else ""))
    return np.array([column[w] for w in standard], np.int32)


# --- what a record's model.json must hold -----------------------------------------------------------
#
# A TF.js file carries its own topology, so any model.json builds *some* network: the record's
# architecture is checked from model.json alone (before any shard is read) as the input size, the class
# count, and for the registered architectures every weight's name and shape.

# Layers walked through from the output back to the classifier: they keep the channel count.
CHANNEL_PRESERVING_LAYERS = SHAPE_ONLY_LAYERS + ("Activation", "Softmax", "ReLU", "LeakyReLU", "BatchNormalization",
                                                 "GlobalAveragePooling2D", "GlobalMaxPooling2D")


def _batch_norm_weights(layer: str, channels: int) -> Dict[str, tuple]:
    return {f"{layer}/{key}": (channels,) for key in ("gamma", "beta", "moving_mean", "moving_variance")}


def mobilenet_v1_weights(alpha: float, num_classes: int) -> Dict[str, tuple]:
    """Weight name -> shape of Keras 2's `MobileNet(alpha)` (its layer names; a 1x1-conv classifier)."""
    stem = int(32 * alpha)
    weights = {"conv1/kernel": (3, 3, 3, stem), **_batch_norm_weights("conv1_bn", stem)}
    channels = stem
    for block, filters in enumerate((64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024), start=1):
        filters = int(filters * alpha)
        weights[f"conv_dw_{block}/depthwise_kernel"] = (3, 3, channels, 1)
        weights.update(_batch_norm_weights(f"conv_dw_{block}_bn", channels))
        weights[f"conv_pw_{block}/kernel"] = (1, 1, channels, filters)
        weights.update(_batch_norm_weights(f"conv_pw_{block}_bn", filters))
        channels = filters
    weights["conv_preds/kernel"] = (1, 1, channels, num_classes)
    weights["conv_preds/bias"] = (num_classes,)
    return weights


# (kernel size, filters) of Tiny Darknet's 15 conv + batch-norm layers (darknet's tiny.cfg), in order.
TINY_DARKNET_CONVS = ((3, 16), (3, 32), (1, 16), (3, 128), (1, 16), (3, 128), (1, 32), (3, 256), (1, 32), (3, 256),
                      (1, 64), (3, 512), (1, 64), (3, 512), (1, 128))


def tiny_darknet_weights(num_classes: int) -> Dict[str, tuple]:
    """Weight name -> shape of Tiny Darknet as Keras names it (conv2d_<i>, batch_normalization_<i>)."""
    weights, channels = {}, 3
    for index, (kernel, filters) in enumerate(TINY_DARKNET_CONVS, start=1):
        weights[f"conv2d_{index}/kernel"] = (kernel, kernel, channels, filters)
        weights.update(_batch_norm_weights(f"batch_normalization_{index}", filters))
        channels = filters
    classifier = f"conv2d_{len(TINY_DARKNET_CONVS) + 1}"
    weights[f"{classifier}/kernel"] = (1, 1, channels, num_classes)
    weights[f"{classifier}/bias"] = (num_classes,)
    return weights


# Record architecture -> weights(num_classes); an architecture not listed gets the input and class checks only.
ARCHITECTURE_WEIGHTS: Dict[str, Callable[[int], Dict[str, tuple]]] = {
    "mobilenet_v1_075_tfjs": functools.partial(mobilenet_v1_weights, 0.75),
    "tiny_darknet_tfjs": tiny_darknet_weights,
}


def manifest_shapes(content: dict) -> Dict[str, tuple]:
    """Weight name (":0" dropped) -> shape, as the manifest declares them, in manifest order."""
    return {str(entry["name"]).removesuffix(":0"): tuple(int(s) for s in entry["shape"])
            for group in content["weightsManifest"] for entry in group.get("weights", [])}


def output_classes(nodes, output, shapes: Dict[str, tuple]) -> Optional[int]:
    """Outputs of the Conv2D/Dense layer that computes the model's output (its kernel's last axis), found
    walking back through channel-preserving one-input layers; None when another layer is in the way."""
    key = (output[0], output[1])
    while key in nodes:
        node = nodes[key]
        if node.class_name in ("Conv2D", "Dense"):
            kernel = shapes.get(f"{node.name}/kernel")
            return int(kernel[-1]) if kernel else node.config.get("filters", node.config.get("units"))
        if node.class_name not in CHANNEL_PRESERVING_LAYERS or len(node.inputs) != 1:
            return None
        key = node.inputs[0][:2]
    return None



def first_weight_mismatch(expected: Dict[str, tuple], found: Dict[str, tuple], layer_order) -> Optional[str]:
    """The first difference between the record's weights and the file's, in network order, or None."""
    found_layers = {name.rsplit("/", 1)[0] for name in found}
    for name, shape in expected.items():
        layer = name.rsplit("/", 1)[0]
        if layer not in found_layers:
            present = [n for n in layer_order if n in found_layers]
            return f"layer {layer!r} missing; found layers {first_few([repr(n) for n in present], 4)}"
        if name not in found:
            return f"weight {name!r} missing"
        if found[name] != shape:
            return f"weight {name!r} is {found[name]}, the record needs {shape}"
    extra = [name for name in found if name not in expected]
    return f"weight {extra[0]!r} is not in the record" if extra else None


def check_architecture(spec: ModelSpec, json_path: Path, content: dict):
    """Refuses a model.json that is not the network of `spec`: input size, class count, weights."""
    nodes, _, output, (height, width, channels) = _parse_topology(content["modelTopology"], json_path)
    if (height, width) != (spec.image_size, spec.image_size) or channels != 3:
        raise TfjsModelError(f"{json_path}: input is {height}x{width}x{channels}, model {spec.name!r} expects "
                             f"{spec.image_size}x{spec.image_size}x3")
    shapes = manifest_shapes(content)
    classes = output_classes(nodes, output, shapes)
    if classes is not None and classes != spec.num_classes:
        raise TfjsModelError(f"model {spec.name!r}: {json_path} has {classes} classes, the record says "
                             f"{spec.num_classes}")
    if spec.architecture in ARCHITECTURE_WEIGHTS:
        layer_order = list(dict.fromkeys(name for name, _ in nodes))
        mismatch = first_weight_mismatch(ARCHITECTURE_WEIGHTS[spec.architecture](spec.num_classes), shapes,
                                         layer_order)
        if mismatch:
            raise TfjsModelError(f"model {spec.name!r}: {json_path} is not a {spec.name} ({mismatch})")


def load_tfjs_layers(spec: ModelSpec, path: str):
    """Loader for source "tfjs_layers": `path` is model.json or its folder."""
    with naming_model(spec.name, TfjsModelError, FileNotFoundError):
        json_path = model_json_path(path)
        check_architecture(spec, json_path, read_model_json(json_path))
        output_index = darknet_output_index(json_path.parent) if spec.class_order == "darknet" else None
        network = TfjsLayersNetwork(json_path, name=spec.name)
    network.output_index = output_index
    return network, {"checkpoint": str(json_path), "dropped_softmax": network.dropped_softmax}


def _needs_topology(spec: ModelSpec, seed: int = 0):
    raise ValueError(f"model {spec.name!r}: its architecture is defined by its TF.js model.json, so it has no "
                     f"random-weights builder; load it with checkpoint=PATH or TFATTACK_MODEL_DIR")


_TFJS_NOTE = ("top-1 on the 1000 NIPS 2017 DEV images (299 -> model size, tfattack's loading), measured on "
              "../shared; its README (PIL resize) says")

FAMILY = "TF.js layers models"
SPECS = (
    ModelSpec(
        name="mobilenet_v1_075", architecture="mobilenet_v1_075_tfjs", source="tfjs_layers", image_size=224,
        preprocessing="inception", num_classes=1000, default_location="mobilenet_v1_0.75_224_tfjs",
        licence="Apache-2.0",
        provenance="Google tfjs-models MobileNet v1 0.75/224 (Keras 2.1 MobileNet(alpha=0.75) converted to a "
                   "TF.js layers model), as mirrored in tangmingsh/ml5featureExtractormodel",
        reference_top1=80.0, reference_note=_TFJS_NOTE + " 80.3 %",
        paper="Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications, 2017"),
    ModelSpec(
        name="tiny_darknet", architecture="tiny_darknet_tfjs", source="tfjs_layers", image_size=224,
        preprocessing="unit", num_classes=1000, class_order="darknet", default_location="tiny_darknet_tfjs",
        licence="MIT (ml5js/ml5-data-and-models); weights by J. Redmon (darknet, public domain)",
        provenance="ml5js/ml5-data-and-models TinyDarknet TF.js layers model, converted from pjreddie's darknet "
                   "tiny.weights; outputs in darknet's class order",
        reference_top1=67.8, reference_note=_TFJS_NOTE + " 67.8 %",
        paper="Redmon, Tiny Darknet (pjreddie.com/darknet/tiny-darknet), 2016"),
)

for _spec in SPECS:
    registry.register(_spec)
    registry.register_architecture(_spec.architecture, _needs_topology)
loading.register_loader("tfjs_layers", load_tfjs_layers)
