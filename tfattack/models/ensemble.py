"""Ensembles fused before the softmax (the origin write-up's first lesson), or after it, or at the loss."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from tfattack.fixed_order import fan_out, ordered_sum

FUSIONS = ("logits", "probs", "loss")


class Ensemble(tf.Module):
    """`Ensemble(models, weights=None, fuse="logits")`, itself a model: images in [0, 1] -> [N, 1000].

    - "logits": weighted sum of the members' logits (Dong et al. 2018, eq. 6).
    - "probs": log of the weighted mean of the members' softmax, so cross-entropy on the output is
      the cross-entropy of the averaged prediction.
    - "loss": `__call__` returns the fused logits (for prediction); attacks see `fuse == "loss"`
      and average the members' losses with `weights`, reading `member_logits(images)`.
    Weights are normalised to sum to 1; equal weights unless given.
    """

    def __init__(self, models: Sequence, weights: Optional[Sequence[float]] = None, fuse: str = "logits"):
        super().__init__(name="ensemble")
        models = list(models)
        if not models:
            raise ValueError("Ensemble needs at least one model")
        if fuse not in FUSIONS:
            raise ValueError(f"Ensemble fuse must be one of {', '.join(FUSIONS)}, got {fuse!r}")
        if weights is None:
            weights = [1.0] * len(models)
        weights = [float(w) for w in weights]
        if len(weights) != len(models):
            raise ValueError(f"Ensemble got {len(models)} models but {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"Ensemble weights must be non-negative with a positive sum, got {weights}")
        total = sum(weights)
        self.members = models
        self.weights = [w / total for w in weights]
        self.fuse = fuse

    @property
    def name_list(self):
        return [getattr(m, "name", repr(m)) for m in self.members]

    @property
    def differentiable(self) -> bool:
        return all(getattr(m, "differentiable", True) for m in self.members)

    def with_compute_dtype(self, dtype: str) -> "Ensemble":
        """The same ensemble with every member that can compute in `dtype` doing so (members that
        cannot, e.g. the TFLite rebuilds, stay float32); fused outputs are float32 either way."""
        members = [m.with_compute_dtype(dtype) if dtype in getattr(m, "compute_dtypes", ()) else m
                   for m in self.members]
        return Ensemble(members, self.weights, self.fuse)

    @property
    def compute_dtypes(self) -> tuple:
        """Dtypes at least one member can compute in."""
        return tuple(sorted({d for m in self.members for d in getattr(m, "compute_dtypes", ("float32",))}))

    @property
    def image_size(self) -> int:
        return max(getattr(m, "image_size", 0) for m in self.members)

    def member_inputs(self, images) -> list:
        """One copy of `images` per member; their gradients are summed in member order (`fixed_order`)."""
        return fan_out(images, len(self.members))

    def member_logits(self, images):
        return [model(x) for model, x in zip(self.members, self.member_inputs(images))]

    def logits_and_aux(self, images):
        """(fused logits, fused aux logits or None): aux logits are fused over the members that have an
        aux head, with their weights renormalised among them (as the NIPS'17 MI-FGSM ensemble did)."""
        outputs = [m.logits_and_aux(x) if hasattr(m, "logits_and_aux") else (m(x), None)
                   for m, x in zip(self.members, self.member_inputs(images))]
        if self.fuse == "probs":
            logits = self._fuse_probs([l for l, _ in outputs], self.weights)
        else:
            logits = ordered_sum([w * l for w, (l, _) in zip(self.weights, outputs)])
        with_aux = [(w, a) for w, (_, a) in zip(self.weights, outputs) if a is not None]
        if not with_aux or sum(w for w, _ in with_aux) <= 0:
            return logits, None
        total = sum(w for w, _ in with_aux)
        aux = ordered_sum([(w / total) * a for w, a in with_aux])
        return logits, aux

    @staticmethod
    def _fuse_probs(logits, weights):
        probs = ordered_sum([w * tf.nn.softmax(l) for w, l in zip(weights, logits)])
        return tf.math.log(tf.maximum(probs, 1e-12))

    def __call__(self, images):
        logits = self.member_logits(images)
        if self.fuse == "probs":
            return self._fuse_probs(logits, self.weights)
        return ordered_sum([w * l for w, l in zip(self.weights, logits)])

    def __repr__(self):
        parts = ", ".join(f"{n}:{w:.3g}" for n, w in zip(self.name_list, self.weights))
        return f"Ensemble([{parts}], fuse={self.fuse!r})"
