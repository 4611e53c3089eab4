"""IQ3_S: 256 weights as 64 lookups into a 512 x 4 grid, explicit sign bits and a
4-bit scale per 32 weights (ggml-common.h block_iq3_s).

Block bytes: d f16 @0, qs[64] @2 (low 8 bits of the grid indices), qh[8] @66
(bit k % 8 of qh[k / 8] is bit 8 of grid index k), signs[32] @74 (bit j of
signs[m] negates weight 8 m + j), scales[4] @106 (sub-block ib's scale s is
the low nibble of scales[ib / 2] for even ib, the high one for odd).
Weight = d * (1 + 2 s) * grid value, negated where its sign bit is set.
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from .common import f16_at
from .iq3_quantize_tables import (search_sub_block, search_tables, sub_block_scale_code,
                                  sub_block_weights, super_block_sigma2)
from .iq_common import SIGNS_OF_BYTE, grid_from_gguf, scaled_dot_256
from .quantize_common import run_row_kernel_f16_d

QTYPE = T.IQ3_S
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (64,)), ("qh", "u1", (8,)),
                        ("signs", "u1", (32,)), ("scales", "u1", (4,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 110
_QH, _SIGNS, _SCALES = 66, 74, 106  # byte offsets in a block

GRID = grid_from_gguf(gguf_quants.IQ3_S)  # int8 [512, 4]: iq3s_grid
# Grid entry i with sign nibble s applied, as four int8 packed in one uint32 at
# index 16 i + s (32 KB): a group of 4 signed weights is one load and store.
_SIGNED_GRID = np.ascontiguousarray(
    (GRID[:, None, :] * SIGNS_OF_BYTE[None, :16, :4]).astype(np.int8)).view(np.uint32).ravel()


def dequantize_reference(blocks):
    """As gguf-py IQ3_S: db = d * (1 + 2 s) in f32, then db * grid * sign."""
    n = len(blocks)
    s = (blocks["scales"][:, :, None] >> np.array([0, 4], np.uint8)) & 15
    db = blocks["d"].astype(np.float32)[:, None] * (1 + 2 * s.reshape(n, 8)).astype(np.float32)
    high = (blocks["qh"][:, :, None] >> np.arange(8, dtype=np.uint8)) & 1
    idx = blocks["qs"].astype(np.int32) | high.reshape(n, 64).astype(np.int32) << 8
    grid = GRID[idx].astype(np.float32).reshape(n, 8, 32)
    signs = SIGNS_OF_BYTE[blocks["signs"]].astype(np.float32).reshape(n, 8, 32)
    return (db[:, :, None] * grid * signs).reshape(n, 256)


@njit(cache=True, nogil=True, inline="always")
def _decode_block(w, o, decoded_groups, scales):
    """The block at w[o] as 256 signed grid values (int8, written four at a time
    through decoded_groups, a uint32 view) and its 8 four-bit scales s.

    qh byte ib holds bit 8 of sub-block ib's 8 grid indices, so it is loaded
    once per sub-block (vec_dot 3.1 GB/s against 2.4 reading it per index)."""
    for ib in range(8):
        scales[ib] = (np.int32(w[o + _SCALES + (ib >> 1)]) >> (4 * (ib & 1))) & 15
        qh = np.int32(w[o + _QH + ib]) << 8  # bit 8 + k: grid index 8 ib + k, bit 8
        for pair in range(4):
            sign_byte = np.int32(w[o + _SIGNS + 4 * ib + pair])
            k = 8 * ib + 2 * pair
            low_idx = np.int32(w[o + 2 + k]) | ((qh >> (2 * pair)) & 256)
            high_idx = np.int32(w[o + 3 + k]) | ((qh >> (2 * pair + 1)) & 256)
            decoded_groups[k] = _SIGNED_GRID[16 * low_idx + (sign_byte & 15)]
            decoded_groups[k + 1] = _SIGNED_GRID[16 * high_idx + (sign_byte >> 4)]


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    """As ggml-quants.c dequantize_row_iq3_s, float order as gguf-py's:
    db = d * (1 + 2 s), then db * grid * sign, which equals db * (signed grid
    value) bit for bit (negation is exact and rounding symmetric)."""
    decoded = np.empty(256, np.int8)
    scales = np.empty(8, np.int32)
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            _decode_block(row, o, decoded.view(np.uint32), scales)
            d = f16_at(row, o)
            for ib in range(8):
                db = d * np.float32(1 + 2 * scales[ib])
                for j in range(32 * ib, 32 * ib + 32):
                    out[r, b * 256 + j] = db * np.float32(decoded[j])


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_iq3_s_q8_K_generic: per sub-block the
    integer sum of signed grid value * q8, times 1 + 2 s; d_w d_x per block.

    As iq3_xxs.vec_dot: decode to 256 signed int8 (one packed-table load per 4
    weights), then iq_common.scaled_dot_256."""
    acc = np.float32(0.0)
    decoded = np.empty(256, np.int8)
    decoded_groups = decoded.view(np.uint32)
    scales = np.empty(8, np.int32)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        _decode_block(w, o, decoded_groups, scales)
        for ib in range(8):
            scales[ib] = 1 + 2 * scales[ib]
        isum = scaled_dot_256(decoded, qs, b * 256, scales)
        acc += f16_at(w, o) * d[b] * np.float32(isum)
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- Quantizer: ggml-quants.c quantize_iq3_s -> quantize_row_iq3_s_impl(32, ...) ---
# Without an imatrix ggml weights errors by x^2 (the same function, not a _ref path).
_SEARCH_STEPS = 9               # inverse scales (15 + 0.2 is) / max, |is| <= 9
_D_FUDGE = np.float32(1.033)


@njit(cache=True, nogil=True, error_model="numpy")
def _abs_and_signs(row, o, xval, out, signs_at):
    """xval = |x| of the sub-block at row[o]; bit i of out[signs_at + k] set where
    x[8k + i] < 0. Returns max(xval) as C's MAX loop."""
    for k in range(4):
        signs = 0
        for i in range(8):
            v = row[o + 8 * k + i]
            if v >= 0:
                xval[8 * k + i] = v
            else:
                xval[8 * k + i] = -v
                signs |= 1 << i
        out[signs_at + k] = signs
    xmax = xval[0]
    for i in range(1, 32):
        xmax = xmax if xmax > xval[i] else xval[i]
    return xmax


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_super_block(row, o, quant_weights, tables, out, ob, scratch, levels, on_grid):
    """One block of 256 at row[o] into out[ob:ob+110] except d; returns d (f32).

    As ggml, a sub-block with all x == 0 is skipped without advancing the qs and
    signs write positions, so the next sub-block's indices and signs land in its
    slots (qh and scales are indexed by sub-block and are not shifted)."""
    weight, waux, xval, scales = scratch[0], scratch[1], scratch[2], scratch[3]
    L, Laux = levels[0], levels[1]
    kmap = tables[1]
    sigma2 = super_block_sigma2(row, o)
    out[ob:ob + _TYPE_SIZE] = 0
    qs_at, signs_at = ob + 2, ob + _SIGNS
    max_scale = np.float32(0.0)
    for ib in range(8):
        xo = o + 32 * ib
        sub_block_weights(row, xo, quant_weights, sigma2, weight, waux)
        xmax = _abs_and_signs(row, xo, xval, out, signs_at)
        scales[ib] = 0.0
        if xmax == 0:
            for k in range(4):
                out[signs_at + k] = 0  # C keeps its signs in a scratch array
            continue
        on_grid[0][:] = False
        scale = search_sub_block(xval, xmax, weight, waux, L, Laux, on_grid[0], on_grid[1],
                                 _SEARCH_STEPS, tables, True)
        if scale < 0:  # "should never happen": flip the scale and the signs
            scale = -scale
            for k in range(4):
                out[signs_at + k] = ~out[signs_at + k]
        for k in range(8):
            g = kmap[L[4 * k] | (L[4 * k + 1] << 3) | (L[4 * k + 2] << 6) | (L[4 * k + 3] << 9)]
            out[qs_at + k] = g & 255
            out[ob + _QH + ib] |= (g >> 8) << k
        qs_at += 8
        signs_at += 4
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale
    if max_scale == 0:
        return np.float32(0.0)
    d = max_scale / np.float32(31.0)
    inv_d = np.float32(1.0) / d
    for pair in range(4):
        out[ob + _SCALES + pair] = (sub_block_scale_code(inv_d, scales[2 * pair])
                                    | (sub_block_scale_code(inv_d, scales[2 * pair + 1]) << 4))
    return d * _D_FUDGE


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, quant_weights, tables, d_out, out):
    n_blocks = x.shape[1] // 256
    for r in prange(x.shape[0]):
        scratch = np.empty((4, 32), np.float32)  # weight, waux, xval, scales
        levels = np.empty((2, 32), np.int32)     # best and trial levels
        on_grid = np.empty((2, 8), np.bool_)
        for b in range(n_blocks):
            d_out[r, b] = _quantize_super_block(x[r], 256 * b, quant_weights, tables, out[r],
                                                b * _TYPE_SIZE, scratch, levels, on_grid)


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> IQ3_S bytes, as ggml_quantize_chunk (see quant_formats.quantize)."""
    return run_row_kernel_f16_d(_quantize_rows, x, imatrix, BLOCK_DTYPE, BLOCK_SIZE,
                                search_tables(GRID))
