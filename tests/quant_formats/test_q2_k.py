"""Q2_K: hand-built blocks (4-bit scales and mins per 16 weights), llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T

import quant_formats as qf
from kquant_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                              check_matmul_exact_on_hand_block, needs_ggml)
from quant_formats import q2_k

SCALES = [0, 15, 1, 7, 8, 2, 14, 3, 9, 4, 13, 5, 12, 6, 11, 10]
MINS = [15, 0, 3, 9, 1, 14, 2, 8, 7, 6, 10, 11, 5, 12, 4, 13]


def hand_block(q, d=0.25, dmin=0.125):
    """A block holding quants q (0..3); w = d * scale * q - dmin * min by hand."""
    block = np.zeros(1, q2_k.BLOCK_DTYPE)
    block["d"], block["dmin"] = d, dmin
    block["scales"] = np.array(SCALES) | np.array(MINS) << 4  # scale low nibble, min high
    for n in range(2):
        for j in range(4):  # weight 128n + 32j + l: bits 2j..2j+1 of qs[32n + l]
            run = q[128 * n + 32 * j:128 * n + 32 * j + 32]
            block["qs"][0, 32 * n:32 * n + 32] |= (run << (2 * j)).astype(np.uint8)
    sub = np.arange(256) // 16
    expected = d * np.array(SCALES)[sub] * q - dmin * np.array(MINS)[sub]
    return block.view(np.uint8), expected


def test_hand_built_block_dequantizes_to_formula():
    data, expected = hand_block(np.arange(256) * 3 % 4)
    assert np.array_equal(qf.dequantize(data[None, :], T.Q2_K)[0], expected.astype(np.float32))
    assert np.array_equal(q2_k.dequantize_reference(data.view(q2_k.BLOCK_DTYPE))[0],
                          expected.astype(np.float32))


def test_single_quant_bit_pair_moves_one_weight():
    """Bits 2j..2j+1 of qs byte 32n + l belong to weight 128n + 32j + l only."""
    base, base_w = hand_block(np.zeros(256, np.int64))
    for n, j, l in [(0, 0, 0), (0, 3, 31), (1, 1, 16), (1, 2, 7)]:
        data = base.copy()
        data[16 + 32 * n + l] |= 3 << (2 * j)  # qs starts at byte 16
        got = qf.dequantize(data[None, :], T.Q2_K)[0].astype(np.float64)
        weight = 128 * n + 32 * j + l
        assert list(np.flatnonzero(got != base_w)) == ([weight] if SCALES[weight // 16] else [])
        assert got[weight] - base_w[weight] == 0.25 * SCALES[weight // 16] * 3


def test_matmul_exact_on_hand_block():
    data, expected = hand_block(np.arange(256) * 3 % 4)
    check_matmul_exact_on_hand_block(T.Q2_K, data, expected)


def test_matmul_exact_on_two_blocks():
    """The min term comes from bsums: each block must use its own."""
    a, wa = hand_block(np.arange(256) * 3 % 4)
    b, wb = hand_block(np.arange(256) % 4, d=-1.0, dmin=0.5)
    check_matmul_exact_on_hand_block(T.Q2_K, np.concatenate([a, b]), np.concatenate([wa, wb]))


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.Q2_K)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.Q2_K)
