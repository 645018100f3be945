"""Reads `torch.save` state dicts with the standard library and NumPy only (no torch, no code execution).

A `.pth` file is a pickle whose tensors are rebuilt by calling `torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, ...)` on storages that the pickle names by *persistent id*; the storages' bytes
live outside the pickle. Two layouts exist, told apart by their first bytes:

  - legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row (magic number,
    protocol version, system info, the object, the sorted storage keys), then each storage in key order
    as an int64 element count followed by its raw little-endian bytes;
  - zip (torch >= 1.6): `<archive>/data.pkl` plus one entry `<archive>/data/<key>` per storage.

Unpickling can call any importable function, so a `.pth` from the internet can run code under
`torch.load(weights_only=False)` or plain `pickle.load`. Here `find_class` admits only the names a
state dict needs: the tensor-rebuild functions, the typed storage classes (each only tells a dtype)
and `collections.OrderedDict`; anything else raises `UnsafePickleError` naming the global, before
it can be called. Rebuild functions are replaced by our own, which check every offset and stride
against the storage's length (a hostile stride must not read outside the buffer).
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Dict, Mapping

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
ZIP_MAGIC = b"PK\x03\x04"

# torch storage class -> NumPy dtype of its elements (always read little-endian unless the zip says so).
# bfloat16 has no NumPy dtype: it is read as uint16 and widened to float32 (exact).
STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "bf16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}


class TorchPickleError(ValueError):
    """A file that is not a readable torch.save state dict (truncated, corrupt, or of another kind)."""


class UnsafePickleError(TorchPickleError):
    """The pickle references a global that a state dict never needs (e.g. os.system): refused."""


class _Frozen:
    """Objects the pickle can reach: its BUILD opcode must not be able to change them."""

    __slots__ = ()

    def __init__(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise TorchPickleError(f"the pickle tries to set {name!r} on {type(self).__name__.lstrip('_')}")


class _StorageType(_Frozen):
    """Stands for a torch storage class: only its element dtype is used."""

    __slots__ = ("name",)

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.name]


class _Storage(_Frozen):
    """A flat run of elements; `array` (1-D) is set once the storage's bytes have been read."""

    __slots__ = ("key", "type", "numel", "array")


class _StorageView(_Frozen):
    """Old torch (legacy layout) could save a view of a storage: `size` elements from `offset` of `root`."""

    __slots__ = ("root", "key", "offset", "size")


class _PendingCall(_Frozen):
    """A rebuild call recorded while unpickling, made by `_resolve` once every storage is read
    (in the legacy layout the bytes come after the pickle)."""

    __slots__ = ("function", "args")


def _int_tuple(value, what: str, source: str):
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TorchPickleError(f"{source}: tensor {what} must be a tuple of ints, got {value!r:.80}")
    return value


def _rebuild_tensor(source: str, storage, storage_offset, size, stride, *_ignored) -> np.ndarray:
    """Our `_rebuild_tensor(_v2)`: a copy of the strided view, bounds-checked against the storage."""
    # Storages resolve to flat contiguous arrays; anything else (say a 2-D tensor smuggled in as the
    # storage) would make the element bounds check below meaningless.
    if not isinstance(storage, np.ndarray) or storage.ndim != 1 or not storage.flags.c_contiguous:
        raise TorchPickleError(f"{source}: tensor rebuilt from {type(storage).__name__}, not from a storage")
    size = _int_tuple(size, "size", source)
    stride = _int_tuple(stride, "stride", source)
    if len(size) != len(stride):
        raise TorchPickleError(f"{source}: tensor size {size} and stride {stride} differ in rank")
    if (not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0
            or any(n < 0 for n in size + stride)):
        raise TorchPickleError(f"{source}: tensor with a negative or non-integer offset, size or stride "
                               f"(offset {storage_offset!r:.20}, size {size}, stride {stride})")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise TorchPickleError(f"{source}: tensor (offset {storage_offset}, size {size}, stride {stride}) "
                               f"reaches element {last} of a storage of {storage.size} (corrupt file?)")
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size,
                                           strides=tuple(s * storage.itemsize for s in stride), writeable=False)
    try:
        return np.array(view, copy=True, order="C")
    except (ValueError, MemoryError):  # e.g. a huge stride-0 (expanded) tensor
        raise TorchPickleError(f"{source}: tensor of size {size} is too large to materialise") from None


def _rebuild_parameter(source: str, data, *_ignored):
    """A `torch.nn.Parameter` is just its tensor here."""
    if not isinstance(data, np.ndarray):
        raise TorchPickleError(f"{source}: parameter rebuilt from {type(data).__name__}, not from a tensor")
    return data


# The only globals a state-dict pickle may name, and what each stands for here.
_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
_STORAGE_TYPES = {("torch", name): name for name in STORAGE_DTYPES}
_STORAGE_TYPES[("torch.storage", "UntypedStorage")] = "UntypedStorage"


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals from the allow-list only; rebuild calls are recorded, storages declared."""

    def __init__(self, file, source: str, declare_storage=None):
        super().__init__(file)
        self._source = source
        self._declare_storage = declare_storage

    def find_class(self, module, name):
        key = (module, name)
        if key == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if key in _STORAGE_TYPES:
            return _StorageType(name=_STORAGE_TYPES[key])
        if key in _REBUILDERS:
            function, source = _REBUILDERS[key], self._source
            return lambda *args: _PendingCall(function=functools.partial(function, source), args=args)
        raise UnsafePickleError(f"{self._source}: refusing to load global {module}.{name} "
                                f"(a state dict needs only tensors, storages and OrderedDict)")

    def persistent_load(self, pid):
        # torch writes ('storage', storage_type, key, location, numel[, view_metadata]).
        if (self._declare_storage is None or not isinstance(pid, tuple) or len(pid) not in (5, 6)
                or pid[0] != "storage" or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not isinstance(pid[4], int) or pid[4] < 0):
            raise TorchPickleError(f"{self._source}: unexpected persistent id {pid!r:.120}")
        return self._declare_storage(pid[2], pid[1], pid[4], pid[5] if len(pid) == 6 else None)


def _unpickle(file, source: str, declare_storage=None):
    try:
        return _RestrictedUnpickler(file, source, declare_storage).load()
    except TorchPickleError:
        raise
    except Exception as err:  # noqa: BLE001  (any unpickling failure means a corrupt or foreign file)
        raise TorchPickleError(f"{source}: not a readable torch.save file ({type(err).__name__}: {err})") from None


def _element_dtype(storage_type: _StorageType, byteorder: str) -> np.dtype:
    dtype = np.dtype("u2" if storage_type.dtype == "bf16" else storage_type.dtype)
    return dtype.newbyteorder(byteorder) if dtype.itemsize > 1 else dtype


def _fill(storage: _Storage, data: bytes, byteorder: str, source: str):
    dtype = _element_dtype(storage.type, byteorder)
    if len(data) != storage.numel * dtype.itemsize:
        raise TorchPickleError(f"{source}: storage {storage.key} has {len(data)} bytes, expected "
                               f"{storage.numel} x {dtype.itemsize} (truncated file?)")
    array = np.frombuffer(data, dtype)
    if storage.type.dtype == "bf16":
        array = (array.astype("<u4") << 16).view("<f4")  # bfloat16 is the top half of a float32
    object.__setattr__(storage, "array", array.astype(array.dtype.newbyteorder("="), copy=False))


class _Storages:
    """The storages a pickle declares (by persistent id), keyed by their keys."""

    def __init__(self, source: str):
        self.source = source
        self.by_key: Dict[str, _Storage] = {}

    def declare(self, key, storage_type, numel, view):
        storage = self.by_key.get(key)
        if storage is None:
            storage = self.by_key[key] = _Storage(key=key, type=storage_type, numel=numel, array=None)
        elif storage.type.name != storage_type.name or storage.numel != numel:
            raise TorchPickleError(f"{self.source}: storage {key} is declared twice differently")
        if view is None:
            return storage
        if (not isinstance(view, tuple) or len(view) != 3
                or not all(isinstance(v, int) for v in view[1:])):
            raise TorchPickleError(f"{self.source}: malformed storage view {view!r:.80}")
        return _StorageView(root=storage, key=view[0], offset=view[1], size=view[2])


def _resolve(obj, source: str, memo=None):
    """Replaces storages by arrays and makes the recorded rebuild calls, depth first."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _Storage):
        result = obj.array
    elif isinstance(obj, _StorageView):
        data = obj.root.array
        if obj.offset < 0 or obj.size < 0 or obj.offset + obj.size > data.size:
            raise TorchPickleError(f"{source}: storage view {obj.key} lies outside storage {obj.root.key}")
        result = data[obj.offset:obj.offset + obj.size]
    elif isinstance(obj, _PendingCall):
        result = obj.function(*[_resolve(a, source, memo) for a in obj.args])
    elif isinstance(obj, dict):
        result = memo[id(obj)] = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            result[key] = _resolve(value, source, memo)
    elif isinstance(obj, list):
        result = memo[id(obj)] = []
        result.extend(_resolve(v, source, memo) for v in obj)
    elif isinstance(obj, tuple):
        result = tuple(_resolve(v, source, memo) for v in obj)
    else:
        result = obj
    memo[id(obj)] = result
    return result


def _finish(obj, source: str):
    """`_resolve`, with the failures a malformed pickle can provoke turned into one-line errors."""
    try:
        return _resolve(obj, source)
    except (TypeError, RecursionError, OverflowError) as err:
        raise TorchPickleError(f"{source}: malformed tensor records ({type(err).__name__}: {err})") from None


def _read_legacy(file, source: str):
    """Legacy layout: magic, protocol, system info, object, key list pickles; then the storages."""
    if _unpickle(file, source) != LEGACY_MAGIC_NUMBER:
        raise TorchPickleError(f"{source}: not a torch.save file (no torch magic number)")
    protocol = _unpickle(file, source)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise TorchPickleError(f"{source}: unsupported torch legacy protocol version {protocol!r:.40}")
    _unpickle(file, source)  # system info (pickler's endianness and C type sizes; storages are little-endian)
    storages = _Storages(source)
    obj = _unpickle(file, source, storages.declare)
    keys = _unpickle(file, source)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchPickleError(f"{source}: the storage key list is not a list of strings")
    file_size = os.fstat(file.fileno()).st_size
    for key in keys:
        header = file.read(8)
        if len(header) != 8:
            raise TorchPickleError(f"{source}: file ends before storage {key} (truncated?)")
        (numel,) = struct.unpack("<q", header)
        storage = storages.by_key.get(key)
        if storage is None:
            raise TorchPickleError(f"{source}: stored storage {key} is not used by the pickle")
        if numel != storage.numel:
            raise TorchPickleError(f"{source}: storage {key} holds {numel} elements, the pickle says {storage.numel}")
        nbytes = numel * _element_dtype(storage.type, "<").itemsize
        if nbytes > file_size - file.tell():
            raise TorchPickleError(f"{source}: storage {key} needs {nbytes} bytes, the file has "
                                   f"{file_size - file.tell()} left (truncated file?)")
        _fill(storage, file.read(nbytes), "<", source)
    missing = sorted(set(storages.by_key) - set(keys))
    if missing:
        raise TorchPickleError(f"{source}: storage(s) {', '.join(missing[:5])} used by the pickle are not in the file")
    return _finish(obj, source)


def _read_zip(path: Path, source: str):
    """Zip layout: `<archive>/data.pkl`, `<archive>/data/<key>` per storage, optional `<archive>/byteorder`."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise TorchPickleError(f"{source}: corrupt zip-format torch file ({err})") from None
    with archive:
        names = set(archive.namelist())
        pickles = sorted(n for n in names if n.endswith("/data.pkl") and n.count("/") == 1)
        if len(pickles) != 1:
            raise TorchPickleError(f"{source}: a zip without exactly one <archive>/data.pkl (not a torch.save file)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise TorchPickleError(f"{source}: unknown byteorder {order!r:.20}")
            byteorder = "<" if order == "little" else ">"
        storages = _Storages(source)
        obj = _unpickle(io.BytesIO(archive.read(pickles[0])), source, storages.declare)
        for key, storage in storages.by_key.items():
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise TorchPickleError(f"{source}: storage entry {entry} is missing")
            _fill(storage, archive.read(entry), byteorder, source)
    return _finish(obj, source)


def load(path):
    """Unpickles a torch.save file (legacy or zip layout) into plain containers holding NumPy arrays."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as file:
            if file.read(4) == ZIP_MAGIC:
                return _read_zip(path, source)
            file.seek(0)
            return _read_legacy(file, source)
    except FileNotFoundError:
        raise FileNotFoundError(f"torch file {source} does not exist") from None


def _flatten(obj, path) -> "collections.OrderedDict[str, np.ndarray]":
    """Nested dicts flattened with "." between names; a value that is not a tensor is an error naming it."""
    flat = collections.OrderedDict()

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, name + ".")
            elif isinstance(value, np.ndarray):
                flat[name] = value
            else:
                raise TorchPickleError(f"{path}: entry {name!r} is not a tensor (it is a {type(value).__name__})")

    walk(obj, "")
    return flat


def _load_mapping(path) -> Mapping:
    obj = load(path)
    if not isinstance(obj, Mapping):
        raise TorchPickleError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def read_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """A state dict as an ordered dict name -> np.ndarray; nested dicts (checkpoints like {"state_dict": {...}})
    are flattened with "." between names, and a value that is not a tensor is an error naming it."""
    return _flatten(_load_mapping(path), path)


# Where training scripts and libraries put the model's weights inside a checkpoint dict (plain torchvision/timm
# files are the state dict itself).
WEIGHT_CONTAINERS = ("state_dict", "model_state_dict", "model")
# The robustness library (Engstrom et al.) saves its AttackerModel: the classifier's weights under
# "module.model.", a second copy under "module.attacker.model." and the input normaliser's buffers.
ROBUSTNESS_EXTRAS = ("module.attacker.", "module.normalizer.", "attacker.", "normalizer.")
WRAPPER_PREFIXES = ("module.model.", "module.", "model.")


def read_model_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """The model weights of a torch.save file, keyed as the bare model names them: the state dict itself, or the
    one under "state_dict" / "model_state_dict" / "model" of a training checkpoint (its optimizer, epoch and
    other entries are ignored); the robustness library's attacker copy and normaliser buffers dropped; a prefix
    every key shares ("module.model.", DataParallel's "module.", "model.") removed."""
    obj = _load_mapping(path)
    for key in WEIGHT_CONTAINERS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    flat = _flatten(obj, path)
    flat = collections.OrderedDict((k, v) for k, v in flat.items() if not k.startswith(ROBUSTNESS_EXTRAS))
    for prefix in WRAPPER_PREFIXES:
        if flat and all(k.startswith(prefix) for k in flat):
            return collections.OrderedDict((k[len(prefix):], v) for k, v in flat.items())
    return flat
