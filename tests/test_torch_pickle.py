"""torch_pickle: torch.save files (legacy and zip layouts) read without torch, and hostile pickles refused.

The files are written here by a small writer that follows torch's own layout (the same persistent ids,
rebuild calls and storage records), so the reader is checked against tensors we know.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from tfattack.models import torch_pickle
from tfattack.models.torch_pickle import TorchPickleError, UnsafePickleError


class Global:
    """A global reference written as GLOBAL 'module name' without importing it (torch is not needed)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce insists on a callable
        raise AssertionError("never called")


class FakeStorage:
    """A torch storage: its element type name and its flat values."""

    def __init__(self, key, type_name, values):
        self.key, self.type_name, self.values = key, type_name, np.ascontiguousarray(values)


class FakeTensor:
    """A tensor as torch pickles it: _rebuild_tensor_v2(storage, offset, size, stride, grad, hooks), or
    the older _rebuild_tensor(storage, offset, size, stride)."""

    def __init__(self, storage, offset, size, stride, rebuild="_rebuild_tensor_v2"):
        self.storage, self.offset, self.size, self.stride, self.rebuild = storage, offset, size, stride, rebuild

    def __reduce__(self):
        args = (self.storage, self.offset, tuple(self.size), tuple(self.stride))
        if self.rebuild == "_rebuild_tensor_v2":
            args += (False, collections.OrderedDict())  # requires_grad, backward hooks
        return Global("torch._utils", self.rebuild), args


class FakeParameter:
    """An nn.Parameter as torch pickles it: _rebuild_parameter(tensor, requires_grad, hooks)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        return (Global("torch._utils", "_rebuild_parameter"), (self.tensor, True, collections.OrderedDict()))


class TorchLikePickler(pickle._Pickler):
    """The pure-Python pickler, writing `Global`s as GLOBAL opcodes and storages as persistent ids."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_global_ref(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = _save_global_ref

    def __init__(self, file, view_of=None, zip_layout=False):
        super().__init__(file, protocol=2)
        self.storages = {}
        self.view_of = view_of or {}
        self.zip_layout = zip_layout  # zip persistent ids have no view field

    def persistent_id(self, obj):
        if not isinstance(obj, FakeStorage):
            return None
        self.storages[obj.key] = obj
        view = self.view_of.get(obj.key)  # legacy storage views: (root storage, offset)
        if view is None:
            pid = ("storage", Global("torch", obj.type_name), obj.key, "cpu", obj.values.size)
            return pid if self.zip_layout else pid + (None,)
        root, offset = view
        return ("storage", Global("torch", obj.type_name), root.key, "cpu", root.values.size,
                (obj.key, offset, obj.values.size))


def write_legacy(path, obj, *, storages_override=None, view_of=None):
    """torch's legacy layout: magic, protocol, sys info, object, sorted keys; then numel + bytes per key."""
    buffer = io.BytesIO()
    pickler = TorchLikePickler(buffer, view_of)
    pickler.dump(obj)
    storages = storages_override if storages_override is not None else pickler.storages
    keys = sorted(k for k in storages if k not in (view_of or {}))
    with open(path, "wb") as handle:
        for header in (torch_pickle.LEGACY_MAGIC_NUMBER, torch_pickle.LEGACY_PROTOCOL_VERSION,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, handle, protocol=2)
        handle.write(buffer.getvalue())
        pickle.dump(keys, handle, protocol=2)
        for key in keys:
            values = storages[key].values
            handle.write(struct.pack("<q", values.size))
            handle.write(values.astype(values.dtype.newbyteorder("<")).tobytes())
    return path


def write_zip(path, obj, byteorder="little"):
    """torch's zip layout: archive/data.pkl, archive/data/<key>, archive/byteorder, archive/version."""
    buffer = io.BytesIO()
    pickler = TorchLikePickler(buffer, zip_layout=True)
    pickler.dump(obj)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", byteorder)
        archive.writestr("archive/version", "3\n")
        for key, storage in pickler.storages.items():
            order = "<" if byteorder == "little" else ">"
            archive.writestr(f"archive/data/{key}", storage.values.astype(storage.values.dtype.newbyteorder(order)).tobytes())
    return path


def known_state_dict():
    """(state dict of FakeTensors, the arrays they must read as): views, offsets, shared storage, dtypes."""
    rng = np.random.default_rng(0)
    flat = rng.standard_normal(3 * 4 * 5).astype(np.float32)
    shared = FakeStorage("100", "FloatStorage", flat)
    block = flat.reshape(3, 4, 5)
    halves = rng.standard_normal(6).astype(np.float16)
    doubles = rng.standard_normal(4)
    longs = np.array([1, -2, 3 ** 30, 7], np.int64)
    bytes_ = np.array([0, 17, 255], np.uint8)
    bools = np.array([True, False, True])
    state = collections.OrderedDict([
        ("conv.weight", FakeTensor(shared, 0, (3, 4, 5), (20, 5, 1))),
        ("transposed", FakeTensor(shared, 0, (5, 4, 3), (1, 5, 20))),            # non-contiguous view
        ("window", FakeTensor(shared, 26, (2, 2, 2), (20, 5, 2))),                 # offset + strides
        ("half", FakeTensor(FakeStorage("7", "HalfStorage", halves), 2, (2, 2), (1, 2))),
        ("double", FakeTensor(FakeStorage("8", "DoubleStorage", doubles), 0, (4,), (1,))),
        ("bn.num_batches_tracked", FakeTensor(FakeStorage("9", "LongStorage", longs), 2, (), ())),
        ("long", FakeTensor(FakeStorage("9", "LongStorage", longs), 0, (4,), (1,))),
        ("uint8", FakeTensor(FakeStorage("10", "ByteStorage", bytes_), 0, (3,), (1,))),
        ("bool", FakeTensor(FakeStorage("11", "BoolStorage", bools), 1, (2,), (1,))),
        ("empty", FakeTensor(FakeStorage("12", "FloatStorage", np.zeros(0, np.float32)), 0, (0, 3), (3, 1))),
        ("param", FakeParameter(FakeTensor(shared, 40, (2, 10), (10, 1), rebuild="_rebuild_tensor"))),
    ])
    expected = collections.OrderedDict([
        ("conv.weight", block),
        ("transposed", block.transpose(2, 1, 0)),
        ("window", block[1:3, 1:3, 1:4:2]),
        ("half", halves[2:6].reshape(2, 2).T),
        ("double", doubles),
        ("bn.num_batches_tracked", np.array(3 ** 30, np.int64)),
        ("long", longs),
        ("uint8", bytes_),
        ("bool", bools[1:]),
        ("empty", np.zeros((0, 3), np.float32)),
        ("param", flat[40:60].reshape(2, 10)),
    ])
    return state, expected


def assert_same(read, expected):
    assert list(read) == list(expected)
    for name, want in expected.items():
        got = read[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.c_contiguous, name


@pytest.mark.parametrize("layout", ["legacy", "zip", "zip_big_endian"])
def test_reads_known_tensors(tmp_path, layout):
    state, expected = known_state_dict()
    path = tmp_path / "state.pth"
    if layout == "legacy":
        write_legacy(path, state)
    else:
        write_zip(path, state, byteorder="big" if layout == "zip_big_endian" else "little")
    assert_same(torch_pickle.read_state_dict(path), expected)


def test_reads_legacy_storage_views(tmp_path):
    # Old torch saved a view of a storage as (view key, offset, size) over its root storage's bytes.
    root_values = np.arange(10, dtype=np.float32)
    root = FakeStorage("root", "FloatStorage", root_values)
    view = FakeStorage("view", "FloatStorage", root_values[4:8])
    path = write_legacy(tmp_path / "views.pth", {"a": FakeTensor(view, 1, (3,), (1,)), "b": FakeTensor(root, 0, (2,), (1,))},
                        storages_override={"root": root, "view": view}, view_of={"view": (root, 4)})
    read = torch_pickle.read_state_dict(path)
    np.testing.assert_array_equal(read["a"], [5, 6, 7])
    np.testing.assert_array_equal(read["b"], [0, 1])


def test_nested_checkpoint_is_flattened_and_non_tensors_named(tmp_path):
    tensor = FakeTensor(FakeStorage("1", "FloatStorage", np.ones(2, np.float32)), 0, (2,), (1,))
    read = torch_pickle.read_state_dict(write_legacy(tmp_path / "n.pth", {"state_dict": {"fc.bias": tensor}}))
    assert list(read) == ["state_dict.fc.bias"]
    with pytest.raises(TorchPickleError, match="entry 'epoch' is not a tensor"):
        torch_pickle.read_state_dict(write_legacy(tmp_path / "e.pth", {"w": tensor, "epoch": 3}))


class CallsOsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_refuses_os_system(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = collections.OrderedDict(weight=CallsOsSystem(marker))
    path = tmp_path / "evil.pth"
    write_legacy(path, payload) if layout == "legacy" else write_zip(path, payload)
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os|nt)\.system"):
        torch_pickle.read_state_dict(path)
    assert not marker.exists()
    # The same file would run the command under a plain unpickler: the test's payload is real.
    if layout == "legacy":
        with open(path, "rb") as handle:
            for _ in range(3):
                pickle.load(handle)
            pickle.Unpickler(handle).load()
        assert marker.exists()


def test_refuses_builtins_eval(tmp_path):
    path = write_legacy(tmp_path / "eval.pth", {"weight": CallsEval()})
    # Protocol 2 (what torch writes) spells the module __builtin__, as Python 2 did.
    with pytest.raises(UnsafePickleError, match=r"global (__builtin__|builtins)\.eval"):
        torch_pickle.read_state_dict(path)
    assert issubclass(UnsafePickleError, ValueError)


def test_refuses_unknown_torch_global(tmp_path):
    # Only the rebuild functions and storage classes are admitted, not anything under torch.
    path = write_legacy(tmp_path / "g.pth", {"w": (Global("torch.serialization", "load"), 1)})
    with pytest.raises(UnsafePickleError, match=r"torch\.serialization\.load"):
        torch_pickle.read_state_dict(path)


def test_pickle_cannot_modify_storage_types(tmp_path):
    # BUILD on an admitted object (here the FloatStorage class stand-in) must not change it.
    buffer = io.BytesIO()
    pickler = TorchLikePickler(buffer)
    buffer.write(pickle.PROTO + b"\x02")
    pickler.save(Global("torch", "FloatStorage"))
    pickler.save((None, {"name": "DoubleStorage"}))
    buffer.write(pickle.BUILD + pickle.STOP)
    path = tmp_path / "build.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
    with pytest.raises(TorchPickleError, match="tries to set 'name'"):
        torch_pickle.load(path)


def test_out_of_bounds_strides_are_refused(tmp_path):
    storage = FakeStorage("1", "FloatStorage", np.arange(6, dtype=np.float32))
    path = write_legacy(tmp_path / "oob.pth", {"w": FakeTensor(storage, 2, (2, 3), (3, 1))})
    with pytest.raises(TorchPickleError, match=r"reaches element 7 of a storage of 6"):
        torch_pickle.read_state_dict(path)


class CallsWithoutArguments:
    def __reduce__(self):
        return Global("torch._utils", "_rebuild_parameter"), ()


def test_malformed_rebuild_calls_are_one_line_errors(tmp_path):
    # A rebuilt 2-D tensor passed where a flat storage belongs would defeat the element bounds check.
    flat = FakeStorage("1", "FloatStorage", np.arange(12, dtype=np.float32))
    smuggled = FakeTensor(FakeTensor(flat, 0, (3, 4), (4, 1)), 5, (2,), (1,))
    with pytest.raises(TorchPickleError, match="tensor rebuilt from ndarray, not from a storage"):
        torch_pickle.read_state_dict(write_legacy(tmp_path / "s.pth", {"w": smuggled}))
    with pytest.raises(TorchPickleError, match=r"malformed tensor records \(TypeError"):
        torch_pickle.read_state_dict(write_legacy(tmp_path / "a.pth", {"w": CallsWithoutArguments()}))


def test_truncated_and_foreign_files(tmp_path):
    state, _ = known_state_dict()
    good = write_legacy(tmp_path / "good.pth", state).read_bytes()
    (tmp_path / "cut.pth").write_bytes(good[:-10])
    with pytest.raises(TorchPickleError, match=r"cut\.pth: storage 9 needs 32 bytes, the file has 22 left \(truncated"):
        torch_pickle.read_state_dict(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_bytes(b"hello world")
    with pytest.raises(TorchPickleError, match=r"text\.pth: not a readable torch\.save file"):
        torch_pickle.read_state_dict(tmp_path / "text.pth")
    (tmp_path / "plain.pth").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(TorchPickleError, match="no torch magic number"):
        torch_pickle.read_state_dict(tmp_path / "plain.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        torch_pickle.read_state_dict(tmp_path / "missing.pth")
