"""Q6_K: hand-built blocks (signed 8-bit scales, q - 32), llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T

import quant_formats as qf
from kquant_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                              check_matmul_exact_on_hand_block, needs_ggml)
from quant_formats import q6_k

SCALES = [-128, -5, 0, 1, 127, 3, -64, 17, 2, -1, 100, -100, 9, 63, -33, 4]


def hand_block(q, d=0.125):
    """A block holding 6-bit quants q (0..63); w = d * scale * (q - 32) by hand."""
    block = np.zeros(1, q6_k.BLOCK_DTYPE)
    block["d"] = d
    block["scales"] = SCALES
    for h in range(2):  # per 128-weight half, l < 32: weights l, l+32, l+64, l+96
        q1, q2, q3, q4 = (q[128 * h + 32 * i:128 * h + 32 * i + 32] for i in range(4))
        block["ql"][0, 64 * h:64 * h + 32] = (q1 & 15) | (q3 & 15) << 4
        block["ql"][0, 64 * h + 32:64 * h + 64] = (q2 & 15) | (q4 & 15) << 4
        block["qh"][0, 32 * h:32 * h + 32] = q1 >> 4 | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6
    expected = d * np.array(SCALES)[np.arange(256) // 16] * (q - 32)
    return block.view(np.uint8), expected


def test_hand_built_block_dequantizes_to_formula():
    data, expected = hand_block(np.arange(256) * 13 % 64)
    assert np.array_equal(qf.dequantize(data[None, :], T.Q6_K)[0], expected.astype(np.float32))
    assert np.array_equal(q6_k.dequantize_reference(data.view(q6_k.BLOCK_DTYPE))[0],
                          expected.astype(np.float32))


def test_extreme_quants_and_scales():
    """q = 0 and 63 (values -32 and 31) under scales -128 and 127."""
    q = np.where(np.arange(256) % 2 == 0, 0, 63)
    data, expected = hand_block(q, d=1.0)
    got = qf.dequantize(data[None, :], T.Q6_K)[0]
    assert got[0] == -128 * -32 and got[1] == -128 * 31 and got[64] == 127 * -32
    assert np.array_equal(got, expected.astype(np.float32))


def test_matmul_exact_on_hand_block():
    data, expected = hand_block(np.arange(256) * 13 % 64)
    check_matmul_exact_on_hand_block(T.Q6_K, data, expected)


def test_matmul_exact_on_two_blocks():
    """The -32 offset comes from bsums: each block must use its own."""
    a, wa = hand_block(np.arange(256) * 13 % 64, d=0.125)
    b, wb = hand_block(np.arange(256) * 5 % 64, d=-2.0)
    check_matmul_exact_on_hand_block(T.Q6_K, np.concatenate([a, b]), np.concatenate([wa, wb]))


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.Q6_K)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.Q6_K)
