"""The safetensors reader: files written by the safetensors package (and one written by hand with bfloat16, which
NumPy has no dtype for) read back exactly; files that are not safetensors are refused in one line."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy

from tfattack.models import safetensors_file
from tfattack.models.safetensors_file import SafetensorsError, read_state_dict


def test_tensors_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"blocks.0.attn.qkv.weight": rng.normal(size=(6, 2)).astype(np.float32),
               "pos_embed": rng.normal(size=(1, 3, 2)).astype(np.float16),
               "relative_position_index": rng.integers(0, 9, (4, 4)).astype(np.int64)}
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    read = read_state_dict(path)
    assert set(read) == set(tensors)
    for name, value in tensors.items():
        assert read[name].dtype == value.dtype
        np.testing.assert_array_equal(read[name], value)


def _write_by_hand(path, entries, data):
    header = json.dumps(entries).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize("reader", ["read_state_dict", "_widened_bfloat16"])  # with and without NumPy's bfloat16
def test_bfloat16_is_widened_to_float32_exactly(tmp_path, reader):
    values = np.array([1.0, -2.5, 3.140625, 1e-3], np.float32)
    bfloat16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # truncation: exact for these values but 1e-3
    other = np.arange(3, dtype=np.float32)
    path = tmp_path / "bf16.safetensors"
    _write_by_hand(path, {"__metadata__": {"format": "pt"},
                          "w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}},
                   bfloat16.tobytes() + other.tobytes())
    read = getattr(safetensors_file, reader)(str(path))
    expected = (bfloat16.astype(np.uint32) << 16).view(np.float32).reshape(2, 2)
    assert read["w"].dtype == np.float32
    np.testing.assert_array_equal(read["w"], expected)
    np.testing.assert_array_equal(read["w"].ravel()[:3], values[:3])
    np.testing.assert_array_equal(read["b"], other)


def test_a_bfloat16_file_cut_short_is_refused(tmp_path):
    path = tmp_path / "cut.safetensors"
    _write_by_hand(path, {"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}, b"\x00" * 4)
    with pytest.raises(SafetensorsError, match=r"cut\.safetensors"):
        read_state_dict(path)
    with pytest.raises(SafetensorsError, match=r"cut\.safetensors: tensor 'w' lies outside the file"):
        safetensors_file._widened_bfloat16(str(path))


@pytest.mark.parametrize("content", [b"<html>rate limited</html>", b"\x01\x00"])
def test_a_file_that_is_not_safetensors_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "page.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsError) as error:
        read_state_dict(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no safetensors file at .*absent.safetensors"):
        read_state_dict(tmp_path / "absent.safetensors")
