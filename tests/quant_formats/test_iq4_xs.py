"""IQ4_XS: hand-built blocks with known 6-bit scales against gguf-py's kvalues,
and llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants

import quant_formats as qf
from iq_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                          check_matmul_exact_on_hand_block, needs_ggml)
from quant_formats import iq4_xs

# 6-bit stored scales (value used: ls - 32); >= 16 exercise the scales_h bits.
SCALES = [0, 63, 32, 17, 48, 5, 31, 33]


def pack_scales(scales):
    """8 six-bit scales -> (scales_h, scales_l[4]), from ggml-common.h block_iq4_xs:
    low nibble of sub-block ib in scales_l[ib / 2] (high nibble for odd ib),
    top two bits at bit 2 * ib of scales_h."""
    scales_h, scales_l = 0, np.zeros(4, np.uint8)
    for ib, ls in enumerate(scales):
        scales_l[ib // 2] |= (ls & 15) << (4 * (ib % 2))
        scales_h |= (ls >> 4) << (2 * ib)
    return scales_h, scales_l


def hand_block(d=0.25, scales=SCALES):
    """Weight i has index (5i + 3*(i % 32 >= 16) + i // 32) mod 16, so low and high
    nibbles of a byte differ; values d * (ls - 32) * kvalue from gguf-py's table."""
    i = np.arange(256)
    idx = (5 * i + 3 * (i % 32 >= 16) + i // 32) % 16
    block = np.zeros(1, iq4_xs.BLOCK_DTYPE)
    block["d"] = d
    block["scales_h"], block["scales_l"] = pack_scales(scales)
    sub = idx.reshape(8, 32)
    block["qs"] = (sub[:, :16] | sub[:, 16:] << 4).ravel()  # byte j: weight j low, j + 16 high
    kvalues = np.array(gguf_quants.IQ4_NL.kvalues, np.float64)
    expected = d * (np.array(scales)[i // 32] - 32) * kvalues[idx]
    return block.view(np.uint8), expected


def test_hand_built_block_dequantizes_to_formula():
    data, expected = hand_block()
    assert np.array_equal(qf.dequantize(data[None, :], T.IQ4_XS)[0], expected.astype(np.float32))
    assert np.array_equal(iq4_xs.dequantize_reference(data.view(iq4_xs.BLOCK_DTYPE))[0],
                          expected.astype(np.float32))


def test_scale_unpack_of_all_64_values():
    """Every 6-bit scale in every sub-block position survives pack -> dequantize."""
    for value in range(64):
        scales = [(value + 7 * ib) % 64 for ib in range(8)]
        data, expected = hand_block(scales=scales)
        got = qf.dequantize(data[None, :], T.IQ4_XS)[0]
        assert np.array_equal(got, expected.astype(np.float32)), value


def test_matmul_exact_on_hand_blocks():
    """Two blocks with different d and scales: a scale read for the wrong
    sub-block or block would show."""
    a, wa = hand_block(0.25)
    b, wb = hand_block(-1.5, SCALES[::-1])
    check_matmul_exact_on_hand_block(T.IQ4_XS, np.concatenate([a, b]), np.concatenate([wa, wb]))


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.IQ4_XS)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.IQ4_XS)
