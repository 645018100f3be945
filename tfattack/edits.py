"""Forward edits: attack-time changes of a surrogate's forward pass at its layer outputs.

Some targeted methods change what the surrogate computes while the attack runs, not only how it back-propagates:

  CFM (Byun et al. CVPR 2023)   at every convolution and linear layer whose output is at most a quarter of the
                                input's width, with probability p per forward pass, the output becomes
                                (1 - a) out + a clean, `clean` the same layer's output for a shuffled clean image
                                of the batch (recorded once per attack call), a ~ U[lower, upper] per image and
                                channel: the adversarial features must win against mixed-in clean ones.

Native networks (slim ports, EfficientNet-Lite, the TF.js and TFLite rebuilds) pass each convolution and linear
output (after its bias and folded batch norm, before the activation) through `layer_output`. With no edit set it
returns its input: graphs and numbers are unchanged. An attack runs each forward pass of its surrogate inside
`editing(edit)`; `Classifier` calls `begin_forward(width)` as each network's forward starts, so the layers of an
ensemble's members are told apart by the members' order in the pass (the same in the recording pass and the
attack's passes, whatever objects the networks are).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

import tensorflow as tf

from tfattack import backward


class Edit:
    """What an edit does to one layer output. `layer_output(y, key, width)`: `key` = (the network's place in the
    forward pass, the layer's place in the network), `width` the network's input width."""

    def layer_output(self, y, key, width: int):
        raise NotImplementedError


class _State(threading.local):
    def __init__(self):
        self.edit: Optional[Edit] = None
        self.network = -1
        self.index = 0
        self.width = 0


_STATE = _State()


@contextlib.contextmanager
def editing(edit: Optional[Edit]) -> Iterator[Optional[Edit]]:
    """Networks traced inside this block have their layer outputs edited by `edit` (None: no edit)."""
    saved = (_STATE.edit, _STATE.network, _STATE.index, _STATE.width)
    _STATE.edit, _STATE.network, _STATE.index = edit, -1, 0
    try:
        yield edit
    finally:
        _STATE.edit, _STATE.network, _STATE.index, _STATE.width = saved


def begin_forward(width: int) -> None:
    """Called as a network's forward pass starts (`width`: its input width): its layers are numbered from 0."""
    _STATE.network, _STATE.index, _STATE.width = _STATE.network + 1, 0, int(width)


def layer_output(y):
    """A convolution's or linear layer's output, edited by the current edit (unchanged without one)."""
    backward.count("layer_output")
    if _STATE.edit is None:
        return y
    key = (_STATE.network, _STATE.index)
    _STATE.index += 1
    return _STATE.edit.layer_output(y, key, _STATE.width)


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
        clean = tf.cast(self.recorded[key], y.dtype)
        rows = tf.shape(y)[0]
        clean = tf.tile(clean, tf.concat([[rows // tf.shape(clean)[0]], tf.ones([y.shape.rank - 1], tf.int32)], 0))
        shuffled = tf.gather(clean, tf.argsort(self.generator.uniform(tf.reshape(rows, [1]))))
        shape = tf.stack([rows, y.shape[-1]]) if y.shape.rank == 2 else tf.stack([rows, 1, 1, y.shape[-1]])
        share = tf.cast(self.generator.uniform(shape, self.lower, self.upper), y.dtype)
        mixed = (1 - share) * y + share * shuffled
        return tf.where(self.generator.uniform([]) < self.prob, mixed, y)
