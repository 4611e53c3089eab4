"""Q3_K: hand-built blocks (6-bit scales - 32, hmask high bits), llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T

import quant_formats as qf
from kquant_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                              check_matmul_exact_on_hand_block, needs_ggml)
from quant_formats import q3_k

# 6-bit stored scales (the scale is this minus 32): both ends and the bit-4/5 cases
STORED_SCALES = [0, 63, 32, 31, 16, 48, 1, 47, 33, 15, 62, 17, 5, 40, 20, 60]


def pack_scales(stored):
    """16 six-bit values into 12 bytes, written out from the layout that
    dequantize_row_q3_K's kmask shuffle reads: low nibbles of j and j + 8 share
    byte j % 8, top two bits sit in byte 8 + j % 4 at bit 2 * (j // 4)."""
    packed = np.zeros(12, np.uint8)
    for j, s in enumerate(stored):
        packed[j % 8] |= (s & 15) << (4 * (j // 8))
        packed[8 + j % 4] |= (s >> 4) << (2 * (j // 4))
    return packed


def hand_block(q, d=0.25, stored=STORED_SCALES):
    """A block holding quants q in -4..3; w = d * (stored - 32) * q by hand.

    q >= 0 is stored as low bits q with its hmask bit set, q < 0 as q + 4 with
    the bit clear."""
    block = np.zeros(1, q3_k.BLOCK_DTYPE)
    block["d"] = d
    block["scales"] = pack_scales(stored)
    low, hbit = np.where(q >= 0, q, q + 4), (q >= 0).astype(np.uint8)
    for n in range(2):
        for j in range(4):  # weight 128n + 32j + l: bits 2j of qs[32n + l], bit 4n + j of hmask[l]
            run = slice(128 * n + 32 * j, 128 * n + 32 * j + 32)
            block["qs"][0, 32 * n:32 * n + 32] |= (low[run] << (2 * j)).astype(np.uint8)
            block["hmask"][0] |= (hbit[run] << (4 * n + j)).astype(np.uint8)
    expected = d * (np.array(stored)[np.arange(256) // 16] - 32) * q
    return block.view(np.uint8), expected


def test_hand_built_block_dequantizes_to_formula():
    data, expected = hand_block(np.arange(256) * 3 % 8 - 4)
    assert np.array_equal(qf.dequantize(data[None, :], T.Q3_K)[0], expected.astype(np.float32))
    assert np.array_equal(q3_k.dequantize_reference(data.view(q3_k.BLOCK_DTYPE))[0],
                          expected.astype(np.float32))


def test_clear_hmask_bit_subtracts_four():
    """All-zero quant bytes with all hmask bits clear: every q is -4."""
    block = np.zeros(1, q3_k.BLOCK_DTYPE)
    block["d"] = 1.0
    block["scales"] = pack_scales(STORED_SCALES)
    got = qf.dequantize(block.view(np.uint8)[None, :], T.Q3_K)[0]
    assert np.array_equal(got, (np.array(STORED_SCALES)[np.arange(256) // 16] - 32) * -4.0)


def test_every_stored_scale_value():
    for value in range(64):
        data, expected = hand_block(np.arange(256) % 8 - 4, stored=[value] * 16)
        got = qf.dequantize(data[None, :], T.Q3_K)[0]
        assert np.array_equal(got, expected.astype(np.float32)), value


def test_matmul_exact_on_hand_block():
    data, expected = hand_block(np.arange(256) * 3 % 8 - 4)
    check_matmul_exact_on_hand_block(T.Q3_K, data, expected)


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.Q3_K)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.Q3_K)
