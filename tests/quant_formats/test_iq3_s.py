"""IQ3_S: hand-built blocks whose values are computed from gguf-py's own grid, and
llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants

import quant_formats as qf
from iq_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                          check_matmul_exact_on_hand_block, needs_ggml)
from quant_formats import iq3_s


def gguf_grid():
    gguf_quants.IQ3_S.init_grid()
    return gguf_quants.IQ3_S.grid.reshape(512, 4).astype(np.float64)


def hand_block(d, scales, grid_idx, negative):
    """One block from d, 8 four-bit scales, 64 nine-bit grid indices and 256
    sign flags, and its values d * (1 + 2 s) * grid * sign (exact in f32 here)."""
    scales, grid_idx = np.asarray(scales), np.asarray(grid_idx)
    block = np.zeros(1, iq3_s.BLOCK_DTYPE)
    block["d"] = d
    # ggml-common.h block_iq3_s: bit 8 of index k at bit k % 8 of qh[k / 8],
    # weight i's sign at bit i % 8 of signs[i / 8], scale of sub-block ib in
    # nibble ib % 2 of scales[ib / 2]
    block["qs"] = grid_idx & 255
    block["qh"] = ((grid_idx >> 8).reshape(8, 8) << np.arange(8)).sum(axis=1)
    block["signs"] = (np.asarray(negative).reshape(32, 8) << np.arange(8)).sum(axis=1)
    block["scales"] = scales[0::2] | scales[1::2] << 4
    values = gguf_grid()[grid_idx].reshape(8, 32) * np.where(negative, -1.0, 1.0).reshape(8, 32)
    expected = d * (1 + 2 * scales[:, None]) * values
    return block.view(np.uint8), expected.ravel()


def sample_block(seed, d=0.25):
    rng = np.random.default_rng(seed)
    return hand_block(d, rng.integers(0, 16, 8), rng.integers(0, 512, 64),
                      rng.integers(0, 2, 256).astype(bool))


def test_hand_built_blocks_dequantize_to_formula():
    for seed, d in enumerate([0.25, -2.0, 1.0, 0.0078125]):
        data, expected = sample_block(seed, d)
        assert np.array_equal(qf.dequantize(data[None, :], T.IQ3_S)[0],
                              expected.astype(np.float32)), seed
        assert np.array_equal(iq3_s.dequantize_reference(data.view(iq3_s.BLOCK_DTYPE))[0],
                              expected.astype(np.float32)), seed


def test_every_grid_entry_scale_and_sign_position():
    """Eight blocks cover all 512 grid indices, with the qh bit alternating
    within each qh byte, all 16 scales, and each weight both signs."""
    k = np.arange(64)
    for blk in range(8):
        grid_idx = 8 * ((k + 32 * (k % 2)) % 64) + blk  # a permutation of 8 k + blk
        scales = (np.arange(8) + 8 * blk) % 16
        negative = (np.arange(256) * 3 + blk) % 2 == 1
        data, expected = hand_block(0.5, scales, grid_idx, negative)
        assert np.array_equal(qf.dequantize(data[None, :], T.IQ3_S)[0],
                              expected.astype(np.float32)), blk


def test_matmul_exact_on_hand_blocks():
    blocks = [sample_block(seed, d) for seed, d in ((5, 0.25), (6, -1.5), (7, 0.125))]
    check_matmul_exact_on_hand_block(T.IQ3_S, np.concatenate([b for b, _ in blocks]),
                                     np.concatenate([e for _, e in blocks]))


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.IQ3_S)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.IQ3_S)
