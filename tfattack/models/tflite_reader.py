"""Reads a TFLite model file into plain Python records, through TensorFlow's generated flatbuffer schema.

A .tflite file is a FlatBuffers binary of TFLite's `schema.fbs`. TensorFlow ships the Python classes
that `flatc` generates from that schema (`tensorflow.lite.python.schema_py_generated`, read with the
`flatbuffers` package TensorFlow depends on); this module unpacks a file with their object API
(`ModelT`) and keeps what the rebuild needs from the first subgraph: tensors with their constant data
and quantisation, operators with their builtin options as a dict of snake_case fields (`stride_w`,
`fused_activation_function`, ... as named in the schema).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

IDENTIFIER = b"TFL3"

# TensorType names (schema.fbs) -> NumPy dtype; types without a NumPy twin are left out.
NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "BOOL": np.bool_,
               "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
               "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64}


class TFLiteFormatError(ValueError):
    """The file is not a TFLite flatbuffer this reader understands (or is truncated)."""


def schema():
    """TensorFlow's generated TFLite schema module (tf.lite's own converter reads models through it)."""
    try:
        from tensorflow.lite.python import schema_py_generated
    except ImportError as err:
        raise ImportError(f"reading .tflite files needs TensorFlow's TFLite schema module "
                          f"tensorflow.lite.python.schema_py_generated, which this TensorFlow lacks ({err})") from None
    return schema_py_generated


def _enum_names(enum) -> Dict[int, str]:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


@functools.lru_cache(maxsize=1)
def _tensor_types() -> Dict[int, type]:
    return {code: NUMPY_TYPES[name] for code, name in _enum_names(schema().TensorType).items() if name in NUMPY_TYPES}


@functools.lru_cache(maxsize=1)
def _operator_names() -> Dict[int, str]:
    return _enum_names(schema().BuiltinOperator)


def operator_name(code: int) -> str:
    return _operator_names().get(code, f"builtin operator {code}")


@dataclasses.dataclass(frozen=True)
class Quantization:
    """Affine quantisation: real = scale * (q - zero_point), per tensor or along `dimension`."""

    scale: np.ndarray
    zero_point: np.ndarray
    dimension: int = 0

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1

    def broadcast(self, values: np.ndarray, rank: int) -> np.ndarray:
        """`values` (one per channel) shaped to broadcast against a tensor of `rank` along `dimension`."""
        if values.size == 1:
            return values.reshape(())
        shape = [1] * rank
        shape[self.dimension] = values.size
        return values.reshape(shape)


@dataclasses.dataclass
class Tensor:
    index: int
    name: str
    shape: Tuple[int, ...]
    type_code: int
    data: Optional[np.ndarray]           # constant contents, None for activations
    quantization: Optional[Quantization]

    @property
    def dtype(self):
        return _tensor_types().get(self.type_code)


@dataclasses.dataclass
class Operator:
    index: int
    code: int
    name: str                            # e.g. "CONV_2D", or "CUSTOM:<custom code>"
    inputs: Tuple[int, ...]              # tensor indices, -1 = optional input absent
    outputs: Tuple[int, ...]
    options: dict


@dataclasses.dataclass
class TFLiteModel:
    path: str
    version: int
    description: str
    tensors: List[Tensor]
    operators: List[Operator]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    subgraph_count: int


def _text(value) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace")


def _ints(values) -> Tuple[int, ...]:
    return () if values is None else tuple(int(v) for v in values)


def _options(options) -> dict:
    """A builtin options object as {snake_case field: value}; vectors become tuples."""
    if options is None:
        return {}
    fields = {}
    for field, value in vars(options).items():
        if isinstance(value, (np.ndarray, list)):
            value = tuple(np.asarray(value).tolist())
        fields[re.sub(r"(?<!^)(?=[A-Z])", "_", field).lower()] = value
    return fields


def _quantization(params) -> Optional[Quantization]:
    if params is None or params.scale is None or len(params.scale) == 0:
        return None
    scale = np.array(params.scale, np.float32)
    zero_point = np.array(params.zeroPoint if params.zeroPoint is not None and len(params.zeroPoint) else
                          np.zeros(scale.shape), np.int64)
    return Quantization(scale=scale, zero_point=zero_point, dimension=int(params.quantizedDimension))


def _buffer_bytes(buffer, file_bytes: bytes) -> bytes:
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, np.uint8).tobytes()
    if buffer.offset > 1 and buffer.size:  # large models keep tensor data after the flatbuffer
        return file_bytes[buffer.offset:buffer.offset + buffer.size]
    return b""


def _tensor(path: str, index: int, tensor, buffers, file_bytes: bytes) -> Tensor:
    shape = _ints(tensor.shape)
    raw = _buffer_bytes(buffers[tensor.buffer], file_bytes) if 0 < tensor.buffer < len(buffers) else b""
    data = None
    if raw:
        dtype = _tensor_types().get(tensor.type)
        if dtype is None:
            raise TFLiteFormatError(f"{path}: constant tensor {index} has unsupported type code {tensor.type}")
        data = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    return Tensor(index=index, name=_text(tensor.name), shape=shape, type_code=int(tensor.type), data=data,
                  quantization=_quantization(tensor.quantization))


def _parse(path: str, buf: bytes) -> TFLiteModel:
    model = schema().ModelT.InitFromPackedBuf(buf, 0)
    if not model.subgraphs:
        raise TFLiteFormatError(f"{path}: the model has no subgraph")
    codes = []
    for code in model.operatorCodes or []:
        # Old files store the code in the int8 field, new ones in the int32 field (the int8 one then
        # holds 127 for codes above it); the larger of the two is the operator.
        builtin = max(int(code.deprecatedBuiltinCode), int(code.builtinCode))
        custom = _text(code.customCode)
        codes.append((builtin, f"CUSTOM:{custom}" if custom else operator_name(builtin)))
    graph, buffers = model.subgraphs[0], model.buffers or []
    tensors = [_tensor(path, index, tensor, buffers, buf) for index, tensor in enumerate(graph.tensors or [])]
    operators = []
    for index, op in enumerate(graph.operators or []):
        code, name = codes[op.opcodeIndex]
        operators.append(Operator(index=index, code=code, name=name, inputs=_ints(op.inputs),
                                  outputs=_ints(op.outputs), options=_options(op.builtinOptions)))
    return TFLiteModel(path=path, version=int(model.version), description=_text(model.description), tensors=tensors,
                       operators=operators, inputs=_ints(graph.inputs), outputs=_ints(graph.outputs),
                       subgraph_count=len(model.subgraphs))


def read_tflite(path) -> TFLiteModel:
    """Parses the first subgraph of a .tflite file: tensors (with constant data), operators, quantisation."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"TFLite model {path} does not exist")
    buf = path.read_bytes()
    if len(buf) < 8 or not schema().Model.ModelBufferHasIdentifier(buf, 0):
        raise TFLiteFormatError(f"{path} is not a TFLite model (no '{IDENTIFIER.decode()}' identifier)")
    try:
        return _parse(str(path), buf)
    except TFLiteFormatError:
        raise
    # What the flatbuffers reader raises on offsets past the end (struct, IndexError, ValueError) or out of
    # their type's range (TypeError).
    except (struct.error, IndexError, ValueError, TypeError) as err:
        raise TFLiteFormatError(f"{path} is truncated or corrupt ({err})") from None
