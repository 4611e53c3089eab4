"""IQ4_NL: hand-built blocks against gguf-py's kvalues, llama.cpp round trips, and the
quantizer's best_index_int8 against its C definition."""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit

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


def _c_best_index_int8(x, kvalues):
    """ggml-quants.c best_index_int8, transcribed: bisection, then the lower of the
    two neighbours unless strictly farther (float32 differences)."""
    if x <= kvalues[0]:
        return 0
    if x >= kvalues[-1]:
        return len(kvalues) - 1
    lo, hi = 0, len(kvalues) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if x < kvalues[mid]:
            hi = mid
        else:
            lo = mid
    return hi - 1 if np.float32(x - kvalues[hi - 1]) < np.float32(kvalues[hi] - x) else hi


@njit
def _best_indices(values, out):
    for i in range(values.size):
        out[i] = iq4_nl.best_index_int8(values[i])


def test_quantizer_best_index_int8_as_c():
    """The quantizer's table lookup equals C's bisection on floats around every
    kvalue and midpoint (ties), out of range, inf and NaN."""
    kvalues = np.array(gguf_quants.IQ4_NL.kvalues, np.float32)
    rng = np.random.default_rng(3)
    grid = np.arange(-130.0, 130.0, 0.5, dtype=np.float32)
    values = np.concatenate([grid, np.nextafter(grid, np.float32(np.inf)),
                             np.nextafter(grid, np.float32(-np.inf)),
                             rng.uniform(-140, 140, 20_000).astype(np.float32),
                             np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0, -0.0], np.float32)])
    out = np.empty(values.size, np.int64)
    _best_indices(values, out)
    expected = [_c_best_index_int8(x, kvalues) for x in values]
    assert np.array_equal(out, expected)
