"""How much surrogate compute an attack spends: network passes per image, measured by counting the images its
compiled loop sends through the surrogate (no formula per method to keep in step with the components).

A pass is one image through one network forward, almost always followed by its backward; forward-only passes
(self-labelling, an ensemble strategy's weighting, a feature-level method's clean record) count too. For an
ensemble, a pass through every member counts once (members' passes / members), so a method that differentiates
one member at a time spends fractions.

    counts = passes.measure(build("bsr", steps=10), model, images, labels)
    counts.per_image          # total passes per image over the whole attack (what the leaderboard ranks by)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf


class CountingModel:
    """`model`, counting the images of every forward call (`__call__`, `logits_and_aux`, `outputs`, whichever the
    model has) in `counter`; every other attribute is the model's own (feature taps, backward primitives, name)."""

    def __init__(self, model, counter: tf.Variable):
        self._model, self._counter = model, counter
        for name in ("logits_and_aux", "outputs"):
            if hasattr(model, name):
                setattr(self, name, self._counting(getattr(model, name)))
        if hasattr(model, "with_compute_dtype"):
            self.with_compute_dtype = lambda dtype: CountingModel(model.with_compute_dtype(dtype), counter)

    def _counting(self, forward):
        def call(images, *args, **kwargs):
            self._counter.assign_add(tf.cast(tf.shape(images)[0], tf.int64))
            return forward(images, *args, **kwargs)
        return call

    def __call__(self, images):
        return self._counting(self._model)(images)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model, name)


def counted(model):
    """(a counting copy of `model`, its counter): an ensemble keeps its fusion and weights, each member counted
    into the one counter."""
    from tfattack.models.ensemble import Ensemble

    counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    if isinstance(model, Ensemble):
        return Ensemble([CountingModel(m, counter) for m in model.members], model.weights, model.fuse), counter
    return CountingModel(model, counter), counter


@dataclasses.dataclass(frozen=True)
class PassCount:
    """Passes of one attack call: `total` images through the surrogate (member passes / members), `images`."""

    total: float
    images: int

    @property
    def per_image(self) -> float:
        return self.total / self.images


def measure(attack, model, images, labels, targets=None) -> PassCount:
    """Runs `attack` once on `model` (wrapped to count) and returns its passes. The attack is traced anew for the
    counting copy."""
    wrapped, counter = counted(model)
    attack(wrapped, images, labels, target=targets)
    members = len(getattr(model, "members", [model]))
    return PassCount(total=float(counter.numpy()) / members, images=int(np.shape(images)[0]))
