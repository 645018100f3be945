"""Forward edits: attack-time changes of a surrogate's forward pass at its layer outputs.

Some targeted methods change what the surrogate computes while the attack runs, not only how it back-propagates:

  CFM (Byun et al. CVPR 2023)   at every convolution and linear layer whose output is at most a quarter of the
                                input's width, with probability p per forward pass, the output becomes
                                (1 - a) out + a clean, `clean` the same layer's output for a shuffled clean image
                                of the batch (recorded once per attack call), a ~ U[lower, upper] per image and
                                channel: the adversarial features must win against mixed-in clean ones.
  Ghost networks (Li et al.     every residual addition's skip connection is scaled per channel by a fresh
  AAAI 2020)                    U[1 - r, 1 + r] draw in each forward pass ("skip connection erosion"); in a
                                network without residual additions, dropout of rate L acts at the output of
                                every unit of the body but the last ("dropout erosion"): each step attacks
                                another ghost of the surrogate, a longitudinal ensemble for free.
  ILPD (Li et al. NeurIPS      at one named end point, the output becomes gamma out + (1 - gamma) ref, `ref` the
  2023)                         same end point's output for the clean image plus Gaussian noise (recorded at each
                                step): the perturbation's effect at that layer is decayed, and the attack has to
                                make up for it with a larger change.

Native networks (slim ports, EfficientNet-Lite, the TF.js and TFLite rebuilds) pass each convolution and linear
output (after its bias and folded batch norm, before the activation) through `layer_output`, each end point
through `end_point` (which also stores it), and `tfattack.backward.residual_add` passes each skip connection through
`residual_skip`. With no edit set each returns its input: graphs and numbers are unchanged. An attack runs each forward pass of its surrogate inside
`editing(edit)`; `Classifier` calls `begin_forward(width)` as each network's forward starts, so the layers of an
ensemble's members are told apart by the members' order in the pass (the same in the recording pass and the
attack's passes, whatever objects the networks are).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional, Tuple

import tensorflow as tf

from tfattack import backward


class Edit:
    """What an edit does to one layer output, `layer_output(y, key, width)` (`key` = (the network's place in the
    forward pass, the layer's place in the network), `width` the network's input width), to one end point,
    `end_point(y, key)` (`key` = (the network's place, the end point's name)), and to one residual skip
    connection, `residual_skip(skip, architecture)`. All leave their input alone unless overridden."""

    def layer_output(self, y, key, width: int):
        return y

    def end_point(self, y, key):
        return y

    def residual_skip(self, skip, architecture: str):
        return skip


class _State(threading.local):
    def __init__(self):
        self.edit: Optional[Edit] = None
        self.network = -1
        self.index = 0
        self.width = 0
        self.architecture = ""


_STATE = _State()


@contextlib.contextmanager
def editing(edit: Optional[Edit], first_network: int = 0) -> Iterator[Optional[Edit]]:
    """Networks traced inside this block have their layer outputs edited by `edit` (None: no edit), numbered from
    `first_network` (an ensemble member forwarded alone keeps its place in the ensemble's pass)."""
    saved = (_STATE.edit, _STATE.network, _STATE.index, _STATE.width, _STATE.architecture)
    _STATE.edit, _STATE.network, _STATE.index = edit, first_network - 1, 0
    try:
        yield edit
    finally:
        _STATE.edit, _STATE.network, _STATE.index, _STATE.width, _STATE.architecture = saved


def begin_forward(width: int, architecture: str = "") -> None:
    """Called as a network's forward pass starts (`width`: its input width; `architecture`: its family, e.g.
    "resnet_v2_50"): its layers are numbered from 0."""
    _STATE.network, _STATE.index, _STATE.width = _STATE.network + 1, 0, int(width)
    _STATE.architecture = architecture


def active() -> bool:
    """Whether an edit is in force for the networks traced now."""
    return _STATE.edit is not None


def layer_output(y):
    """A convolution's or linear layer's output, edited by the current edit (unchanged without one)."""
    backward.count("layer_output")
    if _STATE.edit is None:
        return y
    key = (_STATE.network, _STATE.index)
    _STATE.index += 1
    return _STATE.edit.layer_output(y, key, _STATE.width)


def end_point(end_points, name: str, value):
    """Stores `value` as the network's end point `name` and returns what the forward pass goes on with: `value`
    edited by the current edit (unchanged without one). The stored value is the edited one, so a feature tap reads
    what the next layer reads. The key carries the name the network reports (`end_points.prefix` + `name`)."""
    backward.count("end_point")
    if _STATE.edit is not None:
        value = _STATE.edit.end_point(value, (_STATE.network, getattr(end_points, "prefix", "") + name))
    end_points[name] = value
    return value


def tile_rows(reference, rows):
    """`reference` [n, ...] repeated to `rows` rows (a stack of rows // n copies of the batch, as the attack loop
    stacks input copies)."""
    multiples = tf.concat([[rows // tf.shape(reference)[0]], tf.ones([reference.shape.rank - 1], tf.int32)], 0)
    return tf.tile(reference, multiples)


def residual_skip(skip):
    """A residual block's skip connection, edited by the current edit (unchanged without one)."""
    if _STATE.edit is None:
        return skip
    return _STATE.edit.residual_skip(skip, _STATE.architecture)


class Recorder(Edit):
    """Keeps every layer output of a forward pass (no gradient), unchanged: what CFM mixes in later."""

    def __init__(self):
        self.outputs = {}

    def layer_output(self, y, key, width: int):
        self.outputs[key] = tf.stop_gradient(y)
        return y


class CleanFeatureMixup(Edit):
    """CFM's mixing, drawn from `generator`; `recorded` holds the clean batch's layer outputs by key."""

    def __init__(self, recorded: dict, generator, prob: float, lower: float, upper: float, divisor: int):
        self.recorded, self.generator = recorded, generator
        self.prob, self.lower, self.upper, self.divisor = prob, lower, upper, divisor

    def eligible(self, y, width: int) -> bool:
        """Linear outputs, and convolution outputs at most width / divisor wide (the authors' rule)."""
        return y.shape.rank == 2 or (y.shape.rank == 4 and y.shape[2] <= width // self.divisor)

    def layer_output(self, y, key, width: int):
        if key not in self.recorded or not self.eligible(y, width):
            return y
        rows = tf.shape(y)[0]
        clean = tile_rows(tf.cast(self.recorded[key], y.dtype), rows)
        shuffled = tf.gather(clean, tf.argsort(self.generator.uniform(tf.reshape(rows, [1]))))
        shape = tf.stack([rows, y.shape[-1]]) if y.shape.rank == 2 else tf.stack([rows, 1, 1, y.shape[-1]])
        share = tf.cast(self.generator.uniform(shape, self.lower, self.upper), y.dtype)
        mixed = (1 - share) * y + share * shuffled
        return tf.where(self.generator.uniform([]) < self.prob, mixed, y)


class GhostErosion(Edit):
    """Ghost networks' erosions, fresh draws at every forward pass. Skip connection erosion: skip * U[1 - r, 1 + r]
    per channel (shared by the images of the pass, as in the authors' code) at every residual addition; `ranges`
    maps a family to its r, `default` is the r of the others. Dropout erosion: at the end points of `dropout`
    ((network, name) -> rate), y * m / (1 - rate) with m ~ Bernoulli(1 - rate) per element, as `tf.nn.dropout`."""

    def __init__(self, generator, ranges: dict, default: float, dropout: Optional[dict] = None):
        self.generator, self.ranges, self.default = generator, ranges, default
        self.dropout = dict(dropout or {})

    def residual_skip(self, skip, architecture: str):
        r = self.ranges.get(architecture, self.default)
        shape = [1] * (skip.shape.rank - 1) + [skip.shape[-1]]
        return skip * tf.cast(self.generator.uniform(shape, 1.0 - r, 1.0 + r), skip.dtype)

    def end_point(self, y, key):
        rate = self.dropout.get(key)
        if not rate:
            return y
        kept = tf.cast(self.generator.uniform(tf.shape(y)) >= rate, y.dtype)
        return y * kept / tf.cast(1.0 - rate, y.dtype)


class CallOrder(Edit):
    """Notes, in forward order, each layer output (as None) and each end point (its name and static shape) of a
    forward pass, unchanged: what `unit_end_points` reads."""

    def __init__(self):
        self.calls = []

    def layer_output(self, y, key, width: int):
        self.calls.append(None)
        return y

    def end_point(self, y, key):
        self.calls.append((key[1], tuple(y.shape)))
        return y


def _spatial(shape) -> Optional[tuple]:
    return tuple(shape[1:3]) if len(shape) == 4 and (shape[1] or 0) * (shape[2] or 0) > 1 else None


def unit_end_points(model) -> Tuple[str, ...]:
    """The end points of `model` that end a unit of its body, where ghost networks' dropout erosion acts (after
    every block of the base network but the last, in the authors' Inception code): a feature map (rank 4, more
    than one pixel) that is the last end point before the next convolution or linear layer, or that the next end
    point changes the size of (a pooling); the last such one, which the head pools, is left out. A network that
    names each of its layers (TF.js: conv, its batch norm, its activation) gives its activations; one that names
    blocks (slim) gives its blocks. From one forward pass on a blank image, kept on the model."""
    cached = getattr(model, "_unit_end_points", None)
    if cached is not None:
        return cached
    order = CallOrder()
    size = getattr(model, "image_size", None) or 224
    with editing(order):
        model(tf.zeros([1, size, size, 3]))
    units = []
    for index, call in enumerate(order.calls):
        if call is None or _spatial(call[1]) is None:
            continue
        after = order.calls[index + 1] if index + 1 < len(order.calls) else None
        if after is None or _spatial(after[1]) != _spatial(call[1]):
            units.append(call[0])
    units = tuple(units[:-1])
    try:
        model._unit_end_points = units
    except (AttributeError, TypeError):  # a model that takes no attributes probes again next time
        pass
    return units


class EndPointRecorder(Edit):
    """Keeps the end points named in `wanted` ((network, name) keys) of a forward pass (no gradient), unchanged."""

    def __init__(self, wanted):
        self.wanted, self.outputs = set(wanted), {}

    def end_point(self, y, key):
        if key in self.wanted:
            self.outputs[key] = tf.stop_gradient(y)
        return y


class PerturbationDecay(Edit):
    """ILPD's decay at the end points of `reference` ((network, name) -> the end point's output for the reference
    image): y -> gamma y + (1 - gamma) reference, the reference tiled to the stack of input copies."""

    def __init__(self, reference: dict, gamma: float):
        self.reference, self.gamma = reference, gamma

    def end_point(self, y, key):
        if key not in self.reference:
            return y
        reference = tile_rows(tf.cast(self.reference[key], y.dtype), tf.shape(y)[0])
        return self.gamma * y + (1 - self.gamma) * reference
