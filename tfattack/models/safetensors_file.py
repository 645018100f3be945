"""Reads `.safetensors` state dicts (timm's and Hugging Face's weight files) into NumPy, without torch.

The file is an 8-byte little-endian header length, a JSON header (tensor name -> dtype, shape, byte offsets) and
the raw tensor bytes. The `safetensors` package's NumPy API reads it; bfloat16, which NumPy has no dtype of its own
for, is widened to float32 (exact: a bfloat16 is the upper half of a float32), read here from the header when
NumPy cannot represent it.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict

import numpy as np

HEADER_LENGTH_BYTES = 8


class SafetensorsError(ValueError):
    """A file that is not a readable safetensors state dict (truncated, corrupt, or of another kind)."""


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise SafetensorsError("reading .safetensors files needs the safetensors package: pip install safetensors") \
            from None
    return safetensors.numpy


def _header(path: str) -> dict:
    with open(path, "rb") as file:
        raw_length = file.read(HEADER_LENGTH_BYTES)
        if len(raw_length) < HEADER_LENGTH_BYTES:
            raise SafetensorsError(f"{path} is not a safetensors file: {os.path.getsize(path)} bytes")
        (length,) = struct.unpack("<Q", raw_length)
        if length > os.path.getsize(path) - HEADER_LENGTH_BYTES:
            raise SafetensorsError(f"{path} is not a safetensors file (its header length {length} exceeds the file)")
        try:
            return json.loads(file.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SafetensorsError(f"{path} has an unreadable safetensors header: {err}") from None


def _widened_bfloat16(path: str) -> Dict[str, np.ndarray]:
    """Every tensor of a file that holds bfloat16 ones; those are widened to float32, the others read as stored."""
    header = _header(path)
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(HEADER_LENGTH_BYTES))
        data = file.read()[length:]
    dtypes = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U8": "u1", "BOOL": "?", "BF16": "<u2"}
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry.get("dtype") not in dtypes:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {entry.get('dtype')!r}, which is not read")
        begin, end = entry["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise SafetensorsError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
        values = np.frombuffer(data[begin:end], dtypes[entry["dtype"]])
        if values.size != int(np.prod(entry["shape"])):
            raise SafetensorsError(f"{path}: tensor {name!r} has {values.size} elements for shape {entry['shape']}")
        if entry["dtype"] == "BF16":
            values = (values.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = values.reshape(entry["shape"])
    return tensors


def read_state_dict(path) -> Dict[str, np.ndarray]:
    """Tensor name -> array for every tensor in the file."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no safetensors file at {path}")
    reader = _safetensors_numpy()
    try:
        tensors = reader.load_file(path)
    except TypeError as err:
        if "bfloat16" not in str(err):
            raise
        return _widened_bfloat16(path)
    except Exception as err:  # the package's SafetensorError is not importable under a stable name
        if type(err).__name__ != "SafetensorError":
            raise
        raise SafetensorsError(f"{path} is not a readable safetensors file: {err}") from None
    # Where ml_dtypes is installed (TensorFlow brings it), NumPy reads bfloat16 natively: widened the same way.
    return {name: value.astype(np.float32) if value.dtype.name == "bfloat16" else value
            for name, value in tensors.items()}
