"""Q4_K: hand-built blocks with known 6-bit scales/mins, and llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T

import quant_formats as qf
from kquant_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                              check_matmul_exact_on_hand_block, needs_ggml, pack_scales_mins)
from quant_formats import q4_k

# Scales and mins >= 16 use the top bits stored in bytes 0-7, the rest only nibbles.
SCALES = [1, 2, 63, 17, 33, 48, 5, 0]
MINS = [0, 62, 4, 19, 40, 7, 63, 1]


def hand_block(d=0.25, dmin=0.125, scales=SCALES, mins=MINS):
    """One block with q_i = 7i mod 16, and its dequantized values by the formula
    w = d * scale * q - dmin * min (all exact: small integers times powers of 2)."""
    q = np.arange(256) * 7 % 16
    block = np.zeros(1, q4_k.BLOCK_DTYPE)
    block["d"], block["dmin"] = d, dmin
    block["scales"] = pack_scales_mins(scales, mins)
    for c in range(4):  # byte 32c + l: weight 64c + l low, 64c + 32 + l high
        block["qs"][0, 32 * c:32 * c + 32] = q[64 * c:64 * c + 32] | q[64 * c + 32:64 * c + 64] << 4
    sub = np.arange(256) // 32
    expected = d * np.array(scales)[sub] * q - dmin * np.array(mins)[sub]
    return block.view(np.uint8), expected


def test_hand_built_block_dequantizes_to_formula():
    data, expected = hand_block()
    assert np.array_equal(qf.dequantize(data[None, :], T.Q4_K)[0], expected.astype(np.float32))
    assert np.array_equal(q4_k.dequantize_reference(data.view(q4_k.BLOCK_DTYPE))[0],
                          expected.astype(np.float32))


def test_scale_unpack_of_all_64_values():
    """Every 6-bit value in every scale and min position survives pack -> dequantize."""
    for value in range(64):
        data, expected = hand_block(scales=[value] * 8, mins=[63 - value] * 8)
        got = qf.dequantize(data[None, :], T.Q4_K)[0]
        assert np.array_equal(got, expected.astype(np.float32)), value


def test_matmul_exact_on_hand_block():
    data, expected = hand_block()
    check_matmul_exact_on_hand_block(T.Q4_K, data, expected)


def test_two_blocks_min_term_uses_each_blocks_bsums():
    """Two blocks with different dmin: a min term summed with the wrong
    block's bsums would show."""
    a, wa = hand_block(0.25, 0.125)
    b, wb = hand_block(0.5, -2.0)
    check_matmul_exact_on_hand_block(T.Q4_K, np.concatenate([a, b]), np.concatenate([wa, wb]))


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.Q4_K)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.Q4_K)
