"""Reading TF1 checkpoints (V1 single file or V2 prefix) into networks with official variable names.

The top-level scope is detected from the file, so the official checkpoints (`InceptionV3/...`) and the
renamed copies the attack community passes around (`Ens3AdvInceptionV3/...`) load the same way.
Extra entries (global_step, optimiser slots, other models) are ignored; a missing or mis-shaped
variable is an error naming the variables, the checkpoint and the model.
"""

from __future__ import annotations

import contextlib
import glob
import os
from typing import Dict, Mapping, Tuple

import numpy as np
import tensorflow as tf

from tfattack.names import first_few


class CheckpointError(ValueError):
    """A checkpoint that cannot serve a model: missing, unreadable, or of another architecture."""


@contextlib.contextmanager
def naming_model(model_name: str, *error_types):
    """Re-raises a file reader's one-line error of `error_types` (same type) starting "model NAME: ":
    readers know the file, not which model it was passed for, and a run loads several models."""
    try:
        yield
    except error_types as err:
        if f"model {model_name!r}" in str(err):
            raise
        raise type(err)(f"model {model_name!r}: {err}") from None


def find_checkpoint_prefix(path: str, model_name: str) -> str:
    """Resolves a prefix, a V1 file, a `.index`/`.data-*` file or a folder to a checkpoint prefix."""
    path = os.path.expanduser(str(path))
    hint = f"(model {model_name!r}; download it with: tfattack-download --models={model_name})"
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        candidates = sorted(glob.glob(os.path.join(path, "*.index")))
        candidates = [c[: -len(".index")] for c in candidates]
        if not candidates:
            # V1 checkpoints (the 2016 slim releases) are a single `<name>.ckpt` file.
            candidates = sorted(glob.glob(os.path.join(path, "*.ckpt")))
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise CheckpointError(f"no checkpoint found in folder {path} {hint}")
        raise CheckpointError(f"folder {path} holds several checkpoints ({', '.join(map(os.path.basename, candidates))}); "
                              f"pass the prefix of one {hint}")
    if path.endswith(".index"):
        path = path[: -len(".index")]
    elif ".data-" in os.path.basename(path):
        path = path[: path.rindex(".data-")]
    if os.path.exists(path + ".index") or os.path.isfile(path):
        return path
    raise CheckpointError(f"no checkpoint at {path} {hint}")


def read_variable_shapes(prefix: str, model_name: str):
    try:
        reader = tf.train.load_checkpoint(prefix)
        return reader, reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {prefix} for model {model_name!r}: {first_line}") from None


def detect_scope(checkpoint_shapes: Mapping[str, list], relative_names, official_scope: str) -> Tuple[str, int]:
    """Picks the top-level scope under which most of `relative_names` exist in the checkpoint."""
    relative_names = list(relative_names)
    scopes = {name.split("/", 1)[0] for name in checkpoint_shapes if "/" in name}
    best, best_count = official_scope, -1
    # Prefer the official scope on ties, then the alphabetically first, so detection is deterministic.
    for scope in [official_scope] + sorted(scopes - {official_scope}):
        count = sum(f"{scope}/{rel}" in checkpoint_shapes for rel in relative_names)
        if count > best_count:
            best, best_count = scope, count
    return best, best_count



def restore_slim(variables: Dict[str, tf.Variable], official_scope: str, path: str, model_name: str) -> dict:
    """Assigns every variable in `variables` (relative name -> tf.Variable) from the checkpoint at `path`.

    Returns a description: {"checkpoint": prefix, "scope": detected scope, "variables": count}.
    """
    prefix = find_checkpoint_prefix(path, model_name)
    reader, shapes = read_variable_shapes(prefix, model_name)
    scope, found = detect_scope(shapes, variables.keys(), official_scope)
    if found <= 0:
        top = sorted({n.split("/", 1)[0] for n in shapes})
        raise CheckpointError(
            f"checkpoint {prefix} holds no variable of model {model_name!r} (expected scope {official_scope}/...); "
            f"its top-level scopes are: {first_few(top, 5)}")
    missing = [f"{scope}/{rel}" for rel in variables if f"{scope}/{rel}" not in shapes]
    if missing:
        raise CheckpointError(f"checkpoint {prefix} lacks {len(missing)} variable(s) of model {model_name!r}: "
                              f"{first_few(missing, 5)} (a checkpoint of another architecture or depth?)")
    wrong = [f"{scope}/{rel} {tuple(shapes[f'{scope}/{rel}'])} != {tuple(var.shape)}"
             for rel, var in variables.items() if tuple(shapes[f"{scope}/{rel}"]) != tuple(var.shape)]
    if wrong:
        raise CheckpointError(f"checkpoint {prefix} has mis-shaped variable(s) for model {model_name!r}: "
                              f"{first_few(wrong, 3)}")
    for rel, var in variables.items():
        try:
            value = reader.get_tensor(f"{scope}/{rel}")
        except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as err:
            raise CheckpointError(f"cannot read {scope}/{rel} from checkpoint {prefix} for model {model_name!r}: "
                                  f"{str(err).strip().splitlines()[0]} (truncated or corrupt file?)") from None
        var.assign(np.asarray(value, dtype=var.dtype.as_numpy_dtype))
    return {"checkpoint": prefix, "scope": scope, "variables": len(variables)}


def write_slim_checkpoint(variables: Mapping[str, np.ndarray], prefix: str) -> str:
    """Writes a TF1-format V2 checkpoint (`prefix.index` + `prefix.data-00000-of-00001`) holding
    exactly `variables` (full name -> array), as `tf.compat.v1.train.Saver` writes them.

    Used by tests and benchmarks to make checkpoints in the official format. One eager SaveV2 op: no
    graph holding the values as constants (VGG-16's 138 M values would take seconds and gigabytes).
    """
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    names = list(variables)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(np.asarray(variables[n])) for n in names])
    return prefix
