"""IQ2_S: 256 weights as 32 lookups into a 1024 x 8 grid, explicit sign bytes, and a
4-bit scale per 16 weights (ggml-common.h block_iq2_s).

Block bytes: d f16 @0; 32 grid-index low bytes @2 (one per 8 weights); 32 sign
bytes @34; 8 qh bytes @66 (2 high index bits per group, 4 groups per byte); 8 scale
bytes @74 (low nibble: first 16 weights of a sub-block of 32, high nibble: the rest).
Weight = d * (0.5 + s) * 0.25 * grid value * sign.
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from .common import f16_at
from .iq_common import SIGNS_OF_BYTE, grid_from_gguf, nibble_scaled_dot_256
from .iq_quantize_tables import (f16_bits, iq2_search_16, key_of, put_u16, search_tables)
from .quantize_common import mean_square, run_row_kernel, scale_level

QTYPE = T.IQ2_S
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (32,)), ("signs", "u1", (32,)),
                        ("qh", "u1", (8,)), ("scales", "u1", (8,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 82
_GROUP_MAX_EPS_IQ2_S = np.float32(1e-8)  # ggml-quants.c

GRID = grid_from_gguf(gguf_quants.IQ2_S)  # int8 [1024, 8]: iq2s_grid
_SIGNS = SIGNS_OF_BYTE.astype(np.int8)


def dequantize_reference(blocks):
    """As gguf-py IQ2_S: db = d * (0.5 + s) * 0.25 per 16 weights, db * grid * sign."""
    n = len(blocks)
    scales = np.stack([blocks["scales"] & 15, blocks["scales"] >> 4], axis=2).reshape(n, 16)
    db = blocks["d"].astype(np.float32)[:, None] * (np.float32(0.5) + scales.astype(np.float32))
    db = db * np.float32(0.25)
    high = (blocks["qh"][:, :, None] >> (2 * np.arange(4, dtype=np.uint8))) & 3
    index = blocks["qs"].astype(np.int32) | (high.reshape(n, 32).astype(np.int32) << 8)
    grid = GRID[index].astype(np.float32).reshape(n, 16, 16)
    signs = SIGNS_OF_BYTE[blocks["signs"]].astype(np.float32).reshape(n, 16, 16)
    return (db[:, :, None] * grid * signs).reshape(n, 256)


@njit(cache=True, nogil=True, inline="always")
def _decode_block(w, o, decoded):
    for g in range(32):
        high = (np.int32(w[o + 66 + g // 4]) >> (2 * (g % 4))) & 3
        index = np.int32(w[o + 2 + g]) | (high << 8)
        sign = np.int32(w[o + 34 + g])
        for j in range(8):
            decoded[8 * g + j] = GRID[index, j] * _SIGNS[sign, j]


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    decoded = np.empty(256, np.int8)
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            _decode_block(row, o, decoded)
            d = f16_at(row, o)
            for k in range(16):
                s = (np.int32(row[o + 74 + k // 2]) >> (4 * (k % 2))) & 15
                db = d * (np.float32(0.5) + np.float32(s)) * np.float32(0.25)
                for j in range(16 * k, 16 * k + 16):
                    out[r, b * 256 + j] = db * np.float32(decoded[j])


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """ggml-cpu/quants.c ggml_vec_dot_iq2_s_q8_K_generic; 0.125 d_w d_x at the end."""
    acc = np.float32(0.0)
    decoded = np.empty(256, np.int8)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        _decode_block(w, o, decoded)
        total = nibble_scaled_dot_256(decoded, qs, b * 256, w, o + 74)
        acc += f16_at(w, o) * d[b] * np.float32(total)
    return np.float32(0.125) * acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- quantizer ----------------------------------------------------------------
# ggml-quants.c quantize_row_iq2_s_impl: as IQ2_XS but the sign bytes are stored
# whole (no even-parity fix), weights default to sigma^2 / 4 + x^2 without an
# imatrix, and d carries a 0.9875 factor.

def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE,
                          *search_tables(QTYPE))


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, grid, key_map, neighbours, out):
    """imatrix: f32 [n], or empty for ggml's quant_weights == NULL."""
    for r in prange(x.shape[0]):
        scratch = np.empty((3, 16), np.float32)  # weight, waux, xval
        scales = np.empty(16, np.float32)
        codes = np.empty((2, 16), np.int32)      # L, Laux
        for b in range(x.shape[1] // 256):
            qw = imatrix[256 * b:256 * b + 256]
            _quantize_block(x[r, 256 * b:256 * b + 256], qw, grid, key_map, neighbours,
                            scratch, scales, codes, out[r], b * _TYPE_SIZE)


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_block(xbl, qw, grid, key_map, neighbours, scratch, scales, codes, out, o):
    weight, waux, xval = scratch[0], scratch[1], scratch[2]
    sigma2 = mean_square(xbl, 2)
    max_scale = np.float32(0.0)
    for ib in range(16):
        xb = xbl[16 * ib:16 * ib + 16]
        signs = 0
        for i in range(16):
            if qw.shape[0]:
                weight[i] = qw[16 * ib + i] * np.sqrt(sigma2 + xb[i] * xb[i])
            else:
                weight[i] = np.float32(0.25) * sigma2 + xb[i] * xb[i]
            waux[i] = np.sqrt(weight[i])
            xval[i] = xb[i] if xb[i] >= 0 else -xb[i]
            signs |= (0 if xb[i] >= 0 else 1) << i
        scale, skipped = iq2_search_16(xval, weight, waux, _GROUP_MAX_EPS_IQ2_S, grid, key_map,
                                       neighbours, codes[0], codes[1])
        scales[ib] = 0.0
        if skipped:  # ggml leaves the group's bytes zero and its scale 0
            continue
        if scale < 0:  # "should never happen" in ggml; flip the signs as it does
            scale = -scale
            signs = ~signs & 0xFFFF
        for k in range(2):
            group = 2 * ib + k
            grid_index = key_map[key_of(codes[0], 8 * k)]
            out[o + 2 + group] = grid_index & 255
            out[o + 66 + group // 4] |= (grid_index >> 8) << (2 * (group % 4))
            out[o + 34 + group] = (signs >> (8 * k)) & 255
        scales[ib] = scale
        max_scale = max(max_scale, scale)
    if max_scale == 0.0:
        return
    d = max_scale / np.float32(31)
    put_u16(out, o, f16_bits(d * np.float32(0.9875)))
    inv_d = np.float32(1.0) / d
    for ib in range(16):
        level = scale_level(inv_d, scales[ib], 15)
        out[o + 74 + ib // 2] |= level << (4 * (ib % 2))
