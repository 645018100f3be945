"""The one classifier contract: float32 NHWC RGB in [0, 1], any size -> [N, 1000] standard-order logits.

Resizing (differentiable bilinear), the model's own preprocessing and the label space (slim's
background class, other class orders) all live here, so that every model means the same thing by an
image and by a label, and one batch can feed a mixed ensemble.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, preprocessing
from tfattack.models.registry import ModelSpec

NUM_CLASSES = 1000


def standard_output_index(spec: ModelSpec, network) -> Optional[np.ndarray]:
    """Column of the network's raw output holding each standard class 0..999 (None = identity)."""
    index = getattr(network, "output_index", None)
    if index is not None:
        index = np.asarray(index, np.int32)
        if index.shape != (NUM_CLASSES,):
            raise ValueError(f"model {spec.name!r}: output_index must have {NUM_CLASSES} entries")
        return index
    if spec.num_classes == 1001:
        return np.arange(1, 1001, dtype=np.int32)  # drop slim's background class 0
    return None


@dataclasses.dataclass(frozen=True)
class Outputs:
    """One forward pass: standard logits, the aux head's (or None), and the requested feature taps by name."""

    logits: tf.Tensor
    aux: Optional[tf.Tensor]
    features: Dict[str, tf.Tensor]


def _to_float32(tensor):
    return tensor if tensor is None or tensor.dtype == tf.float32 else tf.cast(tensor, tf.float32)


class Classifier(tf.Module):
    """A loaded model: `model(images) -> logits`, images float32 [N, H, W, 3] RGB in [0, 1].

    Attributes: `name`, `spec` (its registry record), `image_size`, `differentiable` (False for
    black-box victims such as the int8 TFLite interpreter), `info` (where the weights came from),
    `compute_dtype` (the network's activation dtype; see `with_compute_dtype`).
    """

    num_classes = NUM_CLASSES

    def __init__(self, spec: ModelSpec, network, info: Optional[dict] = None, compute_dtype: str = "float32"):
        super().__init__(name=spec.name)
        self.spec = spec
        self.network = network
        self.info = dict(info or {})
        if compute_dtype not in self.compute_dtypes:
            raise ValueError(f"model {spec.name!r} cannot compute in {compute_dtype!r}; it supports "
                             f"{', '.join(self.compute_dtypes)}")
        self.compute_dtype = compute_dtype
        self._preprocess = preprocessing.get(spec.preprocessing)
        index = standard_output_index(spec, network)
        self._output_index = None if index is None else tf.constant(index)

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def differentiable(self) -> bool:
        return self.spec.differentiable and getattr(self.network, "differentiable", True)

    @property
    def compute_dtypes(self) -> tuple:
        """Dtypes the network can compute in (store-based nets: float32, bfloat16, float16)."""
        return tuple(getattr(self.network, "compute_dtypes", ("float32",)))

    def with_compute_dtype(self, dtype: str) -> "Classifier":
        """The same model (shared weights) computing its network in `dtype`: preprocessing stays float32,
        the preprocessed image is cast to `dtype` at the network's input, and the logits come back as
        float32. bfloat16 about doubles CPU speed where the CPU has AVX-512 BF16 or AMX (measured in
        the README's speed table) at the cost of ~3 significant digits in the activations."""
        if dtype == self.compute_dtype:
            return self
        return Classifier(self.spec, self.network, self.info, compute_dtype=dtype)

    def __repr__(self):
        dtype = "" if self.compute_dtype == "float32" else f", computes in {self.compute_dtype}"
        return (f"Classifier({self.spec.name!r}, {self.spec.architecture}, {self.image_size}px, "
                f"{self.info.get('checkpoint') or 'random weights'}{dtype})")

    def _check_images(self, images):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(f"model {self.spec.name!r}: images must be [N, H, W, 3] RGB, got shape {images.shape}")
        if not images.dtype.is_floating:
            raise ValueError(f"model {self.spec.name!r}: images must be float in [0, 1], got {images.dtype.name} "
                             f"(divide uint8 pixels by 255)")
        return images

    def _to_standard(self, raw_logits):
        if raw_logits is None:
            return None
        if self._output_index is not None:
            raw_logits = tf.gather(raw_logits, self._output_index, axis=-1)
        return raw_logits

    def _forward(self, images):
        images = self._check_images(images)
        x = preprocessing.resize_to(images, self.image_size)
        x = self._preprocess(x)
        if self.compute_dtype != "float32":
            x = tf.cast(x, self.compute_dtype)
        backward.begin_forward()
        edits.begin_forward(self.image_size, self.spec.architecture)
        logits, end_points = self.network(x)
        return self._to_standard(_to_float32(logits)), end_points or {}

    def logits_and_aux(self, images):
        """Returns (logits [N, 1000], aux_logits [N, 1000] or None)."""
        logits, end_points = self._forward(images)
        return logits, self._to_standard(_to_float32(end_points.get("AuxLogits")))

    def outputs(self, images, features: Sequence[str] = ()) -> Outputs:
        """Logits, aux logits and the feature taps `features` (end-point names or early/mid/late), all from
        one forward pass. A tap the model lacks is a `features.FeatureError` before any computation."""
        taps = {tap: self.feature_tap(tap) for tap in features}
        logits, end_points = self._forward(images)
        return Outputs(logits, self._to_standard(_to_float32(end_points.get("AuxLogits"))),
                       {tap: end_points[name] for tap, name in taps.items()})

    def __call__(self, images):
        return self.logits_and_aux(images)[0]

    # --- introspection --------------------------------------------------------------------------------

    def _probe(self) -> Tuple[Tuple[str, ...], dict]:
        """End-point names (forward order) and the backward primitives the network calls, from one eager
        forward pass on a blank image (cached)."""
        if getattr(self, "_probed", None) is None:
            blank = tf.zeros([1, self.image_size, self.image_size, 3])
            with backward.policy(None), backward.counting() as counts:
                _, end_points = self.network(self._preprocess(blank))
            self._probed = (tuple(end_points or ()), dict(counts))
        return self._probed

    @property
    def introspectable(self) -> bool:
        """False for networks whose layers tfattack does not write (Keras applications): no feature taps, and
        backward policies cannot act on them."""
        return getattr(self.network, "introspectable", True)

    def end_point_names(self) -> Tuple[str, ...]:
        return self._probe()[0]

    def feature_tap(self, tap: str) -> str:
        """The end-point name `tap` means here (see `tfattack.models.features`)."""
        return features.resolve(self.spec.name, self.spec.architecture, self.end_point_names(), tap)

    def backward_primitives(self) -> Dict[str, int]:
        """How many ReLUs, residual additions and max pools the network routes through the backward policies
        (`tfattack.backward`); empty for networks that cannot honour a policy (Keras applications)."""
        return self._probe()[1]
