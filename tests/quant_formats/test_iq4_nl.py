"""IQ4_NL: hand-built blocks against gguf-py's kvalues, and llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants

import quant_formats as qf
from iq_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                          check_matmul_exact_on_hand_block, needs_ggml)
from quant_formats import iq4_nl


def hand_blocks(scales=(0.25, -2.0)):
    """Blocks whose weight i has index (5i + 3*(i >= 16) + 7b) mod 16: every index in
    each half, and low and high nibble of a byte always differ. Their values
    d * kvalue are computed from gguf-py's IQ4_NL.kvalues."""
    kvalues = np.array(gguf_quants.IQ4_NL.kvalues, np.float64)
    blocks = np.zeros(len(scales), iq4_nl.BLOCK_DTYPE)
    expected = []
    for b, d in enumerate(scales):
        idx = (5 * np.arange(32) + 3 * (np.arange(32) >= 16) + 7 * b) % 16
        blocks["d"][b] = d
        blocks["qs"][b] = idx[:16] | idx[16:] << 4  # byte j: weight j low, j + 16 high
        expected.append(d * kvalues[idx])
    return blocks.view(np.uint8), np.concatenate(expected)


def test_hand_built_blocks_dequantize_to_kvalues():
    data, expected = hand_blocks()
    assert np.array_equal(qf.dequantize(data[None, :], T.IQ4_NL)[0], expected.astype(np.float32))
    assert np.array_equal(iq4_nl.dequantize_reference(data.view(iq4_nl.BLOCK_DTYPE)).ravel(),
                          expected.astype(np.float32))


def test_every_byte_value_in_every_position():
    """Byte value v at position j: weight j is kvalue[v & 15], weight j + 16 kvalue[v >> 4]."""
    kvalues = np.array(gguf_quants.IQ4_NL.kvalues, np.float32)
    blocks = np.zeros(256, iq4_nl.BLOCK_DTYPE)
    blocks["d"] = 1.0
    blocks["qs"] = (np.arange(256)[:, None] + 17 * np.arange(16)) % 256
    got = qf.dequantize(blocks.view(np.uint8)[None, :], T.IQ4_NL).reshape(256, 32)
    assert np.array_equal(got[:, :16], kvalues[blocks["qs"] & 15])
    assert np.array_equal(got[:, 16:], kvalues[blocks["qs"] >> 4])


def test_matmul_exact_on_hand_blocks():
    """Seven blocks: vec_dot's four-block loop and its one-block tail."""
    data, expected = hand_blocks((0.25, -2.0, 0.5, 1.0, -0.125, 4.0, 0.75))
    check_matmul_exact_on_hand_block(T.IQ4_NL, data, expected)


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.IQ4_NL)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.IQ4_NL)
