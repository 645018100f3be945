"""Reads a TFLite model file (a FlatBuffers binary) into plain Python records, with `struct` and NumPy.

FlatBuffers layout, as far as a reader needs it: the file starts with a uint32 offset to the root
table (then the 4-byte identifier "TFL3"). A table starts with an int32 `soffset`; its vtable sits at
`table - soffset` and holds uint16 sizes then one uint16 offset per field slot (0 = absent: the
schema default). Scalars are stored inline; tables, vectors and strings are reached through a uint32
offset relative to where it is stored; a vector is a uint32 length then its elements.

The TFLite schema facts used (slot numbers in schema.fbs order): Model{version, operator_codes,
subgraphs, description, buffers}, OperatorCode{deprecated_builtin_code, custom_code, version,
builtin_code}, SubGraph{tensors, inputs, outputs, operators, name}, Tensor{shape, type, buffer, name,
quantization}, QuantizationParameters{min, max, scale, zero_point, details_type, details,
quantized_dimension}, Operator{opcode_index, inputs, outputs, builtin_options_type, builtin_options},
Buffer{data, offset, size}; the builtin options tables are listed in `OPTION_FIELDS`.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

IDENTIFIER = b"TFL3"

# TensorType -> NumPy dtype (types without a NumPy twin map to None).
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
                9: np.int8, 10: np.float64, 12: np.uint64, 15: np.uint32, 16: np.uint16}

# BuiltinOperator codes of the ops the float rebuild knows, and a few neighbours for readable errors;
# any other code is named through TensorFlow's own schema module when it is importable.
BUILTIN_OPERATORS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE",
    9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 20: "RELU_N1_TO_1",
    21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 28: "TANH", 32: "CUSTOM", 34: "PAD", 40: "MEAN", 41: "SUB",
    43: "SQUEEZE", 114: "QUANTIZE", 117: "HARD_SWISH",
}

# BuiltinOptions union type -> (table name, {field: (slot, struct format, default)}).
# Formats: "b" int8 enum, "i" int32, "f" float32, "?" bool, "[i" a vector of int32.
_FUSED = ("b", 0)
OPTION_FIELDS = {
    1: ("Conv2DOptions", {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                          "fused_activation_function": (3, *_FUSED), "dilation_w_factor": (4, "i", 1),
                          "dilation_h_factor": (5, "i", 1)}),
    2: ("DepthwiseConv2DOptions", {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                                   "depth_multiplier": (3, "i", 0), "fused_activation_function": (4, *_FUSED),
                                   "dilation_w_factor": (5, "i", 1), "dilation_h_factor": (6, "i", 1)}),
    5: ("Pool2DOptions", {"padding": (0, "b", 0), "stride_w": (1, "i", 0), "stride_h": (2, "i", 0),
                          "filter_width": (3, "i", 0), "filter_height": (4, "i", 0),
                          "fused_activation_function": (5, *_FUSED)}),
    8: ("FullyConnectedOptions", {"fused_activation_function": (0, *_FUSED), "weights_format": (1, "b", 0),
                                  "keep_num_dims": (2, "?", False)}),
    9: ("SoftmaxOptions", {"beta": (0, "f", 0.0)}),
    10: ("ConcatenationOptions", {"axis": (0, "i", 0), "fused_activation_function": (1, *_FUSED)}),
    11: ("AddOptions", {"fused_activation_function": (0, *_FUSED)}),
    17: ("ReshapeOptions", {"new_shape": (0, "[i", None)}),
    21: ("MulOptions", {"fused_activation_function": (0, *_FUSED)}),
    27: ("ReducerOptions", {"keep_dims": (0, "?", False)}),
    28: ("SubOptions", {"fused_activation_function": (0, *_FUSED)}),
    30: ("SqueezeOptions", {"squeeze_dims": (0, "[i", None)}),
}


class TFLiteFormatError(ValueError):
    """The file is not a TFLite flatbuffer this reader understands (or is truncated)."""


@functools.lru_cache(maxsize=1)
def _all_operator_names() -> Dict[int, str]:
    names = dict(BUILTIN_OPERATORS)
    try:  # TensorFlow ships the generated schema; only used to name ops this module does not list
        from tensorflow.lite.python import schema_py_generated as schema
        names.update({v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")})
    except (ImportError, AttributeError):
        pass
    return names


def operator_name(code: int) -> str:
    return _all_operator_names().get(code, f"builtin operator {code}")


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
        return TENSOR_TYPES.get(self.type_code)


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


class _Table:
    """One flatbuffer table: typed access to its field slots."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self._vtable = vtable
        self._vtable_size = struct.unpack_from("<H", buf, vtable)[0]

    def _offset(self, slot: int) -> int:
        entry = 4 + 2 * slot
        if entry >= self._vtable_size:
            return 0
        return struct.unpack_from("<H", self.buf, self._vtable + entry)[0]

    def scalar(self, slot: int, fmt: str, default):
        offset = self._offset(slot)
        return default if offset == 0 else struct.unpack_from("<" + fmt, self.buf, self.pos + offset)[0]

    def _target(self, slot: int) -> Optional[int]:
        offset = self._offset(slot)
        if offset == 0:
            return None
        at = self.pos + offset
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, slot: int) -> Optional["_Table"]:
        target = self._target(slot)
        return None if target is None else _Table(self.buf, target)

    def tables(self, slot: int) -> List["_Table"]:
        target = self._target(slot)
        if target is None:
            return []
        count = struct.unpack_from("<I", self.buf, target)[0]
        return [_Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])
                for at in range(target + 4, target + 4 + 4 * count, 4)]

    def array(self, slot: int, dtype) -> Optional[np.ndarray]:
        target = self._target(slot)
        if target is None:
            return None
        count = struct.unpack_from("<I", self.buf, target)[0]
        dtype = np.dtype(dtype).newbyteorder("<")
        if target + 4 + count * dtype.itemsize > len(self.buf):
            raise IndexError("vector runs past the end of the file")
        return np.frombuffer(self.buf, dtype, count=count, offset=target + 4).copy()

    def string(self, slot: int) -> str:
        raw = self.array(slot, np.uint8)
        return "" if raw is None else raw.tobytes().decode("utf-8", errors="replace")


def _options(op: _Table) -> dict:
    kind = op.scalar(3, "B", 0)
    table = op.table(4)
    if kind not in OPTION_FIELDS or table is None:
        return {}
    options = {}
    for field, (slot, fmt, default) in OPTION_FIELDS[kind][1].items():
        if fmt == "[i":
            values = table.array(slot, np.int32)
            options[field] = None if values is None else tuple(int(v) for v in values)
        else:
            options[field] = table.scalar(slot, fmt, default)
    return options


def _quantization(table: Optional[_Table]) -> Optional[Quantization]:
    if table is None:
        return None
    scale = table.array(2, np.float32)
    if scale is None or scale.size == 0:
        return None
    zero_point = table.array(3, np.int64)
    if zero_point is None or zero_point.size == 0:
        zero_point = np.zeros(scale.shape, np.int64)
    return Quantization(scale=scale, zero_point=zero_point, dimension=int(table.scalar(6, "i", 0)))


def _buffer_bytes(buffer: _Table, file_bytes: bytes) -> bytes:
    data = buffer.array(0, np.uint8)
    if data is not None and data.size:
        return data.tobytes()
    offset, size = buffer.scalar(1, "Q", 0), buffer.scalar(2, "Q", 0)
    if offset > 1 and size:  # large models keep tensor data after the flatbuffer
        return file_bytes[offset:offset + size]
    return b""


def _parse(path: str, buf: bytes) -> TFLiteModel:
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    codes = []
    for code in model.tables(1):
        # Old files store the code in the int8 field, new ones in the int32 field (the int8 one then
        # holds 127 for codes above it); the larger of the two is the operator.
        builtin = max(int(code.scalar(0, "b", 0)), int(code.scalar(3, "i", 0)))
        codes.append((builtin, code.string(1)))
    subgraphs = model.tables(2)
    if not subgraphs:
        raise TFLiteFormatError(f"{path}: the model has no subgraph")
    buffers = model.tables(4)
    graph = subgraphs[0]
    tensors = []
    for index, table in enumerate(graph.tables(0)):
        shape = table.array(0, np.int32)
        type_code = int(table.scalar(1, "b", 0))
        buffer_index = int(table.scalar(2, "I", 0))
        raw = _buffer_bytes(buffers[buffer_index], buf) if 0 < buffer_index < len(buffers) else b""
        data = None
        if raw:
            dtype = TENSOR_TYPES.get(type_code)
            if dtype is None:
                raise TFLiteFormatError(f"{path}: constant tensor {index} has unsupported type code {type_code}")
            data = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(tuple(shape))
        tensors.append(Tensor(index=index, name=table.string(3), shape=tuple(int(s) for s in (shape if shape is not None else ())),
                              type_code=type_code, data=data, quantization=_quantization(table.table(4))))
    operators = []
    for index, table in enumerate(graph.tables(3)):
        code, custom = codes[int(table.scalar(0, "I", 0))]
        name = f"CUSTOM:{custom}" if custom else operator_name(code)
        operators.append(Operator(index=index, code=code, name=name,
                                  inputs=tuple(int(i) for i in table.array(1, np.int32)),
                                  outputs=tuple(int(i) for i in table.array(2, np.int32)), options=_options(table)))
    return TFLiteModel(path=path, version=int(model.scalar(0, "I", 0)), description=model.string(3), tensors=tensors,
                       operators=operators, inputs=tuple(int(i) for i in graph.array(1, np.int32)),
                       outputs=tuple(int(i) for i in graph.array(2, np.int32)), subgraph_count=len(subgraphs))


def read_tflite(path) -> TFLiteModel:
    """Parses the first subgraph of a .tflite file: tensors (with constant data), operators, quantisation."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"TFLite model {path} does not exist")
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != IDENTIFIER:
        raise TFLiteFormatError(f"{path} is not a TFLite model (no '{IDENTIFIER.decode()}' identifier)")
    try:
        return _parse(str(path), buf)
    except (struct.error, IndexError, ValueError) as err:
        if isinstance(err, TFLiteFormatError):
            raise
        raise TFLiteFormatError(f"{path} is truncated or corrupt ({err})") from None
