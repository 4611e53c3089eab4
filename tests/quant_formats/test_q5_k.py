"""Q5_K: hand-built blocks (6-bit scales/mins, fifth bit in qh), llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T

import quant_formats as qf
from kquant_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                              check_matmul_exact_on_hand_block, needs_ggml, pack_scales_mins)
from quant_formats import q5_k

SCALES = [63, 1, 17, 2, 48, 33, 0, 5]
MINS = [7, 0, 62, 19, 4, 63, 40, 1]


def hand_block(q, d=0.25, dmin=0.125):
    """A block holding quants q (0..31), and w = d * scale * q - dmin * min by hand."""
    block = np.zeros(1, q5_k.BLOCK_DTYPE)
    block["d"], block["dmin"] = d, dmin
    block["scales"] = pack_scales_mins(SCALES, MINS)
    low, high = q & 15, q >> 4
    for c in range(4):  # byte 32c + l: weight 64c + l low nibble, 64c + 32 + l high
        block["qs"][0, 32 * c:32 * c + 32] = low[64 * c:64 * c + 32] | low[64 * c + 32:64 * c + 64] << 4
    for k in range(8):  # bit k of qh[l]: fifth bit of weight 32k + l
        block["qh"][0] |= (high[32 * k:32 * k + 32] << k).astype(np.uint8)
    sub = np.arange(256) // 32
    expected = d * np.array(SCALES)[sub] * q - dmin * np.array(MINS)[sub]
    return block.view(np.uint8), expected


def test_hand_built_block_dequantizes_to_formula():
    data, expected = hand_block(np.arange(256) * 11 % 32)
    assert np.array_equal(qf.dequantize(data[None, :], T.Q5_K)[0], expected.astype(np.float32))
    assert np.array_equal(q5_k.dequantize_reference(data.view(q5_k.BLOCK_DTYPE))[0],
                          expected.astype(np.float32))


def test_each_fifth_bit_adds_16_to_its_own_weight_only():
    """qh bit k of byte l belongs to weight 32k + l: set one at a time."""
    base, base_w = hand_block(np.zeros(256, np.int64))
    for k, l in [(0, 0), (1, 5), (2, 31), (5, 17), (7, 30)]:
        data = base.copy()
        data[16 + l] |= 1 << k  # qh starts at byte 16
        got = qf.dequantize(data[None, :], T.Q5_K)[0].astype(np.float64)
        changed = np.flatnonzero(got != base_w)
        assert list(changed) == [32 * k + l]
        assert got[32 * k + l] - base_w[32 * k + l] == 0.25 * SCALES[k] * 16


def test_matmul_exact_on_hand_block():
    data, expected = hand_block(np.arange(256) * 11 % 32)
    check_matmul_exact_on_hand_block(T.Q5_K, data, expected)


def test_matmul_with_all_fifth_bits_set():
    data, expected = hand_block(16 + np.arange(256) * 3 % 16, d=0.5, dmin=-0.25)
    check_matmul_exact_on_hand_block(T.Q5_K, data, expected)


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.Q5_K)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.Q5_K)
