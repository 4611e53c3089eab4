"""Mutated GGUF files: GGUFFile either opens them or raises GGUFError, nothing else.

The seed file has the real models' structure (architecture keys, tokenizer
string/float/int arrays, tensors of several block types), written by gguf-py.
"""
import struct

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from hypothesis import HealthCheck, given, settings, strategies as st

from gguf_runtime import GGUFError, GGUFFile


@pytest.fixture(scope="module")
def seed_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "seed.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_uint32("llama.embedding_length", 64)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b", "ab", "é"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0, -3.0, -4.0])
    writer.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1, 1])
    writer.add_array("tokenizer.ggml.merges", ["a b"])
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((5, 64)).astype(np.float32))
    for name, qtype in (("q8", T.Q8_0), ("q4", T.Q4_0), ("q5", T.Q5_1)):
        data = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def open_or_gguf_error(tmp_path, raw):
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(raw)
    try:
        with GGUFFile(path) as f:
            for t in f.tensors:
                assert t.data.nbytes == t.nbytes
    except GGUFError as e:
        assert "\n" not in str(e)


_SETTINGS = settings(max_examples=1500, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips(tmp_path, seed_bytes, flips):
    raw = bytearray(seed_bytes)
    for position, value in flips:
        raw[position % len(raw)] = value
    open_or_gguf_error(tmp_path, bytes(raw))


_HUGE = st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1])


@_SETTINGS
@given(st.integers(0, 2**16), _HUGE, st.booleans())
def test_huge_fields_at_any_offset(tmp_path, seed_bytes, offset, value, wide):
    """A count, length, dim or offset replaced by an extreme value, anywhere."""
    raw = bytearray(seed_bytes)
    width = 8 if wide else 4
    position = offset % (len(raw) - width)
    raw[position:position + width] = struct.pack("<Q" if wide else "<I",
                                                 value if wide else value % 2**32)
    open_or_gguf_error(tmp_path, bytes(raw))


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**16))
def test_truncation(tmp_path, seed_bytes, cut):
    open_or_gguf_error(tmp_path, seed_bytes[:cut % len(seed_bytes)])
