"""Safetensors reading: every header field checked, tensors in llama.cpp's order,
values as torch reads them (bf16 widened exactly)."""
import json
import struct

import numpy as np
import pytest

import hf_checkpoints
from gguf_runtime.convert.safetensors import TensorReader, index_tensors, read_header
from gguf_runtime.errors import ModelError


def _file(path, header: dict, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_values_and_row_ranges(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float16)
    c = rng.standard_normal((3, 8)).astype(np.float32)
    hf_checkpoints.write_safetensors(tmp_path / "model.safetensors",
                                     {"z": a, "b": b, "c": hf_checkpoints.bf16_bits(c)}, bf16={"c"})
    entries = index_tensors(tmp_path)
    assert list(entries) == ["b", "c", "z"]  # sorted by name, as safetensors lists them
    reader = TensorReader()
    np.testing.assert_array_equal(reader.load(entries["z"]), a)
    np.testing.assert_array_equal(reader.load(entries["z"], 2, 5), a[2:5])
    assert reader.load(entries["b"]).dtype == np.float16
    # bf16 -> f32 is exact: the top 16 bits of the rounded float
    bits = hf_checkpoints.bf16_bits(c).astype(np.uint32) << 16
    np.testing.assert_array_equal(reader.load(entries["c"]), bits.view(np.float32))
    reader.close()


def test_sharded_parts_follow_the_index(tmp_path):
    tensors = {f"t{i}": np.full((2, 2), i, np.float32) for i in range(5)}
    hf_checkpoints.write_checkpoint(tmp_path, tensors, "F32", shards=2)
    entries = index_tensors(tmp_path)
    assert sorted(entries) == sorted(tensors)
    # part 1 holds t0, t2, t4; part 2 holds t1, t3: parts in order, names sorted in each
    assert list(entries) == ["t0", "t2", "t4", "t1", "t3"]
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        index_tensors(tmp_path)


@pytest.mark.parametrize("header, data, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, bytes(8), "outside"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "expected"),
    ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), "bad shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), "outside"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": "x"}}, bytes(8), "outside"),
    ({"a": 5}, b"", "not an object"),
    ([1, 2], b"", "not a JSON object"),
])
def test_bad_entries(tmp_path, header, data, message):
    path = _file(tmp_path / "model.safetensors", header, data)
    with pytest.raises(ModelError, match=message):
        read_header(path)


def test_bad_header_length_and_json(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelError, match="header length"):
        read_header(path)
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_header(path)
    path.write_bytes(b"abc")
    with pytest.raises(ModelError, match="shorter than 8 bytes"):
        read_header(path)


def test_no_weights(tmp_path):
    with pytest.raises(ModelError, match="no model"):
        index_tensors(tmp_path)
