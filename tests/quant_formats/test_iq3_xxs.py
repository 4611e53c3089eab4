"""IQ3_XXS: hand-built blocks whose values are computed from gguf-py's own grid and
sign table, and llama.cpp round trips."""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants

import quant_formats as qf
from iq_reference import (check_ggml_round_trip, check_matmul_against_ggml_vec_dot,
                          check_matmul_exact_on_hand_block, needs_ggml)
from quant_formats import iq3_xxs


def gguf_grid():
    gguf_quants.IQ3_XXS.init_grid()
    return gguf_quants.IQ3_XXS.grid.reshape(256, 4).astype(np.float64)


def gguf_signs(sign_index):
    """+1/-1 [..., 8] for 7-bit sign indices, through gguf-py's ksigns bytes."""
    ksigns = np.frombuffer(gguf_quants.IQ2_XXS.ksigns, np.uint8)
    return np.where((ksigns[sign_index][..., None] >> np.arange(8)) & 1, -1.0, 1.0)


def hand_block(d, scales, grid_idx, sign_idx):
    """One block from d, 8 four-bit scales, 64 grid indices and 32 seven-bit sign
    indices (sub-block ib, group l at 4 ib + l), and its values
    d * (0.5 + s) * 0.5 * grid * sign (exact in f32 for these d)."""
    scales, sign_idx = np.asarray(scales), np.asarray(sign_idx).reshape(8, 4)
    block = np.zeros(1, iq3_xxs.BLOCK_DTYPE)
    block["d"] = d
    block["qs"] = grid_idx
    # ggml-common.h block_iq3_xxs: per sub-block uint32, sign index l at bit 7 l, scale at 28
    block["scales_signs"] = (sign_idx << (7 * np.arange(4))).sum(axis=1) | scales.astype(np.int64) << 28
    values = gguf_grid()[grid_idx].reshape(8, 4, 8) * gguf_signs(sign_idx)
    expected = d * (0.5 + scales[:, None, None]) * 0.5 * values
    return block.view(np.uint8), expected.ravel()


def sample_block(seed, d=0.25):
    rng = np.random.default_rng(seed)
    return hand_block(d, rng.integers(0, 16, 8), rng.integers(0, 256, 64), rng.integers(0, 128, 32))


def test_hand_built_blocks_dequantize_to_formula():
    for seed in range(4):
        data, expected = sample_block(seed, d=[0.25, -2.0, 1.0, 0.0078125][seed])
        assert np.array_equal(qf.dequantize(data[None, :], T.IQ3_XXS)[0],
                              expected.astype(np.float32)), seed
        assert np.array_equal(iq3_xxs.dequantize_reference(data.view(iq3_xxs.BLOCK_DTYPE))[0],
                              expected.astype(np.float32)), seed


def test_every_grid_entry_scale_and_sign_index():
    """Four blocks cover all 256 grid indices, all 128 sign indices (in every
    group position) and all 16 scales."""
    for blk in range(4):
        grid_idx = np.arange(64) + 64 * blk
        sign_idx = (np.arange(32) * 5 + 32 * blk) % 128
        scales = (np.arange(8) + 8 * blk) % 16
        data, expected = hand_block(0.5, scales, grid_idx, sign_idx)
        assert np.array_equal(qf.dequantize(data[None, :], T.IQ3_XXS)[0],
                              expected.astype(np.float32)), blk


def test_matmul_exact_on_hand_blocks():
    blocks = [sample_block(seed, d) for seed, d in ((5, 0.25), (6, -1.5), (7, 0.125))]
    check_matmul_exact_on_hand_block(T.IQ3_XXS, np.concatenate([b for b, _ in blocks]),
                                     np.concatenate([e for _, e in blocks]))


@needs_ggml
def test_dequantize_of_ggml_quantized_rows_matches_ggml():
    check_ggml_round_trip(T.IQ3_XXS)


@needs_ggml
def test_matmul_matches_ggml_vec_dot():
    check_matmul_against_ggml_vec_dot(T.IQ3_XXS)
