"""GGUFFile: real models against gguf-py's reader, and one malformed file per rule."""
import struct

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFValueType as V

from gguf_runtime import GGUFError, GGUFFile


# --- a tiny hand-assembled GGUF, so each field can be broken on purpose ---------

def s(text):
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key, vtype, payload):
    return s(key) + struct.pack("<I", vtype) + payload


def tensor_info(name, dims, qtype, offset):
    return (s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<II", qtype, 0)[:4] + struct.pack("<Q", offset))


def build(kvs=None, tensors=None, data=b"", version=3, magic=b"GGUF", alignment=32,
          n_kv=None, n_tensors=None):
    kvs = [kv("general.architecture", V.STRING, s("llama"))] if kvs is None else kvs
    tensors = [tensor_info("w", [32, 2], T.F32, 0)] if tensors is None else tensors
    data = data or np.arange(64, dtype=np.float32).tobytes()
    header = (magic + struct.pack("<I", version)
              + struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors,
                            len(kvs) if n_kv is None else n_kv)
              + b"".join(kvs) + b"".join(tensors))
    pad = -len(header) % alignment
    return header + b"\0" * pad + data


def open_bytes(tmp_path, raw, name="m.gguf"):
    path = tmp_path / name
    path.write_bytes(raw)
    return GGUFFile(path)


def test_minimal_file_opens(tmp_path):
    with open_bytes(tmp_path, build()) as f:
        assert f.metadata["general.architecture"] == "llama"
        w = f.tensor("w")
        assert (w.type, w.shape, w.nbytes) == (T.F32, (2, 32), 256)
        assert np.array_equal(w.data.view(np.float32).ravel(), np.arange(64))


BAD_FILES = {
    "magic": (dict(magic=b"GGML"), "magic"),
    "version": (dict(version=1), "version"),
    "version_future": (dict(version=4), "version"),
    "huge_kv_count": (dict(n_kv=2**63), "metadata count"),
    "max_kv_count": (dict(n_kv=2**64 - 1), "metadata count"),
    "huge_tensor_count": (dict(n_tensors=2**63), "tensor count"),
    "key_length": (dict(kvs=[struct.pack("<Q", 2**63) + b"x"]), "key"),
    "string_length": (dict(kvs=[kv("a", V.STRING, struct.pack("<Q", 2**64 - 1))]), "'a'"),
    "unknown_value_type": (dict(kvs=[kv("a", 99, b"\0" * 8)]), "unknown value type"),
    "nested_array": (dict(kvs=[kv("a", V.ARRAY, struct.pack("<IQ", V.ARRAY, 1))]), "nested"),
    "array_count": (dict(kvs=[kv("a", V.ARRAY, struct.pack("<IQ", V.UINT32, 2**62))]), "'a'"),
    "string_array_count": (dict(kvs=[kv("a", V.ARRAY, struct.pack("<IQ", V.STRING, 2**60))]),
                           "'a'"),
    "duplicate_key": (dict(kvs=[kv("a", V.UINT8, b"\1"), kv("a", V.UINT8, b"\2")]), "duplicate"),
    "bad_utf8": (dict(kvs=[kv("a", V.STRING, s(b"\xff\xfe"))]), "UTF-8"),
    "alignment_not_pow2": (dict(kvs=[kv("general.alignment", V.UINT32, struct.pack("<I", 24))]),
                           "alignment"),
    "alignment_zero": (dict(kvs=[kv("general.alignment", V.UINT32, struct.pack("<I", 0))]),
                       "alignment"),
    "n_dims": (dict(tensors=[tensor_info("w", [1, 1, 1, 1, 64], T.F32, 0)]), "n_dims"),
    "zero_dim": (dict(tensors=[tensor_info("w", [64, 0], T.F32, 0)]), "dims"),
    "dims_overflow": (dict(tensors=[tensor_info("w", [2**32, 2**32], T.F32, 0)]), "dims"),
    "unknown_type": (dict(tensors=[tensor_info("w", [32, 2], 200, 0)]), "unknown type"),
    "row_not_block_multiple": (dict(tensors=[tensor_info("w", [48], T.Q4_0, 0)]), "block size"),
    "offset_misaligned": (dict(tensors=[tensor_info("w", [32, 2], T.F32, 4)]), "aligned"),
    "offset_outside": (dict(tensors=[tensor_info("w", [32, 2], T.F32, 2**40)]), "outside"),
    "data_past_end": (dict(tensors=[tensor_info("w", [32, 4], T.F32, 0)]), "outside"),
    "overlap": (dict(tensors=[tensor_info("w", [32, 2], T.F32, 0),
                              tensor_info("v", [32], T.F32, 64)]), "overlap"),
    "duplicate_tensor": (dict(tensors=[tensor_info("w", [32], T.F32, 0),
                                       tensor_info("w", [32], T.F32, 128)]), "duplicate"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_file_raises_gguf_error_naming_the_field(tmp_path, case):
    kwargs, field = BAD_FILES[case]
    with pytest.raises(GGUFError) as info:
        open_bytes(tmp_path, build(**kwargs))
    message = str(info.value)
    assert field.lower() in message.lower() and "\n" not in message


def test_empty_file_and_directory(tmp_path):
    with pytest.raises(GGUFError, match="empty"):
        open_bytes(tmp_path, b"")
    with pytest.raises(GGUFError, match="directory"):
        GGUFFile(tmp_path)


def test_truncated_at_every_header_offset(tmp_path):
    """Every prefix of a real-shaped header fails cleanly with GGUFError."""
    raw = build(kvs=[kv("general.architecture", V.STRING, s("llama")),
                     kv("tokens", V.ARRAY, struct.pack("<IQ", V.STRING, 3) + s("a") + s("bb")
                        + s("ccc")),
                     kv("scores", V.ARRAY, struct.pack("<IQ", V.FLOAT32, 2) + b"\0" * 8),
                     kv("n", V.UINT32, struct.pack("<I", 7))],
                tensors=[tensor_info("w", [32, 2], T.F32, 0)])
    header_len = len(raw) - 256
    for cut in range(header_len):
        with pytest.raises(GGUFError):
            open_bytes(tmp_path, raw[:cut])


def test_gguf_writer_file_round_trips(tmp_path):
    path = tmp_path / "w.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "ü"])
    writer.add_array("tokenizer.ggml.scores", [0.5, 1.5, -2.0])
    q8 = gguf.quants.quantize(np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64), T.Q8_0)
    writer.add_tensor("a", np.ones((3, 32), np.float32))
    writer.add_tensor("b", q8, raw_dtype=T.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with GGUFFile(path) as f:
        assert f.metadata["llama.block_count"] == 2
        assert f.metadata["tokenizer.ggml.tokens"] == ["a", "b", "ü"]
        assert np.allclose(f.metadata["tokenizer.ggml.scores"], [0.5, 1.5, -2.0])
        b = f.tensor("b")
        assert (b.type, b.shape) == (T.Q8_0, (4, 64))
        assert np.array_equal(b.data, q8)


def test_real_smollm2_matches_gguf_py_reader(smollm2_path):
    theirs = gguf.GGUFReader(smollm2_path)
    with GGUFFile(smollm2_path) as ours:
        assert ours.architecture == "llama"
        assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
        assert ours.metadata["tokenizer.ggml.pre"] == "smollm"
        assert len(ours.metadata["tokenizer.ggml.tokens"]) == 49152
        for ref in theirs.tensors[::37]:
            mine = ours.tensor(ref.name)
            assert mine.type == ref.tensor_type
            assert mine.shape == tuple(int(d) for d in reversed(ref.shape))
            assert np.array_equal(mine.data.reshape(-1), np.asarray(ref.data).view(np.uint8)
                                  .reshape(-1))


def test_real_gemma3_opens_fast_with_its_metadata(gemma3_path):
    import time
    path = gemma3_path
    start = time.perf_counter()
    with GGUFFile(path) as f:
        elapsed = time.perf_counter() - start
        assert f.architecture == "gemma3"
        assert len(f.metadata["tokenizer.ggml.tokens"]) == 262144
        assert f.metadata["gemma3.embedding_length"] == 640
        assert f.tensor("token_embd.weight").shape == (262144, 640)
        assert len(f.tensors) == 236
    assert elapsed < 3.0  # ~0.3 s here; a check against eager reading, not a benchmark


def test_split_model_opens_as_one(tmp_path):
    parts = []
    for no, (name, rows) in enumerate((("a", 2), ("b", 3)), start=1):
        path = tmp_path / f"m-{no:05d}-of-00002.gguf"
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_uint16("split.no", no - 1)
        writer.add_uint16("split.count", 2)
        writer.add_tensor(name, np.full((rows, 32), no, np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        parts.append(path)
    with GGUFFile(parts[0]) as f:
        assert [t.name for t in f.tensors] == ["a", "b"]
        assert f.tensor("b").data.view(np.float32).min() == 2
    parts[1].unlink()
    with pytest.raises(GGUFError, match="missing"):
        GGUFFile(parts[0])
